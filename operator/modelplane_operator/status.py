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
from typing import TYPE_CHECKING, Any

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


def compute_status(
    md: ModelDeploymentSpec,
    plan: Plan,
    revisions: Mapping[int, Revision],
    conflicts: Sequence[str],
    config: OperatorConfig,
    previous: Mapping[str, Any],
    now: str,
) -> tuple[dict[str, Any], list[Event]]:
    """The status to write and the events to post, given the plan of this reconcile.

    ``now`` is an RFC 3339 timestamp, used only for condition transitions.
    """
    desired = md.replicas
    target = revisions.get(plan.target)
    total = sum(r.pods for r in revisions.values())
    ready = sum(r.ready for r in revisions.values())
    updated_ready = target.ready if target else 0
    min_available = max(
        0, desired - resolve_count(md.rollout.max_unavailable, desired, round_up=False)
    )
    problem: Problem | None = None
    stalled = False
    if conflicts:
        problem = Problem(
            CONFLICT,
            f"{', '.join(conflicts)} already exists and is not owned by this ModelDeployment; "
            "modelplane leaves it alone. Delete or rename it, or rename the ModelDeployment.",
        )
        stalled = True
    elif plan.error:
        problem, stalled = Problem(plan.reason, plan.error), True
    elif plan.phase in (Phase.ROLLED_BACK, Phase.ROLLING_BACK, Phase.FAILED, Phase.PAUSED):
        problem = Problem(plan.reason, plan.message)
        stalled = plan.phase in (Phase.ROLLED_BACK, Phase.FAILED)
    elif plan.phase != Phase.SUCCEEDED:
        problem = pod_problem(target.pod_objects if target else ())
        if plan.deadline_exceeded:
            deadline = md.rollout.progress_deadline_seconds
            base = problem.message if problem else "pods of the new revision are not ready"
            problem = Problem(
                problem.reason if problem else DEADLINE,
                f"{base} (no progress within {deadline}s)",
            )
            stalled = True
        if problem is not None and problem.reason in STALLING_REASONS:
            stalled = True
        if problem is None:
            gpu = (
                " (few free GPUs: replacing pods one at a time)" if plan.memory.gpu_limited else ""
            )
            version = target.version if target else md.version
            problem = Problem(
                "RolloutInProgress",
                f"rolling out version {version} (revision {plan.target}): "
                f"{updated_ready}/{desired} ready{gpu}",
            )
    serving_ok = (
        plan.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK) and not conflicts and not plan.error
    )
    if serving_ok and plan.phase == Phase.SUCCEEDED:
        ready_reason = "ScaledToZero" if desired == 0 else "AllReplicasReady"
        ready_msg = (
            "scaled to zero replicas"
            if desired == 0
            else f"{ready}/{desired} replicas of version {target.version if target else md.version}"
            " are ready"
        )
    else:
        assert problem is not None
        ready_reason, ready_msg = problem.reason, problem.message
    progressing_now = plan.phase in (Phase.PROGRESSING, Phase.ROLLING_BACK) and not stalled
    if plan.phase == Phase.SUCCEEDED:
        prog_reason, prog_msg = "RolloutComplete", f"revision {plan.target} is rolled out"
    else:
        prog_reason, prog_msg = ready_reason, ready_msg
    avail_ok = ready >= min_available and (ready > 0 or desired == 0)
    degraded = plan.phase in (Phase.ROLLED_BACK, Phase.ROLLING_BACK)
    gen = md.generation
    conditions = [
        _condition("Ready", serving_ok, ready_reason, ready_msg, gen, previous, now),
        _condition(
            "Available",
            avail_ok,
            "MinimumReplicasAvailable" if avail_ok else "MinimumReplicasUnavailable",
            f"{ready} of {desired} replicas ready (at least {min_available} needed)",
            gen,
            previous,
            now,
        ),
        _condition("Progressing", progressing_now, prog_reason, prog_msg, gen, previous, now),
        # kstatus: a paused rollout is still in progress, not current.
        _condition(
            "Reconciling",
            progressing_now or (plan.phase == Phase.PAUSED and not serving_ok),
            prog_reason,
            prog_msg,
            gen,
            previous,
            now,
        ),
        _condition(
            "Stalled",
            stalled,
            ready_reason if stalled else "NotStalled",
            ready_msg if stalled else "the ModelDeployment is making progress or done",
            gen,
            previous,
            now,
        ),
        _condition(
            "Degraded",
            degraded,
            "RolloutFailed" if degraded else "NotDegraded",
            plan.memory.failure_message if degraded else "the target revision is healthy",
            gen,
            previous,
            now,
        ),
    ]
    serving = revisions.get(plan.serving) if plan.serving is not None else None
    status: dict[str, Any] = {
        "observedGeneration": gen,
        "replicas": total,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "updatedReplicas": updated_ready,
        "ready": f"{ready}/{desired}",
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
    return status, [*plan.events, *_events(previous, conditions)]


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
    conditions = [
        _condition("Ready", False, INVALID_SPEC, message, generation, previous, now),
        _condition("Stalled", True, INVALID_SPEC, message, generation, previous, now),
        _condition("Progressing", False, INVALID_SPEC, message, generation, previous, now),
        _condition("Reconciling", False, INVALID_SPEC, message, generation, previous, now),
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
