"""How the event loop and the store's thread are shared between the door and the work.

The rule, in one sentence: **the work's claims and the door stand in the odds of the work's
share** — while the intake is committing, a full claim (`CLAIM_BATCH`) goes every `BUSY_EVERY *
(1 - share) / share`, and at least one every `MOST_PAUSE`, where `share` is the square of how
full the queue is (`(depth / capacity) ** 2`), and 1 as soon as a sender is held; while the
intake is idle a claim goes at once.  A claim is always whole: the share sets how often the
work takes the store and the loop, never how much it takes then, since a claim's transaction
and thread crossings cost nearly the same for a few deliveries as for a thousand (claims of
`128 + share * 896` cost the steady no-node stream 0-15 % of its executions: docs/benchmarks.md).

So a burst into an empty, deep queue is acknowledged first (a tenth full is a share of 1 %:
one claim a second, the least pace, while the durable queue absorbs the rest), a backlog half
as deep as the queue is worked at a third of the full pace (a claim every 150 ms, ~6,800
deliveries a second), and a steady stream that fills the queue gives the work the whole loop
(claims back to back), while the door admits one held sender per slot the work frees.
Acknowledging never starves the work, and nothing is throttled at a fixed rate whatever the
backlog.
"""

from __future__ import annotations

from typing import Callable

from .intake import Intake

CLAIM_BATCH = 1024          # deliveries per claim, at most
BUSY_EVERY = 0.05           # seconds: the pace of full claims at even odds (a share of 1/2)
MOST_PAUSE = 1.0            # seconds: while the intake is committing, a claim at least this often


class Balance:
    def __init__(self, intake: Intake, holding: Callable[[], bool]):
        self.intake = intake
        self.holding = holding      # whether a sender waits at the door for room

    def share(self) -> float:
        """The work's share, 0 to 1."""
        intake = self.intake
        if self.holding():
            return 1.0
        fill = min(1.0, max(0.0, intake.depth / intake.capacity))
        return fill * fill

    def pause(self) -> float:
        """How long after the last claim the next (whole) one may start."""
        if not self.intake.busy:
            return 0.0
        share = self.share()
        if share <= 0.0:
            return MOST_PAUSE
        return min(MOST_PAUSE, BUSY_EVERY * (1.0 - share) / share)
