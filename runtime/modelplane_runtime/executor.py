"""Running forward passes: one at a time, on the event loop or on one compute thread.

Forward passes that take less CPU time than a thread hand-off run on the event loop; the
others run one at a time on a dedicated thread so the loop keeps answering probes. A
request whose client disconnects while it waits for the compute thread (watched once it
has waited 10 ms) is dropped before its forward pass starts. The executor also counts the
requests in flight, which the dynamic batcher (batcher.py) reads as the batch worth
waiting for. The batcher holds one executor as its runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from .disconnect import ClientGone, unless_client_gone

Arrays = dict[str, np.ndarray[Any, Any]]
PredictFn = Callable[[Arrays], Arrays]
# Forward passes cheaper than this (moving average of CPU seconds) run inline on the loop.
INLINE_BELOW_S = 0.0003
EMA_WEIGHT = 0.1
# How long a burst of concurrency is remembered as the size worth waiting for.
PEAK_WINDOW_S = 1.0


@dataclasses.dataclass
class BatchStats:
    """What one request experienced: its queue wait, its batch's compute time and size."""

    queue_s: float
    compute_s: float
    batch_size: int


class InFlight:
    """Requests in flight now, and the peak over the last one to two windows."""

    def __init__(
        self, window_s: float = PEAK_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.count = 0
        self._window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self._current_peak = 0
        self._previous_peak = 0
        self.last_left = float("-inf")

    def _rotate(self) -> None:
        now = self._clock()
        elapsed = now - self._window_start
        if elapsed >= self._window_s:
            # A window with no traffic at all in between forgets the older one too.
            self._previous_peak = self._current_peak if elapsed < 2 * self._window_s else 0
            self._current_peak = self.count
            self._window_start = now

    def enter(self) -> None:
        self.count += 1
        self._rotate()
        self._current_peak = max(self._current_peak, self.count)

    def leave(self) -> None:
        self.count -= 1
        self.last_left = self._clock()

    def since_last_left(self) -> float:
        return self._clock() - self.last_left

    def peak(self) -> int:
        self._rotate()
        return max(self.count, self._current_peak, self._previous_peak)

    def lower_peak(self, seen: int) -> None:
        """A batch waited in vain for the peak: the clients are fewer now than it says."""
        self._current_peak = self._previous_peak = max(seen, self.count)


class Executor:
    """Runs forward passes one at a time, without batching."""

    def __init__(self, predict: PredictFn, typical_compute_s: float = 1.0) -> None:
        self._predict = predict
        self._typical_s = typical_compute_s
        # Off for GPUs: a forward pass there mostly waits for the device, which CPU time
        # does not show, and that wait must not block the event loop.
        self.inline_allowed = True
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelplane-compute")
        self.on_batch: Callable[[int, float], None] = lambda rows, seconds: None
        self.in_flight = InFlight()
        self._thread_waiters = 0  # requests handed to the compute thread, not yet back

    def pending(self) -> int:
        """Requests waiting for a forward pass to start (Triton's pending request count)."""
        return max(0, self._thread_waiters - 1)  # one of them is running

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Count a request as in flight from its arrival until its response is ready."""
        self.in_flight.enter()
        try:
            yield
        finally:
            self.in_flight.leave()

    def _timed(self, inputs: Arrays) -> tuple[Arrays, float]:
        start, cpu_start = time.perf_counter(), time.thread_time()
        out = self._predict(inputs)
        # CPU time, not wall time, decides inline vs thread: a busy machine that preempts
        # the process must not push a small model onto the (slower) thread path.
        cpu = time.thread_time() - cpu_start
        self._typical_s = EMA_WEIGHT * cpu + (1 - EMA_WEIGHT) * self._typical_s
        return out, time.perf_counter() - start

    async def compute(
        self, inputs: Arrays, client_gone: ClientGone | None = None
    ) -> tuple[Arrays, float]:
        """One forward pass; its outputs and wall seconds. With `client_gone`, a pass
        still waiting for the compute thread when the client leaves is dropped."""
        # A forward pass shorter than a thread hand-off runs on the event loop: the hop
        # (and the GIL hand-over that comes with it) would cost more than it frees.
        if self.inline_allowed and self._typical_s < INLINE_BELOW_S:
            return self._timed(inputs)
        loop = asyncio.get_running_loop()
        self._thread_waiters += 1
        try:
            return await self._on_thread(loop, inputs, client_gone)
        finally:
            self._thread_waiters -= 1

    async def _on_thread(
        self, loop: asyncio.AbstractEventLoop, inputs: Arrays, client_gone: ClientGone | None
    ) -> tuple[Arrays, float]:
        if client_gone is None:
            return await loop.run_in_executor(self._pool, self._timed, inputs)
        # Dropped only while it waits for the thread: a pass that has started finishes
        # (and is counted), so metrics never miss a forward pass that ran.
        lock = threading.Lock()
        state = {"started": False, "dropped": False}

        def job() -> tuple[Arrays, float] | None:
            with lock:
                if state["dropped"]:
                    return None
                state["started"] = True
            return self._timed(inputs)

        def may_cancel() -> bool:
            with lock:
                state["dropped"] = not state["started"]
                return state["dropped"]

        result = await unless_client_gone(
            loop.run_in_executor(self._pool, job), client_gone, may_cancel
        )
        assert result is not None  # None only for a dropped job, whose await raised
        return result

    async def run(
        self, inputs: Arrays, rows: int, client_gone: ClientGone | None = None
    ) -> tuple[Arrays, BatchStats]:
        """One forward pass for one request. With `client_gone`, a request still waiting
        when its client disconnects raises ClientDisconnected instead of running."""
        enqueued = time.perf_counter()
        out, compute_s = await self.compute(inputs, client_gone)
        queue_s = max(0.0, time.perf_counter() - enqueued - compute_s)
        self.on_batch(rows, compute_s)
        return out, BatchStats(queue_s, compute_s, rows)

    async def start(self) -> None:
        """Nothing to start without batching."""

    async def stop(self) -> None:
        self._pool.shutdown(wait=True)


class RequestExecutor(Protocol):
    """What the server holds to run requests: an `Executor` or a `DynamicBatcher`."""

    on_batch: Callable[[int, float], None]
    inline_allowed: bool

    def admit(self) -> contextlib.AbstractContextManager[None]: ...

    def pending(self) -> int: ...

    @property
    def in_flight(self) -> InFlight: ...

    async def run(
        self, inputs: Arrays, rows: int, client_gone: ClientGone | None = None
    ) -> tuple[Arrays, BatchStats]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
