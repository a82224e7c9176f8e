"""Dynamic batching: concurrent requests are merged into one forward call and split back.

One compute thread runs forward passes. While it is busy, new requests queue up; the next
batch takes every queued request that fits (up to the max batch size). It waits for more
only while requests that had arrived when it started are still being received and
decoded, and never past the moment its oldest request has been queued for the max queue
delay: waiting for requests that have not arrived yet would only add latency. An idle
batcher with nothing queued or arriving runs a request at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray[Any, Any]]
PredictFn = Callable[[Arrays], Arrays]
# How often a waiting batch re-checks whether requests are still being received.
POLL_S = 0.002
# Forward passes cheaper than this (moving average of CPU seconds) run inline on the loop.
INLINE_BELOW_S = 0.0003
EMA_WEIGHT = 0.1


@dataclasses.dataclass
class BatchStats:
    """What one request experienced: its queue wait, its batch's compute time and size."""

    queue_s: float
    compute_s: float
    batch_size: int


@dataclasses.dataclass
class _Pending:
    inputs: Arrays
    rows: int
    signature: tuple[Any, ...]
    enqueued: float
    future: asyncio.Future[tuple[Arrays, BatchStats]]


def _signature(inputs: Arrays) -> tuple[Any, ...]:
    # Requests can share a forward pass only when every non-batch dimension agrees.
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


class Executor:
    """Runs forward passes one at a time on a dedicated thread, without batching."""

    def __init__(self, predict: PredictFn, typical_compute_s: float = 1.0) -> None:
        self._predict = predict
        self._typical_s = typical_compute_s
        # Off for GPUs: a forward pass there mostly waits for the device, which CPU time
        # does not show, and that wait must not block the event loop.
        self.inline_allowed = True
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelplane-compute")
        self.on_batch: Callable[[int, float], None] = lambda rows, seconds: None
        self._next_ticket = 0
        self._receiving: set[int] = set()

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Mark a request as being received and decoded (it may join the next batch)."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._receiving.add(ticket)
        try:
            yield
        finally:
            self._receiving.discard(ticket)

    def _receiving_before(self, horizon: int) -> bool:
        return any(ticket < horizon for ticket in self._receiving)

    def _timed(self, inputs: Arrays) -> tuple[Arrays, float]:
        start, cpu_start = time.perf_counter(), time.thread_time()
        out = self._predict(inputs)
        # CPU time, not wall time, decides inline vs thread: a busy machine that preempts
        # the process must not push a small model onto the (slower) thread path.
        cpu = time.thread_time() - cpu_start
        self._typical_s = EMA_WEIGHT * cpu + (1 - EMA_WEIGHT) * self._typical_s
        return out, time.perf_counter() - start

    async def _compute(self, inputs: Arrays) -> tuple[Arrays, float]:
        # A forward pass shorter than a thread hand-off runs on the event loop: the hop
        # (and the GIL hand-over that comes with it) would cost more than it frees.
        if self.inline_allowed and self._typical_s < INLINE_BELOW_S:
            return self._timed(inputs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._timed, inputs)

    async def run(self, inputs: Arrays, rows: int) -> tuple[Arrays, BatchStats]:
        """One forward pass for one request."""
        enqueued = time.perf_counter()
        out, compute_s = await self._compute(inputs)
        queue_s = max(0.0, time.perf_counter() - enqueued - compute_s)
        self.on_batch(rows, compute_s)
        return out, BatchStats(queue_s, compute_s, rows)

    async def start(self) -> None:
        """Nothing to start without batching."""

    async def stop(self) -> None:
        self._pool.shutdown(wait=True)


class DynamicBatcher(Executor):
    """Queues requests and merges them into batches of at most `max_batch_size` rows."""

    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int,
        max_queue_delay_s: float,
        typical_compute_s: float = 1.0,
    ) -> None:
        super().__init__(predict, typical_compute_s)
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._held: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._busy = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="modelplane-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await super().stop()

    async def run(self, inputs: Arrays, rows: int) -> tuple[Arrays, BatchStats]:
        """Queue one request and wait for its share of a batch."""
        if self._task is None:
            raise RuntimeError("the batcher is not started")
        if self._idle():
            # Let requests already readable on other connections start first; if none
            # did, there is nothing to merge with: skip the queue's hand-offs.
            await asyncio.sleep(0)
        if self._idle():
            self._busy = True
            try:
                out, compute_s = await self._compute(inputs)
            finally:
                self._busy = False
            self.on_batch(rows, compute_s)
            return out, BatchStats(0.0, compute_s, rows)
        future: asyncio.Future[tuple[Arrays, BatchStats]] = (
            asyncio.get_running_loop().create_future()
        )
        item = _Pending(inputs, rows, _signature(inputs), time.perf_counter(), future)
        await self._queue.put(item)
        return await future

    def _idle(self) -> bool:
        return not self._busy and not self._held and self._queue.empty() and not self._receiving

    async def _next(self, deadline: float | None, horizon: int = 0) -> _Pending | None:
        if self._held:
            return self._held.pop(0)
        if deadline is None:
            return await self._queue.get()
        while True:
            if not self._queue.empty():
                return self._queue.get_nowait()
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or not self._receiving_before(horizon):
                return None
            try:
                return await asyncio.wait_for(self._queue.get(), min(remaining, POLL_S))
            except TimeoutError:
                continue

    async def _loop(self) -> None:
        while True:
            first = await self._next(None)
            assert first is not None
            batch = [first]
            rows = first.rows
            deferred: list[_Pending] = []
            deadline = first.enqueued + self.max_queue_delay_s
            # Wait only for requests already arriving now, not for later ones.
            horizon = self._next_ticket
            while rows < self.max_batch_size:
                item = await self._next(deadline, horizon)
                if item is None:
                    break
                if item.signature != first.signature or rows + item.rows > self.max_batch_size:
                    # Keep arrival order for the next batch; stop filling this one.
                    deferred.append(item)
                    break
                batch.append(item)
                rows += item.rows
            self._held = deferred + self._held
            self._busy = True
            try:
                await self._execute(batch, rows)
            finally:
                self._busy = False

    async def _execute(self, batch: list[_Pending], rows: int) -> None:
        live = [p for p in batch if not p.future.cancelled()]
        if not live:
            return
        dispatched = time.perf_counter()
        if len(live) == 1:
            merged = live[0].inputs
        else:
            names = live[0].inputs.keys()
            merged = {n: np.concatenate([p.inputs[n] for p in live]) for n in names}
        rows = sum(p.rows for p in live)
        try:
            outputs, compute_s = await self._compute(merged)
        except Exception as exc:
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        self.on_batch(rows, compute_s)
        start = 0
        for p in live:
            share = {n: a[start : start + p.rows] for n, a in outputs.items()}
            start += p.rows
            if not p.future.done():
                stats = BatchStats(dispatched - p.enqueued, compute_s, rows)
                p.future.set_result((share, stats))
