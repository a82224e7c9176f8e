"""Failure of the target revision: crash loops, failing downloads, no progress in time.

Only a failure that leads to an automatic rollback is latched (in memory, until the
template or ``modelplane.io/retry`` changes); otherwise the rollout keeps trying, like
a Deployment, and status reports why it does not progress.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..phases import Outcome, Phase
from ..pods import CRASH_LOOP, STORAGE_FAILED, Event, Problem, pod_problem
from ..revisions import Revision
from . import history
from .decision import Situation
from .history import History
from .memory import Memory

CRASH_RESTARTS = 3  # restarts after which a crash loop or failing download fails the rollout


@dataclass(frozen=True)
class Verdict:
    memory: Memory
    history: History
    failed: bool  # the target failed: the last good revision serves again
    deadline_exceeded: bool
    events: tuple[Event, ...] = ()


def judge(s: Situation, mem: Memory, target_hash: str, hist: History) -> Verdict:
    target_rev = s.target_rev
    failed = mem.failed == s.target and mem.failed_hash == target_hash
    if target_rev is not None and target_rev.ready > mem.target_ready:
        mem = replace(mem, last_progress_at=s.now, target_ready=target_rev.ready)
    exceeded = _deadline_exceeded(s, mem)
    can_roll_back = s.md.rollout.auto_rollback and mem.stable is not None and mem.stable != s.target
    if failed or target_rev is None or mem.phase == Phase.SUCCEEDED or not can_roll_back:
        return Verdict(mem, hist, failed, exceeded)
    problem = repeated_failure(target_rev)
    if problem is None and exceeded:
        detail = pod_problem(target_rev.pod_objects)
        why = f": {detail.message}" if detail else ""
        deadline = s.md.rollout.progress_deadline_seconds
        problem = Problem("ProgressDeadlineExceeded", f"no progress within {deadline}s{why}")
    if problem is None:
        return Verdict(mem, hist, failed, exceeded)
    mem = replace(
        mem,
        failed=s.target,
        failed_hash=target_hash,
        failure_reason=problem.reason,
        failure_message=problem.message,
    )
    event = Event(
        "Warning",
        "RolloutFailed",
        f"revision {s.target} (version {target_rev.version}) failed: {problem.message}"
        f"; rolling back to revision {mem.stable}",
    )
    hist = history.finish(hist, s.target, s.now, Outcome.ROLLED_BACK, problem.message)
    return Verdict(mem, hist, True, exceeded, (event,))


def repeated_failure(target: Revision) -> Problem | None:
    """A crash loop or failing download that has repeated ``CRASH_RESTARTS`` times.

    A download or a start can fail once for a passing reason (a 503 from the store, a
    node hiccup): only repeated failures fail the rollout at once; the deadline covers
    the rest.
    """
    problem = pod_problem(target.pod_objects)
    if problem is None:
        return None
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


def _deadline_exceeded(s: Situation, mem: Memory) -> bool:
    return (
        s.target_rev is not None
        and not s.md.rollout.paused
        and mem.phase == Phase.PROGRESSING
        and mem.last_progress_at is not None
        and s.now - mem.last_progress_at > s.md.rollout.progress_deadline_seconds
        and not s.target_complete()
    )
