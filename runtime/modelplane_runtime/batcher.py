"""Dynamic batching: concurrent requests are merged into one forward call and split back.

How long to wait for a batch to fill is the whole policy. Clients of a model server send
their next request when the previous one is answered, so the number of requests they keep
in flight (their concurrency) is the batch they can form together. The batcher remembers
the peak number of requests in flight over the last second and waits until that many
compatible requests are queued (or the max batch size is reached), never past the moment
its oldest request has been queued for the max queue delay. One client alone, or an idle
server, gets its request run at once; sixteen closed-loop clients get batches of sixteen
instead of ever-smaller batches that chase requests still on their way. A batch that waits
in vain (a burst has ended) lowers the remembered peak to what it gathered, so thinned-out
traffic pays the max queue delay once, not for the rest of the window.

The forward passes themselves run on the executor (executor.py), which this extends with
the queue and the waiting policy.

A request whose client disconnects while it waits (in the batch queue, or for the compute
thread; watched once it has waited 10 ms) is dropped before its forward pass starts: under
overload, clients that time out and retry would otherwise have the server compute answers
nobody reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from .disconnect import WATCH_AFTER_S, ClientGone, unless_client_gone
from .executor import Arrays, BatchStats, Executor, InFlight, PredictFn

__all__ = ["WATCH_AFTER_S", "Arrays", "BatchStats", "DynamicBatcher", "Executor", "InFlight"]

log = logging.getLogger(__name__)
# A request admitted this soon after another one left came in the same event-loop pass.
SAME_PASS_S = 0.0001


@dataclasses.dataclass
class _Pending:
    inputs: Arrays
    rows: int
    signature: tuple[Any, ...]
    enqueued: float
    future: asyncio.Future[tuple[Arrays, BatchStats]]
    started: bool = False  # its forward pass began: it finishes even if its client leaves


def _signature(inputs: Arrays) -> tuple[Any, ...]:
    # Requests can share a forward pass only when every non-batch dimension agrees.
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


class DynamicBatcher:
    """Queues requests and merges them into batches of at most `max_batch_size` rows.

    It holds an `Executor` as its runner: forward passes, the compute thread and the
    in-flight count are the runner's; the queue and when to run a batch are its own.
    It offers the executor's interface (admit, run, pending, start, stop), so the server
    holds either.
    """

    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int,
        max_queue_delay_s: float,
        typical_compute_s: float = 1.0,
    ) -> None:
        self.runner = Executor(predict, typical_compute_s)
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._pending: list[_Pending] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._executing: list[_Pending] = []  # the batch being run, for pending()
        # False once a merged pass returned outputs that are not one row per input row.
        self._rows_separate = True

    @property
    def in_flight(self) -> InFlight:
        return self.runner.in_flight

    @property
    def on_batch(self) -> Callable[[int, float], None]:
        return self.runner.on_batch

    @on_batch.setter
    def on_batch(self, callback: Callable[[int, float], None]) -> None:
        self.runner.on_batch = callback

    @property
    def inline_allowed(self) -> bool:
        return self.runner.inline_allowed

    @inline_allowed.setter
    def inline_allowed(self, allowed: bool) -> None:
        self.runner.inline_allowed = allowed

    def admit(self) -> contextlib.AbstractContextManager[None]:
        return self.runner.admit()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="modelplane-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the batcher stopped"))
        self._pending.clear()
        await self.runner.stop()

    async def run(
        self, inputs: Arrays, rows: int, client_gone: ClientGone | None = None
    ) -> tuple[Arrays, BatchStats]:
        """Queue one request and wait for its share of a batch (see Executor.run)."""
        if self._task is None:
            raise RuntimeError("the batcher is not started")
        if self._idle() and self.in_flight.since_last_left() < SAME_PASS_S:
            # A request that starts right as another one ended was most likely read in
            # the same pass of the event loop as others not admitted yet: let them catch
            # up (one loop pass) before deciding to run alone. One client's next request
            # comes a network round trip later and does not pay for the extra pass.
            await asyncio.sleep(0)
        if self._idle():
            # Nobody to merge with: run it now, without the queue's hand-offs.
            self._busy = True
            try:
                out, compute_s = await self.runner.compute(inputs)
            finally:
                self._busy = False
                self._wake()
            self.on_batch(rows, compute_s)
            return out, BatchStats(0.0, compute_s, rows)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Arrays, BatchStats]] = loop.create_future()
        item = _Pending(inputs, rows, _signature(inputs), loop.time(), future)
        self._pending.append(item)
        self._wake()
        if client_gone is None:
            return await future
        return await unless_client_gone(future, client_gone, lambda: not item.started)

    def pending(self) -> int:
        waiting = (p for p in (*self._pending, *self._executing) if not p.started)
        return sum(1 for p in waiting if not p.future.done())

    def _idle(self) -> bool:
        return not self._busy and not self._pending and self.in_flight.peak() <= 1

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _sleep(self, deadline: float | None) -> None:
        """Until something is queued or finishes, or the deadline (loop time) passes."""
        loop = asyncio.get_running_loop()
        self._wakeup = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, self._wake)
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _plan(self) -> tuple[list[_Pending], bool]:
        """The next batch in arrival order (the oldest request's signature) and whether it
        is complete: as many requests as clients keep in flight, or no room for more."""
        first = self._pending[0]
        batch = [first]
        rows = first.rows
        full = False
        for item in self._pending[1:]:
            if item.signature != first.signature:
                continue
            if rows + item.rows > self.max_batch_size:
                full = True
                break
            batch.append(item)
            rows += item.rows
        full = full or rows >= self.max_batch_size or len(batch) >= self.in_flight.peak()
        return batch, full

    def _drop_departed(self) -> bool:
        """Forget queued requests whose client disconnected; True if any are left."""
        if any(p.future.cancelled() for p in self._pending):
            self._pending = [p for p in self._pending if not p.future.cancelled()]
        return bool(self._pending)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self._busy or not self._drop_departed():
                await self._sleep(None)
            batch, full = self._plan()
            while not full and loop.time() < self._deadline():
                await self._sleep(self._deadline())
                if not self._drop_departed():
                    break
                batch, full = self._plan()
            else:  # the batch is complete, or its oldest request has waited long enough
                if not full:
                    self.in_flight.lower_peak(len(batch))
                taken = {id(item) for item in batch}
                self._pending = [item for item in self._pending if id(item) not in taken]
                self._busy = True
                self._executing = batch
                try:
                    await self._execute(batch)
                finally:
                    self._busy = False
                    self._executing = []

    def _deadline(self) -> float:
        # The oldest request still queued: one that left does not hurry the others.
        return self._pending[0].enqueued + self.max_queue_delay_s

    async def _execute(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.cancelled()]
        if not live:
            return
        dispatched = asyncio.get_running_loop().time()
        merged = await self._merged_pass(live) if len(live) > 1 else None
        if merged is None:
            for p in live:
                p.started = False  # each waits for its own pass, and may still be dropped
            for p in live:
                await self._run_alone(p, dispatched)
            return
        outputs, compute_s, rows = merged
        self.on_batch(rows, compute_s)
        start = 0
        for p in live:
            share = {n: a[start : start + p.rows] for n, a in outputs.items()}
            start += p.rows
            if not p.future.done():
                stats = BatchStats(dispatched - p.enqueued, compute_s, rows)
                p.future.set_result((share, stats))

    async def _merged_pass(self, live: list[_Pending]) -> tuple[Arrays, float, int] | None:
        """One forward pass over every request, or None where the requests must run alone:
        the pass failed (one request's data can break it for all, and only the request at
        fault should get the error) or the model does not keep batch rows apart."""
        if not self._rows_separate:
            return None
        names = live[0].inputs.keys()
        merged = {n: np.concatenate([p.inputs[n] for p in live]) for n in names}
        rows = sum(p.rows for p in live)
        for p in live:
            p.started = True
        try:
            outputs, compute_s = await self.runner.compute(merged)
        except Exception:
            return None
        if any(a.ndim == 0 or a.shape[0] != rows for a in outputs.values()):
            # The model reduces over the batch: splitting would hand one client results
            # made of others' data.
            log.warning(
                "the model's outputs do not keep batch rows apart (got shapes %s for %d "
                "rows); serving every request alone from now on",
                {n: list(a.shape) for n, a in outputs.items()},
                rows,
            )
            self._rows_separate = False
            return None
        return outputs, compute_s, rows

    async def _run_alone(self, item: _Pending, dispatched: float) -> None:
        if item.future.done():
            return
        item.started = True
        try:
            outputs, compute_s = await self.runner.compute(item.inputs)
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
            return
        self.on_batch(item.rows, compute_s)
        if not item.future.done():
            stats = BatchStats(dispatched - item.enqueued, compute_s, item.rows)
            item.future.set_result((outputs, stats))
