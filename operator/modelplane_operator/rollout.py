"""The rollout planner: desired replicas per revision, failure and rollback decisions.

A pure function of the spec, the observed revisions, the rollout memory kept in
``status.rollout`` (so an operator restart resumes where it was), free GPU slots
and the time. No I/O and no clock: ``now`` is passed in.

Strategies
- RollingUpdate: like the Deployment controller, across revision Deployments:
  at most ``replicas + maxSurge`` pods, at least ``replicas - maxUnavailable``
  ready. A surge needs free GPUs; when none are free the planner replaces pods one
  at a time (one old pod down, then one new pod up) instead of stalling.
- Recreate: every old pod goes first, then the new revision scales up.
- Canary: the new revision grows to each step's share of ``replicas`` (the stable
  Service spreads traffic by ready pods, so the share is the traffic weight), the
  old one shrinks to the rest; each step then pauses for its duration or until
  the ``modelplane.io/promote`` annotation changes.

Failure: pods of the target revision crash-looping, a failing storage initializer,
or no progress within ``progressDeadlineSeconds``. With ``autoRollback`` the last
good revision serves again and the spec stays as it is; the planner does not try
the failed template again until it changes or ``modelplane.io/retry`` changes.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .phases import SERVED, Outcome, Phase
from .pods import CRASH_LOOP, STORAGE_FAILED, Event, Problem, pod_problem
from .revisions import Revision
from .spec import ModelDeploymentSpec, Pause, resolve_count

PROMOTE_ANNOTATION = "modelplane.io/promote"
RETRY_ANNOTATION = "modelplane.io/retry"
CRASH_RESTARTS = 3  # restarts after which a crash loop or failing download fails the rollout
# Every kept revision (up to the CRD's maximum revisionHistoryLimit, 50) plus the serving
# and target ones: rollback and "served before" look revisions up in the history.
HISTORY_CAP = 52

# Rollout phases kept in status.rollout.phase (the names other modules import).
PROGRESSING = Phase.PROGRESSING
PAUSED = Phase.PAUSED
SUCCEEDED = Phase.SUCCEEDED
FAILED = Phase.FAILED
ROLLING_BACK = Phase.ROLLING_BACK
ROLLED_BACK = Phase.ROLLED_BACK


def to_time(text: Any) -> float | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def to_text(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Memory:
    """What the planner remembers between reconciles (status.rollout)."""

    target: int | None = None
    target_hash: str | None = None
    stable: int | None = None
    phase: str = PROGRESSING
    started_at: float | None = None
    last_progress_at: float | None = None
    target_ready: int = 0
    step: int = 0
    step_started_at: float | None = None
    failed: int | None = None
    failed_hash: str | None = None
    failure_reason: str = ""
    failure_message: str = ""
    promote_token: str | None = None
    retry_token: str | None = None
    gpu_limited: bool = False

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> Memory:
        raw = raw or {}
        return cls(
            target=raw.get("targetRevision"),
            target_hash=raw.get("targetHash"),
            stable=raw.get("stableRevision"),
            phase=str(raw.get("phase") or PROGRESSING),
            started_at=to_time(raw.get("startedAt")),
            last_progress_at=to_time(raw.get("lastProgressAt")),
            target_ready=int(raw.get("targetReady") or 0),
            step=int(raw.get("step") or 0),
            step_started_at=to_time(raw.get("stepStartedAt")),
            failed=raw.get("failedRevision"),
            failed_hash=raw.get("failedHash"),
            failure_reason=str(raw.get("failureReason") or ""),
            failure_message=str(raw.get("failureMessage") or ""),
            promote_token=raw.get("promoteToken"),
            retry_token=raw.get("retryToken"),
            gpu_limited=bool(raw.get("gpuLimited")),
        )

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "targetRevision": self.target,
            "targetHash": self.target_hash,
            "stableRevision": self.stable,
            "phase": self.phase,
            "startedAt": to_text(self.started_at) if self.started_at else None,
            "lastProgressAt": to_text(self.last_progress_at) if self.last_progress_at else None,
            "targetReady": self.target_ready,
            "step": self.step,
            "stepStartedAt": to_text(self.step_started_at) if self.step_started_at else None,
            "failedRevision": self.failed,
            "failedHash": self.failed_hash,
            "failureReason": self.failure_reason or None,
            "failureMessage": self.failure_message or None,
            "promoteToken": self.promote_token,
            "retryToken": self.retry_token,
            "gpuLimited": self.gpu_limited or None,
        }
        return {k: v for k, v in out.items() if v is not None}


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


def _target_failure(target: Revision) -> Problem | None:
    problem = pod_problem(target.pod_objects)
    if problem is None:
        return None
    # A download or a start can fail once for a passing reason (a 503 from the store, a
    # node hiccup): only repeated failures fail the rollout at once; the deadline covers
    # the rest.
    statuses = {STORAGE_FAILED: "initContainerStatuses", CRASH_LOOP: "containerStatuses"}
    if problem.reason not in statuses:
        return None
    restarts = max(
        (
            int(cs.get("restartCount") or 0)
            for pod in target.pod_objects
            for cs in (pod.get("status") or {}).get(statuses[problem.reason]) or ()
        ),
        default=0,
    )
    return problem if restarts >= CRASH_RESTARTS else None


def plan(
    md: ModelDeploymentSpec,
    desired_hash: str,
    revisions: Mapping[int, Revision],
    memory: Memory,
    history: Sequence[Mapping[str, Any]],
    annotations: Mapping[str, str],
    gpu_slots: Callable[[], int] | None,
    now: float,
    desired_meta: Mapping[str, str],
) -> Plan:
    """Decide the replicas of every revision for one reconcile.

    ``desired_meta`` carries the version, uri and image of the spec's template,
    for the history entry of a revision that does not exist yet.
    """
    events: list[Event] = []
    hist = [dict(h) for h in history]
    known = set(revisions) | {int(h["revision"]) for h in hist if "revision" in h}

    # 1. Which revision should serve, per the spec?
    error: str | None = None
    if md.rollout.rollback_to is not None:
        if md.rollout.rollback_to in revisions:
            target = md.rollout.rollback_to
        else:
            kept = ", ".join(str(n) for n in sorted(revisions)) or "none"
            error = f"rollbackTo {md.rollout.rollback_to} is not a kept revision (kept: {kept})"
            target = (
                memory.target
                if memory.target is not None and memory.target in revisions
                else max(revisions, default=1)
            )
    else:
        matching = [n for n, r in revisions.items() if r.hash == desired_hash]
        if matching:
            target = max(matching)
        elif memory.target is not None and memory.target_hash == desired_hash:
            target = memory.target  # its Deployment went missing: recreate it, same number
        else:
            target = max(known, default=0) + 1
    create = target not in revisions and error is None
    target_hash = revisions[target].hash if target in revisions else desired_hash

    # 2. A new target starts a new rollout; a retry request clears a failure.
    mem = memory
    retry = annotations.get(RETRY_ANNOTATION)
    if retry is not None and retry != mem.retry_token:
        mem = replace(
            mem,
            retry_token=retry,
            failed=None,
            failed_hash=None,
            failure_reason="",
            failure_message="",
        )
        if mem.target == target:
            mem = replace(
                mem,
                phase=PROGRESSING,
                started_at=now,
                last_progress_at=now,
                step=0,
                step_started_at=now,
                target_ready=0,
            )
    if mem.target != target:
        previous_target = mem.target
        stable = mem.stable
        if previous_target is not None and mem.phase == SUCCEEDED:
            stable = previous_target
        mem = replace(
            mem,
            target=target,
            target_hash=target_hash,
            stable=stable,
            phase=PROGRESSING,
            started_at=now,
            last_progress_at=now,
            target_ready=0,
            step=0,
            step_started_at=now,
            gpu_limited=False,
        )
        if not (mem.failed_hash == target_hash and mem.failed == target):
            mem = replace(mem, failed=None, failed_hash=None, failure_reason="", failure_message="")
        hist = _start_history(hist, target, revisions, desired_meta, now, previous_target)
        if previous_target is not None:
            events.append(
                Event(
                    "Normal",
                    "RolloutStarted",
                    _started_message(target, revisions, desired_meta, md),
                )
            )
    if mem.stable is not None and mem.stable not in revisions:
        mem = replace(mem, stable=None)

    b = budget(md)
    target_rev = revisions.get(target)
    olds = [r for n, r in revisions.items() if n != target]
    replicas = {n: r.replicas for n, r in revisions.items()}
    if create:
        replicas[target] = 0
    failed_now = mem.failed == target and mem.failed_hash == target_hash

    # 3. Detect failure of the target revision. Only a failure that leads to an
    # automatic rollback is latched; otherwise the rollout keeps trying (like a
    # Deployment) and status reports why it does not progress.
    deadline = md.rollout.progress_deadline_seconds
    if target_rev is not None and target_rev.ready > mem.target_ready:
        mem = replace(mem, last_progress_at=now, target_ready=target_rev.ready)
    deadline_exceeded = (
        target_rev is not None
        and not md.rollout.paused
        and mem.phase == PROGRESSING
        and mem.last_progress_at is not None
        and now - mem.last_progress_at > deadline
        and not _complete(target_rev, olds, b.replicas)
    )
    can_roll_back = md.rollout.auto_rollback and mem.stable is not None and mem.stable != target
    if not failed_now and target_rev is not None and mem.phase != SUCCEEDED and can_roll_back:
        problem = _target_failure(target_rev)
        if problem is None and deadline_exceeded:
            detail = pod_problem(target_rev.pod_objects)
            why = f": {detail.message}" if detail else ""
            problem = Problem("ProgressDeadlineExceeded", f"no progress within {deadline}s{why}")
        if problem is not None:
            failed_now = True
            mem = replace(
                mem,
                failed=target,
                failed_hash=target_hash,
                failure_reason=problem.reason,
                failure_message=problem.message,
            )
            version = target_rev.version
            rolling_back = True
            suffix = f"; rolling back to revision {mem.stable}"
            events.append(
                Event(
                    "Warning",
                    "RolloutFailed",
                    f"revision {target} (version {version}) failed: {problem.message}{suffix}",
                )
            )
            hist = _finish_history(
                hist,
                target,
                now,
                Outcome.ROLLED_BACK if rolling_back else Outcome.FAILED,
                problem.message,
            )

    # 4. Decide replicas.
    phase: str = PROGRESSING  # or the phase kept in status, which may be any string
    reason, message = "RolloutInProgress", ""
    gpu_limited = False
    serving: int | None = mem.stable
    if error is not None:
        phase, reason, message = mem.phase, "RevisionNotFound", error
    elif failed_now:
        if mem.stable is not None and mem.stable in revisions:
            stable_rev = revisions[mem.stable]
            others = [r for n, r in revisions.items() if n != mem.stable]
            replicas.update(
                roll(stable_rev, mem.stable, b.replicas, others, b, None, mem.stable)[0]
            )
            done = _complete(stable_rev, others, b.replicas)
            phase = ROLLED_BACK if done else ROLLING_BACK
            reason = Phase.ROLLED_BACK if done else Phase.ROLLING_BACK
            message = (
                f"version {target_rev.version if target_rev else '?'} (revision {target}) failed: "
                f"{mem.failure_message}; version {stable_rev.version} (revision {mem.stable}) "
                f"{'serves' if done else 'is being restored'}. Change the spec or annotate "
                f"{RETRY_ANNOTATION} to try again."
            )
        else:
            phase, reason = FAILED, mem.failure_reason or "RolloutFailed"
            message = f"revision {target} failed: {mem.failure_message}"
    elif md.rollout.paused:
        phase, reason = PAUSED, "RolloutPaused"
        message = "the rollout is paused (spec.rollout.paused)"
        if target_rev is not None and _complete(target_rev, olds, b.replicas):
            phase, reason, message, serving = SUCCEEDED, "AllReplicasReady", "", target
    elif md.rollout.strategy == "Recreate":
        old_pods = sum(o.pods for o in olds)
        for o in olds:
            replicas[o.number] = 0
        replicas[target] = b.replicas if old_pods == 0 else 0
    else:
        goal = b.replicas
        steps = md.rollout.canary_steps if md.rollout.strategy == "Canary" else ()
        step = mem.step
        # Going back to a revision that already served is a rollback: no canary steps.
        served_before = any(
            h.get("revision") == target and h.get("outcome") in SERVED for h in hist
        )
        in_canary = (
            bool(steps)
            and step < len(steps)
            and mem.stable not in (None, target)
            and not served_before
        )
        if in_canary:
            weight = steps[step].weight
            goal = min(b.replicas, math.ceil(b.replicas * weight / 100)) if b.replicas else 0
        desired, gpu_limited = roll(target_rev, target, goal, olds, b, gpu_slots, mem.stable)
        replicas.update(desired)
        if in_canary and target_rev is not None:
            at_step = (
                target_rev.ready >= goal and sum(o.replicas for o in olds) <= b.replicas - goal
            )
            if at_step:
                pause = steps[step].pause
                token = annotations.get(PROMOTE_ANNOTATION)
                started = mem.step_started_at or now
                duration = _pause_seconds(pause)
                promoted = token is not None and token != mem.promote_token
                if pause is None or (duration and now - started >= duration) or promoted:
                    mem = replace(
                        mem,
                        step=step + 1,
                        step_started_at=now,
                        last_progress_at=now,
                        promote_token=token if promoted else mem.promote_token,
                    )
                    events.append(
                        Event(
                            "Normal",
                            "CanaryStepComplete",
                            f"canary step {step + 1}/{len(steps)} ({goal}/{b.replicas} "
                            "replicas on the new revision) complete",
                        )
                    )
                else:
                    phase, reason = PAUSED, "CanaryPaused"
                    when = (
                        f"until {to_text(started + duration)}"
                        if duration
                        else f"until promoted (annotate {PROMOTE_ANNOTATION})"
                    )
                    message = (
                        f"canary step {step + 1}/{len(steps)}: {goal}/{b.replicas} replicas "
                        f"on version {target_rev.version}, paused {when}"
                    )
                    mem = replace(mem, last_progress_at=now)
            else:
                mem = replace(mem, step_started_at=now)
        if gpu_limited and not mem.gpu_limited:
            events.append(
                Event(
                    "Normal",
                    "GPUConstrained",
                    "not enough free GPUs to surge: replacing pods one at a time",
                )
            )
        mem = replace(mem, gpu_limited=gpu_limited)

    # 5. Completion.
    if (
        not failed_now
        and error is None
        and phase not in (PAUSED,)
        and target_rev is not None
        and _complete(target_rev, olds, b.replicas)
        and replicas.get(target) == b.replicas
    ):
        if mem.phase != SUCCEEDED:
            hist = _finish_history(hist, target, now, Outcome.SUCCEEDED, "")
            if mem.stable is not None and mem.stable != target:
                hist = _finish_history(
                    hist, mem.stable, now, Outcome.SUPERSEDED, f"replaced by revision {target}"
                )
            events.append(
                Event(
                    "Normal",
                    "RolloutComplete",
                    f"revision {target} (version {target_rev.version}) serves "
                    f"{b.replicas} replicas",
                )
            )
        phase, reason, message, serving = SUCCEEDED, "AllReplicasReady", "", target
        mem = replace(mem, stable=target, phase=SUCCEEDED)
    elif not failed_now and error is None and phase != PAUSED:
        if mem.phase == SUCCEEDED:  # scaled or drifted after success: a fresh deadline
            mem = replace(mem, last_progress_at=now, target_ready=0)
        elif mem.phase == PAUSED:  # time spent paused is not time without progress
            mem = replace(mem, last_progress_at=now)
        mem = replace(mem, phase=PROGRESSING)
        phase = PROGRESSING
    else:
        mem = replace(mem, phase=phase)

    # 6. Old revisions beyond the history limit go; the serving and target ones stay.
    keep = {target, mem.stable}
    idle = sorted(
        (
            n
            for n, r in revisions.items()
            if n not in keep and r.replicas == 0 and r.pods == 0 and replicas.get(n, 0) == 0
        ),
        reverse=True,
    )
    delete = tuple(idle[md.revision_history_limit :])
    hist = hist[: max(md.revision_history_limit + 2, 1)][:HISTORY_CAP]
    requeue: float | None = None
    if mem.phase == PROGRESSING and mem.last_progress_at is not None and not deadline_exceeded:
        requeue = max(1.0, mem.last_progress_at + deadline - now + 1)
    if phase == PAUSED and reason == "CanaryPaused":
        steps = md.rollout.canary_steps
        duration = _pause_seconds(steps[min(mem.step, len(steps) - 1)].pause)
        if duration and mem.step_started_at is not None:
            requeue = max(1.0, mem.step_started_at + duration - now + 0.5)
    return Plan(
        requeue_after=requeue,
        target=target,
        create_target=create,
        replicas=replicas,
        delete=delete,
        memory=mem,
        history=hist,
        phase=phase,
        reason=reason,
        message=message,
        serving=serving,
        events=events,
        error=error,
        deadline_exceeded=bool(deadline_exceeded) and not failed_now,
    )


def _complete(target: Revision, olds: Sequence[Revision], replicas: int) -> bool:
    return (
        target.replicas == replicas
        and target.ready >= replicas
        and all(o.replicas == 0 and o.pods == 0 for o in olds)
    )


def _pause_seconds(pause: Pause | None) -> float:
    """A canary step's pause duration; 0 for none or a manual (duration-less) pause."""
    return pause.seconds or 0.0 if pause is not None else 0.0


