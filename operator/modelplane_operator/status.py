"""Status of a ModelDeployment from what the cluster shows: a pure function.

Conditions follow the Kubernetes API conventions and kstatus:
- ``Ready``: every desired replica of the target version is ready.
- ``Available``: at least ``replicas - maxUnavailable`` replicas serve.
- ``Progressing``: a rollout is under way (False once complete or stuck).
- ``Reconciling``: kstatus' name for the same thing (Flux, ``kubectl wait``).
- ``Stalled``: no progress without a change (no GPUs, deadline passed, conflict).
Each carries a CamelCase reason, a message and ``observedGeneration``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .allocation import GpuAllocation
from .config import OperatorConfig
from .manifests import endpoint, selector_string
from .phases import Phase
from .pods import (
    INSUFFICIENT_GPU,
    UNSCHEDULABLE,
    Event,
    Problem,
    find_condition,
    pod_problem,
)
from .spec import ModelDeploymentSpec, resolve_count

if TYPE_CHECKING:
    from .revisions import Revision
    from .rollout import Plan

CONDITION_TYPES = ("Ready", "Available", "Progressing", "Reconciling", "Stalled", "Degraded")

# Reasons, most urgent first: the first that applies explains why Ready is False (the
# pods' own reasons live in pods.py).
DEADLINE = "ProgressDeadlineExceeded"
CONFLICT = "ResourceConflict"
INVALID_SPEC = "InvalidSpec"
STALLING_REASONS = frozenset({INSUFFICIENT_GPU, UNSCHEDULABLE, DEADLINE, CONFLICT, INVALID_SPEC})


def _condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = find_condition(previous.get("conditions"), type_)
    unchanged = old is not None and old.get("status") == status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": (old or {}).get("lastTransitionTime", now) if unchanged else now,
    }


@dataclass(frozen=True)
class _Verdict:
    """Whether the ModelDeployment serves, and if not why, in Ready's words."""

    serving: bool
    stalled: bool
    reason: str
    message: str


def compute_status(
    md: ModelDeploymentSpec,
    plan: Plan,
    revisions: Mapping[int, Revision],
    conflicts: Sequence[str],
    config: OperatorConfig,
    previous: Mapping[str, Any],
    now: str,
    allocation: GpuAllocation | None = None,
) -> tuple[dict[str, Any], list[Event]]:
    """The status to write and the events to post, given the plan of this reconcile.

    ``now`` is an RFC 3339 timestamp, used only for condition transitions;
    ``allocation`` is what the pods hold of GPUs (None: no GPUs, or unknown).
    """
    target = revisions.get(plan.target)
    ready = sum(r.ready for r in revisions.values())
    verdict = _verdict(md, plan, target, ready, conflicts)
    conditions = _conditions(md, plan, ready, verdict, previous, now)
    serving = revisions.get(plan.serving) if plan.serving is not None else None
    status: dict[str, Any] = {
        "observedGeneration": md.generation,
        "replicas": sum(r.pods for r in revisions.values()),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "updatedReplicas": target.ready if target else 0,
        "ready": f"{ready}/{md.replicas}",
        "gpus": md.gpus_requested,
        "selector": selector_string(md),
        "targetVersion": target.version if target else md.version,
        "targetRevision": plan.target,
        "endpoint": endpoint(md, config),
        "conditions": conditions,
        "rollout": plan.memory.to_status(),
        "history": plan.history,
    }
    if serving is not None:
        status["currentVersion"] = serving.version
        status["currentRevision"] = serving.number
    if allocation is not None:
        status["gpuAllocation"] = allocation.to_status()
    return status, [*plan.events, *_events(previous, conditions)]


def _verdict(
    md: ModelDeploymentSpec,
    plan: Plan,
    target: Revision | None,
    ready: int,
    conflicts: Sequence[str],
) -> _Verdict:
    serving = (
        plan.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK) and not conflicts and not plan.error
    )
    problem, stalled = _problem(md, plan, target, conflicts)
    if serving and plan.phase == Phase.SUCCEEDED:
        desired = md.replicas
        version = target.version if target else md.version
        if desired == 0:
            return _Verdict(True, stalled, "ScaledToZero", "scaled to zero replicas")
        message = f"{ready}/{desired} replicas of version {version} are ready"
        return _Verdict(True, stalled, "AllReplicasReady", message)
    assert problem is not None
    return _Verdict(serving, stalled, problem.reason, problem.message)


def _problem(
    md: ModelDeploymentSpec, plan: Plan, target: Revision | None, conflicts: Sequence[str]
) -> tuple[Problem | None, bool]:
    """Why Ready is False, most urgent first, and whether only a change can help."""
    if conflicts:
        problem = Problem(
            CONFLICT,
            f"{', '.join(conflicts)} already exists and is not owned by this ModelDeployment; "
            "modelplane leaves it alone. Delete or rename it, or rename the ModelDeployment.",
        )
        return problem, True
    if plan.error:
        return Problem(plan.reason, plan.error), True
    if plan.phase in (Phase.ROLLED_BACK, Phase.ROLLING_BACK, Phase.FAILED, Phase.PAUSED):
        return Problem(plan.reason, plan.message), plan.phase in (Phase.ROLLED_BACK, Phase.FAILED)
    if plan.phase == Phase.SUCCEEDED:
        return None, False
    return _rollout_problem(md, plan, target)


