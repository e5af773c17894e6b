"""Group commit (storage/committer.py, Store.write) on both stores: every write is applied exactly once, a failing
unit fails alone and leaves no trace, lost races and failed commits are run again, nobody is answered before the
commit, units run in key order, and a unit cannot start another write.

Units are forced into one batch deterministically: a first unit occupies the writer thread, blocked on an Event,
while the others are submitted; they queue up and form the next batch when it is released.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from loyalty.domain.errors import InsufficientPoints, NotAMember, Unavailable
from loyalty.services import ledger, members, profiles, tokens
from loyalty.services.commands import AccrueCmd, BalanceCmd, RedeemCmd, RegisterCmd
from loyalty.services.runtime import Runtime
from loyalty.services.verify import verify_all
from loyalty.storage.committer import GroupCommitter
from loyalty.storage.prepared import Prepared
from loyalty.storage.tables import accounts, transactions
from loyalty.storage.tables import profiles as profiles_table
from loyalty.storage.uow import Store
from tests.conftest import make_runtime

ADMIN = tokens.Principal(1, "t", frozenset(tokens.ROLES), None, None)
WAIT = 30  # seconds; only ever reached when something is broken

scratch_md = MetaData()
scratch = Table("committer_scratch", scratch_md,
                Column("id", Integer, primary_key=True, autoincrement=False),
                Column("tag", String(40), nullable=False))
# A foreign key checked only at COMMIT, on both stores: the way to make a batch's commit fail.
scratch_child = Table("committer_scratch_child", scratch_md,
                      Column("id", Integer, primary_key=True, autoincrement=False),
                      Column("parent_id", Integer,
                             ForeignKey("committer_scratch.id", deferrable=True, initially="DEFERRED"),
                             nullable=False))


def reset_scratch(url: str, create: bool) -> None:
    """Drop (and create) the scratch tables on a connection of their own, with short lock waits and no retries:
    a writer left stuck by a regression must fail the tests, not hang the run."""
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 5} if sqlite else {})
    try:
        with engine.begin() as conn:
            if not sqlite:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            scratch_md.drop_all(conn)
            if create:
                scratch_md.create_all(conn)
    finally:
        engine.dispose()


@contextmanager
def scratch_store(url: str, writers: int = 0) -> Iterator[Store]:
    """A store with group commit on and two scratch tables of its own (dropped afterwards)."""
    reset_scratch(url, create=True)
    s = Store.from_url(url, group_commit=128, writers=writers)
    try:
        yield s
    finally:
        s.dispose()
        reset_scratch(url, create=False)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with scratch_store(store_url) as s:
        yield s


def committer_of(store: Store) -> GroupCommitter:
    store.write(lambda conn: None)  # the writer thread starts with the first write
    committer = store.committer
    assert committer is not None
    return committer


def put(conn: Any, row_id: int, tag: str = "x") -> int:
    conn.execute(insert(scratch).values(id=row_id, tag=tag))
    return row_id


def inserter(row_id: int, tag: str = "x") -> Callable[[Any], int]:
    return lambda conn: put(conn, row_id, tag)


def stored(store: Store) -> dict[int, str]:
    return dict(store.read(lambda conn: conn.execute(select(scratch.c.id, scratch.c.tag)).all()))


@contextmanager
def writer_held(committer: GroupCommitter) -> Iterator[None]:
    """Keep the writer thread busy with a blocked unit; what is submitted inside the block forms one batch."""
    started, release = threading.Event(), threading.Event()

    def block(conn: Any) -> str:
        started.set()
        assert release.wait(WAIT)
        return "blocker"

    blocker = committer.submit(block)
    assert started.wait(WAIT), "the writer thread never ran the blocking unit"
    try:
        yield
    finally:
        release.set()
    assert blocker.result(timeout=WAIT) == "blocker"


def error_of(future: Future[Any]) -> BaseException | None:
    return future.exception(timeout=WAIT)


def call_with_timeout(fn: Callable[[], Any]) -> Future[Any]:
    """Run fn on a daemon thread (so a deadlock fails the test instead of hanging the run)."""
    out: Future[Any] = Future()

    def run() -> None:
        try:
            out.set_result(fn())
        except BaseException as exc:
            out.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return out


# --- many writers ------------------------------------------------------------------------------------------------

def test_many_concurrent_raw_writes_are_each_applied_once_in_shared_batches(store):
    committer = committer_of(store)
    threads, each = 32, 20
    barrier = threading.Barrier(threads)

    def task(t: int) -> list[int]:
        barrier.wait(timeout=WAIT)
        return [store.write(inserter(t * 1000 + i, f"t{t}")) for i in range(each)]

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(task, range(threads)))

    expected = {t * 1000 + i: f"t{t}" for t in range(threads) for i in range(each)}
    assert [r for rs in results for r in rs] == list(expected)  # each caller got its own result
    assert stored(store) == expected  # every row once, none lost
    assert committer.units == threads * each + 1
    assert committer.batches < committer.units  # writes really shared transactions


def who(email: str) -> dict[str, Any]:
    return {"loyalty_program_id": 123, "matching": "email", "email": email}


def enrol(rt: Runtime, email: str, top_up: int = 0) -> None:
    profiles.add(rt, ADMIN, 1, {"email": email})
    members.register(rt, ADMIN, RegisterCmd(**who(email)))  # 50.00 stars on joining
    if top_up:
        ledger.accrue(rt, ADMIN, AccrueCmd(**who(email), amount=str(top_up)))


def active(rt: Runtime, email: str) -> str:
    return ledger.balance(rt, ADMIN, BalanceCmd(**who(email))).active


def txn_count(rt: Runtime) -> int:
    return rt.store.read(lambda conn: conn.execute(select(func.count()).select_from(transactions)).scalar_one())


def test_many_concurrent_accruals_are_each_applied_once_and_the_books_verify(rt, program):
    members_ = [f"m{k}@example.com" for k in range(8)]
    for email in members_:
        enrol(rt, email)
    before = txn_count(rt)
    threads, each = 32, 20
    barrier = threading.Barrier(threads)

    def task(t: int) -> list[str]:
        barrier.wait(timeout=WAIT)
        email = members_[t % len(members_)]
        return [ledger.accrue(rt, ADMIN, AccrueCmd(**who(email), amount="1.25")).transaction_id
                for _ in range(each)]

    with ThreadPoolExecutor(threads) as pool:
        ids = [i for ids in pool.map(task, range(threads)) for i in ids]

    assert len(set(ids)) == threads * each
    assert txn_count(rt) == before + threads * each
    per_member = threads // len(members_) * each  # 80 accruals of 1.25 each
    for email in members_:
        assert active(rt, email) == f"{50 + per_member * 1.25:.2f}"
    writers = rt.store.committers  # PostgreSQL has several, each member's writes going to one of them
    assert writers and sum(w.batches for w in writers) < sum(w.units for w in writers)
    report = verify_all(rt)
    assert not report.problems, report.problems
    assert report.accounts == len(members_)


# --- one unit fails, its neighbours do not ---------------------------------------------------------------------

def test_a_failing_unit_in_a_batch_leaves_no_trace_and_fails_alone(store):
    committer = committer_of(store)
    batches, units = committer.batches, committer.units

    def refuse(conn: Any) -> None:
        put(conn, 2, "refused")
        raise ValueError("refused")

    with writer_held(committer):
        first = committer.submit(inserter(1))
        failing = committer.submit(refuse)
        last = committer.submit(inserter(3))

    assert first.result(timeout=WAIT) == 1
    err = error_of(failing)
    assert isinstance(err, ValueError) and str(err) == "refused"
    assert last.result(timeout=WAIT) == 3
    assert stored(store) == {1: "x", 3: "x"}
    # The blocker, then one batch of 3. On PostgreSQL the refused unit's INSERT had reached the server, so the
    # batch was rolled back and its two other units ran again as a batch of their own (the refused one alone).
    again = (1, 2) if store.dialect == "postgresql" else (0, 0)
    assert (committer.batches - batches, committer.units - units) == (2 + again[0], 4 + again[1])


def test_a_unit_refused_before_its_writes_reached_the_store_costs_its_neighbours_nothing(store):
    """Writes through `Prepared.send` wait in PostgreSQL's queue (pipelined.py): a unit refused with all its
    writes still there is undone by dropping them, the batch is neither rolled back nor run again."""
    committer = committer_of(store)
    put_prepared = Prepared(insert(scratch), ["id", "tag"])
    batches, units = committer.batches, committer.units
    runs: list[int] = []

    def refuse(conn: Any) -> None:
        runs.append(1)
        put_prepared.send(conn, {"id": 2, "tag": "refused"})
        raise ValueError("refused")

    def deferred(row_id: int) -> Callable[[Any], int]:
        return lambda conn: put_prepared.send(conn, {"id": row_id, "tag": "x"}) or row_id

    with writer_held(committer):
        first = committer.submit(deferred(1))
        failing = committer.submit(refuse)
        last = committer.submit(deferred(3))

    assert (first.result(timeout=WAIT), last.result(timeout=WAIT)) == (1, 3)
    assert isinstance(error_of(failing), ValueError) and runs == [1]
    assert stored(store) == {1: "x", 3: "x"}
    assert (committer.batches - batches, committer.units - units) == (2, 4)


def test_a_unit_failing_on_a_store_error_in_a_batch_fails_alone(store):
    """A statement error aborts a PostgreSQL transaction; rolling back to the unit's savepoint must recover it."""
    committer = committer_of(store)
    runs: list[int] = []

    def broken(conn: Any) -> None:
        runs.append(1)
        put(conn, 2)
        conn.exec_driver_sql("SELECT * FROM committer_no_such_table")

    with writer_held(committer):
        first = committer.submit(inserter(1))
        failing = committer.submit(broken)
        last = committer.submit(inserter(3))

    assert isinstance(error_of(failing), DBAPIError)
    assert runs == [1]  # not a lost race: not run again
    assert (first.result(timeout=WAIT), last.result(timeout=WAIT)) == (1, 3)
    assert stored(store) == {1: "x", 3: "x"}


