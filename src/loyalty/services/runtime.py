"""What every use case runs with: settings, the store and the clock, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from loyalty.config import Settings
from loyalty.domain.clock import Clock, SystemClock
from loyalty.storage import cooperative, counters_repo
from loyalty.storage.uow import Store

# What the API layer needs of the store's machinery, named here so that it depends on services only:
# running a use case on the event loop (suspending while it waits), and one counter read per request.
run_on_loop = cooperative.run_suspendable
request_scope = counters_repo.request_scope


@dataclass
class Runtime:
    settings: Settings
    store: Store
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        store = Store.from_url(settings.database_url, pool_size=settings.pool_size,
                               group_commit=settings.group_commit_max if settings.group_commit else 0,
                               writers=settings.writer_threads)
        return cls(settings, store, clock or SystemClock())

    def close(self) -> None:
        self.store.dispose()
