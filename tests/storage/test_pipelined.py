"""PostgreSQL writes deferred to the next round trip (storage/pipelined.py): they reach the store in the order
they were issued and in one round trip with the next read, a failure among them fails only the unit that issued
them, a unit refused before its first round trip leaves nothing behind, and a rollback forgets them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import errors
from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError

from loyalty.storage.pipelined import PgConnection
from loyalty.storage.prepared import Prepared
from loyalty.storage.uow import Store
from tests.storage.test_committer import (
    committer_of,
    error_of,
    inserter,
    scratch,
    scratch_store,
    stored,
    writer_held,
)

INSERT = Prepared(insert(scratch), ["id", "tag"])
READ = Prepared(select(scratch.c.tag).where(scratch.c.id == bindparam("k_id")))


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    with scratch_store(pg_url) as s:
        yield s


def raw_of(conn: Any) -> Any:
    return conn.connection.dbapi_connection


def deferred(row_id: int) -> Any:
    """A unit whose only write is deferred."""
    return lambda conn: INSERT.send(conn, {"id": row_id, "tag": "ok"}) or row_id


def test_deferred_writes_go_with_the_next_read_in_one_round_trip_and_the_read_sees_them(pg_store):
    def work(conn: Any) -> tuple[Any, int, int]:
        raw = raw_of(conn)
        before = raw.flushes
        for i in range(3):
            INSERT.send(conn, {"id": i, "tag": f"t{i}"})
        queued = raw.queued()
        tag = READ.first(conn, {"k_id": 2})
        return tag, queued, raw.flushes - before

    tag, queued, round_trips = pg_store.write_alone(work)
    assert (tag, queued, round_trips) == (("t2",), 3, 1)
    assert stored(pg_store) == {0: "t0", 1: "t1", 2: "t2"}


def test_a_statement_through_sqlalchemy_comes_after_the_writes_deferred_before_it(pg_store):
    def work(conn: Any) -> list[int]:
        INSERT.send(conn, {"id": 7, "tag": "deferred"})
        return [row.id for row in conn.execute(select(scratch.c.id))]

    assert pg_store.write_alone(work) == [7]


def test_a_rolled_back_transaction_forgets_its_deferred_writes(pg_store):
    def refused(conn: Any) -> None:
        INSERT.send(conn, {"id": 1, "tag": "never"})
        raise ValueError("refused after a deferred write")

    with pytest.raises(ValueError):
        pg_store.write_alone(refused)
    assert pg_store.write_alone(lambda conn: raw_of(conn).queued()) == 0  # the pooled connection kept nothing
    assert stored(pg_store) == {}


def test_a_failing_deferred_write_fails_only_its_unit_in_a_batch(pg_store):
    committer = committer_of(pg_store)

    def clash(conn: Any) -> None:
        INSERT.send(conn, {"id": 1, "tag": "clash"})  # unit one's key: fails when the unit's writes are sent

    with writer_held(committer):
        first = committer.submit(inserter(1))
        bad = committer.submit(clash)
        after = committer.submit(deferred(2))
    assert first.result() == 1 and after.result() == 2
    assert isinstance(error_of(bad), IntegrityError)
    assert stored(pg_store) == {1: "x", 2: "ok"}


def test_a_unit_refused_before_its_first_round_trip_leaves_its_neighbours_whole(pg_store):
    committer = committer_of(pg_store)

    def refused(conn: Any) -> None:
        INSERT.send(conn, {"id": 5, "tag": "refused"})  # still queued when refused: dropped, never sent
        raise ValueError("refused")

    with writer_held(committer):
        before = committer.submit(deferred(4))
        bad = committer.submit(refused)
        after = committer.submit(deferred(6))
    assert before.result() == 4 and after.result() == 6
    assert isinstance(error_of(bad), ValueError)
    assert stored(pg_store) == {4: "ok", 6: "ok"}


def test_a_unit_refused_after_one_of_its_writes_went_out_leaves_no_trace_and_its_neighbour_commits(pg_store):
    committer = committer_of(pg_store)

    def refused(conn: Any) -> None:
        INSERT.send(conn, {"id": 5, "tag": "sent"})
        READ.first(conn, {"k_id": 5})  # a round trip: the unit's first write reached the store
        INSERT.send(conn, {"id": 8, "tag": "queued"})
        raise ValueError("refused")

    with writer_held(committer):
        bad = committer.submit(refused)
        after = committer.submit(inserter(9))
    assert after.result() == 9
    assert isinstance(error_of(bad), ValueError)
    assert stored(pg_store) == {9: "x"}


def test_independent_reads_go_together_with_the_deferred_writes_in_one_round_trip(pg_store):
    def work(conn: Any) -> tuple[list[Any], int]:
        raw = raw_of(conn)
        INSERT.send(conn, {"id": 1, "tag": "one"})
        INSERT.send(conn, {"id": 2, "tag": "two"})
        before = raw.flushes
        rows = Prepared.first_of_each(conn, (READ, {"k_id": 2}), (READ, {"k_id": 3}), (READ, {"k_id": 1}))
        return rows, raw.flushes - before

    rows, round_trips = pg_store.write_alone(work)
    assert rows == [("two",), None, ("one",)]  # in order, each seeing the writes deferred before it
    assert round_trips == 1


def test_a_deferred_write_failing_at_commit_rolls_its_transaction_back_and_leaves_the_connection_clean(pg_store):
    assert pg_store.write_alone(lambda conn: INSERT.send(conn, {"id": 1, "tag": "first"})) is None
    with pytest.raises(IntegrityError):  # the duplicate is only sent by the COMMIT
        pg_store.write_alone(lambda conn: INSERT.send(conn, {"id": 1, "tag": "again"}))
    for _ in range(3):  # whichever pooled connection comes next works
        assert pg_store.write_alone(lambda conn: READ.first(conn, {"k_id": 1})) == ("first",)


def test_a_deferred_write_failing_in_the_next_units_round_trip_fails_its_own_unit_and_the_next_runs_again(pg_store):
    committer = committer_of(pg_store)
    pg_store.write_alone(lambda conn: INSERT.send(conn, {"id": 1, "tag": "taken"}))

    def clash(conn: Any) -> None:
        INSERT.send(conn, {"id": 1, "tag": "clash"})  # no round trip here: it goes with the next unit's read

    def reads_then_writes(conn: Any) -> Any:
        seen = READ.first(conn, {"k_id": 1})
        INSERT.send(conn, {"id": 3, "tag": "after"})
        return seen

    with writer_held(committer):
        bad = committer.submit(clash)
        after = committer.submit(reads_then_writes)
    assert isinstance(error_of(bad), IntegrityError)
    assert after.result() == ("taken",)
    assert stored(pg_store) == {1: "taken", 3: "after"}


def test_a_failure_names_the_unit_that_issued_the_failing_statement(pg_store):
    def work(conn: Any) -> Any:
        raw = raw_of(conn)
        raw.issuer = "earlier"
        INSERT.send(conn, {"id": 1, "tag": "one"})
        INSERT.send(conn, {"id": 1, "tag": "duplicate"})
        raw.issuer = "later"
        try:
            READ.first(conn, {"k_id": 1})
        except IntegrityError as exc:
            return exc.orig.issued_by
        finally:
            raw.issuer = None

    assert pg_store.write_alone(work) == "earlier"


def test_statements_are_prepared_once_per_session_and_a_prepare_skipped_by_a_failed_pipeline_is_sent_again(
        pg_store, pg_url):
    select_tag = b"SELECT tag FROM committer_scratch WHERE id = $1::INTEGER"
    insert_row = b"INSERT INTO committer_scratch (id, tag) VALUES ($1::INTEGER, $2::VARCHAR)"
    with PgConnection.connect(make_url(pg_url).set(drivername="postgresql").render_as_string(False)) as raw:
        def prepared() -> list[str]:
            return [row[0] for row in raw.execute("SELECT statement FROM pg_prepared_statements")]

        raw.defer(insert_row, [None, "no key"])
        with pytest.raises(errors.NotNullViolation):  # fails first: the SELECT's PREPARE after it is skipped
            raw.run_all([(select_tag, [1])])
        raw.rollback()
        assert select_tag.decode() not in prepared()

        raw.defer(insert_row, [1, "one"])
        (found,) = raw.run_all([(select_tag, [1])])
        (missing,) = raw.run_all([(select_tag, [2])])
        assert (raw.rows(found), raw.rows(missing)) == ([("one",)], [])
        statements = prepared()
        assert statements.count(select_tag.decode()) == 1 and statements.count(insert_row.decode()) == 1
        raw.rollback()


def test_a_session_that_lost_its_prepared_statements_prepares_them_again_on_the_retry(pg_store):
    pg_store.write_alone(lambda conn: INSERT.send(conn, {"id": 1, "tag": "one"}))
    attempts = []

    def work(conn: Any) -> Any:
        attempts.append(1)
        READ.first(conn, {"k_id": 1})  # prepared on this session (if it was not already)
        if len(attempts) == 1:
            conn.exec_driver_sql("DEALLOCATE ALL")  # as a pooler's DISCARD ALL would
        return READ.first(conn, {"k_id": 1})

    assert pg_store.write_alone(work) == ("one",)
    assert len(attempts) == 2


@pytest.mark.parametrize("encoding", ["UTF8", "LATIN1"])
def test_text_parameters_and_rows_keep_their_characters_in_the_sessions_encoding(pg_store, pg_url, encoding):
    insert_row = b"INSERT INTO committer_scratch (id, tag) VALUES ($1::INTEGER, $2::VARCHAR)"
    select_tag = b"SELECT tag FROM committer_scratch WHERE id = $1::INTEGER"
    url = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    with PgConnection.connect(url, client_encoding=encoding) as raw:
        raw.defer(insert_row, [1, "Crème brûlée"])
        (found,) = raw.run_all([(select_tag, [1])])
        assert raw.rows(found) == [("Crème brûlée",)]
        raw.rollback()


def test_a_write_the_store_cannot_take_fails_the_unit_that_issued_it_and_keeps_the_earlier_units_writes(pg_store):
    committer = committer_of(pg_store)

    def reads_then_defers(conn: Any) -> int:
        READ.first(conn, {"k_id": 1})  # a round trip before its write, which waits for the next one
        INSERT.send(conn, {"id": 1, "tag": "kept"})
        return 1

    def bad_value(conn: Any) -> None:
        INSERT.send(conn, {"id": 2, "tag": "cut\x00here"})

    with writer_held(committer):
        first = committer.submit(reads_then_defers)
        bad = committer.submit(bad_value)
    assert first.result() == 1
    assert isinstance(error_of(bad), DataError)
    assert stored(pg_store) == {1: "kept"}


def test_a_nul_character_in_a_parameter_is_refused_not_cut_short(pg_store, pg_url):
    url = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    with PgConnection.connect(url) as raw:
        with pytest.raises(errors.DataError):
            raw.run_all([(b"SELECT $1::VARCHAR", ["abc\x00xyz"])])
        (fine,) = raw.run_all([(b"SELECT $1::VARCHAR", ["abc"])])
        assert raw.rows(fine) == [("abc",)]
        raw.rollback()
