"""Plain records the services pass around. Amounts are integer units of the currency's precision."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Database:
    id: int
    name: str
    fields: dict[str, FieldDef]


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str  # string | int | float | bool | date
    unique: bool


@dataclass
class Profile:
    id: str
    db_id: int
    email: str | None
    phones: list[str]
    fname: str | None
    lname: str | None
    regdate: datetime | None
    created_at: datetime
    custom: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Program:
    id: int
    external_id: str | None
    name: str
    description: str
    db_id: int
    status: str
    earn_rate: Decimal
    point_value: Decimal
    max_redeem_share: Decimal
    return_window_days: int


@dataclass(frozen=True)
class Currency:
    program_id: int
    iid: int
    eid: str
    name: str
    kind: str  # standard | qualification
    precision: int
    initial_balance: int
    lifetime_kind: str  # never | days | end_of_month
    lifetime_n: int | None
    is_default: bool

    @property
    def spendable(self) -> bool:
        return self.kind == "standard"


@dataclass(frozen=True)
class Member:
    program_id: int
    profile_id: str
    status: str
    registered_at: datetime
    first_registered_at: datetime


@dataclass
class Account:
    program_id: int
    profile_id: str
    currency_iid: int
    active: int = 0
    pending: int = 0
    held: int = 0
    temp_accrued: int = 0
    debt: int = 0
    next_event_at: datetime | None = None
    txn_count: int = 0
    earned: int = 0
    version: int = 0

    @property
    def total(self) -> int:
        return self.active + self.pending + self.held


@dataclass
class Lot:
    id: str
    original: int
    remaining: int
    held: int
    expired: int
    activates_at: datetime
    expires_at: datetime | None
    is_active: bool
    cancelled: bool
    created_at: datetime


@dataclass
class Txn:
    id: str
    program_id: int
    profile_id: str
    currency_iid: int
    eid: str | None
    type: str
    status: str
    amount: int
    balance_before: int
    balance_after: int
    created_at: datetime
    recorded_at: datetime
    promo_iid: int | None = None
    promo_eid: str | None = None
    description: str | None = None
    activation_date: datetime | None = None
    expiration_date: datetime | None = None
    source_type: str = "api"
    source_iid: int | None = None
    source_eid: str | None = None
    external_data: str | None = None
    deadline_at: datetime | None = None
    resolved_at: datetime | None = None
    payload_hash: str | None = None

    @property
    def is_credit(self) -> bool:
        return self.type in CREDIT_TYPES


CREDIT_TYPES = frozenset({"accrual", "initial", "order_accrual"})
DEBIT_TYPES = frozenset({"redemption", "order_redemption"})
