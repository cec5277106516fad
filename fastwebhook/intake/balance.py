"""How the event loop and the store's thread are shared between the door and the work.

The rule, in one sentence: **the work's share grows with the backlog** — while the intake is
committing, each claim takes `BUSY_BATCH + fill * (CLAIM_BATCH - BUSY_BATCH)` deliveries and the
next one waits `BUSY_EVERY * (1 - fill)`, where `fill` is how full the queue is (`depth /
capacity`, and 1 as soon as a sender is held for room); while the intake is idle a claim takes
`CLAIM_BATCH` at once.

So a burst into an empty, deep queue is acknowledged first (fill near 0: a small claim every
50 ms, the durable queue absorbs the rest), and a steady stream that fills the queue gives the
work the whole loop (fill 1: full claims back to back), while the door admits one held sender per
slot the work frees.  Acknowledging never starves the work, and nothing is throttled at a fixed
rate whatever the backlog.
"""

from __future__ import annotations

from typing import Callable

from .intake import Intake

CLAIM_BATCH = 1024          # deliveries per claim at full share (and while the intake is idle)
BUSY_BATCH = 128            # ... and at the least share, while the intake is committing
BUSY_EVERY = 0.05           # seconds between two claims at the least share


class Balance:
    def __init__(self, intake: Intake, holding: Callable[[], bool]):
        self.intake = intake
        self.holding = holding      # whether a sender waits at the door for room

    def fill(self) -> float:
        intake = self.intake
        if self.holding():
            return 1.0
        return min(1.0, max(0.0, intake.depth / intake.capacity))

    def claim(self) -> tuple[int, float]:
        """(how many the next claim takes, how long after the last one it may start)."""
        if not self.intake.busy:
            return CLAIM_BATCH, 0.0
        fill = self.fill()
        return BUSY_BATCH + round(fill * (CLAIM_BATCH - BUSY_BATCH)), BUSY_EVERY * (1.0 - fill)
