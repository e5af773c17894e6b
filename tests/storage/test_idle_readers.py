"""Store.read keeps a few reader connections open between reads (uow.Store._read_on_idle): what one read
leaves behind must never leak into the next."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from loyalty.domain.errors import ProfileNotFound
from loyalty.storage import catalog_repo, counters_repo
from tests.conftest import make_runtime


def test_a_reused_reader_sees_commits_made_after_its_last_read(store_url, clock):
    rt = make_runtime(store_url, clock)
    try:
        before = rt.store.read(lambda conn: counters_repo.read(conn, "tokens"))
        # a read through SQLAlchemy, which begins a transaction (and on SQLite a read snapshot) on the reader
        rt.store.read(lambda conn: conn.execute(text("SELECT count(*) FROM change_counters")).scalar())
        rt.store.write(lambda conn: counters_repo.bump(conn, "tokens"))
        assert rt.store.read(lambda conn: counters_repo.read(conn, "tokens")) == before + 1
    finally:
        rt.close()


def test_a_refused_read_gives_its_connection_back_clean(store_url, clock):
    rt = make_runtime(store_url, clock)
    try:
        seen = []

        def refuse(conn):
            seen.append(conn)
            conn.execute(text("SELECT 1")).scalar()  # leaves a transaction open
            raise ProfileNotFound("no such profile")

        with pytest.raises(ProfileNotFound):
            rt.store.read(refuse)
        assert not seen[0].in_transaction()
        assert rt.store.read(lambda conn: conn) is seen[0]  # reused, not lost to the pool
    finally:
        rt.close()


def test_the_catalogue_is_checked_again_on_each_use_of_a_reused_reader(store_url, clock):
    rt = make_runtime(store_url, clock)
    try:
        first = rt.store.read(catalog_repo.snapshot)
        rt.store.write(catalog_repo.catalog_changed)
        second = rt.store.read(catalog_repo.snapshot)
        assert second.version == first.version + 1
    finally:
        rt.close()
