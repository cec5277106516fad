"""Prometheus metrics, counted in plain Python numbers and exposed at scrape time.

prometheus_client's own Counter takes a lock and a label lookup per increment; on a path that
runs tens of thousands of times a second we add to a prepared slot instead, and a custom
collector turns the slots into metric families only when /metrics is read.  When several
processes serve one port, each keeps its numbers in a file mapped into memory instead
(SharedCells), and a scrape of any of them sums them all.
"""

from __future__ import annotations

import mmap
import os
from bisect import bisect_left
from pathlib import Path
from typing import Callable, Iterable

import orjson

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

PREFIX = "fastwebhook_"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """`cells`: a count per bucket (the last one +Inf), then the sum."""

    __slots__ = ("buckets", "cells")

    def __init__(self, buckets: tuple[float, ...], cells=None):
        self.buckets = buckets
        self.cells = cells if cells is not None else [0] * (len(buckets) + 2)

    def observe(self, value: float) -> None:
        cells = self.cells
        cells[bisect_left(self.buckets, value)] += 1
        cells[-1] += value

    def observe_many(self, value: float, count: int) -> None:
        """`count` observations of `value`."""
        cells = self.cells
        cells[bisect_left(self.buckets, value)] += count
        cells[-1] += value * count

    def family_args(self) -> tuple[list, float]:
        return _histogram_args(self.buckets, self.cells)


def _histogram_args(buckets: tuple[float, ...], cells) -> tuple[list, float]:
    cumulative, running = [], 0
    for bound, count in zip((*map(str, buckets), "+Inf"), cells):
        running += count
        cumulative.append((bound, running))
    return cumulative, cells[-1]


def _quantile_ms(buckets: tuple[float, ...], cells, quantile: float) -> float | None:
    """The upper bound, in ms, of the bucket holding the quantile (None: the +Inf bucket)."""
    runs = sum(cells[:-1])
    if not runs:
        return None
    running = 0
    for bound, count in zip(buckets, cells):
        running += count
        if running >= quantile * runs:
            return bound * 1000
    return None


