"""The rollout planner: desired replicas per revision, failure and rollback decisions.

A pure function of the spec, the observed revisions, the rollout memory kept in
``status.rollout`` (so an operator restart resumes where it was), free GPU slots
and the time. No I/O and no clock: ``now`` is passed in.

One module per decision, as the Deployment controller keeps one file per strategy:
``target`` (which revision should serve), ``failure`` (has it failed), ``rolling``,
``recreate`` and ``canary`` (the strategies), ``rollback`` (restoring the last good
revision), ``progress`` (completion, requeue) and ``history`` (status.history and old
revisions). Each strategy returns a typed ``Step``; ``plan`` only puts them in order.

Failure: pods of the target revision crash-looping, a failing storage initializer,
or no progress within ``progressDeadlineSeconds``. With ``autoRollback`` the last
good revision serves again and the spec stays as it is; the planner does not try
the failed template again until it changes or ``modelplane.io/retry`` changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..metering import CanaryReading
from ..phases import Outcome
from ..pods import Event
from ..revisions import Revision
from ..spec import ModelDeploymentSpec
from . import canary, failure, history, progress, recreate, rollback, rolling, target
from .canary import PROMOTE_ANNOTATION
from .decision import Budget, Situation, Step, budget
from .failure import CRASH_RESTARTS
from .history import HISTORY_CAP
from .memory import Memory, to_text, to_time
from .rolling import roll
from .target import RETRY_ANNOTATION

__all__ = [
    "CRASH_RESTARTS",
    "HISTORY_CAP",
    "PROMOTE_ANNOTATION",
    "RETRY_ANNOTATION",
    "Budget",
    "Memory",
    "Plan",
    "budget",
    "plan",
    "roll",
    "to_text",
    "to_time",
]


@dataclass(frozen=True)
class Plan:
    target: int
    create_target: bool
    replicas: dict[int, int]
    delete: tuple[int, ...]
    memory: Memory
    history: list[dict[str, Any]]
    phase: str
    reason: str  # why the ModelDeployment is (not) Ready, CamelCase
    message: str
    serving: int | None  # the revision that serves in steady state
    events: list[Event] = field(default_factory=list)
    error: str | None = None  # the spec asks for something impossible (rollbackTo)
    deadline_exceeded: bool = False
    requeue_after: float | None = None  # reconcile again then, even if nothing changes


def plan(
    md: ModelDeploymentSpec,
    desired_hash: str,
    revisions: Mapping[int, Revision],
    memory: Memory,
    history_: Sequence[Mapping[str, Any]],
    annotations: Mapping[str, str],
    gpu_slots: Callable[[], int] | None,
    now: float,
    desired_meta: Mapping[str, str],
    analysis: CanaryReading | None = None,
) -> Plan:
    """Decide the replicas of every revision for one reconcile.

    ``desired_meta`` carries the version, uri and image of the spec's template,
    for the history entry of a revision that does not exist yet.
    """
    hist = [dict(h) for h in history_]
    chosen = target.choose(md, desired_hash, revisions, memory, hist)
    mem = target.clear_on_retry(memory, chosen.number, annotations.get(RETRY_ANNOTATION), now)
    mem, hist, started = target.begin(mem, chosen, md, revisions, hist, desired_meta, now)
    if mem.stable is not None and mem.stable not in revisions:
        mem = replace(mem, stable=None)
    s = Situation(md, budget(md), chosen.number, revisions, annotations, gpu_slots, now, analysis)
    verdict = failure.judge(s, mem, chosen.hash, hist)
    decided = _strategy_step(s, verdict, chosen, verdict.history)
    if decided.aborted:
        verdict = _aborted(s, verdict, decided)
        decided = replace(rollback.step(s, decided.memory), events=decided.events)
    replicas = {n: r.replicas for n, r in revisions.items()}
    if chosen.create:
        replicas[chosen.number] = 0
    replicas.update(decided.replicas)
    settled = not verdict.failed and chosen.error is None
    decided, hist = progress.conclude(s, decided, replicas, verdict.history, settled)
    mem = decided.memory
    return Plan(
        requeue_after=progress.requeue_after(s, decided, verdict.deadline_exceeded),
        target=chosen.number,
        create_target=chosen.create,
        replicas=replicas,
        delete=history.deletable(revisions, replicas, {chosen.number, mem.stable}, md),
        memory=mem,
        history=history.trim(hist, md),
        phase=decided.phase,
        reason=decided.reason,
        message=decided.message,
        serving=decided.serving,
        events=[*started, *verdict.events, *decided.events],
        error=chosen.error,
        deadline_exceeded=verdict.deadline_exceeded and not verdict.failed,
    )


def _aborted(s: Situation, verdict: failure.Verdict, decided: Step) -> failure.Verdict:
    """A canary that failed its analysis fails like a crash-looping revision does."""
    mem = decided.memory
    hist = history.finish(
        verdict.history, s.target, s.now, Outcome.ROLLED_BACK, mem.failure_message
    )
    return replace(verdict, memory=mem, history=hist, failed=True)


def _strategy_step(
    s: Situation, verdict: failure.Verdict, chosen: target.Target, hist: history.History
) -> Step:
    """The step that decides replicas: an impossible spec, a rollback, a pause, a strategy."""
    mem = verdict.memory
    if chosen.error is not None:
        return Step(
            {},
            mem,
            serving=mem.stable,
            phase=mem.phase,
            reason="RevisionNotFound",
            message=chosen.error,
        )
    if verdict.failed:
        return rollback.step(s, mem)
    if s.md.rollout.paused:
        return progress.paused(s, mem)
    if s.md.rollout.strategy == "Recreate":
        return recreate.step(s, mem)
    if s.md.rollout.strategy == "Canary":
        return canary.step(s, mem, hist)
    return rolling.step(s, mem)
