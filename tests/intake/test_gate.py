"""The gate (intake/gate.py) as a pure object: order-key lanes and concurrency caps."""

from __future__ import annotations

from fastwebhook.intake.gate import Gate
from fastwebhook.store.rows import Delivery, StoredRequest

REQUEST = StoredRequest("POST", "/", "", [], {}, "127.0.0.1", 0.0, "r")


def delivery(n: int, workflow: str = "w", key: str | None = None) -> Delivery:
    d = Delivery(n.to_bytes(16, "big"), workflow, "v", REQUEST, b"", None, None, 0.0)
    d.dedup_key = key        # the test's order key rides here; the gate reads it through key_of
    return d


def gate(limits: dict[str, int] | None = None) -> Gate:
    return Gate(lambda d: d.dedup_key, lambda w: (limits or {}).get(w, 0))


def test_same_key_runs_one_at_a_time_in_id_order_and_other_keys_run_at_once():
    g = gate()
    a1, b1, a2, a3 = delivery(1, key="a"), delivery(2, key="b"), delivery(3, key="a"), delivery(4, key="a")
    assert [g.admit(d) for d in (a1, b1, a3)] == [True, True, False]
    assert g.admit(a2) is False        # reclaimed late, but older than a3: it goes first
    assert g.waiting == 2
    assert g.finish(a1) == [a2]
    assert g.finish(b1) == []
    assert g.finish(a2) == [a3]
    assert g.finish(a3) == [] and g.lanes == {} and g.waiting == 0


def test_no_key_is_not_ordered():
    g = gate()
    assert all(g.admit(delivery(n)) for n in range(5))


def test_a_concurrency_cap_holds_the_rest_oldest_first_per_workflow():
    g = gate({"capped": 2})
    capped = [delivery(n, "capped") for n in range(5)]
    free = delivery(9, "free")
    assert [g.admit(d) for d in capped] == [True, True, False, False, False]
    assert g.admit(free) is True
    assert g.finish(capped[1]) == [capped[2]]
    assert g.finish(capped[0]) == [capped[3]]
    assert g.running["capped"] == 2
    assert g.finish(capped[2]) == [capped[4]]
    assert g.parked() == []


def test_lanes_and_caps_together():
    g = gate({"w": 1})
    a1, b1, a2 = delivery(1, key="a"), delivery(2, key="b"), delivery(3, key="a")
    assert [g.admit(d) for d in (a1, b1, a2)] == [True, False, False]
    assert set(map(id, g.parked())) == {id(b1), id(a2)}
    # a1 ends: a2 heads lane a but b1 has waited for the slot longer
    assert g.finish(a1) == [b1]
    assert g.finish(b1) == [a2]
    assert g.finish(a2) == []


def test_a_delivery_admitted_twice_runs_once_and_its_lane_goes_on():
    g = gate()
    a1, a2 = delivery(1, key="a"), delivery(2, key="a")
    assert g.admit(a1) is True
    assert g.admit(a1) is False          # reclaimed again while it runs (its own lease lapsed)
    assert g.admit(a2) is False
    assert g.finish(a1) == [a2]
    assert g.finish(a2) == [] and g.lanes == {}