class Count:
    """One counter child: `slot.value += 1` is the whole cost of counting."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


class SharedCount:
    """A Count whose number lives in a SharedCells file, where the other processes read it."""

    __slots__ = ("cell",)

    def __init__(self, cell):
        self.cell = cell

    @property
    def value(self) -> float:
        return self.cell[0]

    @value.setter
    def value(self, number: float) -> None:
        self.cell[0] = number


class SharedCells:
    """This process's figures in a file mapped into memory, for a server of several processes:
    each adds to its own numbers at the cost of a memory write, a scrape of any of them sums
    every process's files (`gather`), and a process killed with SIGKILL leaves its counts
    behind (the page cache has every write).  `<pid>.cells` holds the numbers (doubles);
    `<pid>.keys` says, a JSON line each, where each series starts: [offset, length, name,
    labels].  The supervisor writes `<pid>.dead` when a process is gone: its gauges then no
    longer count."""

    SIZE = 1 << 17      # numbers per process (1 MiB): some thousands of series

    def __init__(self, directory: str):
        self.directory = Path(directory)
        base = self.directory / str(os.getpid())
        fd = os.open(f"{base}.cells", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, self.SIZE * 8)
            self._map = mmap.mmap(fd, self.SIZE * 8)
        finally:
            os.close(fd)
        self.view = memoryview(self._map).cast("d")
        self._keys = open(f"{base}.keys", "w", encoding="utf-8")
        self.used = 0

    def take(self, length: int, name: str, labels: tuple[str, ...]):
        """`length` numbers for one series, or None when the file is full (counted here only)."""
        if self.used + length > self.SIZE:
            return None
        cells = self.view[self.used:self.used + length]
        self._keys.write(orjson.dumps([self.used, length, name, labels]).decode() + "\n")
        self._keys.flush()    # before the first number is written: a scrape finds its key
        self.used += length
        return cells

    @staticmethod
    def gather(directory: str) -> dict[tuple[str, tuple], list[float]]:
        """(name, labels) -> the series' numbers summed over every process's file; the gauges
        (GAUGES) of live processes only."""
        totals: dict[tuple[str, tuple], list[float]] = {}
        folder = Path(directory)
        for keys in folder.glob("*.keys"):
            pid = keys.stem
            dead = (folder / f"{pid}.dead").exists()
            try:
                numbers = memoryview((folder / f"{pid}.cells").read_bytes()).cast("d")
                lines = keys.read_text(encoding="utf-8").splitlines()
            except (OSError, TypeError):   # a process starting this very moment
                continue
            for line in lines:
                try:
                    offset, length, name, labels = orjson.loads(line)
                except (orjson.JSONDecodeError, ValueError):   # being written
                    continue
                if dead and name in GAUGES:
                    continue
                series = totals.setdefault((name, tuple(labels)), [0.0] * length)
                for i, number in enumerate(numbers[offset:offset + length]):
                    series[i] += number
        return totals


class NodeFigures:
    __slots__ = ("duration", "failures")

    def __init__(self, duration: Histogram, failures):
        self.duration, self.failures = duration, failures

    def ran(self, failed: bool, seconds: float) -> None:
        self.duration.observe(seconds)
        if failed:
            self.failures.value += 1


GAUGES = frozenset({"connections_open"})    # summed over the live processes


class Labeled:
    """Counters or histograms by label values; slots made on first use and then reused."""

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], make: Callable,
                 buckets: tuple[float, ...] | None = None):
        self.name, self.doc, self.labels, self.make = name, doc, labels, make
        self.buckets = buckets     # a histogram's
        self.slots: dict[tuple, object] = {}

    def slot(self, *values: str):
        slot = self.slots.get(values)
        if slot is None:
            slot = self.slots[values] = self.make(values)
        return slot


class Metrics:
    """Every figure, by label values.  `shared`: a SharedCells when several processes serve,
    so that a scrape of any of them answers for all."""

    def __init__(self, shared: SharedCells | None = None):
        self.shared = shared
        self.requests = self._family("requests_total", "HTTP requests answered", ("workflow", "code"))
        self.rejected = self._family("rejected_total", "Requests refused, by reason", ("workflow", "reason"))
        self.duplicates = self._family("duplicates_total", "Duplicate deliveries answered", ("workflow",))
        self.executions = self._family("executions_total", "Executions finished", ("workflow", "status"))
        self.request_duration = self._family("request_duration_seconds", "Time to answer a request",
                                             ("workflow",), LATENCY_BUCKETS)
        self.execution_duration = self._family("execution_duration_seconds", "Time to run an execution",
                                               ("workflow",), LATENCY_BUCKETS)
        self.node_duration = self._family("node_duration_seconds", "Time to run a node", ("workflow", "node"),
                                          LATENCY_BUCKETS)
        self.node_failures = self._family("node_failures_total", "Nodes that ended failed or in error",
                                          ("workflow", "node"))
        self.store_commit_family = self._family("store_commit_seconds", "Time to commit one batch", (), LATENCY_BUCKETS)
        self.store_batch_family = self._family("store_batch_size", "Rows per committed batch", (), SIZE_BUCKETS)
        self.store_commit = self.store_commit_family.slot()
        self.store_batch = self.store_batch_family.slot()
        self.connections_family = self._family("connections_open", "Open HTTP connections", ())
        self.connections = self.connections_family.slot()
        self.queue_depth: Callable[[], int] = lambda: 0
        self.queue_capacity = 0
        self.queue_held: Callable[[], int] = lambda: 0
        self._counters = (self.requests, self.rejected, self.duplicates, self.executions, self.node_failures)
        self._histograms = (self.request_duration, self.execution_duration, self.node_duration,
                            self.store_commit_family, self.store_batch_family)

    def _family(self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...] | None = None) -> Labeled:
        shared = self.shared

        def make(values: tuple[str, ...]):
            length = 1 if buckets is None else len(buckets) + 2
            cells = shared.take(length, name, values) if shared is not None else None
            if buckets is not None:
                return Histogram(buckets, cells)
            return Count() if cells is None else SharedCount(cells)

        return Labeled(name, doc, labels, make, buckets)

    @property
    def connections_open(self) -> int:
        return int(self.connections.value)

    @connections_open.setter
    def connections_open(self, number: int) -> None:
        self.connections.value = number

    def node(self, workflow: str, node: str) -> "NodeFigures":
        """One node's series, for a cohort at that node (looked up once, not once per run)."""
        return NodeFigures(self.node_duration.slot(workflow, node), self.node_failures.slot(workflow, node))

    def count(self, family: Labeled, *values: str) -> None:
        """For the rarer paths; hot paths keep their `family.slot(...)` and add to it."""
        family.slot(*values).value += 1

    # -- exposition ----------------------------------------------------------------------------
    def _series(self, family: Labeled, gathered: dict | None) -> dict[tuple, object]:
        """label values -> a Count or Histogram's numbers: this process's, or every process's."""
        if gathered is None:
            return {values: (slot.cells if family.buckets else slot.value) for values, slot in family.slots.items()}
        return {labels: (numbers if family.buckets else numbers[0])
                for (name, labels), numbers in gathered.items() if name == family.name}

    def counts(self) -> dict[str, dict[tuple, float]]:
        """The counters by label values (every process's, with several): the admin page's figures."""
        gathered = SharedCells.gather(self.shared.directory) if self.shared is not None else None
        return {family.name: self._series(family, gathered) for family in self._counters}

    def node_figures(self) -> dict[tuple[str, str], dict]:
        """(workflow, node) -> runs, failures, and the p50 and p99 of its duration in ms (the upper
        bound of the bucket that holds it; None past the last bound), every process's."""
        gathered = SharedCells.gather(self.shared.directory) if self.shared is not None else None
        failures = self._series(self.node_failures, gathered)
        figures = {}
        for labels, cells in self._series(self.node_duration, gathered).items():
            runs = sum(cells[:-1])
            figures[labels] = {"count": int(runs), "failures": int(failures.get(labels, 0)),
                               "p50_ms": _quantile_ms(self.node_duration.buckets, cells, 0.5),
                               "p99_ms": _quantile_ms(self.node_duration.buckets, cells, 0.99)}
        return figures

    def collect(self) -> Iterable:
        gathered = SharedCells.gather(self.shared.directory) if self.shared is not None else None
        for family in self._counters:
            metric = CounterMetricFamily(PREFIX + family.name.removesuffix("_total"), family.doc,
                                         labels=family.labels)
            for values, count in self._series(family, gathered).items():
                metric.add_metric(values, count)
            yield metric
        for family in self._histograms:
            metric = HistogramMetricFamily(PREFIX + family.name, family.doc, labels=family.labels)
            for values, cells in self._series(family, gathered).items():
                buckets, total = _histogram_args(family.buckets, cells)
                metric.add_metric(values, buckets, total)
            yield metric
        # the queue is the store's, one for all processes: this process's view of it
        yield GaugeMetricFamily(PREFIX + "queue_depth", "Executions accepted and not finished",
                                value=self.queue_depth())
        yield GaugeMetricFamily(PREFIX + "queue_capacity", "Most executions held at once",
                                value=self.queue_capacity)
        yield GaugeMetricFamily(PREFIX + "queue_held", "Requests waiting at the door for room in the queue",
                                value=self.queue_held())
        connections = self._series(self.connections_family, gathered).get((), 0)
        yield GaugeMetricFamily(PREFIX + "connections_open", "Open HTTP connections", value=connections)

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)
