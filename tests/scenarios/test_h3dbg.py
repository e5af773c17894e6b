import pytest
from tests.scenarios.test_ledger_stateful import *
def test_dbg(rt, program):
    profiles.add(rt, ADMIN, 1, {"email": "gone@example.com"})
    who = member("gone@example.com")
    members.register(rt, ADMIN, RegisterCmd(**who))
    spent = ledger.redeem(rt, ADMIN, RedeemCmd(**who, amount="10"))
    members.delete(rt, ADMIN, DeleteCmd(**who))
    try:
        print(ledger.cancel(rt, ADMIN, TxnRefCmd(transaction_id=spent.transaction_id)))
    except LoyaltyError as exc:
        print("ERR", exc.code)
    print(rt.store.read(lambda conn: conn.execute(select(accounts)).all()))
    members.register(rt, ADMIN, RegisterCmd(**who))
    print(ledger.balance(rt, ADMIN, BalanceCmd(**who)))
