"""Membership: register_member and delete_member (altcraft-api.md §5.1–5.2)."""

from __future__ import annotations

from sqlalchemy import Connection

from loyalty.domain.dates import lifetime_expiry, parse_datetime
from loyalty.domain.errors import InvalidParameter, NotAMember
from loyalty.domain.model import Txn
from loyalty.services import tiers
from loyalty.services.book import Book
from loyalty.services.commands import DeleteCmd, RegisterCmd
from loyalty.services.ids import new_txn_id
from loyalty.services.lookup import MatchQuery, database_for_program, find_profile_id, program_for
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal
from loyalty.storage import catalog_repo, members_repo


def _find(conn: Connection, principal: Principal, cmd: RegisterCmd | DeleteCmd, for_write: bool) -> tuple[int, str]:
    """The program (with the token's access) and the matched profile of a membership request."""
    program = program_for(conn, principal, cmd.loyalty_program_id, for_write=for_write)
    database = database_for_program(conn, program)
    return program.id, find_profile_id(conn, database, MatchQuery.from_params(cmd.lookup()))


def register(rt: Runtime, principal: Principal, cmd: RegisterCmd) -> str:
    """Enrol the matched profile; idempotent. The first enrolment ever credits each initial balance."""
    principal.require("loyalty:write")
    now = rt.clock.now()
    registered_at = parse_datetime(cmd.registration_date, "registration_date") if cmd.registration_date else now
    if registered_at > now:
        raise InvalidParameter("registration_date", "must not be in the future")

    program_id, profile_id = rt.store.read(lambda conn: _find(conn, principal, cmd, for_write=True))

    def work(conn: Connection) -> str:
        member = members_repo.get(conn, program_id, profile_id, lock=True)
        if member is not None:
            if member.status != "active":
                members_repo.set_status(conn, program_id, profile_id, "active", registered_at)
                tiers.evaluate_member(conn, program_id, profile_id, rt.clock.now())
            return profile_id
        members_repo.insert_member(conn, program_id, profile_id, registered_at)
        for currency in catalog_repo.program_currencies(conn, program_id):
            if currency.initial_balance <= 0:
                continue
            book = Book.open(conn, program_id, profile_id, currency, rt.clock.now())
            txn = Txn(
                id=new_txn_id(), program_id=program_id, profile_id=profile_id, currency_iid=currency.iid, eid=None,
                type="initial", status="committed", amount=currency.initial_balance, balance_before=book.a.active,
                balance_after=book.a.active, created_at=book.now, recorded_at=book.now, source_type="system",
                description="Initial balance",
            )
            expiry = lifetime_expiry(currency.lifetime_kind, currency.lifetime_n, book.now)
            book.add_lot(txn.id, txn.amount, book.now, expiry)
            txn.balance_after = book.a.active
            txn.activation_date, txn.expiration_date = book.now, expiry
            book.record(txn)
            book.finish()
        # Tiers with threshold 0 are reached at registration.
        tiers.evaluate_member(conn, program_id, profile_id, rt.clock.now())
        return profile_id

    return rt.store.write(work, (program_id, profile_id))  # the member whose rows it locks


def delete(rt: Runtime, principal: Principal, cmd: DeleteCmd) -> str:
    """Remove the membership; each account's remaining points are forfeited. History is kept."""
    principal.require("loyalty:write")

    program_id, profile_id = rt.store.read(lambda conn: _find(conn, principal, cmd, for_write=False))

    def work(conn: Connection) -> str:
        member = members_repo.get(conn, program_id, profile_id, lock=True)
        if member is None or member.status != "active":
            raise NotAMember(f"Profile {profile_id} is not a member of program {program_id}")
        now = rt.clock.now()
        for currency in catalog_repo.program_currencies(conn, program_id):  # ascending iid: fixed lock order
            book = Book.open(conn, program_id, profile_id, currency, now)
            book.settle()
            before = book.a.active
            txn_id = new_txn_id()
            amount = book.forfeit(txn_id)
            if amount or before:
                book.record(Txn(
                    id=txn_id, program_id=program_id, profile_id=profile_id, currency_iid=currency.iid, eid=None,
                    type="forfeit", status="committed", amount=amount, balance_before=before,
                    balance_after=book.a.active, created_at=now, recorded_at=now, source_type="system",
                    description="Membership removed",
                ))
            book.finish()
        members_repo.set_status(conn, program_id, profile_id, "removed", now)
        return profile_id

    return rt.store.write(work, (program_id, profile_id))  # the member whose rows it locks
