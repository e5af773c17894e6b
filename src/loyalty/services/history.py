"""Account reads: transaction history pages and expiring points (altcraft-api.md §5.9–5.10).

Both settle the account first when a time-dependent event is due, so expirations and deadlines that have
passed are visible even if no job has run. History pages are keyset pages over the UUIDv7 ids and
`total_count` is a counter kept on the account, so a page costs the same whatever the history length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from loyalty.domain.dates import format_datetime, parse_datetime
from loyalty.domain.errors import InvalidParameter
from loyalty.domain.model import Account, Currency, Txn
from loyalty.domain.points import format_amount
from loyalty.services.commands import ExpiringCmd, HistoryCmd
from loyalty.services.json_values import loads_exact
from loyalty.services.ledger import Target, member_account, settled
from loyalty.services.runtime import Runtime
from loyalty.services.tokens import Principal
from loyalty.storage import ledger_repo

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _account_now(rt: Runtime, principal: Principal, cmd: Any) -> tuple[Target, Account | None]:
    target, account = rt.store.read(lambda conn: member_account(conn, principal, cmd, currency_required=True))
    return target, settled(rt, target, account)


@dataclass(frozen=True)
class HistoryPage:
    items: list[dict[str, Any]]
    next_from_id: str | None
    total_count: int


def transactions(rt: Runtime, principal: Principal, cmd: HistoryCmd) -> HistoryPage:
    principal.require("loyalty:read")
    if not 1 <= cmd.limit <= 100:
        raise InvalidParameter("limit", "must be between 1 and 100")
    after = cmd.from_id.lower() if cmd.from_id else None
    if after is not None and not _UUID.match(after):
        raise InvalidParameter("from_id", "must be a transaction_id (UUID)")
    target, account = _account_now(rt, principal, cmd)
    if account is None:
        return HistoryPage([], None, 0)
    rows = rt.store.read(lambda conn: ledger_repo.history_page(
        conn, target.program.id, target.profile_id, target.currency.iid, after, cmd.limit + 1))
    more = len(rows) > cmd.limit
    rows = rows[: cmd.limit]
    return HistoryPage([render_txn(t, target.currency) for t in rows], rows[-1].id if more else None,
                       account.txn_count)


def render_txn(t: Txn, currency: Currency) -> dict[str, Any]:
    p = currency.precision
    return {
        "transaction_id": t.id,
        "transaction_eid": t.eid,
        "created_at": format_datetime(t.created_at),
        "transaction_type": t.type,
        "status": t.status,
        "amount": format_amount(t.amount, p),
        "balance_before": format_amount(t.balance_before, p),
        "balance_after": format_amount(t.balance_after, p),
        "promo_iid": t.promo_iid,
        "promo_eid": t.promo_eid,
        "description": t.description,
        "activation_date": format_datetime(t.activation_date),
        "expiration_date": format_datetime(t.expiration_date),
        "source_type": t.source_type,
        "source_iid": t.source_iid,
        "source_eid": t.source_eid,
        "external_data": loads_exact(t.external_data) if t.external_data else None,
    }


def expiring_points(rt: Runtime, principal: Principal, cmd: ExpiringCmd) -> str:
    principal.require("loyalty:read")
    date_from = parse_datetime(cmd.date_from, "date_from")
    date_to = parse_datetime(cmd.date_to, "date_to")
    if date_from > date_to:
        raise InvalidParameter("date_from", "is after date_to")
    target, account = _account_now(rt, principal, cmd)
    if account is None:
        return format_amount(0, target.currency.precision)
    total = rt.store.read(lambda conn: ledger_repo.expiring_sum(conn, account, date_from, date_to))
    return format_amount(total, target.currency.precision)


