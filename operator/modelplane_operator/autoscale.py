"""How many replicas the load asks for, stabilised, and how many the free GPUs allow.

Pure arithmetic, as the HorizontalPodAutoscaler does it: each scrape gives a
recommendation, ceil(in-flight / target), within [min, max]. Scaling up goes only to
the lowest recommendation of the scale-up window (a burst shorter than the window
does not add GPUs); scaling down only to the highest of the scale-down window (a lull
does not drop a warm replica that the next minute needs).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .spec import Autoscaling


class ScaleReason(enum.StrEnum):
    STEADY = "AtTarget"
    UP = "ScaledUp"
    DOWN = "ScaledDown"
    GPU_LIMITED = "ScaleLimitedByGPU"
    NO_METRICS = "NoMetrics"


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    replicas: int  # what to serve now
    desired: int  # what the load asks for, stabilised, before the GPU limit
    reason: ScaleReason
    message: str
    in_flight: float = 0.0  # summed over the pods read
    measured: int = 0  # pods read


def within(replicas: int, rules: Autoscaling) -> int:
    """``replicas`` held to [minReplicas, maxReplicas]."""
    return min(rules.max_replicas, max(rules.min_replicas, replicas))


def recommend(in_flight: float, rules: Autoscaling) -> int:
    # A hair below the target is the target: 8.0000001 in flight at 4 each is 2 replicas.
    return within(math.ceil(in_flight / rules.target_in_flight - 1e-6), rules)


def stabilise(
    current: int, history: Sequence[Recommendation], now: float, rules: Autoscaling
) -> int:
    """The count to move to from ``current``, given the recommendations so far."""
    if not history:
        return current
    latest = history[-1].replicas
    if latest > current:
        recent = [r.replicas for r in history if r.at >= now - rules.scale_up_window_s]
        return max(current, min(recent or [latest]))
    if latest < current:
        recent = [r.replicas for r in history if r.at >= now - rules.scale_down_window_s]
        return min(current, max(recent or [latest]))
    return current


def decide(
    current: int,
    history: Sequence[Recommendation],
    now: float,
    rules: Autoscaling,
    free_slots: int | None,
    in_flight: float,
) -> Decision:
    """``free_slots``: replicas the free GPUs can still take (None: no GPUs used)."""
    current = within(current, rules)
    desired = stabilise(current, history, now, rules)
    load = f"{in_flight:g} in flight for a target of {rules.target_in_flight:g} per replica"
    if desired > current and free_slots is not None and desired - current > free_slots:
        allowed = current + max(0, free_slots)
        message = (
            f"{load} asks for {desired} replicas; the free GPUs allow {allowed} "
            f"({max(0, free_slots)} more)"
        )
        return Decision(allowed, desired, ScaleReason.GPU_LIMITED, message)
    if desired > current:
        return Decision(desired, desired, ScaleReason.UP, f"{load}: {current} -> {desired}")
    if desired < current:
        return Decision(desired, desired, ScaleReason.DOWN, f"{load}: {current} -> {desired}")
    return Decision(current, desired, ScaleReason.STEADY, f"{load}: {current} replicas")


def trim(history: Sequence[Recommendation], now: float, rules: Autoscaling) -> list[Recommendation]:
    """Only what a window can still look at."""
    keep = max(rules.scale_up_window_s, rules.scale_down_window_s)
    return [r for r in history if r.at >= now - keep]