def test_a_refused_redemption_in_a_batch_leaves_no_trace_and_its_neighbours_commit(rt, program):
    enrol(rt, "ann@example.com", top_up=950)
    enrol(rt, "bob@example.com", top_up=950)
    before = txn_count(rt)
    committer = committer_of(rt.store)

    def move(kind: str, email: str, amount: str) -> Future[Any]:
        cmd = (AccrueCmd if kind == "accrual" else RedeemCmd)(**who(email), amount=amount)
        work, key = ledger._prepare_move(rt, ADMIN, cmd, kind)  # what ledger.accrue/redeem hand to Store.write
        return committer.submit(work, key)

    with writer_held(committer):
        ann_spends = move("redemption", "ann@example.com", "600")
        ann_overspends = move("redemption", "ann@example.com", "600")  # sees the first: 400 left
        bob_earns = move("accrual", "bob@example.com", "10")
        bob_overspends = move("redemption", "bob@example.com", "2000")
        ann_earns = move("accrual", "ann@example.com", "5")

    assert ann_spends.result(timeout=WAIT).balance == "400.00"
    assert isinstance(error_of(ann_overspends), InsufficientPoints)
    assert ann_earns.result(timeout=WAIT).balance == "405.00"
    assert bob_earns.result(timeout=WAIT).balance == "1010.00"
    assert isinstance(error_of(bob_overspends), InsufficientPoints)
    assert (active(rt, "ann@example.com"), active(rt, "bob@example.com")) == ("405.00", "1010.00")
    assert txn_count(rt) == before + 3  # the refused ones recorded nothing
    report = verify_all(rt)
    assert not report.problems, report.problems


