"""Schema migrations: apply them (`loyalty db upgrade`) and tell whether a store is current."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

_SCRIPTS = Path(__file__).with_name("migrations")


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def head_revision() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Alembic begins and commits the transaction itself on PostgreSQL, so that a migration may step out of it
    to build an index CONCURRENTLY; SQLite's DDL runs in the transaction the connection begins, committed here."""
    cfg = _config(engine)
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    """Undo migrations down to `revision` (for operators rolling back a release)."""
    cfg = _config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def autogenerate(engine: Engine, message: str) -> None:
    """For developers: write a new revision from the difference between tables.py and the store."""
    cfg = _config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)


def has_tables(engine: Engine) -> bool:
    """Whether the store holds any table besides Alembic's own."""
    from sqlalchemy import inspect

    return any(name != "alembic_version" for name in inspect(engine).get_table_names())


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
