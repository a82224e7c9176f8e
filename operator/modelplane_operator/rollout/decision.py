"""The values the rollout modules pass each other: what they see and what they decide."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..metering import CanaryReading
from ..phases import Phase
from ..pods import Event
from ..revisions import Revision
from ..spec import ModelDeploymentSpec, resolve_count
from .memory import Memory


@dataclass(frozen=True)
class Budget:
    """Replica arithmetic of one rolling step."""

    replicas: int
    surge: int
    unavailable: int


def budget(md: ModelDeploymentSpec) -> Budget:
    replicas = md.replicas
    surge = resolve_count(md.rollout.max_surge, replicas, round_up=True)
    unavailable = resolve_count(md.rollout.max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the schema forbids it; never deadlock on an old object
    return Budget(replicas, surge, unavailable)


@dataclass(frozen=True)
class Situation:
    """What a strategy sees in one reconcile: the spec, the revisions and the time."""

    md: ModelDeploymentSpec
    budget: Budget
    target: int
    revisions: Mapping[int, Revision]
    annotations: Mapping[str, str]
    gpu_slots: Callable[[], int] | None
    now: float
    analysis: CanaryReading | None = None  # the canary's measured intervals, when analysed

    @property
    def target_rev(self) -> Revision | None:
        return self.revisions.get(self.target)

    @functools.cached_property
    def olds(self) -> Sequence[Revision]:
        # Read by several decisions of one reconcile; the revisions do not change in it.
        return [r for n, r in self.revisions.items() if n != self.target]

    def target_complete(self) -> bool:
        rev = self.target_rev
        return rev is not None and complete(rev, self.olds, self.budget.replicas)


@dataclass(frozen=True)
class Step:
    """What a strategy decided: replicas of the revisions it sets, and how to say it."""

    replicas: Mapping[int, int]
    memory: Memory
    serving: int | None
    phase: str = Phase.PROGRESSING  # or the phase kept in status, which may be any string
    reason: str = "RolloutInProgress"
    message: str = ""
    events: tuple[Event, ...] = ()
    aborted: bool = False  # the canary failed its analysis: memory holds the failure


def complete(target: Revision, olds: Sequence[Revision], replicas: int) -> bool:
    """Every replica of ``target`` is ready and no old revision holds a pod."""
    return (
        target.replicas == replicas
        and target.ready >= replicas
        and all(o.replicas == 0 and o.pods == 0 for o in olds)
    )
