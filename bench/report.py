"""Tables for bench/load.py: medians per receiver, fastwebhook's ratio to each, the targets
(issue 7's), before/after (each fastwebhook row against its --baseline row of the same run), the
verification families against the github row of the same run, the sustained run (load, then
the drain) against bare, and the steady run (the default queue under load that never lets up)
against bare and the sustained figures of the same run."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from load import SteadyResult, SustainedResult, WrkResult

BARE, COMMIT, MEMORY, SUSTAINED = "bare", "fastwebhook-commit", "fastwebhook-memory", "sustained"
BUSY_WARNING = 0.10  # share of CPU time other processes may use before the figures are flagged
TARGETS = [  # (row, its req/s as a share of bare's at least, p99 at most, must have no non-2xx,
    #           the floor rows it is set beside)
    (COMMIT, 0.25, 10.0, True, ("floor-commit", "floor-log")),
    (MEMORY, 0.30, 10.0, False, ("floor-memory",)),
]
SUSTAINED_TARGET = 0.15  # the sustained run's executions/s as a share of bare's req/s, at least
FAMILIES = [  # (family, scheme as configured, row, held to FAMILY_TOLERANCE of the github row)
    ("HMAC hex", "github", COMMIT, None),
    ("HMAC base64 + timestamp", "standard, v1 (whsec_)", "fastwebhook-standard", True),
    ("ed25519", "standard, v1a (whpk_)", "fastwebhook-ed25519", False),
    ("token", "token, X-Webhook-Token", "fastwebhook-token", True),
]
FAMILY_TOLERANCE = 0.10  # a family's req/s within ±10 % of the github row's, same run
BASELINES = [  # (row, the same config served by the --baseline checkout's code)
    (COMMIT, "baseline-commit"),
    (MEMORY, "baseline-memory"),
]
BURST, BURST_TARGET, BURST_P99_MS = "burst", 0.11, 30.0  # its acked req/s as a share of bare's, p99 at most
BURST_CONNECTIONS = 64      # the burst's and floor-log's (bench/load.py CONNECTIONS)
STEADY_TARGETS = [  # (steady row, its executions/s as a share of bare's req/s at least, of its sustained's)
    ("steady", 0.10, 0.9),
    ("steady-256", 0.10, 0.9),
    ("steady-postgres", 0.10, None),  # its sustained figure would be PostgreSQL's: not measured here
    ("steady-postgres-256", 0.10, None),
    ("steady-workflow", 0.03, 0.9),
]
STEADY_SUSTAINED = {  # steady row: the sustained run of the same work (load, then the drain)
    "steady": SUSTAINED, "steady-256": SUSTAINED,
    "steady-workflow": "sustained-workflow", "steady-workflow-256": "sustained-workflow",
}
STEADY_FLOORS = {  # steady row: the floors of the same work on SQLite from as many connections
    # (bench/peers/floor_workflow.py, and floor_spec.py with the SPEC's duties per request; load +
    # drain, as the sustained figures)
    "steady": ("floor-no-nodes", "floor-spec"), "steady-workflow": ("floor-workflow",),
    "steady-256": ("floor-no-nodes-256", "floor-spec-256"),
}
CPU_BOUND = 0.9   # of one core: a floor using less waits on something, and bounds only its own design
# CPU per execution by thread is listed for these: each work (no nodes, the workflow) sustained,
# steady (before and after) and its floor, so that a target missed shows which thread's cost holds it
CPU_BY_THREAD = ("sustained", "floor-no-nodes", "floor-spec", "floor-spec-256", "steady", "baseline-steady",
                 "sustained-workflow", "baseline-sustained-workflow", "floor-workflow",
                 "steady-workflow", "baseline-steady-workflow")


@dataclass(frozen=True)
class Settings:
    duration: int
    runs: int
    connections: int
    server_cpu: int
    loader_cpu: int


@dataclass(frozen=True)
class Sustained:
    description: str
    seconds: int  # of load
    result: SustainedResult | None
    error: str | None  # why it could not be measured

    @property
    def measured(self) -> bool:
        return self.result is not None


@dataclass(frozen=True)
class SteadyRow:
    name: str
    description: str
    connections: int
    result: SteadyResult | None
    error: str | None  # why it could not be measured
    runs: tuple[float, ...] = ()  # --steady-runs N > 1: every run's executions/s (result: the median run's)


@dataclass(frozen=True)
class Steady:
    seconds: int  # of load per steady row and per sustained figure
    bare: Row
    burst: Row
    ceilings: dict[str, Sustained]  # by name: sustained, sustained-workflow (and its baseline), floor-workflow
    rows: list[SteadyRow]  # each --baseline row right after its own
    floor: Row | None = None  # floor-log: the ack path's floor (HMAC, JSON, one append per group commit)
    # bare again once every row is measured: how far the host's speed moved during the run
    bare_end: Row | None = None

    @property
    def failed(self) -> bool:
        return bool(self.bare.error or self.burst.error or any(c.error for c in self.ceilings.values())
                    or any(row.error for row in self.rows))


@dataclass(frozen=True)
class Row:
    name: str
    description: str
    results: list[WrkResult]  # one per successful run
    error: str | None  # why the (remaining) runs failed

    @property
    def measured(self) -> bool:
        return bool(self.results)

    @property
    def per_second(self) -> float:
        return statistics.median(result.ok_per_second for result in self.results)

    @property
    def p50_ms(self) -> float:
        return statistics.median(result.p50_ms for result in self.results)

    @property
    def p99_ms(self) -> float:
        return statistics.median(result.p99_ms for result in self.results)

    @property
    def cpu_us(self) -> float | None:
        """The receiver's CPU time per answer, all its threads: what a request costs it."""
        figures = [r.cpu_us_per_request for r in self.results if r.cpu_us_per_request is not None]
        return statistics.median(figures) if figures else None

    @property
    def skewed_runs(self) -> list[WrkResult]:
        """Runs during which other processes took more than BUSY_WARNING of the CPUs."""
        return [result for result in self.results if result.others_cpu_share > BUSY_WARNING]

    @property
    def non_2xx_3xx(self) -> int:
        return sum(result.non_2xx_3xx for result in self.results)

    @property
    def socket_errors(self) -> int:
        return sum(result.socket_errors for result in self.results)

    @property
    def duplicates(self) -> int:
        """Requests answered as duplicates (fastwebhook rows): a repeated dedup key, never expected."""
        return sum(result.duplicates or 0 for result in self.results)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _percent(part: Row | None, whole: Row) -> str:
    if part is None or part is whole or not part.measured or not whole.measured or whole.per_second == 0:
        return "—"
    return f"{100 * part.per_second / whole.per_second:.0f} %"


