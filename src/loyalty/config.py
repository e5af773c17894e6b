"""One Settings object, read from LOYALTY_* environment variables once at start-up and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOYALTY_", extra="ignore")

    database_url: str = "sqlite:///./loyalty.db"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Requests per second allowed per token (0 = no limit); bursts up to `rate_limit_burst`.
    rate_limit_per_second: float = Field(default=0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    # Seconds a cached token may be used without checking the store's token change counter (0: revocations take
    # effect on the next request).
    token_cache_sec: float = Field(default=0, ge=0)
    # PostgreSQL connections per process (reads share them; the group committer holds one while it writes).
    pool_size: int = Field(default=20, ge=2)
    # Group commit: concurrent writes share one store transaction (one fsync), each under its own savepoint.
    group_commit: bool = True
    # Most units of work one group commit takes.
    group_commit_max: int = Field(default=128, ge=1)
    # Writers on PostgreSQL, each committing its own batches (0: 4; at most a quarter of the pool). Under `serve`
    # the event loop drives them, elsewhere they are threads. SQLite always has one writer thread.
    writer_threads: int = Field(default=0, ge=0)
    default_temp_timeout_sec: int = 900
    # Background sweeper period; the engine stays correct without it (reads settle what is due).
    sweep_interval_sec: float = Field(default=5.0, gt=0)
    run_jobs: bool = True
    export_dir: Path = Path("./exports")
    # Export files (and their tasks' downloads) are removed this long after they finish.
    export_retention_hours: float = Field(default=24, gt=0)
    # How long a job or export lease lasts without a heartbeat before another process may take it over.
    job_lease_sec: float = Field(default=60, gt=0)
    log_level: str = "INFO"
