"""Per-request authentication, per-token rate limits, and throttled last-used updates.

Principals are cached per process by the token's hash, and trusted while the store's `tokens` change counter
is unchanged: each request reads that one counter, and a revocation from the CLI (which bumps it) takes effect
on the next request in every process. `token_cache_sec` > 0 additionally skips the counter read for that long.
"""

from __future__ import annotations

import threading
import time

from loyalty.domain.errors import RateLimited
from loyalty.services import tokens
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal

TOUCH_EVERY_SECONDS = 60.0


class Authenticator:
    def __init__(self, rt: Runtime):
        self.rt = rt
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, float, Principal]] = {}
        self._touched: dict[int, float] = {}
        self._buckets: dict[int, tuple[float, float]] = {}

    def principal(self, raw: str) -> Principal:
        digest = tokens.hash_token(raw)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and now - hit[1] < self.rt.settings.token_cache_sec:
            principal = hit[2]
        else:
            version = tokens.tokens_version(self.rt)
            if hit is not None and hit[0] == version:
                principal = hit[2]
            else:
                principal = tokens.authenticate(self.rt, raw)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (version, now, principal)
        self._rate_limit(principal, now)
        self._touch(principal, now)
        return principal

    def _rate_limit(self, principal: Principal, now: float) -> None:
        rate = self.rt.settings.rate_limit_per_second
        if rate <= 0:
            return
        burst = float(self.rt.settings.rate_limit_burst)
        with self._lock:
            level, at = self._buckets.get(principal.token_id, (burst, now))
            level = min(burst, level + (now - at) * rate)
            if level < 1:
                self._buckets[principal.token_id] = (level, now)
                raise RateLimited(f"Rate limit of {rate:g} requests per second exceeded for this token")
            self._buckets[principal.token_id] = (level - 1, now)

    def _touch(self, principal: Principal, now: float) -> None:
        with self._lock:
            last = self._touched.get(principal.token_id)
            if last is not None and now - last < TOUCH_EVERY_SECONDS:
                return
            self._touched[principal.token_id] = now
        tokens.touch(self.rt, principal.token_id)
