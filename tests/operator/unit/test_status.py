"""Status from the plan and the observed revisions: conditions, reasons, events."""

from __future__ import annotations

from typing import Any

from factories import md_body
from modelplane_operator.config import OperatorConfig
from modelplane_operator.patch import merge_patch, status_differs
from modelplane_operator.pods import pod_problem
from modelplane_operator.revisions import Revision
from modelplane_operator.rollout import CRASH_RESTARTS, Memory, plan
from modelplane_operator.spec import ModelDeploymentSpec, parse
from modelplane_operator.status import compute_status

CONFIG = OperatorConfig()
NOW = "2026-11-23T10:00:00Z"
META = {"version": "1.0.0", "uri": "s3://m", "image": "img"}


def revision(
    number: int, replicas: int, ready: int, pods: tuple[Any, ...] = (), **kw: Any
) -> Revision:
    return Revision(
        number,
        kw.get("hash", "h1"),
        kw.get("version", "1.0.0"),
        "s3://m",
        "img",
        replicas,
        max(replicas, len(pods)),
        ready,
        pods,
    )


def status_of(
    md: ModelDeploymentSpec,
    revisions: dict[int, Revision],
    memory: Memory | None = None,
    conflicts: tuple[str, ...] = (),
    previous: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    p = plan(md, "h1", revisions, memory or Memory(), [], {}, None, 1000.0, META)
    return compute_status(md, p, revisions, list(conflicts), CONFIG, previous or {}, NOW)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def progressing(target_hash: str, since: float, **more: Any) -> Memory:
    """Revision 2 rolling out over revision 1 since `since`."""
    return Memory(
        target=2,
        target_hash=target_hash,
        stable=1,
        phase="Progressing",
        started_at=since,
        last_progress_at=since,
        **more,
    )


def pending_gpu_pod() -> dict[str, Any]:
    return {
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/4 nodes are available: 2 Insufficient nvidia.com/gpu.",
                }
            ],
        }
    }


def test_all_replicas_ready_is_ready_and_current() -> None:
    md = parse(md_body())
    status, events = status_of(md, {1: revision(1, 2, 2)})
    conds = conditions(status)
    assert conds["Ready"]["status"] == "True"
    assert conds["Ready"]["reason"] == "AllReplicasReady"
    assert conds["Stalled"]["status"] == "False"
    assert conds["Reconciling"]["status"] == "False"
    assert conds["Degraded"]["status"] == "False"
    assert all(c["observedGeneration"] == 3 for c in conds.values())
    assert status["observedGeneration"] == 3
    assert status["currentVersion"] == "1.0.0" and status["currentRevision"] == 1
    assert status["ready"] == "2/2"
    assert status["gpus"] == 2
    assert status["selector"] == "modelplane.io/deployment=resnet"
    assert "AllReplicasReady" in [e.reason for e in events]


def test_unschedulable_gpu_pods_report_insufficient_gpu_with_the_scheduler_message() -> None:
    md = parse(md_body())
    status, events = status_of(md, {1: revision(1, 2, 0, (pending_gpu_pod(), pending_gpu_pod()))})
    conds = conditions(status)
    assert conds["Ready"]["status"] == "False"
    assert conds["Ready"]["reason"] == "InsufficientGPU"
    assert "Insufficient nvidia.com/gpu" in conds["Ready"]["message"]
    assert conds["Stalled"]["status"] == "True"
    assert conds["Available"]["status"] == "False"
    assert any(e.type == "Warning" and e.reason == "InsufficientGPU" for e in events)
    assert "currentVersion" not in status


def test_crash_loop_names_the_container_and_its_last_message() -> None:
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": "runtime",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "model.pt2 is corrupt"}},
                }
            ]
        }
    }
    status, _ = status_of(parse(md_body()), {1: revision(1, 2, 0, (pod, pod))})
    ready = conditions(status)["Ready"]
    assert ready["reason"] == "CrashLoopBackOff"
    assert "runtime" in ready["message"] and "model.pt2 is corrupt" in ready["message"]


def test_storage_initializer_failure_is_reported_with_its_reason() -> None:
    pod = {
        "status": {
            "initContainerStatuses": [
                {
                    "name": "storage-initializer",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": "sha256 mismatch"}},
                }
            ]
        }
    }
    status, _ = status_of(parse(md_body()), {1: revision(1, 2, 0, (pod, pod))})
    assert conditions(status)["Ready"]["reason"] == "StorageInitializerFailed"
    assert "sha256 mismatch" in conditions(status)["Ready"]["message"]


def _storage_pod(state: dict[str, Any], exit_code: int, restarts: int = 1) -> dict[str, Any]:
    init = {
        "name": "storage-initializer",
        "restartCount": restarts,
        "state": state,
        "lastState": {"terminated": {"exitCode": exit_code, "message": "503 Slow Down"}},
    }
    ready = "True" if "terminated" in state else "False"
    return {
        "status": {
            "initContainerStatuses": [init],
            "conditions": [{"type": "Ready", "status": ready}],
        }
    }


