"""Canary: the new revision grows step by step to each step's share of ``replicas``.

The stable Service spreads traffic by ready pods, so the share is the traffic weight;
the old revision shrinks to the rest. Each step then pauses for its duration, or until
the ``modelplane.io/promote`` annotation changes. Going back to a revision that already
served is a rollback and takes no canary steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..phases import Phase
from ..pods import Event
from ..spec import CanaryStep, Pause
from . import history, rolling
from .decision import Situation, Step
from .memory import Memory, to_text

PROMOTE_ANNOTATION = "modelplane.io/promote"


def step(s: Situation, mem: Memory, hist: Sequence[dict[str, Any]]) -> Step:
    steps = s.md.rollout.canary_steps
    if not _in_canary(s, mem, steps, hist):
        return rolling.step(s, mem)
    b = s.budget
    goal = (
        min(b.replicas, math.ceil(b.replicas * steps[mem.step].weight / 100)) if b.replicas else 0
    )
    desired, gpu_limited = rolling.roll(
        s.target_rev, s.target, goal, s.olds, b, s.gpu_slots, mem.stable
    )
    decided = _at_step(s, mem, steps, goal, desired)
    mem, gpu_events = rolling.note_gpu_limit(decided.memory, gpu_limited)
    return replace(decided, memory=mem, events=(*decided.events, *gpu_events))


def pause_seconds(pause: Pause | None) -> float:
    """A canary step's pause duration; 0 for none or a manual (duration-less) pause."""
    return pause.seconds or 0.0 if pause is not None else 0.0


def requeue_after(s: Situation, mem: Memory) -> float | None:
    """When a timed pause of the current step ends, if one does."""
    steps = s.md.rollout.canary_steps
    duration = pause_seconds(steps[min(mem.step, len(steps) - 1)].pause)
    if duration and mem.step_started_at is not None:
        return max(1.0, mem.step_started_at + duration - s.now + 0.5)
    return None


def _in_canary(
    s: Situation, mem: Memory, steps: Sequence[CanaryStep], hist: Sequence[dict[str, Any]]
) -> bool:
    return (
        bool(steps)
        and mem.step < len(steps)
        and mem.stable not in (None, s.target)
        and not history.served_before(hist, s.target)
    )


def _at_step(
    s: Situation, mem: Memory, steps: Sequence[CanaryStep], goal: int, desired: dict[int, int]
) -> Step:
    """Promote to the next step, or pause at this one, once its share is in place."""
    target_rev = s.target_rev
    b = s.budget
    if target_rev is None:
        return Step(desired, mem, serving=mem.stable)
    in_place = target_rev.ready >= goal and sum(o.replicas for o in s.olds) <= b.replicas - goal
    if not in_place:
        return Step(desired, replace(mem, step_started_at=s.now), serving=mem.stable)
    index = mem.step
    pause = steps[index].pause
    token = s.annotations.get(PROMOTE_ANNOTATION)
    started = mem.step_started_at or s.now
    duration = pause_seconds(pause)
    promoted = token is not None and token != mem.promote_token
    if pause is None or (duration and s.now - started >= duration) or promoted:
        mem = replace(
            mem,
            step=index + 1,
            step_started_at=s.now,
            last_progress_at=s.now,
            promote_token=token if promoted else mem.promote_token,
        )
        done = Event(
            "Normal",
            "CanaryStepComplete",
            f"canary step {index + 1}/{len(steps)} ({goal}/{b.replicas} "
            "replicas on the new revision) complete",
        )
        return Step(desired, mem, serving=mem.stable, events=(done,))
    when = (
        f"until {to_text(started + duration)}"
        if duration
        else f"until promoted (annotate {PROMOTE_ANNOTATION})"
    )
    message = (
        f"canary step {index + 1}/{len(steps)}: {goal}/{b.replicas} replicas "
        f"on version {target_rev.version}, paused {when}"
    )
    return Step(
        desired,
        replace(mem, last_progress_at=s.now),
        serving=mem.stable,
        phase=Phase.PAUSED,
        reason="CanaryPaused",
        message=message,
    )
