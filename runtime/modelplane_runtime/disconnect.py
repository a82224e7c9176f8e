"""Dropping a waiting request whose client has gone.

Under overload, clients that time out and retry would otherwise have the server compute
answers nobody reads. A request is watched only once it has waited WATCH_AFTER_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .errors import ClientDisconnected

# Returns when the client of a request has disconnected (it may never return).
ClientGone = Callable[[], Awaitable[object]]
T = TypeVar("T")
# A waiting request's client is watched for a disconnect from this long on.
WATCH_AFTER_S = 0.01


async def unless_client_gone(
    waiting: asyncio.Future[T], client_gone: ClientGone, may_cancel: Callable[[], bool]
) -> T:
    """Await `waiting`; if the client disconnects first and `may_cancel()` agrees, cancel
    it and raise ClientDisconnected.

    The client is watched only once the request has waited WATCH_AFTER_S: a watcher task
    costs about as much as a small model's share of a batched pass, and a request answered
    sooner than that is not worth dropping; the overload this is for makes waits long.
    """
    watcher: asyncio.Future[object] | None = None
    dropped = False

    def on_gone(watch: asyncio.Future[object]) -> None:
        nonlocal dropped
        if watch.cancelled() or watch.exception() is not None:
            return  # stopped because the answer came first, or cannot tell: keep waiting
        if not waiting.done() and may_cancel():
            dropped = True
            waiting.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(client_gone())
        watcher.add_done_callback(on_gone)

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)
    try:
        return await waiting
    except asyncio.CancelledError:
        # Cancelled by on_gone, and not this task by its owner (a shutdown, a timeout):
        # the client is gone. The owner's cancellation always goes through.
        task = asyncio.current_task()
        if dropped and (task is None or not task.cancelling()):
            raise ClientDisconnected from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