def test_a_unit_refused_after_its_writes_reached_the_store_leaves_no_trace_and_the_rest_is_decided_again(store):
    """On PostgreSQL a unit refused once a write of it went out (no savepoint to roll back to) rolls the batch
    back: its neighbours run again as a batch, refusals included (the state they saw never became durable), and
    the refused unit runs again alone for its final answer. SQLite rolls back to the unit's savepoint instead."""
    committer = committer_of(store)
    runs = {"a": 0, "refuses": 0, "exposed": 0, "b": 0}

    def unit_a(conn: Any) -> str:
        runs["a"] += 1
        return f"a{runs['a']}" if put(conn, 1, "a") else ""

    def refuses(conn: Any) -> None:
        runs["refuses"] += 1
        raise ValueError("refused before writing")

    def exposed(conn: Any) -> None:
        runs["exposed"] += 1
        put(conn, 2, "exposed")
        raise ValueError("refused after writing")

    def unit_b(conn: Any) -> str:
        runs["b"] += 1
        return f"b{runs['b']}" if put(conn, 3, "b") else ""

    with writer_held(committer):
        futures = [committer.submit(fn) for fn in (unit_a, refuses, exposed, unit_b)]

    fa, fr, fe, fb = futures
    again = 2 if store.dialect == "postgresql" else 1  # b had not run yet when the batch was rolled back
    assert (fa.result(timeout=WAIT), fb.result(timeout=WAIT)) == (f"a{again}", "b1")
    assert str(error_of(fr)) == "refused before writing" and str(error_of(fe)) == "refused after writing"
    assert runs == {"a": again, "refuses": again, "exposed": again, "b": 1}
    assert stored(store) == {1: "a", 3: "b"}
    assert store.write(inserter(4)) == 4  # and the writer carries on


