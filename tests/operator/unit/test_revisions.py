"""Grouping Deployments and pods into revisions."""

from __future__ import annotations

from typing import Any

from modelplane_operator.revisions import REVISION_LABEL, observe_revisions


def _deployment(revision: int, replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"name": f"resnet-r{revision}", "labels": {REVISION_LABEL: str(revision)}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"env": []}]}}},
    }


def _pod(revision: int, name: str, phase: str, ready: bool, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {REVISION_LABEL: str(revision)}, **meta},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_finished_pods_are_not_counted() -> None:
    # An evicted pod stays as a Failed object until pod GC; it holds no GPU and must not
    # keep an old revision "present" (a rollout would never complete, Recreate never start).
    pods = [
        _pod(1, "resnet-r1-evicted", "Failed", False),
        _pod(1, "resnet-r1-job", "Succeeded", False),
        _pod(2, "resnet-r2-a", "Running", True),
    ]
    revisions = observe_revisions([_deployment(1, 0), _deployment(2, 1)], pods)
    assert revisions[1].pods == 0
    assert revisions[1].pod_objects == ()
    assert (revisions[2].pods, revisions[2].ready) == (1, 1)


def test_terminating_pods_count_as_present_but_not_ready() -> None:
    pods = [
        _pod(1, "resnet-r1-a", "Running", True, deletionTimestamp="2026-11-25T00:00:00Z"),
        _pod(1, "resnet-r1-b", "Pending", False),
    ]
    revision = observe_revisions([_deployment(1, 1)], pods)[1]
    assert (revision.pods, revision.ready) == (2, 0)
    assert [p["metadata"]["name"] for p in revision.pod_objects] == ["resnet-r1-b"]
