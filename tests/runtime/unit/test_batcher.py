"""The dynamic batcher's policy: batches as large as the clients' concurrency, never later
than the max queue delay, never larger than the max batch size, results split exactly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from modelplane_runtime.batcher import (
    WATCH_AFTER_S,
    Arrays,
    DynamicBatcher,
    Executor,
    InFlight,
)
from modelplane_runtime.errors import ClientDisconnected

pytestmark = pytest.mark.unit


def doubled(inputs: Arrays) -> Arrays:
    # Row-wise, so any mis-split hands a request someone else's values.
    return {"y": inputs["x"] * 2}


def slow_doubled(inputs: Arrays) -> Arrays:
    time.sleep(0.01)
    return doubled(inputs)


def run_with_batcher(
    body: Callable[[DynamicBatcher, list[int]], Awaitable[Any]],
    max_batch_size: int = 32,
    max_queue_delay_s: float = 2.0,
    predict: Callable[[Arrays], Arrays] = doubled,
    typical_compute_s: float = 0.0,
) -> tuple[Any, list[int]]:
    """Run `body` against a started batcher; also return the rows of every forward pass."""
    executed: list[int] = []

    async def main() -> Any:
        batcher = DynamicBatcher(predict, max_batch_size, max_queue_delay_s, typical_compute_s)
        batcher.on_batch = lambda rows, seconds: executed.append(rows)
        await batcher.start()
        try:
            return await body(batcher, executed)
        finally:
            await batcher.stop()

    return asyncio.run(main()), executed


async def request(batcher: DynamicBatcher, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """One request as the server makes it: in flight from arrival until answered."""
    with batcher.admit():
        await asyncio.sleep(0)  # the request body being read
        out, _ = await batcher.run({"x": x}, len(x))
        return out["y"]


def rows(n: int, start: int, width: int = 3) -> np.ndarray[Any, Any]:
    return np.arange(start, start + n * width, dtype=np.float32).reshape(n, width)


def test_a_lone_request_runs_at_once_not_after_the_queue_delay() -> None:
    async def body(batcher: DynamicBatcher, executed: list[int]) -> float:
        start = time.perf_counter()
        out = await request(batcher, rows(1, 0))
        np.testing.assert_array_equal(out, rows(1, 0) * 2)
        return time.perf_counter() - start

    elapsed, executed = run_with_batcher(body, max_queue_delay_s=30.0)
    assert executed == [1]
    assert elapsed < 5.0


def test_requests_arriving_together_share_one_forward_pass_split_exactly() -> None:
    inputs = [rows(1 + i % 3, 100 * i) for i in range(10)]

    async def body(batcher: DynamicBatcher, executed: list[int]) -> list[Any]:
        return list(await asyncio.gather(*(request(batcher, x) for x in inputs)))

    outputs, executed = run_with_batcher(body)
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(out, x * 2)
    assert executed == [sum(len(x) for x in inputs)]


def test_requests_read_in_one_loop_pass_merge_after_the_first() -> None:
    # As in the server: a request whose body has arrived runs to the batcher without
    # yielding, so the first one of a pass cannot know about the others yet.
    inputs = [rows(1, 10 * i) for i in range(6)]

    async def unyielding(batcher: DynamicBatcher, x: np.ndarray[Any, Any]) -> Any:
        with batcher.admit():
            out, _ = await batcher.run({"x": x}, len(x))
            return out["y"]

    async def body(batcher: DynamicBatcher, executed: list[int]) -> list[Any]:
        # A frozen clock: the next request starts "at once" after the previous one left.
        batcher.runner.in_flight = InFlight(clock=lambda: 0.0)
        return list(await asyncio.gather(*(unyielding(batcher, x) for x in inputs)))

    outputs, executed = run_with_batcher(body)
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(out, x * 2)
    assert executed == [1, 5]


def test_closed_loop_clients_get_batches_as_large_as_their_concurrency() -> None:
    clients, rounds = 8, 6

    async def client(batcher: DynamicBatcher, index: int) -> None:
        for round_ in range(rounds):
            x = rows(1, 1000 * index + 10 * round_)
            np.testing.assert_array_equal(await request(batcher, x), x * 2)
            # The network and the client's own work: clients come back at different times.
            await asyncio.sleep(0.001 * (1 + index % 3))

    async def body(batcher: DynamicBatcher, executed: list[int]) -> None:
        await asyncio.gather(*(client(batcher, i) for i in range(clients)))

    _, executed = run_with_batcher(body, predict=slow_doubled, typical_compute_s=1.0)
    assert sum(executed) == clients * rounds
    # Not ever-smaller batches chasing requests still on their way: every pass is full.
    assert executed == [clients] * rounds


def test_a_batch_waits_no_longer_than_the_max_queue_delay() -> None:
    delay = 0.2

    async def body(batcher: DynamicBatcher, executed: list[int]) -> float:
        # A burst of four makes four the batch worth waiting for...
        await asyncio.gather(*(request(batcher, rows(1, i)) for i in range(4)))
        # ...but a lone request after it runs once the delay has passed.
        start = time.perf_counter()
        np.testing.assert_array_equal(await request(batcher, rows(1, 50)), rows(1, 50) * 2)
        return time.perf_counter() - start

    waited, executed = run_with_batcher(body, max_queue_delay_s=delay)
    assert executed == [4, 1]
    assert delay * 0.9 <= waited < delay + 2.0


def test_traffic_thinned_out_after_a_burst_is_not_held_back() -> None:
    delay = 0.05

    async def body(batcher: DynamicBatcher, executed: list[int]) -> list[float]:
        await asyncio.gather(*(request(batcher, rows(1, i)) for i in range(4)))
        waits = []
        for i in range(8):
            # Requests now come further apart than the max queue delay.
            await asyncio.sleep(delay * 1.2)
            start = time.perf_counter()
            x = rows(1, 10 * i)
            np.testing.assert_array_equal(await request(batcher, x), x * 2)
            waits.append(time.perf_counter() - start)
        return waits

    waits, executed = run_with_batcher(body, max_queue_delay_s=delay)
    assert executed == [4] + [1] * 8
    # The first waits in vain for the burst's size; the ones after it run at once.
    assert waits[0] >= delay * 0.9
    assert max(waits[1:]) < delay / 2, waits


def test_batches_never_exceed_the_max_batch_size() -> None:
    inputs = [rows(1 + i % 2, 10 * i) for i in range(12)]

    async def body(batcher: DynamicBatcher, executed: list[int]) -> list[Any]:
        return list(await asyncio.gather(*(request(batcher, x) for x in inputs)))

    outputs, executed = run_with_batcher(body, max_batch_size=4)
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(out, x * 2)
    assert max(executed) <= 4
    assert sum(executed) == sum(len(x) for x in inputs)


def test_requests_of_other_shapes_run_in_their_own_passes() -> None:
    narrow = [rows(1, 10 * i, width=3) for i in range(3)]
    wide = [rows(1, 10 * i, width=5) for i in range(2)]

    async def body(batcher: DynamicBatcher, executed: list[int]) -> list[Any]:
        mixed = [narrow[0], wide[0], narrow[1], wide[1], narrow[2]]
        return list(await asyncio.gather(*(request(batcher, x) for x in mixed)))

    outputs, executed = run_with_batcher(body, max_queue_delay_s=0.05)
    for x, out in zip([narrow[0], wide[0], narrow[1], wide[1], narrow[2]], outputs, strict=True):
        np.testing.assert_array_equal(out, x * 2)
    assert sorted(executed) == [2, 3]


def test_a_request_that_breaks_the_forward_pass_fails_alone() -> None:
    def breaks_on_negative(inputs: Arrays) -> Arrays:
        if (inputs["x"] < 0).any():
            raise ValueError("model fault")
        return doubled(inputs)

    inputs = [rows(1, 10 * i) for i in range(4)] + [rows(1, -100)]

    async def body(batcher: DynamicBatcher, executed: list[int]) -> list[Any]:
        return list(
            await asyncio.gather(*(request(batcher, x) for x in inputs), return_exceptions=True)
        )

    results, executed = run_with_batcher(body, predict=breaks_on_negative)
    for x, out in zip(inputs[:4], results[:4], strict=True):
        np.testing.assert_array_equal(out, x * 2)
    assert isinstance(results[4], ValueError)
    assert sum(executed) == 4  # the good requests ran (again) alone; passes counted once


def test_a_model_that_mixes_rows_is_never_split_across_clients() -> None:
    def column_sums(inputs: Arrays) -> Arrays:
        # One output row for the whole batch: no row belongs to one request.
        return {"y": inputs["x"].sum(axis=0, keepdims=True)}

    inputs = [rows(1, 10 * i) for i in range(4)]

    async def body(batcher: DynamicBatcher, executed: list[int]) -> list[Any]:
        first = list(await asyncio.gather(*(request(batcher, x) for x in inputs)))
        second = list(await asyncio.gather(*(request(batcher, x) for x in inputs)))
        return first + second

    results, executed = run_with_batcher(body, predict=column_sums)
    for x, out in zip(inputs * 2, results, strict=True):
        np.testing.assert_array_equal(out, x)  # each request's own result, as unbatched
    assert executed == [1] * 8  # after the first mixed pass, requests run alone


def burst(in_flight: InFlight, size: int) -> None:
    """`size` requests in flight at once, all answered."""
    for _ in range(size):
        in_flight.enter()
    for _ in range(size):
        in_flight.leave()


def test_in_flight_peak_is_remembered_for_a_window_then_forgotten() -> None:
    now = [0.0]
    in_flight = InFlight(window_s=1.0, clock=lambda: now[0])
    burst(in_flight, 5)
    assert in_flight.count == 0
    assert in_flight.peak() == 5
    now[0] = 1.5  # the next window still remembers the previous one
    assert in_flight.peak() == 5
    in_flight.enter()
    now[0] = 2.6  # two windows on: only what was seen since counts
    assert in_flight.peak() == 1
    in_flight.leave()
    now[0] = 10.0
    assert in_flight.peak() == 0


def test_a_lowered_peak_holds_until_more_requests_are_in_flight() -> None:
    now = [0.0]
    in_flight = InFlight(window_s=1.0, clock=lambda: now[0])
    burst(in_flight, 6)
    in_flight.enter()
    in_flight.lower_peak(1)
    assert in_flight.peak() == 1
    in_flight.enter()
    assert in_flight.peak() == 2


class Gated:
    """A row-wise model whose passes each wait for the test to let them finish."""

    def __init__(self, mixes_rows: bool = False) -> None:
        self.started: list[int] = []  # rows of every pass that began
        self.gates: list[threading.Event] = []
        self.mixes_rows = mixes_rows

    def __call__(self, inputs: Arrays) -> Arrays:
        gate = threading.Event()
        self.gates.append(gate)
        self.started.append(len(inputs["x"]))
        assert gate.wait(10), "the test never let this pass finish"
        if self.mixes_rows:
            return {"y": inputs["x"].sum(axis=0, keepdims=True)}
        return doubled(inputs)

    async def running(self, count: int) -> None:
        """Until `count` passes have begun."""
        for _ in range(1000):
            if len(self.started) >= count:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"only {len(self.started)} passes began, waited for {count}")

    def finish(self, index: int) -> None:
        self.gates[index].set()


async def _leave_after_watch(gone: asyncio.Event) -> None:
    await asyncio.sleep(WATCH_AFTER_S * 2)  # the client is watched from then on
    gone.set()
    await asyncio.sleep(0.01)


def test_a_queued_request_whose_client_left_is_dropped_and_the_rest_served() -> None:
    model = Gated()

    async def body(batcher: DynamicBatcher, executed: list[int]) -> Any:
        gone = asyncio.Event()

        async def leaving() -> np.ndarray[Any, Any]:
            with batcher.admit():
                out, _ = await batcher.run({"x": rows(5, 1000)}, 5, gone.wait)
                return out["y"]

        first = asyncio.create_task(request(batcher, rows(1, 0)))  # occupies the model
        await model.running(1)
        left = asyncio.create_task(leaving())
        stays = asyncio.create_task(request(batcher, rows(2, 10)))
        await asyncio.sleep(0.005)
        assert batcher.pending() == 2
        await _leave_after_watch(gone)
        with pytest.raises(ClientDisconnected):
            await left
        assert batcher.pending() == 1
        model.finish(0)
        await model.running(2)
        model.finish(1)
        return await first, await stays

    (first, stays), executed = run_with_batcher(body, predict=model, typical_compute_s=1.0)
    np.testing.assert_array_equal(first, rows(1, 0) * 2)
    np.testing.assert_array_equal(stays, rows(2, 10) * 2)
    assert executed == [1, 2]  # the 5 rows of the departed client never ran


def test_a_request_whose_pass_has_begun_is_finished_when_its_client_leaves() -> None:
    model = Gated()

    async def body(batcher: DynamicBatcher, executed: list[int]) -> Any:
        gone = asyncio.Event()
        first = asyncio.create_task(request(batcher, rows(1, 0)))
        await model.running(1)
        with batcher.admit():
            task = asyncio.create_task(batcher.run({"x": rows(3, 50)}, 3, gone.wait))
            await asyncio.sleep(0.005)
            model.finish(0)
            await model.running(2)  # this request's own pass
            await _leave_after_watch(gone)
            assert batcher.pending() == 0 and not task.done()
            model.finish(1)
            out, _ = await task
        await first
        return out["y"]

    got, executed = run_with_batcher(
        body, max_queue_delay_s=0.005, predict=model, typical_compute_s=1.0
    )
    np.testing.assert_array_equal(got, rows(3, 50) * 2)
    assert executed == [1, 3]


def test_requests_waiting_to_run_alone_can_still_be_dropped() -> None:
    """A model that mixes rows serves queued requests one by one: those not yet run are
    still waiting, so a departed client's request is dropped and counted as pending."""
    model = Gated(mixes_rows=True)

    async def body(batcher: DynamicBatcher, executed: list[int]) -> Any:
        gone = asyncio.Event()
        first = asyncio.create_task(request(batcher, rows(1, 0)))
        await model.running(1)
        with batcher.admit(), batcher.admit():
            others = [
                asyncio.create_task(batcher.run({"x": rows(1, 10 * i)}, 1, gone.wait))
                for i in (1, 2)
            ]
            await asyncio.sleep(0.005)
            model.finish(0)
            await model.running(2)  # the merged pass, which mixes rows: thrown away
            model.finish(1)
            await model.running(3)  # the first of the two, alone
            assert batcher.pending() == 1
            await _leave_after_watch(gone)
            assert batcher.pending() == 0
            model.finish(2)
            results = await asyncio.gather(*others, return_exceptions=True)
        await first
        return results

    results, executed = run_with_batcher(
        body, max_queue_delay_s=0.005, predict=model, typical_compute_s=1.0
    )
    assert isinstance(results[0], tuple)  # its pass had begun: answered
    assert isinstance(results[1], ClientDisconnected)
    assert executed == [1, 1]  # the merged pass is not counted, the dropped one never ran


