"""Keeping the operator's resident memory close to what it holds, not what it once held.

Converging many objects parses many large JSON bodies (lists, watch events) at once.
glibc keeps the freed heap for reuse, so without help the resident size stays at the
peak of the burst long after it. When the work queue has been idle for a moment, this
asks glibc to hand freed pages back (``malloc_trim``); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections.abc import Callable

M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt"):
            return libc
    return None


_LIBC = _glibc()


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena; with kopf's worker threads and the
    API client's pools that multiplies resident memory for no gain here."""
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, arenas)


def release_freed_memory() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def trim_when_idle(
    is_idle: Callable[[], bool], work_done: Callable[[], int], every_s: float = 3.0
) -> None:
    """Start a daemon thread that trims once after each burst of work, when idle."""

    def loop() -> None:
        trimmed_at = work_done()
        while True:
            time.sleep(every_s)
            done = work_done()
            if done != trimmed_at and is_idle():
                release_freed_memory()
                trimmed_at = done

    if _LIBC is not None:
        threading.Thread(target=loop, name="malloc-trim", daemon=True).start()