def test_a_move_for_a_profile_that_is_not_a_member_is_refused_without_writing_and_costs_its_batch_nothing(
        rt, program):
    """No account is created for a non-member before the refusal: on PostgreSQL that write would have rolled the
    whole batch back and run its neighbours again."""
    enrol(rt, "ann@example.com")
    profiles.add(rt, ADMIN, 1, {"email": "stranger@example.com"})
    committer = committer_of(rt.store)
    batches, units = committer.batches, committer.units

    def move(email: str) -> Future[Any]:
        work, key = ledger._prepare_move(rt, ADMIN, AccrueCmd(**who(email), amount="5"), "accrual")
        return committer.submit(work, key)

    with writer_held(committer):
        ann = move("ann@example.com")
        stranger = move("stranger@example.com")
        ann_again = move("ann@example.com")

    assert isinstance(error_of(stranger), NotAMember)
    assert (ann.result(timeout=WAIT).balance, ann_again.result(timeout=WAIT).balance) == ("55.00", "60.00")
    assert (committer.batches - batches, committer.units - units) == (2, 4)  # the blocker, then one batch of 3
    strangers_accounts = select(func.count()).select_from(accounts).where(accounts.c.profile_id.in_(
        select(profiles_table.c.id).where(profiles_table.c.email == "stranger@example.com")))
    assert rt.store.read(lambda conn: conn.execute(strangers_accounts).scalar_one()) == 0


# --- lost races are run again ----------------------------------------------------------------------------------

def _duplicate_key(conn: Any) -> None:
    put(conn, 1, "taken")  # row 1 exists: a real IntegrityError from the store


def _database_is_locked(conn: Any) -> None:
    raise OperationalError("INSERT INTO committer_scratch ...", {}, sqlite3.OperationalError("database is locked"))


@pytest.mark.parametrize("lose", [_duplicate_key, _database_is_locked], ids=["integrity_error", "database_locked"])
@pytest.mark.parametrize("in_batch", [True, False], ids=["in_a_batch", "alone"])
def test_a_unit_that_lost_a_race_is_run_again_and_its_caller_gets_the_second_result(store, lose, in_batch):
    committer = committer_of(store)
    store.write(inserter(1, "first"))
    runs: list[int] = []

    def racy(conn: Any) -> str:
        runs.append(1)
        put(conn, 100 + len(runs), f"run {len(runs)}")  # written before the failure: must be rolled back
        if len(runs) == 1:
            lose(conn)
        return f"run {len(runs)}"

    if in_batch:
        with writer_held(committer):
            before = committer.submit(inserter(2))
            racing = committer.submit(racy)
            after = committer.submit(inserter(3))
        assert (before.result(timeout=WAIT), after.result(timeout=WAIT)) == (2, 3)
    else:
        racing = committer.submit(racy)

    assert racing.result(timeout=WAIT) == "run 2"
    assert len(runs) == 2
    expected = {1: "first", 102: "run 2"} | ({2: "x", 3: "x"} if in_batch else {})
    assert stored(store) == expected  # run 1's row left no trace


