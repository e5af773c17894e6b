"""/metrics: requests by endpoint and outcome, and how the writers batch the writes (on both stores)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def scrape(api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = api.client.get("/metrics")
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def test_metrics_count_requests_by_outcome_and_the_group_commits_that_wrote_them(api, program):
    before = scrape(api)
    api.member("ann@example.com")
    for amount in ("1.00", "2.00", "3.00"):
        r = api.call("loyalty/accrue_points", loyalty_program_id=123, matching="email", email="ann@example.com",
                     amount=amount)
        assert r.error == 0, r.body
    refused = api.call("loyalty/redeeme_points", loyalty_program_id=123, matching="email", email="ann@example.com",
                       amount="1000000.00")
    assert refused.status == 422

    after = scrape(api)
    accrue_ok = ("loyalty_requests_total", (("endpoint", "loyalty/accrue_points"), ("error_code", "ok")))
    assert after[accrue_ok] == 3
    assert any(name == "loyalty_requests_total" and dict(labels)["endpoint"] == "loyalty/redeeme_points"
               and dict(labels)["error_code"] == "insufficient_points" for name, labels in after)
    units = after[("loyalty_group_commit_units_total", ())] - before.get(("loyalty_group_commit_units_total", ()), 0)
    batches = after[("loyalty_group_commit_batches_total", ())] - before.get(
        ("loyalty_group_commit_batches_total", ()), 0)
    # register + 3 accruals + the refused redemption's unit, in at least one and at most that many commits
    assert units >= 5 and 1 <= batches <= units
