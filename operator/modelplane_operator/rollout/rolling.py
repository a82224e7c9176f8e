"""RollingUpdate: like the Deployment controller, across revision Deployments.

At most ``replicas + maxSurge`` pods, at least ``replicas - maxUnavailable`` ready. A
surge needs free GPUs; when none are free the rollout replaces pods one at a time (one
old pod down, then one new pod up) instead of stalling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ..pods import Event
from ..revisions import Revision
from .decision import Budget, Situation, Step
from .memory import Memory


def step(s: Situation, mem: Memory) -> Step:
    desired, gpu_limited = roll(
        s.target_rev, s.target, s.budget.replicas, s.olds, s.budget, s.gpu_slots, mem.stable
    )
    mem, events = note_gpu_limit(mem, gpu_limited)
    return Step(desired, mem, serving=mem.stable, events=events)


def note_gpu_limit(mem: Memory, gpu_limited: bool) -> tuple[Memory, tuple[Event, ...]]:
    """Remember whether free GPUs limit the surge; say so once when they start to."""
    events: tuple[Event, ...] = ()
    if gpu_limited and not mem.gpu_limited:
        events = (
            Event(
                "Normal",
                "GPUConstrained",
                "not enough free GPUs to surge: replacing pods one at a time",
            ),
        )
    return replace(mem, gpu_limited=gpu_limited), events


def roll(
    new: Revision | None,
    new_number: int,
    goal: int,
    olds: Sequence[Revision],
    b: Budget,
    gpu_slots: Callable[[], int] | None,
    stable: int | None = None,
) -> tuple[dict[int, int], bool]:
    """One rolling step towards ``goal`` pods of ``new`` and ``replicas - goal`` old ones.

    Pods within ``replicas`` are always asked for (the scheduler's verdict is the
    truth, and status reports it); pods above it, the surge, only while
    ``gpu_slots()`` says free GPUs can hold them. Returns the desired replicas per
    revision and whether free GPUs limited the step.
    """
    new_replicas = new.replicas if new else 0
    new_ready = new.ready if new else 0
    old_total = sum(o.replicas for o in olds)
    all_pods = new_replicas + old_total
    wanted_up = max(0, min(goal - new_replicas, b.replicas + b.surge - all_pods))
    within = min(wanted_up, max(0, b.replicas - all_pods))
    surge_part = wanted_up - within
    allowed_surge = surge_part
    if surge_part and gpu_slots is not None:
        # Pods within `replicas` take the free GPUs first.
        allowed_surge = min(surge_part, max(0, gpu_slots() - within))
    gpu_limited = allowed_surge < surge_part
    new_replicas = min(new_replicas, max(goal, 0)) + wanted_up - surge_part + allowed_surge
    new_unavailable = max(0, new_replicas - new_ready)
    old_floor = max(0, b.replicas - goal)
    min_available = b.replicas - b.unavailable
    old_ready = sum(min(o.ready, o.replicas) for o in olds)
    old_unready = old_total - old_ready
    # Unready old pods can go at any time; ready ones only while enough stay ready.
    spare_ready = max(0, new_ready + old_ready - min_available)
    to_remove = min(old_total - old_floor, old_unready + spare_ready)
    if gpu_limited and to_remove == 0 and new_unavailable == 0 and old_total > old_floor:
        # No GPU is free for a surge pod: replace one pod at a time instead of stalling.
        to_remove = 1
    desired: dict[int, int] = {new_number: new_replicas}
    # Unstable revisions (earlier, unfinished targets) shrink before the stable one.
    for old in sorted(olds, key=lambda o: (o.number == stable, o.number)):
        take = min(old.replicas, to_remove)
        desired[old.number] = old.replicas - take
        to_remove -= take
    return desired, gpu_limited
