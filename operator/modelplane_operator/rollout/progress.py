"""The end of a reconcile's decision: a paused spec, completion, and when to look again."""

from __future__ import annotations

from dataclasses import replace

from ..phases import Outcome, Phase
from ..pods import Event
from . import canary, history
from .decision import Situation, Step
from .history import History
from .memory import Memory


def paused(s: Situation, mem: Memory) -> Step:
    """spec.rollout.paused: nothing moves; a rollout that already finished says so."""
    if s.target_complete():
        return Step({}, mem, serving=s.target, phase=Phase.SUCCEEDED, reason="AllReplicasReady")
    return Step(
        {},
        mem,
        serving=mem.stable,
        phase=Phase.PAUSED,
        reason="RolloutPaused",
        message="the rollout is paused (spec.rollout.paused)",
    )


def conclude(
    s: Situation, decided: Step, replicas: dict[int, int], hist: History, settled: bool
) -> tuple[Step, History]:
    """Succeeded once every target replica is ready and the old ones are gone.

    ``settled`` is false after a failure or an impossible spec: their phase stands.
    """
    mem = decided.memory
    target_rev = s.target_rev
    if decided.phase == Phase.PAUSED or not settled:
        return replace(decided, memory=replace(mem, phase=decided.phase)), hist
    if target_rev is None or not s.target_complete() or replicas.get(s.target) != s.budget.replicas:
        if mem.phase == Phase.SUCCEEDED:  # scaled or drifted after success: a fresh deadline
            mem = replace(mem, last_progress_at=s.now, target_ready=0)
        elif mem.phase == Phase.PAUSED:  # time spent paused is not time without progress
            mem = replace(mem, last_progress_at=s.now)
        mem = replace(mem, phase=Phase.PROGRESSING)
        return replace(decided, memory=mem, phase=Phase.PROGRESSING), hist
    events = decided.events
    if mem.phase != Phase.SUCCEEDED:
        hist = history.finish(hist, s.target, s.now, Outcome.SUCCEEDED, "")
        if mem.stable is not None and mem.stable != s.target:
            hist = history.finish(
                hist, mem.stable, s.now, Outcome.SUPERSEDED, f"replaced by revision {s.target}"
            )
        done = Event(
            "Normal",
            "RolloutComplete",
            f"revision {s.target} (version {target_rev.version}) serves "
            f"{s.budget.replicas} replicas",
        )
        events = (*events, done)
    mem = replace(mem, stable=s.target, phase=Phase.SUCCEEDED)
    won = Step(
        decided.replicas,
        mem,
        serving=s.target,
        phase=Phase.SUCCEEDED,
        reason="AllReplicasReady",
        events=events,
    )
    return won, hist


def requeue_after(s: Situation, decided: Step, deadline_exceeded: bool) -> float | None:
    """When to reconcile again though nothing changes: a deadline or a timed pause ends."""
    mem = decided.memory
    requeue: float | None = None
    deadline = s.md.rollout.progress_deadline_seconds
    if (
        mem.phase == Phase.PROGRESSING
        and mem.last_progress_at is not None
        and not deadline_exceeded
    ):
        requeue = max(1.0, mem.last_progress_at + deadline - s.now + 1)
    if decided.phase == Phase.PAUSED and decided.reason in ("CanaryPaused", canary.ANALYSING):
        requeue = canary.requeue_after(s, mem) or requeue
    return requeue
