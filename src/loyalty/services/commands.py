"""Typed parameters of each use case. The wire layer validates request bodies against these models (JSON and
XML alike: the models are also the schema that tells the XML reader which fields are arrays or objects).

Scalars are lax on purpose: XML carries everything as text, so `"123"` is an int and `"true"` a bool. Amounts and
dates stay raw here and are parsed by the domain once the currency's precision is known.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# Integers that reach the store fit its 32-bit key columns; anything larger is a 400, not a store error.
StoreInt = Annotated[int, Field(ge=0, le=2**31 - 1)]
Eid = Annotated[str, Field(max_length=200)]


class Params(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, str_strip_whitespace=True)


class LookupParams(Params):
    """The matching group of altcraft-api.md §3: how to find the profile."""

    matching: str | None = None
    email: str | None = None
    phone: str | None = None
    profile_id: str | None = None
    field_name: str | None = None
    field_value: str | int | None = None

    def lookup(self) -> dict[str, Any]:
        # Built by hand: model_dump costs more than the rest of a balance read.
        return {"matching": self.matching, "email": self.email, "phone": self.phone, "profile_id": self.profile_id,
                "field_name": self.field_name, "field_value": self.field_value}


class MemberParams(LookupParams):
    loyalty_program_id: StoreInt


class CurrencyParams(Params):
    points_currency_iid: StoreInt | None = None
    points_currency_eid: str | None = None


class RegisterCmd(MemberParams):
    registration_date: str | None = None


class DeleteCmd(MemberParams):
    pass


class MoveCmd(MemberParams, CurrencyParams):
    """Fields shared by accrue and redeem."""

    amount: Any = None
    promotion_id: str | None = None
    is_temp: bool = False
    temp_timeout_sec: int | None = None
    created_at: str | None = None
    transaction_eid: Eid | None = None
    external_data: dict[str, Any] | None = None
    description: str | None = Field(default=None, max_length=1000)


class AccrueCmd(MoveCmd):
    activation_date: str | None = None
    expiration_date: str | None = None


class RedeemCmd(MoveCmd):
    pass


class TxnRefCmd(Params):
    transaction_id: str | None = None
    transaction_eid: Eid | None = None
    loyalty_program_id: StoreInt | None = None


class BalanceCmd(MemberParams, CurrencyParams):
    pass


class ProfileAddCmd(Params):
    db_id: StoreInt
    data: dict[str, Any]
    skip_triggers: bool = False


class ProfileImportCmd(LookupParams):
    db_id: StoreInt
    data: dict[str, Any]
    skip_triggers: bool = False


class ProfileGetCmd(LookupParams):
    db_id: StoreInt


class TiersCmd(MemberParams):
    tiers_group_id: StoreInt


class HistoryCmd(MemberParams, CurrencyParams):
    from_id: str | None = None
    limit: int = 20


class ExpiringCmd(MemberParams, CurrencyParams):
    date_from: str
    date_to: str


class PromotionsCmd(Params):
    loyalty_program_id: StoreInt | None = None
    from_id: StoreInt = 0
    limit: int = 20
    is_active: bool | None = None


class OrderLine(Params):
    external_id: str | None = None
    sku: str | None = None
    product: Any = None
    count: Any = 1
    base_price_per_item: Any
    final_price_per_item: Any = None


class OrderData(Params):
    endpoint: str | None = None
    status: str | None = Field(default=None, max_length=50)
    currency: str
    total_price: Any
    final_total_price: Any = None
    delivery_cost: Any = None
    create_time: str | None = None
    lines: list[OrderLine] = []
    redeem_points: Any = None


class PreorderCmd(LookupParams):
    external_id: Eid
    loyalty_program_id: StoreInt | None = None
    data: OrderData
    skip_triggers: bool = False


class ExportCmd(CurrencyParams):
    loyalty_program_id: StoreInt
    date_from: str
    date_to: str
    from_id: str | None = None


class ExportStatusCmd(Params):
    task_id: str