def _error_summary(error: str) -> str:
    lines = error.splitlines()
    summary = lines[0]
    if len(lines) > 1:  # the receiver's last words, from its log
        summary += ": " + lines[-1].removeprefix("  | ").strip()
    return summary


def _note(row: Row, settings: Settings) -> str:
    notes = []
    if row.non_2xx_3xx:
        notes.append(f"{row.non_2xx_3xx:,} non-2xx answers, not counted in req/s")
    if row.socket_errors:
        notes.append(f"{row.socket_errors:,} socket errors")
    if row.duplicates:
        notes.append(f"{row.duplicates:,} answered as duplicates (200, nothing stored): dedup keys repeated")
    if row.skewed_runs:
        worst = max(result.others_cpu_share for result in row.skewed_runs)
        notes.append(f"{len(row.skewed_runs)} of {len(row.results)} runs skewed: other processes "
                     f"took up to {100 * worst:.0f} % of the CPUs")
    if row.error:
        summary = _error_summary(row.error)
        if row.measured:
            notes.append(f"{len(row.results)} of {settings.runs} runs; then failed: {summary}")
        else:
            notes.append(f"FAILED: {summary}")
    return "; ".join(notes)


def table(rows: list[Row], settings: Settings) -> str:
    by_name = {row.name: row for row in rows}
    commit, memory = by_name.get(COMMIT), by_name.get(MEMORY)
    lines = [
        "| receiver | req/s (2xx) | p50 ms | p99 ms | CPU us/answer | non-2xx | socket errors "
        "| commit as % of it | memory as % of it | note |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in rows:
        if row.measured:
            cpu = f"{row.cpu_us:.1f}" if row.cpu_us is not None else "—"
            figures = (f"{row.per_second:,.0f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | {cpu} | "
                       f"{row.non_2xx_3xx:,} | {row.socket_errors:,}")
        else:
            figures = "— | — | — | — | — | —"
        lines.append(f"| {row.name} | {figures} | {_percent(commit, row)} | {_percent(memory, row)} | "
                     f"{_cell(_note(row, settings))} |")
    return "\n".join(lines)


def targets(rows: list[Row], sustained: Sustained | None = None) -> str:
    """Issue 7's targets, each fastwebhook row beside the floors (the checks plus a durable write,
    alone) as shares of bare."""
    by_name = {row.name: row for row in rows if row.measured}
    bare = by_name.get(BARE)
    lines = ["Targets (issue 7):"]
    for name, share_of_bare, p99_limit_ms, strict, floor_names in TARGETS:
        goal = f"{name} ≥ {100 * share_of_bare:.0f} % of bare with p99 ≤ {p99_limit_ms:g} ms"
        if strict:
            goal += " and no non-2xx"
        row = by_name.get(name)
        if bare is None or row is None:
            lines.append(f"- {goal}: not measured (needs rows {BARE} and {name})")
            continue
        share = row.per_second / bare.per_second
        met = share >= share_of_bare and row.p99_ms <= p99_limit_ms and not (strict and row.non_2xx_3xx)
        line = f"- {goal}: {100 * share:.0f} % of bare, p99 {row.p99_ms:.2f} ms"
        if row.non_2xx_3xx:
            line += f", {row.non_2xx_3xx:,} non-2xx"
        line += f" — {'met' if met else 'MISSED'}"
        for floor_name in floor_names:
            floor = by_name.get(floor_name)
            if floor is not None and floor.per_second > 0:
                line += (f"; {floor_name} (a floor) reaches {100 * floor.per_second / bare.per_second:.0f} % "
                         f"of bare, p99 {floor.p99_ms:.2f} ms, and {name} is "
                         f"{100 * row.per_second / floor.per_second:.0f} % of it")
        lines.append(line)
    goal = f"- {SUSTAINED} ≥ {100 * SUSTAINED_TARGET:.0f} % of bare (executions/s over load + drain)"
    if sustained is None or bare is None:
        lines.append(f"{goal}: not measured (needs row {BARE} and the {SUSTAINED} run)")
    elif not sustained.measured:
        lines.append(f"{goal}: FAILED ({_error_summary(sustained.error or 'no result')})")
    else:
        share = sustained.result.per_second / bare.per_second
        lines.append(f"{goal}: {sustained.result.per_second:,.0f}/s, {100 * share:.0f} % of bare — "
                     f"{'met' if share >= SUSTAINED_TARGET else 'MISSED'}")
    return "\n".join(lines)


def before_after(rows: list[Row]) -> str:
    """Each fastwebhook row against its --baseline row of the same run; "" without them."""
    by_name = {row.name: row for row in rows}
    pairs = [(name, base) for name, base in BASELINES if base in by_name]
    if not pairs:
        return ""
    invalid = lambda row: row.non_2xx_3xx > 0 or row.duplicates > 0  # noqa: E731
    lines = ["Before/after (same run; baseline-*: the --baseline checkout's code on the same configs):"]
    for name, base_name in pairs:
        row, base = by_name.get(name), by_name[base_name]
        if row is None or not row.measured or not base.measured:
            missing = [each.name for each in (row, base) if each is not None and not each.measured]
            lines.append(f"- {name} vs {base_name}: not measured ("
                         + (f"{', '.join(missing)} failed" if missing else f"needs row {name}") + ")")
            continue
        if base.per_second == 0:
            ratio = f"{name} is — of {base_name} (it answered no 2xx)"
        else:
            ratio = f"{name} is {row.per_second / base.per_second:.2f}x {base_name}"
        line = (f"- {ratio}: {row.per_second:,.0f} vs {base.per_second:,.0f} req/s, "
                f"p99 {row.p99_ms:.2f} vs {base.p99_ms:.2f} ms")
        if row.cpu_us is not None and base.cpu_us is not None:
            line += f", CPU {row.cpu_us:.1f} vs {base.cpu_us:.1f} us/answer"
        if invalid(row) or invalid(base):
            line += " — NOT VALID: non-2xx answers or duplicates (see notes)"
        if row.skewed_runs or base.skewed_runs:
            line += " — skewed runs: compare with care"
        lines.append(line)
    return "\n".join(lines)


def _mib(kib: int | None) -> str:
    return f"{kib / 1024:,.0f}" if kib else "—"


def sustained_section(sustained: Sustained | None, rows: list[Row]) -> str:
    """The sustained run's figures; "" when it was not run."""
    if sustained is None:
        return ""
    bare = next((row for row in rows if row.name == BARE and row.measured and row.per_second > 0), None)
    lines = [
        f"Sustained run ({COMMIT}'s config: queue capacity 1,000,000, no nodes; {sustained.seconds} s of "
        "load, then the drain):",
        "",
        "| load s | acked req/s (2xx) | p99 ms | non-2xx | socket errors | executions | drain s "
        "| sustained exec/s | % of bare | RSS end of load MiB | peak RSS MiB | CPU us/execution | note |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    result = sustained.result
    if result is None:
        lines.append("| — | — | — | — | — | — | — | — | — | — | — | — | "
                     f"{_cell('FAILED: ' + _error_summary(sustained.error or 'no result'))} |")
    else:
        load = result.load
        notes = []
        answered = load.requests - load.non_2xx_3xx - (load.duplicates or 0)
        if result.executed < answered:  # a 2xx for a new delivery promises an execution
            notes.append(f"{answered - result.executed:,} fewer executions than accepted requests")
        if load.duplicates:
            notes.append(f"{load.duplicates:,} answered as duplicates: dedup keys repeated")
        if result.failed:
            notes.append(f"{result.failed:,} executions ended failed or error")
        if load.others_cpu_share > BUSY_WARNING:
            notes.append(f"skewed: other processes took {100 * load.others_cpu_share:.0f} % of the CPUs")
        cpu = sum(us for _, us in result.thread_us)
        share = f"{100 * result.per_second / bare.per_second:.0f} %" if bare else "— (no bare row)"
        lines.append(
            f"| {load.seconds:.1f} | {load.ok_per_second:,.0f} | {load.p99_ms:.2f} | {load.non_2xx_3xx:,} "
            f"| {load.socket_errors:,} | {result.executed:,} | {result.drain_seconds:.1f} "
            f"| {result.per_second:,.0f} | {share} | {_mib(result.rss_kib)} | {_mib(result.peak_rss_kib)} "
            f"| {f'{cpu:.1f}' if result.thread_us else '—'} | {_cell('; '.join(notes))} |")
    lines += [
        "",
        "sustained exec/s: executions finished (any final status; the note counts those that ended failed or "
        "error) from the load's start until the queue "
        "was empty and the count stopped growing, over those seconds; % of bare: of bare's req/s in this "
        "session. RSS: the server's VmRSS at the end of the load; peak: its VmHWM after the drain. CPU: "
        "the server's, over load and drain, per execution.",
    ]
    return "\n".join(lines)


def families(rows: list[Row], settings: Settings) -> str:
    """The verification families against the github row of the same run; "" without them."""
    by_name = {row.name: row for row in rows}
    if not any(by_name.get(name) for _, _, name, _ in FAMILIES if name != COMMIT):
        return ""
    github = by_name.get(COMMIT)
    reference = github if github is not None and github.measured and github.per_second > 0 else None
    invalid = lambda row: row.non_2xx_3xx > 0 or row.duplicates > 0  # noqa: E731
    lines = [
        "Verification families (durability commit):",
        "",
        f"| family | scheme | receiver | req/s (2xx) | p99 ms | vs github | within "
        f"{100 * FAMILY_TOLERANCE:.0f} % | note |",
        "|---|---|---|--:|--:|--:|---|---|",
    ]
    for family, scheme, name, held in FAMILIES:
        row = by_name.get(name)
        if row is None or not row.measured:
            figures, ratio, verdict = "— | —", "—", "not measured"
        else:
            figures = f"{row.per_second:,.0f} | {row.p99_ms:.2f}"
            if held is None:
                ratio, verdict = "100 %", "reference" + (", NOT VALID (see note)" if invalid(row) else "")
            elif reference is None:
                ratio, verdict = "—", f"needs {COMMIT} in the same run"
            elif invalid(row) or invalid(reference):
                ratio = f"{100 * row.per_second / reference.per_second:.0f} %"
                verdict = "NOT VALID: non-2xx answers or duplicates (see notes)"
            else:
                share = row.per_second / reference.per_second
                ratio = f"{100 * share:.0f} %"
                change = f"{100 * (share - 1):+.0f} %"
                if not held:
                    verdict = f"no target ({change})"
                elif abs(share - 1) <= FAMILY_TOLERANCE:
                    verdict = f"OK ({change})"
                elif share < 1:
                    verdict = f"MISSED ({change})"
                else:
                    verdict = f"outside, faster ({change})"
        note = _cell(_note(row, settings)) if row is not None else ""
        lines.append(f"| {family} | {scheme} | {name} | {figures} | {ratio} | {verdict} | {note} |")
    lines += [
        "",
        f"Each family row is {COMMIT}'s workflow (durability commit, no nodes) verified by another "
        f"scheme; \"vs github\" is its req/s over {COMMIT}'s (github, HMAC hex) in this run. "
        f"ed25519 is reported, not held to the {100 * FAMILY_TOLERANCE:.0f} % target.",
    ]
    skewed = [name for _, _, name, _ in FAMILIES if by_name.get(name) and by_name[name].skewed_runs]
    if skewed:
        lines.append(f"Skewed runs among {', '.join(skewed)}: compare these ratios with care.")
    return "\n".join(lines)


def _busy_warning(rows: list[Row], sustained: Sustained | None = None) -> str:
    skewed = [row.name for row in rows if row.skewed_runs]
    if sustained and sustained.result and sustained.result.load.others_cpu_share > BUSY_WARNING:
        skewed.append(SUSTAINED)
    if not skewed:
        return ""
    return (f"Warning: other processes used more than {100 * BUSY_WARNING:.0f} % of the CPUs during runs of "
            f"{', '.join(skewed)}; those figures are skewed low (see the notes).")


def terminal(rows: list[Row], settings: Settings, sustained: Sustained | None = None) -> str:
    sections = [table(rows, settings) if rows else "", targets(rows, sustained), before_after(rows),
                families(rows, settings), sustained_section(sustained, rows), _busy_warning(rows, sustained)]
    return "\n" + "\n\n".join(section for section in sections if section)


def _machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # which build of Python (a venv's python links to it): here Debian's python3.11 ran the ack
    # path in ~0.85x the time of a pyenv build of 3.11.7 (docs/benchmarks.md)
    return (f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()} ({Path(sys.executable).resolve()})")


def _first_line_of(*argv: str, any_status: bool = False) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if done.returncode != 0 and not any_status:
        return ""
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


def _when_and_where(path: Path) -> list[str]:
    """The date, the revision of the checkout holding ``path``, the machine and wrk's version."""
    revision = _first_line_of("git", "-C", str(path.parent), "rev-parse", "--short", "HEAD") or "no commit"
    if _first_line_of("git", "-C", str(path.parent), "status", "--porcelain"):
        revision += " + uncommitted changes"
    wrk = _first_line_of("wrk", "-v", any_status=True).split(" Copyright")[0] or "wrk"  # -v exits 1
    return [f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, revision {revision}.  ",
            f"{_machine()}; {wrk}.  "]


def _write(path: Path, parts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".md.tmp")
    temporary.write_text("\n".join(parts) + "\n")
    temporary.replace(path)
    return path


def write_markdown(rows: list[Row], settings: Settings, path: Path, sustained: Sustained | None = None) -> Path:
    parts = [
        "# Load benchmark: latest results",
        "",
        *_when_and_where(path),
        f"Each receiver alone, pinned to CPU {settings.server_cpu}; loader `taskset -c {settings.loader_cpu} "
        f"wrk -t1 -c{settings.connections} -d{settings.duration}s --latency -s bench/signed.lua` on CPU "
        f"{settings.loader_cpu}; 1 s warm-up first. Signed 1160-byte GitHub push, a new "
        f"X-GitHub-Delivery per request (the verification families: the same body and other headers "
        f"signed by their scheme once per start, a new X-Delivery per request as their dedup key). "
        + (f"Medians of {settings.runs} runs (non-2xx and socket errors summed)." if settings.runs > 1
           else "One run.")
        + (f" The sustained run: the same loader for {sustained.seconds} s on a fresh fastwebhook-commit, "
           "then the drain, once." if sustained else ""),
        "",
        _busy_warning(rows, sustained) or f"Other processes used less than {100 * BUSY_WARNING:.0f} % of the CPUs "
        "during every run.",
        "",
        "Written by `bench/load.py`; req/s counts only 2xx/3xx answers; CPU us/answer is the "
        "receiver's CPU time (all its threads, from /proc) over the measured run per answer of any status.",
        "",
        *([table(rows, settings), ""] if rows else []),
        targets(rows, sustained),
        "",
        *([before_after(rows), ""] if before_after(rows) else []),
        *([families(rows, settings), ""] if families(rows, settings) else []),
        *([sustained_section(sustained, rows), ""] if sustained else []),
        "Receivers:",
        *(f"- **{row.name}**: {row.description}" for row in rows),
        *([f"- **{SUSTAINED}**: {sustained.description}"] if sustained else []),
    ]
    if settings.runs > 1:
        parts += ["", "Every run (req/s, p50 ms, p99 ms, CPU other processes used):"]
        for row in rows:
            runs = "; ".join(f"{r.ok_per_second:,.0f}, {r.p50_ms:.2f}, {r.p99_ms:.2f}, "
                             f"{100 * r.others_cpu_share:.0f} %" for r in row.results)
            parts.append(f"- {row.name}: {runs or '—'}")
    parts += ["", "CPU per answer by thread, each run (us; threads under 1 % of the total left out):"]
    for row in rows:
        runs = "; ".join(", ".join(f"{name} {us:.1f}" for name, us in r.thread_us) or "—" for r in row.results)
        parts.append(f"- {row.name}: {runs or '—'}")
    if sustained and sustained.result:
        threads = ", ".join(f"{name} {us:.1f}" for name, us in sustained.result.thread_us) or "—"
        parts.append(f"- {SUSTAINED} (per execution, over load and drain): {threads}")
    failures = [(row.name, row.error) for row in rows if row.error]
    if sustained and sustained.error:
        failures.append((SUSTAINED, sustained.error))
    if failures:
        parts += ["", "Errors:"]
        for name, error in failures:
            parts += ["", f"{name}:", "```", error, "```"]
    return _write(path, parts)


# --- the steady run ----------------------------------------------------------------------------------

def _share(part: float, whole: float | None) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "—"


def _rate(row: Row | None) -> float | None:
    """A measured row's req/s; None when it was not measured (or answered nothing)."""
    return row.per_second if row is not None and row.measured and row.per_second > 0 else None


def _sustained_of(name: str, steady: Steady) -> Sustained | None:
    """The sustained run of a steady row's work in the same session (a baseline row's: the
    baseline's), if measured."""
    own = name.removeprefix("baseline-")
    counterpart = STEADY_SUSTAINED.get(own)
    if counterpart is None:
        return None
    found = steady.ceilings.get(counterpart if own == name else f"baseline-{counterpart}")
    return found if found is not None and found.result is not None and found.result.per_second > 0 else None


def _p99_cell(result: SteadyResult) -> str:
    p99, whose = result.admitted_p99
    if p99 is None:
        return "—"
    if whose == "wrk":
        return f"{p99:.2f}"
    return "> 10,000 (server)" if p99 == float("inf") else f"≤ {p99:g} (server)"


def steady_ceilings(steady: Steady) -> str:
    """bare, the burst, the sustained figures and floor-workflow of the steady run's session."""
    bare = _rate(steady.bare)
    lines = [
        f"Steady run: the ceilings of the same session ({steady.seconds} s of load for the sustained figures):",
        "",
        "| row | figure | % of bare | p99 ms | CPU us/unit | note |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for row in (steady.bare, steady.burst, *([steady.floor] if steady.floor else []),
                *([steady.bare_end] if steady.bare_end else [])):
        if row.measured:
            cpu = f"{row.cpu_us:.1f}" if row.cpu_us is not None else "—"
            figures = f"{row.per_second:,.0f} req/s (2xx) | {_share(row.per_second, bare)} | {row.p99_ms:.2f} | {cpu}"
        else:
            figures = "— | — | — | —"
        notes = [f"{row.non_2xx_3xx:,} non-2xx"] if row.non_2xx_3xx else []
        notes += [f"skewed: other processes took {100 * max(r.others_cpu_share for r in row.skewed_runs):.0f} % "
                  "of the CPUs"] if row.skewed_runs else []
        notes += [f"FAILED: {_error_summary(row.error)}"] if row.error else []
        lines.append(f"| {row.name} | {figures} | {_cell('; '.join(notes))} |")
    for name, sustained in steady.ceilings.items():
        result = sustained.result
        if result is None:
            failure = "FAILED: " + _error_summary(sustained.error or "no result")
            lines.append(f"| {name} | — | — | — | — | {_cell(failure)} |")
            continue
        load = result.load
        notes = [f"acked {load.ok_per_second:,.0f} req/s during the load, drain {result.drain_seconds:.1f} s"]
        notes += [f"{load.non_2xx_3xx:,} non-2xx"] if load.non_2xx_3xx else []
        notes += [f"{result.failed:,} executions ended failed or error"] if result.failed else []
        notes += [f"skewed: other processes took {100 * load.others_cpu_share:.0f} % of the CPUs"] \
            if load.others_cpu_share > BUSY_WARNING else []
        cpu = f"{sum(us for _, us in result.thread_us):.1f}" if result.thread_us else "—"
        lines.append(f"| {name} | {result.per_second:,.0f} exec/s | {_share(result.per_second, bare)} "
                     f"| {load.p99_ms:.2f} (load) | {cpu} | {_cell('; '.join(notes))} |")
    lines += ["", "burst: acked req/s and p99 of fastwebhook-commit.toml (a queue of 1,000,000) under 64 connections; "
              "sustained figures: executions finished over load + drain; CPU per answer (bare, burst) or per "
              "execution (over load and drain), all the receiver's threads."]
    drift = _bare_drift(steady)
    if drift:
        lines += ["", drift]
    return "\n".join(lines)


def _bare_drift(steady: Steady) -> str | None:
    """How far bare moved between the start and the end of the run: every share of bare in it
    moves with the host by as much (these 2-core machines speed up and slow down by a fifth)."""
    start, end = _rate(steady.bare), _rate(steady.bare_end)
    if not start or not end:
        return None
    return (f"bare-end: bare again after the last row, {end:,.0f} against {start:,.0f} req/s at the "
            f"start ({100 * (end / start - 1):+.1f} %); every share of bare above is of the start's.")


def steady_table(steady: Steady) -> str:
    bare = _rate(steady.bare)
    lines = [
        f"Steady rows: a fresh server, the default queue (no [queue] section), 1 s warm-up, {steady.seconds} s of "
        "load, no drain:",
        "",
        "| row | connections | executions/s | % of bare | of sustained | 2xx/s | 503/s | p99 admitted ms "
        "| RSS end MiB | peak RSS MiB | CPU us/execution | note |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for row in steady.rows:
        result = row.result
        if result is None:
            lines.append(f"| {row.name} | {row.connections} | — | — | — | — | — | — | — | — | — | "
                         f"{_cell('FAILED: ' + _error_summary(row.error or 'no result'))} |")
            continue
        load = result.load
        sustained = _sustained_of(row.name, steady)
        of_sustained = f"{result.per_second / sustained.result.per_second:.2f}x" if sustained else "—"
        notes = []
        if result.other_answers:
            notes.append(f"{result.other_answers:,} answers neither 2xx nor 503")
        if result.failed:
            notes.append(f"{result.failed:,} executions ended failed or error")
        if load.socket_errors:
            notes.append(f"{load.socket_errors:,} socket errors")
        if load.duplicates:
            notes.append(f"{load.duplicates:,} answered as duplicates: dedup keys repeated")
        if result.helper_us is not None:
            notes.append(f"PostgreSQL {result.helper_us:.1f} us CPU/execution")
        if len(row.runs) > 1:
            notes.append(f"the median of {len(row.runs)} runs: {min(row.runs):,.0f}-{max(row.runs):,.0f}/s")
        if load.others_cpu_share > BUSY_WARNING:
            notes.append(f"skewed: other processes took {100 * load.others_cpu_share:.0f} % of the CPUs")
        cpu = f"{sum(us for _, us in result.thread_us):.1f}" if result.thread_us else "—"
        lines.append(
            f"| {row.name} | {row.connections} | {result.per_second:,.0f} | {_share(result.per_second, bare)} "
            f"| {of_sustained} | {result.accepted_per_second:,.0f} | {result.refused_per_second:,.0f} "
            f"| {_p99_cell(result)} | {_mib(result.rss_kib)} | {_mib(result.peak_rss_kib)} | {cpu} "
            f"| {_cell('; '.join(notes))} |")
    lines += [
        "",
        "executions/s: fastwebhook_executions_total of workflow \"bench\" (all statuses; the note counts those "
        "that ended failed or error: none is expected) read just before and just after the load, over the seconds "
        "between; % of bare: of bare's req/s; of sustained: over the sustained "
        "figure of the same work in this session (SQLite). 2xx/s, 503/s: as wrk counted them. p99 admitted: wrk's "
        "p99 when every answer was a 2xx; otherwise \"server\": the bucket bound of the p99 of the server's "
        "fastwebhook_request_duration_seconds over the load, which holds every answer (it has no status label) "
        "and starts at the parsed request (the wait in the kernel's queues is not in it). RSS: the server's VmRSS "
        "at the end of the load; peak: its VmHWM then. CPU: the server's, over the load, per execution resolved "
        "(PostgreSQL's apart: every `postgres` process of the machine).",
    ]
    return "\n".join(lines)


def steady_targets(steady: Steady) -> str:
    bare = _rate(steady.bare)
    lines = ["Targets of the steady run (same run):"]
    burst = steady.burst
    goal = f"- {BURST} ≥ {100 * BURST_TARGET:.0f} % of bare with p99 ≤ {BURST_P99_MS:g} ms"
    if not burst.measured or bare is None:
        lines.append(f"{goal}: not measured (needs bare and the burst)")
    else:
        share = burst.per_second / bare
        met = share >= BURST_TARGET and burst.p99_ms <= BURST_P99_MS
        floor = steady.floor
        lines.append(f"{goal}: {100 * share:.1f} % of bare, p99 {burst.p99_ms:.2f} ms"
                     + (f", {burst.non_2xx_3xx:,} non-2xx" if burst.non_2xx_3xx else "")
                     + f" — {'met' if met else 'MISSED'}"
                     + (_floor_note(floor.name, BURST_CONNECTIONS, floor.per_second / bare, BURST_TARGET,
                                    floor.per_second * (floor.cpu_us or 0.0) / 1e6, burst.per_second / floor.per_second)
                        if floor is not None and floor.measured else ""))
    rows = {row.name: row for row in steady.rows}
    for name, of_bare, of_sustained in STEADY_TARGETS:
        goal = f"- {name} ≥ {100 * of_bare:.0f} % of bare" + (f" and ≥ {of_sustained:g}x its sustained figure"
                                                             if of_sustained else "")
        row = rows.get(name)
        if row is None or row.result is None or bare is None:
            lines.append(f"{goal}: not measured (needs bare and row {name})")
            continue
        rate = row.result.per_second
        met = rate / bare >= of_bare
        line = f"{goal}: {rate:,.0f} executions/s, {100 * rate / bare:.1f} % of bare"
        if of_sustained:
            sustained = _sustained_of(name, steady)
            if sustained is None:
                line += ", its sustained figure not measured"
                met = False
            else:
                ratio = rate / sustained.result.per_second
                line += f", {ratio:.2f}x {STEADY_SUSTAINED[name]} ({sustained.result.per_second:,.0f}/s)"
                met = met and ratio >= of_sustained
        floor_notes = ""
        for floor_name in STEADY_FLOORS.get(name, ()):
            floor = steady.ceilings.get(floor_name)
            if floor is not None and floor.result is not None:
                floor_notes += _floor_note(floor_name, row.connections, floor.result.per_second / bare, of_bare,
                                           floor.result.per_second * sum(us for _, us in floor.result.thread_us) / 1e6,
                                           rate / floor.result.per_second)
        lines.append(f"{line} — {'met' if met else 'MISSED'}{floor_notes}")
    return "\n".join(lines)


def _floor_note(floor: str, connections: int, share: float, target: float, cores: float, of_floor: float) -> str:
    """Where the floor of the same work stands against the target, and whether it proves a limit:
    only a floor that kept its core busy does (one that waited bounds its own design alone); and
    the row as a multiple of its floor, which holds where bare's share moves with the host (bare
    read 72,000-208,000 req/s on these machines, the durable rows far less)."""
    if share >= target:
        verdict = "above the target"
    elif cores >= CPU_BOUND:
        verdict = "below the target with its core busy: the target is beyond this work here"
    else:
        verdict = "below the target, but not CPU-bound: no proof of a limit"
    return (f" (its floor at {connections} connections, {floor}: {100 * share:.1f} % of bare at {cores:.2f} of a core, "
            f"{verdict}; this row is {of_floor:.2f}x the floor)")


def steady_before_after(steady: Steady) -> str:
    """Each steady row and the sustained workflow against its --baseline row; "" without them."""
    rows = {row.name: row for row in steady.rows}
    lines = []
    for name, row in rows.items():
        base = rows.get(f"baseline-{name}")
        if base is None:
            continue
        if row.result is None or base.result is None or base.result.per_second == 0:
            lines.append(f"- {name} vs {base.name}: not measured")
            continue
        ours, theirs = row.result, base.result
        cpu = lambda result: sum(us for _, us in result.thread_us)  # noqa: E731
        medians = f" (medians of {len(row.runs)} alternated runs)" if len(row.runs) > 1 else ""
        lines.append(f"- {name} is {ours.per_second / theirs.per_second:.2f}x {base.name}{medians}: "
                     f"{ours.per_second:,.0f} vs {theirs.per_second:,.0f} executions/s, "
                     f"{ours.refused_per_second:,.0f} vs {theirs.refused_per_second:,.0f} 503/s, "
                     f"CPU {cpu(ours):.1f} vs {cpu(theirs):.1f} us/execution")
    ours, theirs = steady.ceilings.get("sustained-workflow"), steady.ceilings.get("baseline-sustained-workflow")
    if theirs is not None:
        if ours is None or ours.result is None or theirs.result is None or theirs.result.per_second == 0:
            lines.append("- sustained-workflow vs baseline-sustained-workflow: not measured")
        else:
            lines.append(f"- sustained-workflow is {ours.result.per_second / theirs.result.per_second:.2f}x "
                         f"baseline-sustained-workflow: {ours.result.per_second:,.0f} vs "
                         f"{theirs.result.per_second:,.0f} executions/s")
    return "\n".join(["Before/after (same run; baseline-*: the --baseline checkout's code on the same configs):",
                      *lines]) if lines else ""


def steady_cpu(steady: Steady) -> str:
    """CPU per execution by thread: no nodes and the workflow, sustained and steady (before and
    after), each beside its floor."""
    lines = []
    for name in CPU_BY_THREAD:
        ceiling = steady.ceilings.get(name)
        row = next((row for row in steady.rows if row.name == name), None)
        result = ceiling.result if ceiling is not None else (row.result if row is not None else None)
        if result is not None and result.thread_us:
            over = "load + drain" if ceiling is not None else "the load"
            threads = ", ".join(f"{thread} {us:.1f}" for thread, us in result.thread_us)
            lines.append(f"- {name} (over {over}): {threads} = {sum(us for _, us in result.thread_us):.1f}")
    return "\n".join(["CPU per execution by thread (us; threads under 1 % of the total left out):", *lines]) \
        if lines else ""


def steady_terminal(steady: Steady) -> str:
    sections = [steady_ceilings(steady), steady_table(steady), steady_targets(steady), steady_before_after(steady),
                steady_cpu(steady)]
    return "\n" + "\n\n".join(section for section in sections if section)


def write_steady_markdown(steady: Steady, settings: Settings, path: Path) -> Path:
    parts = [
        "# Load benchmark: the steady run",
        "",
        *_when_and_where(path),
        f"Each receiver alone, pinned to CPU {settings.server_cpu}; loader `taskset -c {settings.loader_cpu} wrk -t1 "
        f"-c<connections> --latency -s bench/signed.lua` on CPU {settings.loader_cpu} (the steady rows with "
        "`--timeout 10s`, signed.lua counting the answers by status); 1 s warm-up first. Signed 1160-byte GitHub "
        f"push, a new X-GitHub-Delivery per request. bare {settings.duration} s, the burst 8 s, the sustained "
        f"figures and each steady row {steady.seconds} s of load. PostgreSQL (the steady-postgres rows) is not "
        "pinned.",
        "",
        "Written by `bench/load.py --steady`.",
        "",
        steady_ceilings(steady),
        "",
        steady_table(steady),
        "",
        steady_targets(steady),
        "",
        *([steady_before_after(steady), ""] if steady_before_after(steady) else []),
        *([steady_cpu(steady), ""] if steady_cpu(steady) else []),
        "Rows:",
        f"- **{steady.bare.name}**: {steady.bare.description}",
        f"- **{steady.burst.name}**: {steady.burst.description}",
        *([f"- **{steady.floor.name}**: {steady.floor.description}"] if steady.floor else []),
        *(f"- **{name}**: {sustained.description}" for name, sustained in steady.ceilings.items()),
        *(f"- **{row.name}**: {row.description}, {row.connections} connections" for row in steady.rows),
        "",
        *(["floor-log, CPU per answer by thread (us): "
           + (", ".join(f"{thread} {us:.1f}" for thread, us in steady.floor.results[-1].thread_us) or "—"), ""]
          if steady.floor and steady.floor.measured else []),
        "CPU per execution by thread, every steady row (us, over the load):",
        *(f"- {row.name}: " + (", ".join(f"{thread} {us:.1f}" for thread, us in row.result.thread_us) or "—")
          for row in steady.rows if row.result is not None),
    ]
    failures = [(row.name, row.error) for row in (steady.bare, steady.burst) if row.error]
    failures += [(name, sustained.error) for name, sustained in steady.ceilings.items() if sustained.error]
    failures += [(row.name, row.error) for row in steady.rows if row.error]
    if failures:
        parts += ["", "Errors:"]
        for name, error in failures:
            parts += ["", f"{name}:", "```", error, "```"]
    return _write(path, parts)
