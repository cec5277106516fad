"""How the event loop and the store's thread are shared between the door and the work.

The rule, in one sentence: **the work's claims and the door stand in the odds of the work's
share** — while the intake is committing, the claims take deliveries at `share / (1 - share)`
times the pace of one full claim (`CLAIM_BATCH`) every `BUSY_EVERY`, in claims of `BUSY_BATCH +
share * (CLAIM_BATCH - BUSY_BATCH)` and at least one every `MOST_PAUSE`, where `share` is the
square of how full the queue is (`(depth / capacity) ** 2`), and 1 as soon as a sender is held;
while the intake is idle a claim takes `CLAIM_BATCH` at once.

So a burst into an empty, deep queue is acknowledged first (a tenth full is a share of 1 %:
~200 deliveries a second, the durable queue absorbs the rest), a backlog half as deep as the
queue is worked at a third of the full pace (~6,800 deliveries a second), and a steady stream
that fills the queue gives the work the whole loop (full claims back to back), while the door
admits one held sender per slot the work frees.  Acknowledging never starves the work, and
nothing is throttled at a fixed rate whatever the backlog.
"""

from __future__ import annotations

from typing import Callable

from .intake import Intake

CLAIM_BATCH = 1024          # deliveries per claim at full share (and while the intake is idle)
BUSY_BATCH = 128            # ... and at the least share, while the intake is committing
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

    def claim(self) -> tuple[int, float]:
        """(how many the next claim takes, how long after the last one it may start)."""
        if not self.intake.busy:
            return CLAIM_BATCH, 0.0
        share = self.share()
        size = BUSY_BATCH + round(share * (CLAIM_BATCH - BUSY_BATCH))
        if share <= 0.0:
            return size, MOST_PAUSE
        return size, min(MOST_PAUSE, BUSY_EVERY * size / CLAIM_BATCH * (1.0 - share) / share)
