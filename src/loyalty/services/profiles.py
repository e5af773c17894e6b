"""Profiles: the store that matching searches (altcraft-api.md §6)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from loyalty.domain.dates import format_datetime, parse_datetime
from loyalty.domain.errors import (
    AmbiguousMatch,
    DuplicateProfile,
    InvalidParameter,
    MissingParameter,
    ProfileNotFound,
)
from loyalty.domain.matching import check_email, coerce_field, lookup_text, normalise_email, normalise_phone
from loyalty.domain.model import Database, Profile
from loyalty.services.ids import new_profile_id
from loyalty.services.lookup import MatchQuery, database_for, matching_ids
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal
from loyalty.storage import profiles_repo

SYSTEM_FIELDS = ("_fname", "_lname", "_regdate")
READ_ONLY = ("_createtime", "id", "db_id")


@dataclass(frozen=True)
class ProfileWrite:
    db_id: int
    data: dict[str, Any]
    matching: str | None = None
    lookup: dict[str, Any] | None = None


def add(rt: Runtime, principal: Principal, db_id: int, data: dict[str, Any]) -> str:
    principal.require("profiles:write")

    def work(conn: Connection) -> str:
        database = database_for(conn, principal, db_id)
        profile = Profile(new_profile_id(), db_id, None, [], None, None, None, rt.clock.now())
        _apply_data(profile, database, data)
        _save(conn, database, profile, is_new=True, now=rt.clock.now())
        return profile.id

    return rt.store.write(work)


def import_(rt: Runtime, principal: Principal, db_id: int, params: dict[str, Any], data: dict[str, Any],
            create: bool) -> str:
    """Update the matched profile; when none matches, create one (import) or fail (update)."""
    principal.require("profiles:write")
    query = MatchQuery.from_params(params, default="email")

    def work(conn: Connection) -> str:
        database = database_for(conn, principal, db_id)
        ids = matching_ids(conn, database, query)
        if len(ids) > 1:
            raise AmbiguousMatch("More than one profile matches the lookup")
        now = rt.clock.now()
        if ids:
            profile = profiles_repo.get(conn, db_id, ids[0])
            assert profile is not None
            _apply_data(profile, database, data)
            _save(conn, database, profile, is_new=False, now=now)
            return profile.id
        if not create:
            raise ProfileNotFound("No profile matches the lookup")
        profile = Profile(new_profile_id(), db_id, None, [], None, None, None, now)
        # The lookup value is part of the new profile unless `data` sets that field itself.
        seeded = dict(data)
        if query.matching == "email":
            seeded.setdefault("email", query.values["email"])
        elif query.matching == "phone" and "phones" not in seeded and "phone" not in seeded:
            seeded["phones"] = [query.values["phone"]]
        elif query.matching == "custom":
            seeded.setdefault(query.values["field_name"], query.values["field_value"])
        _apply_data(profile, database, seeded)
        _save(conn, database, profile, is_new=True, now=now)
        return profile.id

    return rt.store.write(work)


def get(rt: Runtime, principal: Principal, db_id: int, params: dict[str, Any]) -> dict[str, Any]:
    principal.require("profiles:write", "loyalty:read")
    query = MatchQuery.from_params(params, default="email")

    def work(conn: Connection) -> dict[str, Any]:
        database = database_for(conn, principal, db_id)
        ids = matching_ids(conn, database, query)
        if not ids:
            raise ProfileNotFound("No profile matches the lookup")
        if len(ids) > 1:
            raise AmbiguousMatch("More than one profile matches the lookup")
        profile = profiles_repo.get(conn, db_id, ids[0])
        assert profile is not None
        return render(profile, database)

    return rt.store.read(work)


def render(profile: Profile, database: Database) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": profile.id,
        "db_id": profile.db_id,
        "email": profile.email,
        "phones": list(profile.phones),
        "_fname": profile.fname,
        "_lname": profile.lname,
        "_regdate": format_datetime(profile.regdate),
        "_createtime": format_datetime(profile.created_at),
    }
    for name, field in database.fields.items():
        value = profile.custom.get(name)
        if value is not None and field.type == "float":
            value = Decimal(value)
        out[name] = value
    return out


def _apply_data(profile: Profile, database: Database, data: dict[str, Any]) -> None:
    if not isinstance(data, dict):
        raise InvalidParameter("data", "must be an object")
    problems: list[str] = []
    for key, value in data.items():
        try:
            _apply_field(profile, database, key, value)
        except InvalidParameter as exc:
            problems.append(exc.message)
    if problems:
        raise InvalidParameter("data", "; ".join(problems))


# Column sizes of the profiles tables (storage/tables.py): longer values are refused, never truncated.
MAX_EMAIL, MAX_NAME, MAX_VALUE = 320, 200, 500


def _check_length(name: str, value: Any, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        raise InvalidParameter(f"data.{name}", f"is longer than {limit} characters")


def _apply_field(profile: Profile, database: Database, key: str, value: Any) -> None:
    _check_length(key, value, {"email": MAX_EMAIL, "_fname": MAX_NAME, "_lname": MAX_NAME}.get(key, MAX_VALUE))
    if key == "email":
        profile.email = check_email(value, "data.email") if value not in (None, "") else None
    elif key in ("phones", "phone"):
        items = value if isinstance(value, list) else ([] if value in (None, "") else [value])
        profile.phones = [normalise_phone(v, f"data.{key}") for v in items]
    elif key in ("_fname", "_lname"):
        if value is not None and not isinstance(value, (str, int)):
            raise InvalidParameter(f"data.{key}", "must be a string")
        setattr(profile, key[1:], None if value is None else str(value))
    elif key == "_regdate":
        profile.regdate = None if value in (None, "") else parse_datetime(value, "data._regdate")
    elif key in READ_ONLY:
        pass  # echoed back by clients that send a fetched profile; not writable
    elif key in database.fields:
        field = database.fields[key]
        typed = coerce_field(field, value)
        profile.custom[key] = str(typed) if isinstance(typed, Decimal) else typed
        if typed is None:
            profile.custom.pop(key, None)
    else:
        raise InvalidParameter(f"data.{key}", f"database {database.id} has no field {key!r}")


def _save(conn: Connection, database: Database, profile: Profile, is_new: bool, now: Any) -> None:
    email_norm = normalise_email(profile.email) if profile.email else None
    if email_norm:
        owners = [i for i in profiles_repo.ids_by_email(conn, database.id, email_norm) if i != profile.id]
        if owners:
            raise DuplicateProfile(f"A profile with email {profile.email} already exists")
    values: dict[str, str] = {}
    for name, field in database.fields.items():
        if name in profile.custom:
            value = profile.custom[name]
            text = lookup_text(field, Decimal(value) if field.type == "float" else value)
            values[name] = text
            if field.unique:
                owners = [i for i in profiles_repo.ids_by_value(conn, database.id, name, text, 3) if i != profile.id]
                if owners:
                    raise DuplicateProfile(f"A profile with {name} = {text} already exists")
    profiles_repo.save(conn, profile, email_norm, list(profile.phones), values, now, is_new)


def require_data(params: dict[str, Any]) -> dict[str, Any]:
    data = params.get("data")
    if data is None:
        raise MissingParameter("data")
    if not isinstance(data, dict):
        raise InvalidParameter("data", "must be an object")
    return data
