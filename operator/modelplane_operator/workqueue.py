"""A work queue of object keys, served by a fixed pool of reconcile threads.

The pattern is client-go's workqueue: a watch event only marks its owner's key as
dirty, and a worker later reconciles the newest copy of that owner. A key is queued
at most once and reconciled by at most one worker at a time; a key marked while it is
being reconciled is reconciled once more afterwards. Memory then stays bounded by the
number of keys, not by the number of watch events in flight: kopf hands every event to
a per-object task, and a handler that blocked for a worker kept thousands of event
bodies alive during a large converge.

Delayed wake-ups (deadlines, canary pauses) share one timer thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


class WorkQueue(Generic[K]):
    """Deduplicating queue of keys with ``workers`` threads calling ``process(key)``."""

    def __init__(self, process: Callable[[K], None], workers: int = 8, name: str = "reconcile"):
        self._process = process
        self._lock = threading.Condition()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()  # queued or changed while being processed
        self._processing: set[K] = set()
        self._due: dict[K, float] = {}  # the one pending wake-up per key (monotonic time)
        self._timers: list[tuple[float, int, K]] = []
        self._sequence = itertools.count()
        self.processed = 0  # keys finished, for the idle-time heap trim
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._wake, name=f"{name}-timer", daemon=True))
        for thread in self._threads:
            thread.start()

    def add(self, key: K) -> None:
        """Reconcile ``key`` soon (once, however often it is added meanwhile)."""
        with self._lock:
            self._add_locked(key)

    def add_after(self, key: K, delay: float | None) -> None:
        """Reconcile ``key`` in ``delay`` seconds, replacing its earlier wake-up; None cancels."""
        with self._lock:
            if delay is None:
                self._due.pop(key, None)
                return
            due = time.monotonic() + max(0.0, delay)
            self._due[key] = due
            heapq.heappush(self._timers, (due, next(self._sequence), key))
            self._lock.notify_all()

    def forget(self, key: K) -> None:
        """Drop the pending wake-up of a deleted object."""
        self.add_after(key, None)

    def idle(self) -> bool:
        with self._lock:
            return not self._queue and not self._processing

    def depth(self) -> int:
        with self._lock:
            return len(self._queue)

    def _add_locked(self, key: K) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._lock.notify_all()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                key = self._queue.popleft()
                self._processing.add(key)
                self._dirty.discard(key)
            try:
                self._process(key)
            except Exception:  # the process function reports its own errors; stay alive
                log.exception("processing %s failed", key)
            finally:
                with self._lock:
                    self._processing.discard(key)
                    self.processed += 1
                    if key in self._dirty:
                        self._queue.append(key)
                        self._lock.notify_all()

    def _wake(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    due, _, key = heapq.heappop(self._timers)
                    if self._due.get(key) == due:  # not replaced or cancelled since
                        del self._due[key]
                        self._add_locked(key)
                timeout = self._timers[0][0] - now if self._timers else None
                self._lock.wait(timeout)


class ItemBackoff(Generic[K]):
    """client-go's per-item exponential failure rate limiter: a key that keeps failing waits
    ``base * 2**(failures - 1)`` seconds, at most ``cap``; a success forgets its failures.

    A fast first retry rides out a blip (an API server restart, a 429), and the cap keeps
    an object that cannot be reconciled from hot-looping.
    """

    def __init__(self, base: float = 0.5, cap: float = 60.0) -> None:
        self.base = base
        self.cap = cap
        self._lock = threading.Lock()
        self._failures: dict[K, int] = {}

    def failed(self, key: K) -> float:
        """Count one more failure of ``key``; the delay before its next try."""
        with self._lock:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
        return float(min(self.cap, self.base * 2 ** min(failures - 1, 62)))

    def forget(self, key: K) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._lock:
            return self._failures.get(key, 0)
