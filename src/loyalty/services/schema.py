"""Schema state of the store: upgrade it, or refuse to run on an out-of-date one."""

from __future__ import annotations

from loyalty.services.runtime import Runtime
from loyalty.storage import migrate
from loyalty.storage.engine import sqlite_path


class SchemaOutOfDate(Exception):
    pass


def upgrade(rt: Runtime) -> tuple[str | None, str | None]:
    """Apply every pending migration; return (revision before, revision after)."""
    engine = rt.store.engines.writer
    before = migrate.current_revision(engine)
    migrate.upgrade(engine)
    return before, migrate.current_revision(engine)


def ensure_current(rt: Runtime) -> bool:
    """Create a brand-new SQLite store's schema; refuse any other store that is not at the head revision.

    Returns True when the schema was created here.
    """
    engine = rt.store.engines.writer
    current = migrate.current_revision(engine)
    head = migrate.head_revision()
    if current == head:
        return False
    path = sqlite_path(rt.settings.database_url)
    if current is None and path is not None and not migrate.has_tables(engine):
        migrate.upgrade(engine)
        return True
    if current is None:
        where = "not managed by migrations (tables without a recorded revision)" if migrate.has_tables(engine) \
            else "empty"
    else:
        where = f"at revision {current}, the code expects {head}"
    raise SchemaOutOfDate(f"The database schema is {where}. Run `loyalty db upgrade` first.")
