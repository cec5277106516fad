"""Prometheus metrics, counted in plain Python numbers and exposed at scrape time.

prometheus_client's own Counter takes a lock and a label lookup per increment; on a path that
runs tens of thousands of times a second we add to a prepared slot instead, and a custom
collector turns the slots into metric families only when /metrics is read.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

PREFIX = "fastwebhook_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    def family_args(self) -> tuple[list, float]:
        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), self.counts):
            running += count
            cumulative.append((bound, running))
        return cumulative, self.sum


class Count:
    """One counter child: `slot.value += 1` is the whole cost of counting."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


class Labeled:
    """Counters or histograms by label values; slots made on first use and then reused."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], make: Callable = Count):
        self.name, self.doc, self.labels, self.make = name, doc, labels, make
        self.slots: dict[tuple, object] = {}

    def slot(self, *values: str):
        slot = self.slots.get(values)
        if slot is None:
            slot = self.slots[values] = self.make()
        return slot


class Metrics:
    def __init__(self):
        latency = lambda: Histogram(LATENCY_BUCKETS)  # noqa: E731
        self.requests = Labeled("requests_total", "HTTP requests answered", ("workflow", "code"))
        self.rejected = Labeled("rejected_total", "Requests refused, by reason", ("workflow", "reason"))
        self.duplicates = Labeled("duplicates_total", "Duplicate deliveries answered", ("workflow",))
        self.executions = Labeled("executions_total", "Executions finished", ("workflow", "status"))
        self.request_duration = Labeled("request_duration_seconds", "Time to answer a request",
                                        ("workflow",), latency)
        self.execution_duration = Labeled("execution_duration_seconds", "Time to run an execution",
                                          ("workflow",), latency)
        self.node_duration = Labeled("node_duration_seconds", "Time to run a node", ("type",), latency)
        self.store_commit = Histogram(LATENCY_BUCKETS)
        self.store_batch = Histogram(SIZE_BUCKETS)
        self.connections_open = 0
        self.queue_depth: Callable[[], int] = lambda: 0
        self.queue_capacity = 0
        self._counters = (self.requests, self.rejected, self.duplicates, self.executions)
        self._histograms = (self.request_duration, self.execution_duration, self.node_duration)

    def count(self, family: Labeled, *values: str) -> None:
        """For the rarer paths; hot paths keep their `family.slot(...)` and add to it."""
        family.slot(*values).value += 1

    # -- exposition ----------------------------------------------------------------------------
    def collect(self) -> Iterable:
        for family in self._counters:
            metric = CounterMetricFamily(PREFIX + family.name.removesuffix("_total"), family.doc,
                                         labels=family.labels)
            for values, count in family.slots.items():
                metric.add_metric(values, count.value)
            yield metric
        for family in self._histograms:
            metric = HistogramMetricFamily(PREFIX + family.name, family.doc, labels=family.labels)
            for values, histogram in family.slots.items():
                buckets, total = histogram.family_args()
                metric.add_metric(values, buckets, total)
            yield metric
        for name, doc, histogram in (("store_commit_seconds", "Time to commit one batch", self.store_commit),
                                     ("store_batch_size", "Rows per committed batch", self.store_batch)):
            metric = HistogramMetricFamily(PREFIX + name, doc)
            buckets, total = histogram.family_args()
            metric.add_metric([], buckets, total)
            yield metric
        yield GaugeMetricFamily(PREFIX + "queue_depth", "Executions accepted and not finished",
                                value=self.queue_depth())
        yield GaugeMetricFamily(PREFIX + "queue_capacity", "Most executions held at once",
                                value=self.queue_capacity)
        yield GaugeMetricFamily(PREFIX + "connections_open", "Open HTTP connections",
                                value=self.connections_open)

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)
