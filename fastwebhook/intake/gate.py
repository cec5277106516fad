"""Who may run now: `order_key` lanes and per-workflow `concurrency` caps.

Executions with the same order key (per workflow) run one at a time, in arrival order: a lane
holds the one running and those waiting, sorted by id (time-ordered, so arrival order; one
reclaimed after a restart goes back in its place).  A workflow with a `concurrency` cap runs at
most that many at once; the rest wait for a slot, oldest first.  Waiting deliveries stay
leased and counted in the durable queue; nothing here is lost on a crash, because the store
still holds them pending.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Callable

from ..store.rows import Delivery


class Gate:
    def __init__(self, key_of: Callable[[Delivery], str | None], limit_of: Callable[[str], int]):
        self.key_of = key_of            # the delivery's order key, None for none
        self.limit_of = limit_of        # the workflow's concurrency cap, 0 for none
        self.lanes: dict[tuple[str, str], list[tuple[bytes, Delivery]]] = {}
        self.running: dict[str, int] = defaultdict(int)
        self.for_slot: dict[str, list[Delivery]] = defaultdict(list)   # by id
        self._lane_of: dict[bytes, tuple[str, str]] = {}
        self._counted: set[bytes] = set()
        self._held: set[bytes] = set()       # every id admitted and not finished

    @property
    def waiting(self) -> int:
        lanes = sum(len(lane) - 1 for lane in self.lanes.values())
        return lanes + sum(len(q) for q in self.for_slot.values())

    def admit(self, delivery: Delivery) -> bool:
        """True: run it now.  False: it waits here until `finish` releases it (or it is here
        already: a lapsed lease of our own reclaimed it a second time)."""
        if delivery.id in self._held:
            return False
        self._held.add(delivery.id)
        key = self.key_of(delivery)
        if key is not None:
            lane_key = (delivery.workflow, key)
            self._lane_of[delivery.id] = lane_key
            lane = self.lanes.get(lane_key)
            if lane is not None:
                # behind the one running, in id order among those waiting
                bisect.insort(lane, (delivery.id, delivery), lo=1, key=lambda item: item[0])
                return False
            self.lanes[lane_key] = [(delivery.id, delivery)]
        return self._slot(delivery)

    def _slot(self, delivery: Delivery) -> bool:
        limit = self.limit_of(delivery.workflow)
        if limit:
            if self.running[delivery.workflow] >= limit:
                # oldest first: a lane's next one may be older than those already waiting
                bisect.insort(self.for_slot[delivery.workflow], delivery, key=lambda d: d.id)
                return False
            self.running[delivery.workflow] += 1
            self._counted.add(delivery.id)
        return True

    def finish(self, delivery: Delivery) -> list[Delivery]:
        """It ended: the deliveries that may run now."""
        released: list[Delivery] = []
        workflow = delivery.workflow
        self._held.discard(delivery.id)
        if delivery.id in self._counted:
            self._counted.discard(delivery.id)
            self.running[workflow] -= 1
        lane_key = self._lane_of.pop(delivery.id, None)
        if lane_key is not None:
            lane = self.lanes[lane_key]
            lane.pop(0)
            limit = self.limit_of(workflow)
            if not lane:
                del self.lanes[lane_key]
            elif limit:   # it queues for the slot with the others, by age
                bisect.insort(self.for_slot[workflow], lane[0][1], key=lambda d: d.id)
            else:
                released.append(lane[0][1])
        waiting = self.for_slot.get(workflow)
        limit = self.limit_of(workflow)
        while waiting and self.running[workflow] < limit:
            head = waiting.pop(0)
            self.running[workflow] += 1
            self._counted.add(head.id)
            released.append(head)
        return released

    def parked(self) -> list[Delivery]:
        """Everything waiting (at shutdown: it stays queued in the store)."""
        held = [d for lane in self.lanes.values() for _, d in lane[1:]]
        return held + [d for q in self.for_slot.values() for d in q]
