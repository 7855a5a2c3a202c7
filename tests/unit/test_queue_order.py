"""The worker's queue order (D462): a dispatch reads the queued keys lazily in the order the
sort of the whole queue gave (D358's ``Parking.looks``), parked keys and keys already taken out
of the candidates skipped, whatever the order the watch delivered puts and deletes in."""

from __future__ import annotations

import random

from nodes.worker.parking import ANY, Parking
from nodes.worker.queueorder import QueueOrder


def key(priority: int, run: int) -> str:
    return f"/p/queue/{1000 - priority:04d}/{run:08d}"


def test_the_order_is_the_sorted_queue_less_what_is_parked_under_any_sequence():
    rng = random.Random(460)
    order, candidates, parking = QueueOrder(), {}, Parking()
    for step in range(3000):
        k = key(rng.choice((0, 0, 5)), rng.randrange(600))
        if rng.random() < 0.6:
            candidates[k] = step  # a put (new, or the entry rewritten)
            order.add(k)
        else:
            candidates.pop(k, None)  # a delete (or one of a key never seen)
            order.remove(k)
        if rng.random() < 0.05:
            parking.park(rng.choice(sorted(candidates) or [k]), ANY)
        if step % 100 == 0:
            expected = parking.looks(candidates, ANY, 0.0)
            assert list(order.looks(candidates, parking.parked(ANY, 0.0))) == expected
    assert len(order) == len(candidates)


def test_a_key_a_claim_took_out_of_the_candidates_is_skipped_until_its_deletion():
    order, candidates = QueueOrder(), {}
    for i in range(5):
        candidates[key(0, i)] = i
        order.add(key(0, i))
    del candidates[key(0, 1)]  # the claim won: the watch's deletion has not come yet
    assert list(order.looks(candidates, set())) == [key(0, i) for i in (0, 2, 3, 4)]
    order.remove(key(0, 1))
    order.add(key(9, 7))  # a higher priority goes first
    assert next(order.looks(candidates | {key(9, 7): 0}, set())) == key(9, 7)


def test_a_walk_that_stops_early_reads_only_what_it_needs():
    order = QueueOrder()
    candidates = {key(0, i): i for i in range(10_000)}
    for k in candidates:
        order.add(k)
    read = []

    class Counting(dict):  # type: ignore[type-arg]
        def __contains__(self, k: object) -> bool:
            read.append(k)
            return super().__contains__(k)

    looks = order.looks(Counting(candidates), set())
    assert [next(looks) for _ in range(3)] == [key(0, 0), key(0, 1), key(0, 2)]
    assert len(read) == 3
