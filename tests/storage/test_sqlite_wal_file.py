"""SQLite's WAL file does not stay as large as the largest transaction it once held."""

from pathlib import Path

from loyalty.storage import engine
from loyalty.storage.uow import Store

BIG_INSERT = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) "
              "INSERT INTO t (v) SELECT hex(randomblob(500)) FROM n")  # about 5 MB


def test_after_a_bulk_write_the_wal_file_is_cut_back_to_its_limit_once_the_wal_starts_over(tmp_path: Path,
                                                                                            monkeypatch):
    monkeypatch.setattr(engine, "WAL_SIZE_LIMIT", 256 * 1024)
    path = tmp_path / "wal.db"
    wal = path.with_name(path.name + "-wal")
    store = Store.from_url(f"sqlite:///{path}")
    try:
        store.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        store.write(lambda conn: conn.exec_driver_sql(BIG_INSERT))
        assert wal.stat().st_size > 4_000_000  # the whole transaction went through the WAL
        store.write(lambda conn: conn.exec_driver_sql("INSERT INTO t (v) VALUES ('after')"))
        assert wal.stat().st_size <= 256 * 1024
        assert store.read(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one()) == 5001
    finally:
        store.dispose()
