"""The shape of a program file (shared/spec program-file.md) as pydantic models, and the checks that span
several parts of the file. `validate_document` returns every problem at once, each with its path."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loyalty.domain.dates import parse_datetime
from loyalty.domain.errors import InvalidParameter
from loyalty.domain.points import parse_amount


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class FieldSpec(Spec):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    type: Literal["string", "int", "float", "bool", "date"]
    unique: bool = False


class DatabaseSpec(Spec):
    id: int = Field(ge=1)
    name: str = Field(min_length=1)
    fields: list[FieldSpec] = []


def _decimal_text(value: Any) -> str:
    try:
        dec = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not dec.is_finite() or dec < 0:
        raise ValueError("must be a non-negative decimal number")
    return str(dec)


class OrdersSpec(Spec):
    earn_rate: str = "0"
    point_value: str = "1"
    max_redeem_share: str = "1"
    return_window_days: int = Field(default=0, ge=0, le=3650)

    _check = field_validator("earn_rate", "point_value", "max_redeem_share", mode="before")(_decimal_text)

    @field_validator("max_redeem_share")
    @classmethod
    def _share(cls, value: str) -> str:
        if Decimal(value) > 1:
            raise ValueError("must be between 0 and 1")
        return value


class CurrencySpec(Spec):
    iid: int = Field(ge=1)
    eid: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1)
    kind: Literal["standard", "qualification"] = "standard"
    precision: int = Field(default=2, ge=0, le=6)
    initial_balance: str = "0"
    lifetime: Any = "never"
    default: bool = False

    @field_validator("lifetime")
    @classmethod
    def _lifetime(cls, value: Any) -> Any:
        if value in ("never", None):
            return "never"
        if isinstance(value, dict) and len(value) == 1:
            (key, n), = value.items()
            if key in ("days", "end_of_month") and isinstance(n, int) and not isinstance(n, bool) and n >= 1:
                return {key: n}
        raise ValueError("must be never, {days: N} or {end_of_month: N} with N >= 1")

    def lifetime_parts(self) -> tuple[str, int | None]:
        if self.lifetime == "never":
            return "never", None
        (key, n), = self.lifetime.items()
        return key, n


class RuleSpec(Spec):
    currency: str
    static_amount: str | None = None
    min_amount: str | None = None
    max_amount: str | None = None


class LimitsSpec(Spec):
    per_member: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)


def _date(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("needs a UTC offset")
        return value
    try:
        return parse_datetime(value, "date")
    except InvalidParameter as exc:
        raise ValueError(exc.message) from None


class PromotionSpec(Spec):
    id: int | None = Field(default=None, ge=1)
    external_id: str | None = None
    name: str = Field(min_length=1)
    description: str = ""
    start_date: datetime | None = None
    end_date: datetime | None = None
    is_active: bool = True
    limits: LimitsSpec = LimitsSpec()
    accrual_rules: list[RuleSpec] = []
    redeem_rules: list[RuleSpec] = []

    _dates = field_validator("start_date", "end_date", mode="before")(_date)


class TierSpec(Spec):
    id: int | None = Field(default=None, ge=1)
    eid: str = Field(min_length=1)
    name: str = Field(min_length=1)
    threshold: str


class TierGroupSpec(Spec):
    id: int | None = Field(default=None, ge=1)
    external_id: str | None = None
    name: str = Field(min_length=1)
    type: Literal["cumulative", "period"]
    window_days: int | None = Field(default=None, ge=1)
    currency: str
    tiers: list[TierSpec] = Field(min_length=1)


class ProgramSpec(Spec):
    id: int | None = Field(default=None, ge=1)
    name: str = Field(min_length=1)
    external_id: str | None = None
    description: str = ""
    database: int
    status: Literal["active", "archived"] = "active"
    orders: OrdersSpec = OrdersSpec()
    currencies: list[CurrencySpec] = Field(min_length=1)
    promotions: list[PromotionSpec] = []
    tier_groups: list[TierGroupSpec] = []


class ProgramFile(Spec):
    databases: list[DatabaseSpec] = []
    programs: list[ProgramSpec] = []


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def validate_document(doc: Any) -> tuple[ProgramFile | None, list[str]]:
    """Every problem of the document at once: shape errors of each part, and the cross-checks of every part
    whose shape is right (a broken program does not hide the problems of its neighbours)."""
    if not isinstance(doc, dict):
        return None, ["(document): must be a mapping with `databases` and/or `programs`"]
    try:
        spec = ProgramFile.model_validate(doc)
    except ValidationError as exc:
        problems = [f"{_path(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        programs = doc.get("programs")
        for i, item in enumerate(programs if isinstance(programs, list) else []):
            problems.extend(_partial_program_checks(f"programs[{i}]", item))
        return None, problems
    return spec, cross_checks(spec)


def _dupes(values: list[Any]) -> set[Any]:
    seen: set[Any] = set()
    return {v for v in values if v is not None and (v in seen or seen.add(v))}


def cross_checks(spec: ProgramFile) -> list[str]:
    problems: list[str] = []
    for dup in _dupes([d.id for d in spec.databases]):
        problems.append(f"databases: id {dup} appears twice")
    for i, d in enumerate(spec.databases):
        for dup in _dupes([f.name for f in d.fields]):
            problems.append(f"databases[{i}].fields: {dup!r} appears twice")
        for f in d.fields:
            if f.name in ("email", "phones", "phone", "id", "db_id") or f.name.startswith("_"):
                problems.append(f"databases[{i}].fields: {f.name!r} is a built-in field name")
    for dup in _dupes([p.id for p in spec.programs]):
        problems.append(f"programs: id {dup} appears twice")
    for dup in _dupes([p.external_id for p in spec.programs]):
        problems.append(f"programs: external_id {dup!r} appears twice")
    active_dbs = [p.database for p in spec.programs if p.status == "active"]
    for dup in _dupes(active_dbs):
        problems.append(f"programs: database {dup} has more than one active program")
    for i, p in enumerate(spec.programs):
        problems.extend(_program_checks(f"programs[{i}]", p))
    return problems


def _program_checks(at: str, p: ProgramSpec) -> list[str]:
    problems: list[str] = []
    for key in ("iid", "eid"):
        for dup in _dupes([getattr(c, key) for c in p.currencies]):
            problems.append(f"{at}.currencies: {key} {dup!r} appears twice")
    defaults = [c for c in p.currencies if c.default]
    if len(defaults) > 1:
        problems.append(f"{at}.currencies: more than one currency has default: true")
    by_ref = {c.eid: c for c in p.currencies} | {str(c.iid): c for c in p.currencies}
    for j, c in enumerate(p.currencies):
        try:
            parse_amount(c.initial_balance, c.precision, "initial_balance", allow_zero=True)
        except InvalidParameter as exc:
            problems.append(f"{at}.currencies[{j}].initial_balance: {exc.message}")
    for dup in _dupes([pr.id for pr in p.promotions]):
        problems.append(f"{at}.promotions: id {dup} appears twice")
    for dup in _dupes([pr.external_id for pr in p.promotions]):
        problems.append(f"{at}.promotions: external_id {dup!r} appears twice")
    for dup in _dupes([pr.name for pr in p.promotions if pr.id is None and not pr.external_id]):
        problems.append(f"{at}.promotions: name {dup!r} names two promotions without id or external_id")
    for dup in _dupes([g.name for g in p.tier_groups if g.id is None and not g.external_id]):
        problems.append(f"{at}.tier_groups: name {dup!r} names two groups without id or external_id")
    for j, pr in enumerate(p.promotions):
        problems.extend(_promotion_checks(f"{at}.promotions[{j}]", pr, by_ref))
    for dup in _dupes([g.id for g in p.tier_groups]):
        problems.append(f"{at}.tier_groups: id {dup} appears twice")
    for j, g in enumerate(p.tier_groups):
        gat = f"{at}.tier_groups[{j}]"
        cur = by_ref.get(g.currency)
        if cur is None:
            problems.append(f"{gat}.currency: {g.currency!r} is not a currency of this program")
        elif cur.kind != "qualification":
            problems.append(f"{gat}.currency: {g.currency!r} is not a qualification currency")
        if g.type == "period" and g.window_days is None:
            problems.append(f"{gat}.window_days: required for a period tier group")
        for key in ("id", "eid"):
            for dup in _dupes([getattr(t, key) for t in g.tiers]):
                problems.append(f"{gat}.tiers: {key} {dup!r} appears twice")
        last = None
        for k, t in enumerate(g.tiers):
            try:
                units = parse_amount(t.threshold, cur.precision if cur else 6, "threshold", allow_zero=True)
            except InvalidParameter as exc:
                problems.append(f"{gat}.tiers[{k}].threshold: {exc.message}")
                continue
            if last is not None and units <= last:
                problems.append(f"{gat}.tiers[{k}].threshold: thresholds must increase from tier to tier")
            last = units
    return problems


def _valid_items(model: type[Spec], items: Any) -> list[tuple[int, Any]]:
    out = []
    for j, item in enumerate(items if isinstance(items, list) else []):
        try:
            out.append((j, model.model_validate(item)))
        except ValidationError:
            pass
    return out


def _partial_program_checks(at: str, item: Any) -> list[str]:
    """Cross-checks of the parts of a program whose own shape is right, when the program as a whole is not."""
    if not isinstance(item, dict):
        return []
    try:
        return _program_checks(at, ProgramSpec.model_validate(item))
    except ValidationError:
        pass
    currencies = _valid_items(CurrencySpec, item.get("currencies"))
    by_ref = {c.eid: c for _, c in currencies} | {str(c.iid): c for _, c in currencies}
    problems = []
    for j, pr in _valid_items(PromotionSpec, item.get("promotions")):
        problems.extend(_promotion_checks(f"{at}.promotions[{j}]", pr, by_ref))
    return problems


def _promotion_checks(at: str, pr: PromotionSpec, by_ref: dict[str, CurrencySpec]) -> list[str]:
    problems = []
    if pr.start_date and pr.end_date and pr.end_date < pr.start_date:
        problems.append(f"{at}.end_date: before start_date")
    for side in ("accrual_rules", "redeem_rules"):
        rules = getattr(pr, side)
        for dup in _dupes([r.currency for r in rules]):
            problems.append(f"{at}.{side}: currency {dup!r} has two rules")
        for k, rule in enumerate(rules):
            if by_ref:
                problems.extend(_rule_checks(f"{at}.{side}[{k}]", rule, by_ref, side))
    return problems


def _rule_checks(at: str, rule: RuleSpec, by_ref: dict[str, CurrencySpec], side: str) -> list[str]:
    cur = by_ref.get(rule.currency)
    if cur is None:
        return [f"{at}.currency: {rule.currency!r} is not a currency of this program"]
    problems = []
    if side == "redeem_rules" and cur.kind != "standard":
        problems.append(f"{at}.currency: {rule.currency!r} is a qualification currency and cannot be redeemed")
    units = {}
    for key in ("static_amount", "min_amount", "max_amount"):
        value = getattr(rule, key)
        if value is not None:
            try:
                units[key] = parse_amount(value, cur.precision, key)
            except InvalidParameter as exc:
                problems.append(f"{at}.{key}: {exc.message}")
    if "static_amount" in units and ("min_amount" in units or "max_amount" in units):
        problems.append(f"{at}: static_amount excludes min_amount/max_amount")
    if "min_amount" in units and "max_amount" in units and units["min_amount"] > units["max_amount"]:
        problems.append(f"{at}: min_amount is greater than max_amount")
    return problems
