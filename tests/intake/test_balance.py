"""The one rule sharing the loop between the door and the work (intake/balance.py): the work's
share grows with the backlog, squared, and is whole while a sender is held; claims, always
whole, go at the odds of that share."""

from __future__ import annotations

import pytest

from fastwebhook.intake.balance import BUSY_EVERY, CLAIM_BATCH, MOST_PAUSE, Balance
from fastwebhook.intake.intake import Intake
from fastwebhook.observe.metrics import Metrics
from fastwebhook.store.rows import Delivery, StoredRequest


def pause(depth: int, *, committing: bool = True, holding: bool = False) -> float:
    intake = Intake(None, Metrics(), capacity=1000, durable=True)
    intake.depth = depth
    if committing:   # a batch waits for the writer: the store belongs to the ack path
        intake.open.append(Delivery(b"\0" * 16, "w", "v", StoredRequest("POST", "/", "", [], {}, "-", 0.0, "r"),
                                    b"{}", None, None, 0.0, 0.0))
    return Balance(intake, lambda: holding).pause()


def test_an_idle_intake_is_claimed_at_once():
    assert pause(0, committing=False) == 0.0


@pytest.mark.parametrize("depth, share", [(300, 0.09), (500, 0.25), (700, 0.49), (900, 0.81)])
def test_whole_claims_go_at_the_odds_of_the_square_of_the_queues_fill(depth, share):
    wait = pause(depth)
    assert 0 < wait < MOST_PAUSE
    assert CLAIM_BATCH / wait == pytest.approx(share / (1 - share) * CLAIM_BATCH / BUSY_EVERY)   # deliveries a second


def test_half_a_queue_is_worked_at_a_third_of_the_full_pace():
    assert CLAIM_BATCH / pause(500) == pytest.approx(CLAIM_BATCH / BUSY_EVERY / 3)


@pytest.mark.parametrize("depth", [0, 10, 100])   # a share of 0, 0.0001, 0.01
def test_a_queue_nearly_empty_while_committing_is_claimed_once_a_pause(depth):
    assert pause(depth) == MOST_PAUSE   # the odds' pace would be slower still


@pytest.mark.parametrize("depth", [1000, 5000])
def test_a_full_queue_gives_the_work_claims_back_to_back(depth):
    assert pause(depth) == 0.0


def test_a_held_sender_gives_the_work_the_whole_loop():
    assert pause(0, holding=True) == 0.0