def test_a_storage_retry_that_succeeded_or_runs_is_no_failure() -> None:
    done = _storage_pod({"terminated": {"exitCode": 0}}, 1)
    retrying = _storage_pod({"running": {}}, 1)
    assert pod_problem([done]) is None
    assert pod_problem([retrying]) is None
    waiting = _storage_pod({"waiting": {"reason": "CrashLoopBackOff"}}, 1)
    problem = pod_problem([waiting])
    assert problem is not None and problem.reason == "StorageInitializerFailed"


def test_one_failed_download_does_not_roll_back_but_repeated_failures_do() -> None:
    md = parse(md_body())
    stable = revision(1, 2, 2)
    for restarts, rolls_back in ((1, False), (CRASH_RESTARTS, True)):
        pod = _storage_pod({"waiting": {"reason": "CrashLoopBackOff"}}, 1, restarts)
        target = Revision(2, "h2", "2.0.0", "", "", 2, 2, 0, (pod, pod))
        memory = progressing("h2", since=1000.0)
        p = plan(md, "h2", {1: stable, 2: target}, memory, [], {}, None, 1001.0, META)
        assert (p.memory.failed == 2) is rolls_back, (restarts, p.phase, p.message)


def test_rollout_in_progress_is_reconciling_not_stalled() -> None:
    status, _ = status_of(parse(md_body()), {1: revision(1, 2, 1)})
    conds = conditions(status)
    assert conds["Ready"]["reason"] == "RolloutInProgress"
    assert conds["Reconciling"]["status"] == "True"
    assert conds["Progressing"]["status"] == "True"
    assert conds["Stalled"]["status"] == "False"


def test_rolled_back_is_ready_degraded_and_stalled_with_both_versions() -> None:
    md = parse(md_body())
    crash = {
        "status": {
            "containerStatuses": [
                {
                    "name": "runtime",
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"message": "boom"}},
                }
            ]
        }
    }
    revisions = {
        1: revision(1, 2, 2, hash="h0", version="0.9.0"),
        2: revision(2, 1, 0, (crash,), version="1.0.0"),
    }
    memory = progressing("h1", since=990.0, step_started_at=990.0)
    p = plan(md, "h1", revisions, memory, [], {}, None, 1000.0, META)
    assert p.replicas == {1: 2, 2: 0}
    status, events = compute_status(md, p, revisions, [], CONFIG, {}, NOW)
    conds = conditions(status)
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "RollingBack"
    assert conds["Degraded"]["status"] == "True" and "boom" in conds["Degraded"]["message"]
    assert any(e.reason == "RolloutFailed" and e.type == "Warning" for e in events)

    revisions[2] = revision(2, 0, 0, version="1.0.0")  # its pods are gone
    p = plan(md, "h1", revisions, p.memory, p.history, {}, None, 1001.0, META)
    status, _ = compute_status(md, p, revisions, [], CONFIG, status, NOW)
    conds = conditions(status)
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "RolledBack"
    assert "1.0.0" in conds["Ready"]["message"] and "0.9.0" in conds["Ready"]["message"]
    assert conds["Stalled"]["status"] == "True"
    assert status["currentVersion"] == "0.9.0" and status["targetVersion"] == "1.0.0"
    assert status["rollout"]["failedRevision"] == 2


def test_unowned_child_is_a_resource_conflict() -> None:
    status, events = status_of(
        parse(md_body()), {1: revision(1, 2, 2)}, conflicts=("Service ml/resnet",)
    )
    conds = conditions(status)
    assert conds["Ready"]["reason"] == "ResourceConflict"
    assert "Service ml/resnet" in conds["Ready"]["message"]
    assert conds["Stalled"]["status"] == "True"
    assert any(e.type == "Warning" for e in events)


def test_unchanged_state_keeps_transition_times_and_needs_no_write_or_event() -> None:
    md = parse(md_body())
    revisions = {1: revision(1, 2, 2)}
    first, _ = status_of(md, revisions)
    memory = Memory.from_status(first["rollout"])
    p = plan(md, "h1", revisions, memory, first["history"], {}, None, 5000.0, META)
    again, events = compute_status(md, p, revisions, [], CONFIG, first, "2026-11-23T11:00:00Z")
    assert again == first
    assert events == []
    assert not status_differs(first, again)


def test_merge_patch_removes_keys_the_status_no_longer_has() -> None:
    live = {"rollout": {"failedRevision": 2, "phase": "RolledBack"}, "ready": "1/1"}
    desired = {"rollout": {"phase": "Succeeded"}, "ready": "1/1"}
    assert merge_patch(live, desired) == {"rollout": {"failedRevision": None, "phase": "Succeeded"}}
    assert merge_patch(desired, desired) == {}