def _rollout_problem(
    md: ModelDeploymentSpec, plan: Plan, target: Revision | None
) -> tuple[Problem, bool]:
    """A rollout under way: what its pods say, past the deadline or not."""
    problem = pod_problem(target.pod_objects if target else ())
    stalled = False
    if plan.deadline_exceeded:
        deadline = md.rollout.progress_deadline_seconds
        base = problem.message if problem else "pods of the new revision are not ready"
        problem = Problem(
            problem.reason if problem else DEADLINE,
            f"{base} (no progress within {deadline}s)",
        )
        stalled = True
    if problem is not None:
        return problem, stalled or problem.reason in STALLING_REASONS
    gpu = " (few free GPUs: replacing pods one at a time)" if plan.memory.gpu_limited else ""
    version = target.version if target else md.version
    updated_ready = target.ready if target else 0
    message = (
        f"rolling out version {version} (revision {plan.target}): "
        f"{updated_ready}/{md.replicas} ready{gpu}"
    )
    return Problem("RolloutInProgress", message), stalled


def _conditions(
    md: ModelDeploymentSpec,
    plan: Plan,
    ready: int,
    v: _Verdict,
    previous: Mapping[str, Any],
    now: str,
) -> list[dict[str, Any]]:
    desired = md.replicas
    min_available = max(
        0, desired - resolve_count(md.rollout.max_unavailable, desired, round_up=False)
    )
    progressing_now = plan.phase in (Phase.PROGRESSING, Phase.ROLLING_BACK) and not v.stalled
    if plan.phase == Phase.SUCCEEDED:
        prog_reason, prog_msg = "RolloutComplete", f"revision {plan.target} is rolled out"
    else:
        prog_reason, prog_msg = v.reason, v.message
    avail_ok = ready >= min_available and (ready > 0 or desired == 0)
    degraded = plan.phase in (Phase.ROLLED_BACK, Phase.ROLLING_BACK)
    # kstatus: a paused rollout is still in progress, not current.
    reconciling = progressing_now or (plan.phase == Phase.PAUSED and not v.serving)
    rows = [
        ("Ready", v.serving, v.reason, v.message),
        (
            "Available",
            avail_ok,
            "MinimumReplicasAvailable" if avail_ok else "MinimumReplicasUnavailable",
            f"{ready} of {desired} replicas ready (at least {min_available} needed)",
        ),
        ("Progressing", progressing_now, prog_reason, prog_msg),
        ("Reconciling", reconciling, prog_reason, prog_msg),
        (
            "Stalled",
            v.stalled,
            v.reason if v.stalled else "NotStalled",
            v.message if v.stalled else "the ModelDeployment is making progress or done",
        ),
        (
            "Degraded",
            degraded,
            _degraded_reason(plan) if degraded else "NotDegraded",
            plan.memory.failure_message if degraded else "the target revision is healthy",
        ),
    ]
    return [
        _condition(type_, ok, reason, message, md.generation, previous, now)
        for type_, ok, reason, message in rows
    ]


def _degraded_reason(plan: Plan) -> str:
    return "AnalysisFailed" if plan.memory.failure_reason == "AnalysisFailed" else "RolloutFailed"


def _events(previous: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]]) -> list[Event]:
    """One event whenever the phase (Ready's status and reason) changes."""
    old = find_condition(previous.get("conditions"), "Ready")
    new = find_condition(conditions, "Ready")
    assert new is not None
    if old is not None and (old.get("status"), old.get("reason")) == (
        new["status"],
        new["reason"],
    ):
        return []
    ok = new["status"] == "True" or new["reason"] in ("RolloutInProgress", "RolloutPaused")
    return [Event("Normal" if ok else "Warning", str(new["reason"]), str(new["message"]))]


def invalid_spec_status(
    generation: int, message: str, previous: Mapping[str, Any], now: str
) -> tuple[dict[str, Any], list[Event]]:
    """Status for a spec the operator cannot serve (admission let it through)."""
    return unservable_status(generation, INVALID_SPEC, message, True, previous, now)


def unservable_status(
    generation: int,
    reason: str,
    message: str,
    stalled: bool,
    previous: Mapping[str, Any],
    now: str,
) -> tuple[dict[str, Any], list[Event]]:
    """Status while no revision can be made for the spec (an invalid spec, a model tag the
    registry does not know). ``stalled``: only the user can fix it; else it is retried
    and reads as reconciling (a registry that does not answer)."""
    conditions = [
        _condition("Ready", False, reason, message, generation, previous, now),
        _condition("Stalled", stalled, reason, message, generation, previous, now),
        _condition("Progressing", not stalled, reason, message, generation, previous, now),
        _condition("Reconciling", not stalled, reason, message, generation, previous, now),
    ]
    # What still serves is unchanged (nothing was written): Available, Degraded stay.
    written = {c["type"] for c in conditions}
    conditions += [
        dict(c)
        for c in previous.get("conditions") or ()
        if isinstance(c, Mapping) and c.get("type") not in written
    ]
    status = {**previous, "observedGeneration": generation, "conditions": conditions}
    return status, _events(previous, conditions)