@pytest.mark.parametrize("in_batch", [True, False], ids=["in_a_batch", "alone"])
def test_a_unit_that_lost_a_race_on_a_prepared_statement_is_run_again(store, in_batch):
    """The hot-path statements (storage/prepared.py) lose races like any other: a unique key taken by a
    concurrent writer must be retried like the same INSERT through Connection.execute is."""
    committer = committer_of(store)
    store.write(inserter(1, "first"))
    put_prepared = Prepared(insert(scratch), ["id", "tag"])
    runs: list[int] = []

    def racy(conn: Any) -> str:
        runs.append(1)
        put_prepared.run(conn, {"id": 1 if len(runs) == 1 else 2, "tag": f"run {len(runs)}"})
        return f"run {len(runs)}"

    if in_batch:
        with writer_held(committer):
            neighbour = committer.submit(inserter(3))
            racing = committer.submit(racy)
        assert neighbour.result(timeout=WAIT) == 3
    else:
        racing = committer.submit(racy)
    err = error_of(racing)
    assert err is None, f"{type(err).__module__}.{type(err).__name__}: {err}"
    assert racing.result() == "run 2" and len(runs) == 2
    assert stored(store)[2] == "run 2"


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # SQLite has one writer: no such race
def test_two_processes_opening_the_same_new_account_at_once_both_succeed(rt, program, store_url, clock):
    """ledger_repo.lock_account: "A concurrent creator makes this insert fail; the unit of work retries and the
    SELECT then finds the row." Process A's first status_points accrual for ann has inserted her account and not
    committed yet; process B's accrual for her finds no row, inserts too and waits on A's key; A commits."""
    profiles.add(rt, ADMIN, 1, {"email": "ann@example.com"})
    members.register(rt, ADMIN, RegisterCmd(**who("ann@example.com")))  # no status_points account yet
    other = make_runtime(store_url, clock)
    try:
        cmd = AccrueCmd(**who("ann@example.com"), amount="7", points_currency_eid="status_points")
        work, key = ledger._prepare_move(rt, ADMIN, cmd, "accrual")
        opened, release = threading.Event(), threading.Event()

        def first_use(conn: Any) -> Any:
            result = work(conn)  # creates the account row, uncommitted
            opened.set()
            assert release.wait(WAIT)
            return result

        committer = committer_of(rt.store)
        a = committer.submit(first_use, key)
        assert opened.wait(WAIT)
        try:
            b = call_with_timeout(lambda: ledger.accrue(other, ADMIN, cmd.model_copy(update={"amount": "5"})))
            assert wait_for_a_lock_wait(rt), "process B never waited on process A's account row"
        finally:
            release.set()
        assert a.result(timeout=WAIT).balance == "7"
        err = b.exception(timeout=WAIT)
        assert err is None, f"{type(err).__module__}.{type(err).__name__}: {err}"
        assert b.result().balance == "12"
        assert ledger.balance(rt, ADMIN, BalanceCmd(**who("ann@example.com"), points_currency_eid="status_points")
                              ).active == "12"
        report = verify_all(rt)
        assert not report.problems, report.problems
    finally:
        other.close()


