"""A retry with the same transaction_eid gets the first result even after the request's own checks lapsed."""

from datetime import timedelta

from loyalty.services.verify import verify_all


def test_a_late_retry_after_the_expiration_date_passed_returns_the_first_result(api, rt, clock):
    api.member("late@example.com")
    request = dict(loyalty_program_id=123, matching="email", email="late@example.com", amount="10",
                   expiration_date="2025-02-01T00:00:00Z", transaction_eid="late-1")
    first = api.call("loyalty/accrue_points", **request)
    assert first.status == 200, first.body
    clock.advance(timedelta(days=30))  # the expiration date is now in the past
    retry = api.call("loyalty/accrue_points", **request)
    assert retry.status == 200, retry.body
    assert retry.data == first.data
    history = api.call("loyalty/account/transactions", loyalty_program_id=123, matching="email",
                       email="late@example.com", points_currency_iid=1)
    assert [t["transaction_eid"] for t in history.data].count("late-1") == 1
    assert not verify_all(rt).problems


def test_a_retry_of_a_promotion_use_after_the_promotion_ended_returns_the_first_result(api, clock):
    api.member("promo-late@example.com")
    request = dict(loyalty_program_id=123, matching="email", email="promo-late@example.com",
                   promotion_id="review_reward", amount="20", transaction_eid="review-1")
    first = api.call("loyalty/accrue_points", **request)
    assert first.status == 200, first.body
    clock.advance(timedelta(days=365 * 7))  # review_reward ends 2030-12-31
    assert api.call("loyalty/accrue_points", **request).data == first.data
    other = api.call("loyalty/accrue_points", **{**request, "transaction_eid": "review-2"})
    assert (other.status, other.code) == (409, "promotion_inactive")


def test_a_retry_after_the_member_left_the_program_returns_the_first_result(api, rt):
    """The first attempt stands; a retry is not a new movement, so the membership it needed is not asked again.
    A new transaction_eid is refused as usual."""
    api.member("leaver@example.com")
    request = dict(loyalty_program_id=123, matching="email", email="leaver@example.com", amount="5",
                   transaction_eid="leave-1")
    first = api.call("loyalty/accrue_points", **request)
    assert first.status == 200, first.body
    left = api.call("loyalty/delete_member", loyalty_program_id=123, matching="email", email="leaver@example.com")
    assert left.status == 200, left.body
    assert api.call("loyalty/accrue_points", **request).data == first.data
    other = api.call("loyalty/accrue_points", **{**request, "transaction_eid": "leave-2"})
    assert other.status == 404 and other.code == "not_a_member", other.body
    assert not verify_all(rt).problems
