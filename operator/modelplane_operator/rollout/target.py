"""Which revision should serve, per the spec, and the start of a rollout to it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..phases import Phase
from ..pods import Event
from ..revisions import Revision
from ..spec import ModelDeploymentSpec
from . import history
from .history import History
from .memory import Memory

RETRY_ANNOTATION = "modelplane.io/retry"


@dataclass(frozen=True)
class Target:
    number: int
    hash: str
    create: bool  # its Deployment does not exist yet
    error: str | None = None  # the spec asks for something impossible (rollbackTo)


def choose(
    md: ModelDeploymentSpec,
    desired_hash: str,
    revisions: Mapping[int, Revision],
    memory: Memory,
    hist: Sequence[Mapping[str, Any]],
) -> Target:
    """rollbackTo names a kept revision; otherwise the newest one with the spec's hash."""
    error: str | None = None
    if md.rollout.rollback_to is not None:
        if md.rollout.rollback_to in revisions:
            number = md.rollout.rollback_to
        else:
            kept = ", ".join(str(n) for n in sorted(revisions)) or "none"
            error = f"rollbackTo {md.rollout.rollback_to} is not a kept revision (kept: {kept})"
            number = (
                memory.target
                if memory.target is not None and memory.target in revisions
                else max(revisions, default=1)
            )
    else:
        known = set(revisions) | {int(h["revision"]) for h in hist if "revision" in h}
        matching = [n for n, r in revisions.items() if r.hash == desired_hash]
        if matching:
            number = max(matching)
        elif memory.target is not None and memory.target_hash == desired_hash:
            number = memory.target  # its Deployment went missing: recreate it, same number
        else:
            number = max(known, default=0) + 1
    create = number not in revisions and error is None
    target_hash = revisions[number].hash if number in revisions else desired_hash
    return Target(number, target_hash, create, error)


def clear_on_retry(mem: Memory, target: int, token: str | None, now: float) -> Memory:
    """A changed ``modelplane.io/retry`` clears a failure and restarts the rollout."""
    if token is None or token == mem.retry_token:
        return mem
    mem = replace(
        mem, retry_token=token, failed=None, failed_hash=None, failure_reason="", failure_message=""
    )
    if mem.target == target:
        mem = replace(
            mem,
            phase=Phase.PROGRESSING,
            started_at=now,
            last_progress_at=now,
            step=0,
            step_started_at=now,
            target_ready=0,
        )
    return mem


def begin(
    mem: Memory,
    target: Target,
    md: ModelDeploymentSpec,
    revisions: Mapping[int, Revision],
    hist: History,
    meta: Mapping[str, str],
    now: float,
) -> tuple[Memory, History, tuple[Event, ...]]:
    """A new target starts a new rollout: fresh memory, a history entry, an event."""
    if mem.target == target.number:
        return mem, hist, ()
    previous = mem.target
    stable = previous if previous is not None and mem.phase == Phase.SUCCEEDED else mem.stable
    mem = replace(
        mem,
        target=target.number,
        target_hash=target.hash,
        stable=stable,
        phase=Phase.PROGRESSING,
        started_at=now,
        last_progress_at=now,
        target_ready=0,
        step=0,
        step_started_at=now,
        gpu_limited=False,
    )
    if not (mem.failed_hash == target.hash and mem.failed == target.number):
        mem = replace(mem, failed=None, failed_hash=None, failure_reason="", failure_message="")
    hist = history.start(hist, target.number, revisions, meta, now, previous)
    if previous is None:
        return mem, hist, ()
    started = Event(
        "Normal", "RolloutStarted", _started_message(target.number, revisions, meta, md)
    )
    return mem, hist, (started,)


def _started_message(
    target: int, revisions: Mapping[int, Revision], meta: Mapping[str, str], md: ModelDeploymentSpec
) -> str:
    version = revisions[target].version if target in revisions else meta.get("version", "")
    how = "reusing kept revision" if target in revisions else "new revision"
    return f"rolling out version {version} ({how} {target}) with {md.rollout.strategy}"
