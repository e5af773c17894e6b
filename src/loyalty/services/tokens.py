"""API tokens: created once and shown once, stored as a SHA-256 hash, checked in constant time, scoped.

Roles: `loyalty:read`, `loyalty:write` (implies read), `profiles:write`, `admin` (everything). A token may be
limited to programs and databases; a program's database is reachable by a token scoped to the program.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

from loyalty.domain.errors import Forbidden, InvalidParameter, ProgramNotFound, TokenInvalid
from loyalty.services.runtime import Runtime
from loyalty.storage import catalog_repo, counters_repo, tokens_repo

ROLES = ("loyalty:read", "loyalty:write", "profiles:write", "admin")
_IMPLIED = {"loyalty:write": {"loyalty:read"}, "admin": set(ROLES)}
PREFIX = "lty_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    roles: frozenset[str]
    programs: frozenset[int] | None  # None: every program
    databases: frozenset[int] | None

    def has(self, role: str) -> bool:
        return role in self.roles

    def require(self, *any_of: str) -> None:
        if not any(r in self.roles for r in any_of):
            raise Forbidden(f"This token lacks the role {' or '.join(any_of)}")

    def may_program(self, program_id: int) -> bool:
        return self.programs is None or program_id in self.programs

    def may_database(self, db_id: int, program_dbs: set[int]) -> bool:
        if self.databases is None and self.programs is None:
            return True
        return (self.databases is not None and db_id in self.databases) or db_id in program_dbs


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    roles: list[str]
    programs: list[int] | None
    databases: list[int] | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _expand(roles: list[str]) -> frozenset[str]:
    out = set(roles)
    for role in roles:
        out |= _IMPLIED.get(role, set())
    return frozenset(out)


def create(rt: Runtime, name: str, roles: list[str], programs: list[int] | None = None,
           databases: list[int] | None = None) -> tuple[str, TokenInfo]:
    """Create a token; return the raw value (shown once) and its record."""
    if not name.strip():
        raise InvalidParameter("name", "must not be empty")
    bad = [r for r in roles if r not in ROLES]
    if not roles or bad:
        raise InvalidParameter("role", f"must be one or more of {', '.join(ROLES)}")
    raw = PREFIX + secrets.token_urlsafe(32)
    now = rt.clock.now()

    def work(conn):  # type: ignore[no-untyped-def]
        for pid in programs or []:
            if catalog_repo.get_program(conn, pid) is None:
                raise ProgramNotFound(f"Program {pid} does not exist")
        token_id = tokens_repo.insert(conn, name.strip(), hash_token(raw), raw[: len(PREFIX) + 6],
                                      sorted(set(roles)), programs, databases, now)
        counters_repo.bump(conn, "tokens")
        return token_id

    token_id = rt.store.write(work)
    info = TokenInfo(token_id, name.strip(), raw[: len(PREFIX) + 6], sorted(set(roles)), programs, databases, now,
                     None, None)
    return raw, info


def tokens_version(rt: Runtime) -> int:
    """Changes whenever a token is created or revoked: a cached principal is good while it stays the same."""
    return rt.store.read(lambda conn: counters_repo.read(conn, "tokens"))


def authenticate(rt: Runtime, raw: str) -> Principal:
    """Find the token by its hash; the final comparison is constant-time."""
    digest = hash_token(raw)
    row = rt.store.read(lambda conn: tokens_repo.by_hash(conn, digest))
    if row is None or not hmac.compare_digest(row["token_hash"], digest) or row["revoked_at"] is not None:
        raise TokenInvalid("The token is unknown or revoked")
    programs = json.loads(row["programs"]) if row["programs"] else None
    databases = json.loads(row["databases"]) if row["databases"] else None
    return Principal(
        row["id"], row["name"], _expand(json.loads(row["roles"])),
        frozenset(programs) if programs is not None else None,
        frozenset(databases) if databases is not None else None,
    )


def touch(rt: Runtime, token_id: int) -> None:
    rt.store.write(lambda conn: tokens_repo.touch(conn, token_id, rt.clock.now()))


def list_tokens(rt: Runtime) -> list[TokenInfo]:
    return [_info(r) for r in rt.store.read(tokens_repo.all_rows)]


def revoke(rt: Runtime, token_ref: str) -> TokenInfo:
    """Revoke by numeric id, name, or the shown prefix; idempotent."""
    now = rt.clock.now()

    def work(conn):  # type: ignore[no-untyped-def]
        rows = tokens_repo.find(conn, token_ref)
        if len(rows) != 1:
            raise InvalidParameter("token", f"{token_ref!r} matches {len(rows)} tokens; use the numeric id")
        row = rows[0]
        if row["revoked_at"] is None:
            tokens_repo.revoke(conn, row["id"], now)
            counters_repo.bump(conn, "tokens")  # processes drop their cached principals on their next request
        return tokens_repo.by_id(conn, row["id"])

    return _info(rt.store.write(work))


def _info(row: dict) -> TokenInfo:  # type: ignore[type-arg]
    return TokenInfo(
        row["id"], row["name"], row["prefix"], json.loads(row["roles"]),
        json.loads(row["programs"]) if row["programs"] else None,
        json.loads(row["databases"]) if row["databases"] else None,
        row["created_at"], row["last_used_at"], row["revoked_at"],
    )
