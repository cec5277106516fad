"""The door's dedup window (intake/dedup.py): bounded, the newest keys kept, expired ones new again."""

from __future__ import annotations

from fastwebhook.intake.dedup import GENERATIONS, DoorCache


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def execution(number: int) -> bytes:
    return number.to_bytes(16, "big")


def test_a_full_window_keeps_the_newest_keys_within_its_capacity():
    cache = DoorCache(capacity=400, clock=Clock())
    for number in range(2000):
        cache.put(number, execution(number), 5000.0)
        assert len(cache) <= 400
    assert [cache.get(number) for number in range(1990, 2000)] == [execution(n) for n in range(1990, 2000)]
    assert all(cache.get(number) is None for number in range(1000))
    # at least the last capacity * (GENERATIONS - 1) / GENERATIONS keys are still there
    kept = 400 * (GENERATIONS - 1) // GENERATIONS
    assert all(cache.get(number) == execution(number) for number in range(2000 - kept, 2000))


def test_an_expired_key_is_new_again():
    clock = Clock()
    cache = DoorCache(capacity=40, clock=clock)
    for number in range(10):
        cache.put(number, execution(number), clock.now + 5)
    assert cache.get(3) == execution(3)
    clock.now += 10    # those ten have expired
    assert cache.get(3) is None
    cache.put(3, execution(33), clock.now + 60)
    assert cache.get(3) == execution(33)


def test_a_newer_entry_of_a_key_wins_and_forget_drops_only_the_one_it_names():
    cache = DoorCache(capacity=40, clock=Clock())
    cache.put(7, execution(1), 5000.0)
    for number in range(100, 115):   # 7's generation is sealed meanwhile
        cache.put(number, execution(number), 5000.0)
    cache.put(7, execution(2), 5000.0)
    assert cache.get(7) == execution(2)
    cache.forget(7, execution(3))    # names neither: nothing changes
    assert cache.get(7) == execution(2)
    cache.forget(7, execution(2))
    assert cache.get(7) == execution(1)   # the older entry, still live, answers again
    cache.clear()
    assert cache.get(7) is None and len(cache) == 0
