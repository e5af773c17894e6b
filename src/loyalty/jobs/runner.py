"""A daemon thread that runs the sweeper every `sweep_interval_sec` until stopped."""

from __future__ import annotations

import logging
import threading

from loyalty.services.runtime import Runtime
from loyalty.services.sweeper import sweep_all
from loyalty.services.tiers import reevaluate_period_groups

TIER_PERIOD_SECONDS = 24 * 3600

log = logging.getLogger("loyalty.jobs")


class JobRunner:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_tier_run: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="loyalty-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.rt.settings.sweep_interval_sec):
            try:
                n = sweep_all(self.rt)
                if n:
                    log.info("settled %d accounts with due events", n)
            except Exception:  # a failed sweep is retried next period; reads stay correct meanwhile
                log.exception("sweep failed")
            self._daily_tiers()

    def _daily_tiers(self) -> None:
        import time

        now = time.monotonic()
        if self._last_tier_run is not None and now - self._last_tier_run < TIER_PERIOD_SECONDS:
            return
        self._last_tier_run = now
        try:
            changed = reevaluate_period_groups(self.rt)
            if changed:
                log.info("period tier groups: %d members moved", changed)
        except Exception:
            log.exception("period tier re-evaluation failed")