def _started_message(
    target: int, revisions: Mapping[int, Revision], meta: Mapping[str, str], md: ModelDeploymentSpec
) -> str:
    version = revisions[target].version if target in revisions else meta.get("version", "")
    how = "reusing kept revision" if target in revisions else "new revision"
    return f"rolling out version {version} ({how} {target}) with {md.rollout.strategy}"


def _start_history(
    hist: list[dict[str, Any]],
    target: int,
    revisions: Mapping[int, Revision],
    meta: Mapping[str, str],
    now: float,
    previous_target: int | None,
) -> list[dict[str, Any]]:
    out = []
    for h in hist:
        if h.get("revision") == previous_target and h.get("outcome") == Outcome.PROGRESSING:
            h = {
                **h,
                # Not "Superseded": that one served; this one never finished its rollout.
                "outcome": Outcome.INTERRUPTED,
                "finishedAt": to_text(now),
                "message": f"replaced by revision {target} before it finished",
            }
        out.append(h)
    rev = revisions.get(target)
    entry = {
        "revision": target,
        "version": rev.version if rev else meta.get("version", ""),
        "uri": rev.uri if rev else meta.get("uri", ""),
        "image": rev.image if rev else meta.get("image", ""),
        "startedAt": to_text(now),
        "outcome": Outcome.PROGRESSING,
    }
    return [entry, *out]


def _finish_history(
    hist: list[dict[str, Any]], revision: int, now: float, outcome: Outcome, message: str
) -> list[dict[str, Any]]:
    out = []
    done = False
    for h in hist:
        if not done and h.get("revision") == revision:
            h = {**h, "outcome": outcome, "finishedAt": to_text(now)}
            if message:
                h["message"] = message
            done = True
        out.append(h)
    return out