def test_a_request_waiting_for_the_compute_thread_is_dropped_when_its_client_leaves() -> None:
    model = Gated()

    async def main() -> tuple[list[int], int, int]:
        executed: list[int] = []
        executor = Executor(model, typical_compute_s=1.0)  # thread path
        executor.on_batch = lambda rows, seconds: executed.append(rows)
        gone = asyncio.Event()
        try:
            first = asyncio.create_task(executor.run({"x": rows(1, 0)}, 1))
            await model.running(1)
            left = asyncio.create_task(executor.run({"x": rows(4, 9)}, 4, gone.wait))
            await asyncio.sleep(0.005)
            waiting = executor.pending()
            await _leave_after_watch(gone)
            with pytest.raises(ClientDisconnected):
                await left
            after = executor.pending()
            model.finish(0)
            await first
            await asyncio.sleep(0.05)  # a dropped job that ran anyway would show up here
        finally:
            await executor.stop()
        return executed, waiting, after

    executed, waiting, after = asyncio.run(main())
    assert (waiting, after) == (1, 0)
    assert executed == [1]
    assert model.started == [1]


@pytest.mark.parametrize("batching", [True, False])
def test_cancelling_the_request_itself_is_not_taken_for_a_departed_client(
    batching: bool,
) -> None:
    """A shutdown or timeout that cancels the handler stays a cancellation, also after
    the client has left while its pass was running."""
    model = Gated()

    async def main() -> BaseException | None:
        executor: Executor = (
            DynamicBatcher(model, 8, 0.005, 1.0) if batching else Executor(model, 1.0)
        )
        await executor.start()
        gone = asyncio.Event()
        try:
            first = asyncio.create_task(executor.run({"x": rows(1, 0)}, 1))
            await model.running(1)
            with executor.admit(), executor.admit():
                second = asyncio.create_task(executor.run({"x": rows(1, 5)}, 1, gone.wait))
                await asyncio.sleep(0.005)
                model.finish(0)
                await model.running(2)  # the second request's pass has begun
                await _leave_after_watch(gone)  # too late to drop it
                second.cancel()
                outcome = (await asyncio.gather(second, return_exceptions=True))[0]
            model.finish(1)
            await first
        finally:
            await executor.stop()
        return outcome if isinstance(outcome, BaseException) else None

    assert isinstance(asyncio.run(main()), asyncio.CancelledError)
