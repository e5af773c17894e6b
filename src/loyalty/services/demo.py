"""`loyalty demo`: a ready program (the reference example), three members with some history, and a token."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from loyalty.domain.errors import DuplicateProfile
from loyalty.services import ledger, members, profiles, programfile, tokens
from loyalty.services.commands import AccrueCmd, RegisterCmd
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal

DEMO_PEOPLE = [
    ("anna@example.com", "+7 900 111-22-33", "Anna", "u-1001"),
    ("boris@example.com", "+7 900 444-55-66", "Boris", "u-1002"),
    ("chen@example.com", "+1 (415) 555-0100", "Chen", "u-1003"),
]


@dataclass(frozen=True)
class DemoResult:
    token: str
    program_id: int
    db_id: int
    emails: list[str]


def example_path() -> Path:
    return Path(str(resources.files("loyalty") / "examples" / "stars.yaml"))


def create_demo(rt: Runtime) -> DemoResult:
    spec = programfile.load(example_path())
    programfile.apply_spec(rt, spec)
    program = spec.programs[0]
    assert program.id is not None
    raw, info = tokens.create(rt, "demo", ["admin"])
    admin = Principal(info.id, "demo", frozenset(tokens.ROLES), None, None)
    for email, phone, name, user_id in DEMO_PEOPLE:
        try:
            profiles.add(rt, admin, program.database,
                         {"email": email, "phones": [phone], "_fname": name, "user_id": user_id})
        except DuplicateProfile:
            pass  # the demo was created before in this store: reuse its people
        members.register(rt, admin, RegisterCmd(loyalty_program_id=program.id, matching="email", email=email))
    ledger.accrue(rt, admin, AccrueCmd(loyalty_program_id=program.id, matching="email", email=DEMO_PEOPLE[0][0],
                                       amount="120.50", description="Demo purchase",
                                       transaction_eid="demo-first-purchase"))
    return DemoResult(raw, program.id, program.database, [p[0] for p in DEMO_PEOPLE])


def instructions(result: DemoResult, base: str = "http://127.0.0.1:8000") -> str:
    email = result.emails[0]
    return f"""Demo ready: program {result.program_id} (Stars) on database {result.db_id}, members {', '.join(result.emails)}.

API token (shown once, stored hashed):
  {result.token}

Try it (after `loyalty serve`):
  export TOKEN={result.token}
  curl -s {base}/api/v1.1/loyalty/account/balance -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{{"loyalty_program_id": {result.program_id}, "matching": "email", "email": "{email}"}}'
  curl -s {base}/api/v1.1/loyalty/accrue_points -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{{"loyalty_program_id": {result.program_id}, "matching": "email", "email": "{email}", "amount": "25.00"}}'
"""
