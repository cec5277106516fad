"""How much CPU other processes took during a measurement: a shared machine skews the figures."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # the unit of /proc's CPU times


class CpuAccount:
    """Share of all CPUs that processes other than ours used over a block (others skew the figures).

    Everything busy in /proc/stat (steal included: the hypervisor's other guests count too) minus
    the receiver's process group minus the children this script reaped meanwhile (wrk) minus,
    when ``helper`` names them, the processes working for the receiver (`postgres`): their CPU
    seconds are kept apart in ``helper_seconds``.
    """

    def __init__(self, receiver_group: int, helper: str | None = None) -> None:
        self.receiver_group = receiver_group
        self.helper = helper
        self.others_share = 0.0
        self.helper_seconds = 0.0

    def _sample(self) -> tuple[float, float, float, float, float]:
        user, nice, system, idle, iowait, irq, softirq, steal = map(
            int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        # A process's system time includes the softirq work done on its behalf (loopback TCP).
        busy = user + nice + system + irq + softirq + steal
        return (busy / CLOCK_TICKS, group_cpu_seconds(self.receiver_group),
                children.ru_utime + children.ru_stime,
                named_cpu_seconds(self.helper) if self.helper else 0.0, time.monotonic())

    def __enter__(self) -> CpuAccount:
        self._before = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        busy, receiver, reaped, helper, wall = (after - before for after, before in zip(self._sample(), self._before))
        capacity = wall * (os.cpu_count() or 1)
        self.helper_seconds = max(0.0, helper)
        self.others_share = max(0.0, busy - receiver - reaped - self.helper_seconds) / capacity if capacity else 0.0


def group_cpu_seconds(group: int) -> float:
    """User + system CPU time of the live processes in a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == group:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def named_cpu_seconds(comm: str) -> float:
    """User + system CPU time of the live processes named ``comm`` (every `postgres` process:
    PostgreSQL's backends and its own workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        if text[text.index("(") + 1:text.rindex(")")] == comm:
            fields = text.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU time of each thread of a process, by "name/tid" (empty once it is gone)."""
    times = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        times[f"{name}/{stat.parent.name}"] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times
