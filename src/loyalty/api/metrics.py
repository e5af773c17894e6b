"""Prometheus metrics for the API: requests by endpoint and error code, latency per endpoint, and the group
commit's batches and units (units per batch tells how much one commit is shared)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class _GroupCommit(Collector):
    """Read at scrape time from the store's writers (`commit_stats()` -> (batches, units))."""

    def __init__(self, commit_stats: Callable[[], tuple[int, int]]):
        self.commit_stats = commit_stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        batches, units = self.commit_stats()
        yield CounterMetricFamily("loyalty_group_commit_batches", "Store transactions committed by the writers",
                                  value=batches)
        yield CounterMetricFamily("loyalty_group_commit_units", "Units of work committed in those transactions",
                                  value=units)


class ApiMetrics:
    def __init__(self, commit_stats: Callable[[], tuple[int, int]] | None = None) -> None:
        # A registry per app keeps test apps independent of each other.
        self.registry = CollectorRegistry()
        self.requests = Counter("loyalty_requests_total", "API requests by endpoint and outcome",
                                ["endpoint", "error_code"], registry=self.registry)
        self.latency = Histogram(
            "loyalty_request_seconds", "API request latency", ["endpoint"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

        if commit_stats is not None:
            self.registry.register(_GroupCommit(commit_stats))

        # The labelled children by (endpoint, error code): looking them up by label costs a lock and a tuple.
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe(self, endpoint: str, error_code: str, seconds: float) -> None:
        children = self._children.get((endpoint, error_code))
        if children is None:
            children = self._children[(endpoint, error_code)] = (
                self.requests.labels(endpoint, error_code), self.latency.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