def wait_for_a_lock_wait(rt: Runtime) -> bool:
    """Whether some session of this database is waiting for a lock, within WAIT seconds."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                 "AND datname = current_database()")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if rt.store.read(lambda conn: conn.execute(query).scalar_one()):
            return True
        time.sleep(0.01)
    return False


def test_when_the_commit_fails_every_unit_of_the_batch_runs_again_alone(store):
    """A deferred foreign key is checked at COMMIT: the batch's commit fails, nothing of it is durable, and every
    unit runs again on its own, a refused one too (the state it was refused on never became durable)."""
    committer = committer_of(store)
    runs = {"a": 0, "culprit": 0, "refused": 0, "b": 0}

    def unit_a(conn: Any) -> str:
        runs["a"] += 1
        put(conn, 1, "a")
        return f"a{runs['a']}"

    def culprit(conn: Any) -> str:
        runs["culprit"] += 1
        parent = 999 if runs["culprit"] == 1 else 1  # no row 999: the commit of the first run fails
        conn.execute(insert(scratch_child).values(id=10, parent_id=parent))
        return f"culprit{runs['culprit']}"

    def refused(conn: Any) -> None:
        runs["refused"] += 1
        # A write still queued when the unit is refused (PostgreSQL): the batch goes on to its commit.
        Prepared(insert(scratch), ["id", "tag"]).send(conn, {"id": 3, "tag": "refused"})
        raise ValueError("refused")

    def unit_b(conn: Any) -> str:
        runs["b"] += 1
        put(conn, 2, "b")
        return f"b{runs['b']}"

    with writer_held(committer):
        fa = committer.submit(unit_a)
        fc = committer.submit(culprit)
        fr = committer.submit(refused)
        fb = committer.submit(unit_b)

    assert fa.result(timeout=WAIT) == "a2"
    assert fb.result(timeout=WAIT) == "b2"
    assert fc.result(timeout=WAIT) == "culprit2"
    assert isinstance(error_of(fr), ValueError)
    assert runs == {"a": 2, "culprit": 2, "refused": 2, "b": 2}
    assert stored(store) == {1: "a", 2: "b"}  # each once: the failed batch left nothing behind
    children = store.read(lambda conn: conn.execute(select(scratch_child.c.id, scratch_child.c.parent_id)).all())
    assert [tuple(r) for r in children] == [(10, 1)]
    assert store.write(inserter(4)) == 4  # and the writer carries on


# --- nothing is answered before the commit --------------------------------------------------------------------

def test_no_unit_is_answered_before_its_batch_commits(store):
    committer = committer_of(store)
    late_started, late_release = threading.Event(), threading.Event()

    def late(conn: Any) -> int:
        late_started.set()
        assert late_release.wait(WAIT)
        return put(conn, 2)

    try:
        with writer_held(committer):
            early = committer.submit(inserter(1))
            slow = committer.submit(late)
        assert late_started.wait(WAIT)
        # `early` has run in this batch, but the batch has not committed: no answer yet, nothing visible.
        assert not early.done()
        assert stored(store) == {}
    finally:
        late_release.set()
    assert (early.result(timeout=WAIT), slow.result(timeout=WAIT)) == (1, 2)
    assert stored(store) == {1: "x", 2: "x"}


# --- order -----------------------------------------------------------------------------------------------------

def test_units_with_a_key_run_in_key_order_within_a_batch_and_the_others_after_in_arrival_order(store):
    committer = committer_of(store)
    ran: list[Any] = []

    def note(label: Any) -> Callable[[Any], Any]:
        def work(conn: Any) -> Any:
            ran.append(label)
            return label
        return work

    submitted = [((2, "b"), (2, "b")), ("none-1", None), ((1, "z"), (1, "z")), ((1, "a"), (1, "a")),
                 ("none-2", None), ((1, "z-again"), (1, "z"))]
    with writer_held(committer):
        futures = [committer.submit(note(label), key) for label, key in submitted]
    assert [f.result(timeout=WAIT) for f in futures] == [label for label, _ in submitted]
    assert ran == [(1, "a"), (1, "z"), (1, "z-again"), (2, "b"), "none-1", "none-2"]


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)  # SQLite has one writer: no row locks
def test_batches_of_two_processes_lock_rows_in_key_order_and_never_deadlock(store_url, store):
    """On PostgreSQL, Process 1 submits units for rows 1 then 2, process 2 for rows 2 then 1, both batches at once. Each unit locks
    its row (an UPDATE); taken in key order, the second batch waits for the first instead of deadlocking, so no
    unit is ever rolled back and run again."""
    store.write(lambda conn: [put(conn, 1, ""), put(conn, 2, "")])
    other = Store.from_url(store_url, group_commit=128)
    try:
        committers = [committer_of(store), committer_of(other)]
        runs: dict[tuple[str, int], int] = {}

        def touch(process: str, row_id: int) -> Callable[[Any], str]:
            def work(conn: Any) -> str:
                runs[(process, row_id)] = runs.get((process, row_id), 0) + 1
                conn.execute(scratch.update().where(scratch.c.id == row_id).values(tag=scratch.c.tag + process))
                return f"{process}{row_id}"
            return work

        with writer_held(committers[0]), writer_held(committers[1]):
            futures = [committers[0].submit(touch("p", 1), 1), committers[0].submit(touch("p", 2), 2),
                       committers[1].submit(touch("q", 2), 2), committers[1].submit(touch("q", 1), 1)]
        assert [f.result(timeout=WAIT) for f in futures] == ["p1", "p2", "q2", "q1"]
        assert runs == {("p", 1): 1, ("p", 2): 1, ("q", 2): 1, ("q", 1): 1}
        assert sorted(stored(store)[k] for k in (1, 2)) in (["pq", "pq"], ["qp", "qp"])  # one batch after the other
    finally:
        other.dispose()


def test_a_batch_takes_at_most_group_commit_units(store_url, store):
    small = Store.from_url(store_url, group_commit=2)
    try:
        committer = committer_of(small)
        batches, units = committer.batches, committer.units
        with writer_held(committer):
            futures = [committer.submit(inserter(i)) for i in range(1, 6)]
        assert [f.result(timeout=WAIT) for f in futures] == [1, 2, 3, 4, 5]
        assert (committer.batches - batches, committer.units - units) == (4, 6)  # the blocker, then 2 + 2 + 1
        assert stored(small) == {i: "x" for i in range(1, 6)}
    finally:
        small.dispose()


def test_stopping_the_writer_answers_every_unit_already_queued(store):
    committer = committer_of(store)
    with writer_held(committer):
        futures = [committer.submit(inserter(i)) for i in range(1, 4)]
        stopping = call_with_timeout(committer.stop)  # waits for the writer thread to finish
    assert stopping.result(timeout=WAIT) is None
    assert [f.result(timeout=WAIT) for f in futures] == [1, 2, 3]
    assert stored(store) == {1: "x", 2: "x", 3: "x"}
    with pytest.raises(RuntimeError):
        committer.submit(inserter(4))


# --- a unit may not start another write --------------------------------------------------------------------------

@pytest.mark.parametrize("in_batch", [True, False], ids=["in_a_batch", "alone"])
def test_a_unit_starting_another_write_gets_runtime_error_not_a_deadlock(store, in_batch):
    committer = committer_of(store)

    def nested(conn: Any) -> int:
        put(conn, 1, "outer")
        return store.write(inserter(2, "inner"))

    if in_batch:
        with writer_held(committer):
            before = committer.submit(inserter(3))
            outcome = committer.submit(nested)
            after = committer.submit(inserter(4))
        assert (before.result(timeout=WAIT), after.result(timeout=WAIT)) == (3, 4)
    else:
        outcome = call_with_timeout(lambda: store.write(nested))  # the caller's own path, through Store.write

    err = outcome.exception(timeout=WAIT)  # a deadlock would time out here
    assert isinstance(err, RuntimeError), err
    assert stored(store) == ({3: "x", 4: "x"} if in_batch else {})  # the outer unit's row was rolled back
    assert store.write(inserter(5)) == 5  # the writer thread is still alive


# --- without group commit --------------------------------------------------------------------------------------

def test_without_group_commit_writes_commit_on_their_own(store_url):
    reset_scratch(store_url, create=True)
    store = Store.from_url(store_url, group_commit=0)
    try:
        threads, each = 8, 10
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda t: [store.write(inserter(t * 100 + i)) for i in range(each)], range(threads)))

        def refuse(conn: Any) -> None:
            put(conn, 9999)
            raise ValueError("refused")

        with pytest.raises(ValueError):
            store.write(refuse)
        with pytest.raises(IntegrityError):  # not a lost race when it happens every time: it surfaces
            store.write(inserter(0))
        assert store.committer is None  # no writer thread was started
        assert stored(store) == {t * 100 + i: "x" for t in range(threads) for i in range(each)}
    finally:
        store.dispose()
        reset_scratch(store_url, create=False)


def test_a_batch_whose_connection_dies_answers_unavailable_and_is_not_run_again(store):
    """The outcome of a transaction whose connection died is unknown to the writer, so its units are not run
    again blindly (a write without an eid would apply twice): every caller gets 503, and the store goes on."""
    if store.dialect != "postgresql":
        pytest.skip("a server session to terminate is PostgreSQL's")
    committer = committer_of(store)

    def die(conn: Any) -> None:
        conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    with writer_held(committer):
        futures = [committer.submit(inserter(1)), committer.submit(die), committer.submit(inserter(3))]

    for future in futures:
        assert isinstance(error_of(future), Unavailable)
    assert stored(store) == {}  # the dead transaction left nothing
    assert store.write(inserter(4)) == 4  # and the writer goes on with a fresh connection
