"""The work queue: each key once, one worker per key, changes during a reconcile not lost."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from modelplane_operator.workqueue import WorkQueue

pytestmark = pytest.mark.unit


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_keys_added_while_queued_are_processed_once() -> None:
    release = threading.Event()
    done: Counter[str] = Counter()

    def process(key: str) -> None:
        release.wait(5)
        done[key] += 1

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.add("busy")  # occupies the only worker
    wait_until(lambda: queue.depth() == 0 and not queue.idle())
    for _ in range(50):
        queue.add("a")
        queue.add("b")
    assert queue.depth() == 2
    release.set()
    wait_until(queue.idle)
    assert done == Counter({"busy": 1, "a": 1, "b": 1})


def test_a_key_is_never_processed_by_two_workers_and_a_change_meanwhile_is_not_lost() -> None:
    active: Counter[str] = Counter()
    overlap: list[str] = []
    runs: Counter[str] = Counter()
    first_started = threading.Event()
    finish_first = threading.Event()
    guard = threading.Lock()

    def process(key: str) -> None:
        with guard:
            active[key] += 1
            if active[key] > 1:
                overlap.append(key)
            runs[key] += 1
            first = runs[key] == 1
        if first:
            first_started.set()
            finish_first.wait(5)
        with guard:
            active[key] -= 1

    queue: WorkQueue[str] = WorkQueue(process, workers=4)
    queue.add("k")
    assert first_started.wait(5)
    for _ in range(10):  # changes arriving while "k" is being reconciled
        queue.add("k")
    time.sleep(0.1)  # three idle workers had the chance to pick "k" up in parallel
    assert runs["k"] == 1
    finish_first.set()
    wait_until(lambda: queue.idle() and runs["k"] == 2)
    time.sleep(0.05)
    assert runs["k"] == 2, "one more pass sees the changes, no more"
    assert overlap == []


def test_a_failing_key_does_not_stop_the_workers() -> None:
    done: list[str] = []

    def process(key: str) -> None:
        if key == "bad":
            raise RuntimeError("surprise")
        done.append(key)

    queue: WorkQueue[str] = WorkQueue(process, workers=1)
    queue.add("bad")
    queue.add("good")
    wait_until(lambda: done == ["good"])


def test_wake_ups_fire_once_and_a_newer_one_replaces_the_older() -> None:
    fired: list[tuple[str, float]] = []
    queue: WorkQueue[str] = WorkQueue(lambda key: fired.append((key, time.monotonic())), workers=1)
    start = time.monotonic()
    queue.add_after("replaced", 0.05)
    queue.add_after("replaced", 0.3)
    queue.add_after("cancelled", 0.05)
    queue.forget("cancelled")
    queue.add_after("soon", 0.1)
    wait_until(lambda: len(fired) >= 2)
    time.sleep(0.4)
    assert [key for key, _ in fired] == ["soon", "replaced"]
    assert fired[1][1] - start >= 0.3


def test_item_backoff_doubles_per_failure_up_to_the_cap_and_forgets_on_success() -> None:
    from modelplane_operator.workqueue import ItemBackoff

    backoff: ItemBackoff[str] = ItemBackoff(base=0.5, cap=60.0)
    delays = [backoff.failed("a") for _ in range(10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]  # a fast first retry
    assert max(delays) == 60.0 and delays[-1] == 60.0  # capped: no hot loop, no idle hour
    assert backoff.failed("b") == 0.5  # per object: another key starts fresh
    backoff.forget("a")
    assert backoff.failures("a") == 0 and backoff.failed("a") == 0.5
    for _ in range(2000):  # no overflow however long an object keeps failing
        backoff.failed("c")
    assert backoff.failed("c") == 60.0
