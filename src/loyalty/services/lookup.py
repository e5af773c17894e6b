"""Resolving what a request names: program (with the token's access), currency, profile, member."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from loyalty.domain.errors import (
    AmbiguousMatch,
    CurrencyNotFound,
    DatabaseNotFound,
    Forbidden,
    InvalidParameter,
    MissingParameter,
    NotAMember,
    ProfileNotFound,
    ProgramInactive,
    ProgramNotFound,
)
from loyalty.domain.matching import (
    check_profile_id,
    match_value_text,
    normalise_email,
    normalise_phone,
    require_lookup,
)
from loyalty.domain.model import Currency, Database, Member, Program
from loyalty.services.tokens import Principal
from loyalty.storage import catalog_repo, members_repo, profiles_repo


@dataclass(frozen=True)
class MatchQuery:
    matching: str
    values: dict[str, Any]

    @classmethod
    def from_params(cls, params: dict[str, Any], default: str | None = None, implicit: bool = False) -> MatchQuery:
        matching = params.get("matching") or default
        if matching is None and not implicit:
            raise MissingParameter("matching")
        if matching is None:
            # preorder_commit finds the member by profile_id, email or phone without `matching`.
            for mode in ("profile_id", "email", "phone"):
                if params.get(mode):
                    matching = mode
                    break
            else:
                raise MissingParameter("matching")
        if not isinstance(matching, str):
            raise InvalidParameter("matching", "must be a string")
        return cls(matching, require_lookup(params, matching))


def program_for(conn: Connection, principal: Principal, program_id: int, for_write: bool) -> Program:
    program = catalog_repo.snapshot(conn).programs.get(program_id)
    if program is None:
        if principal.programs is not None:
            raise Forbidden(f"This token may not use program {program_id}")
        raise ProgramNotFound(f"Loyalty program {program_id} not found")
    if not principal.may_program(program_id):
        raise Forbidden(f"This token may not use program {program_id}")
    if for_write and program.status != "active":
        raise ProgramInactive(f"Loyalty program {program_id} is archived")
    return program


def currency_for(conn: Connection, program: Program, iid: int | None, eid: str | None,
                 required: bool = False) -> Currency:
    all_currencies = catalog_repo.snapshot(conn).currencies.get(program.id, ())
    by_iid = next((c for c in all_currencies if c.iid == iid), None) if iid is not None else None
    by_eid = next((c for c in all_currencies if c.eid == eid), None) if eid is not None else None
    if iid is not None and eid is not None:
        if by_iid is None or by_eid is None:
            raise CurrencyNotFound(f"Points currency {iid if by_iid is None else eid!r} not found in the program")
        if by_iid is not by_eid:
            raise InvalidParameter("points_currency_eid", "names a different currency than points_currency_iid")
        return by_iid
    if iid is not None:
        if by_iid is None:
            raise CurrencyNotFound(f"Points currency {iid} not found in program {program.id}")
        return by_iid
    if eid is not None:
        if by_eid is None:
            raise CurrencyNotFound(f"Points currency {eid!r} not found in program {program.id}")
        return by_eid
    if required:
        raise MissingParameter("points_currency_iid or points_currency_eid")
    default = next((c for c in all_currencies if c.is_default), all_currencies[0] if all_currencies else None)
    if default is None:
        raise CurrencyNotFound(f"Program {program.id} has no points currency")
    return default


def database_for(conn: Connection, principal: Principal, db_id: int) -> Database:
    catalog = catalog_repo.snapshot(conn)
    database = catalog.databases.get(db_id)
    if database is None:
        raise DatabaseNotFound(f"Database {db_id} not found")
    program_dbs: set[int] = set()
    if principal.programs is not None:
        program_dbs = {p.db_id for p in catalog.programs.values() if p.id in principal.programs}
    if not principal.may_database(db_id, program_dbs):
        raise Forbidden(f"This token may not use database {db_id}")
    return database


def database_for_program(conn: Connection, program: Program) -> Database:
    database = catalog_repo.snapshot(conn).databases.get(program.db_id)
    if database is None:
        raise DatabaseNotFound(f"Database {program.db_id} of program {program.id} not found")
    return database


def find_profile_id(conn: Connection, database: Database, query: MatchQuery) -> str:
    ids = matching_ids(conn, database, query)
    if not ids:
        raise ProfileNotFound("No profile matches the lookup")
    if len(ids) > 1:
        raise AmbiguousMatch("More than one profile matches the lookup")
    return ids[0]


def matching_ids(conn: Connection, database: Database, query: MatchQuery) -> list[str]:
    v = query.values
    if query.matching == "email":
        if not isinstance(v["email"], str):
            raise InvalidParameter("email", "must be a string")
        return profiles_repo.ids_by_email(conn, database.id, normalise_email(v["email"]))
    if query.matching == "phone":
        return profiles_repo.ids_by_phone(conn, database.id, normalise_phone(v["phone"]))
    if query.matching == "profile_id":
        profile_id = check_profile_id(v["profile_id"])
        return [profile_id] if profiles_repo.exists(conn, database.id, profile_id) else []
    name, value = v["field_name"], v["field_value"]
    if not isinstance(name, str):
        raise InvalidParameter("field_name", "must be a string")
    field = database.fields.get(name)
    if field is None:
        raise InvalidParameter("field_name", f"database {database.id} has no custom field {name!r}")
    if isinstance(value, (dict, list)):
        raise InvalidParameter("field_value", "must be a string or an integer")
    return profiles_repo.ids_by_value(conn, database.id, name, match_value_text(field, value))


def active_member(conn: Connection, program_id: int, profile_id: str) -> Member:
    return require_active(members_repo.get(conn, program_id, profile_id), program_id, profile_id)


def require_active(member: Member | None, program_id: int, profile_id: str) -> Member:
    if member is None or member.status != "active":
        raise NotAMember(f"Profile {profile_id} is not a member of program {program_id}")
    return member
