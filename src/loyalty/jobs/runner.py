"""The background job runner, inside `loyalty serve` or alone as `loyalty worker`.

Two daemon threads: one ticks the recurring jobs (temp deadlines / activation / expiration sweep, daily period
tier re-evaluation, export clean-up), each under its lease so several processes never run one job twice; the
other claims and writes queued exports, which can take a while, so they never delay the sweep.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from loyalty.services import exports, jobs
from loyalty.services.runtime import Runtime
from loyalty.services.sweeper import sweep_all
from loyalty.services.tiers import reevaluate_period_groups

log = logging.getLogger("loyalty.jobs")


class JobRunner:
    def __init__(self, rt: Runtime, owner: str | None = None):
        self.rt = rt
        self.owner = owner or jobs.new_owner()
        self._stop = threading.Event()
        self.export_wakeup = threading.Event()
        self._threads: list[threading.Thread] = []

    def schedule(self) -> list[tuple[str, timedelta, object, timedelta | None]]:
        s = self.rt.settings
        return [
            # Within half its lease (60 s by default): a long sweep goes on at the next tick.
            ("sweep", timedelta(seconds=s.sweep_interval_sec),
             lambda: sweep_all(self.rt, max_sec=s.job_lease_sec / 2), None),
            ("period_tiers", timedelta(days=1), lambda: reevaluate_period_groups(self.rt), timedelta(hours=1)),
            ("export_cleanup", timedelta(hours=1), lambda: exports.cleanup(self.rt), None),
        ]

    def start(self) -> None:
        for target, name in ((self._tick_loop, "loyalty-jobs"), (self._export_loop, "loyalty-exports")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self.export_wakeup.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def tick(self) -> None:
        """Run every recurring job that is due and whose lease this process wins."""
        for name, every, work, lease in self.schedule():
            try:
                jobs.run_leased(self.rt, name, self.owner, every, work, lease)  # type: ignore[arg-type]
            except Exception:  # recorded on the job row; the next period tries again
                log.exception("job %s failed", name)

    def _tick_loop(self) -> None:
        period = min(1.0, self.rt.settings.sweep_interval_sec)
        while not self._stop.wait(period):
            self.tick()

    def _export_loop(self) -> None:
        while not self._stop.is_set():
            try:
                exports.process_queue(self.rt, self.owner)
            except Exception:
                log.exception("export queue failed")
            self.export_wakeup.wait(1.0)
            self.export_wakeup.clear()
