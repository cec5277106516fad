"""The one rule sharing the loop between the door and the work (intake/balance.py): the work's
share grows with the backlog, squared, and is whole while a sender is held."""

from __future__ import annotations

import pytest

from fastwebhook.intake.balance import BUSY_BATCH, BUSY_EVERY, CLAIM_BATCH, Balance
from fastwebhook.intake.intake import Intake
from fastwebhook.observe.metrics import Metrics
from fastwebhook.store.rows import Delivery, StoredRequest


def balance(depth: int, *, committing: bool = True, holding: bool = False) -> tuple[int, float]:
    intake = Intake(None, Metrics(), capacity=1000, durable=True)
    intake.depth = depth
    if committing:   # a batch waits for the writer: the store belongs to the ack path
        intake.open.append(Delivery(b"\0" * 16, "w", "v", StoredRequest("POST", "/", "", [], {}, "-", 0.0, "r"),
                                    b"{}", None, None, 0.0, 0.0))
    return Balance(intake, lambda: holding).claim()


def test_an_idle_intake_leaves_the_claim_whole():
    assert balance(0, committing=False) == (CLAIM_BATCH, 0.0)


@pytest.mark.parametrize("depth, share", [(0, 0.0), (100, 0.01), (500, 0.25), (1000, 1.0), (5000, 1.0)])
def test_the_works_share_is_the_square_of_the_queues_fill(depth, share):
    size, wait = balance(depth)
    assert size == BUSY_BATCH + round(share * (CLAIM_BATCH - BUSY_BATCH))
    assert wait == pytest.approx(BUSY_EVERY * (1 - share))


def test_a_held_sender_gives_the_work_the_whole_loop():
    assert balance(0, holding=True) == (CLAIM_BATCH, 0.0)
