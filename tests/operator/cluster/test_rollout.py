"""Rollouts against the real control plane: kwok pods, real Deployment controller."""

from __future__ import annotations

import json
import signal
import time
import uuid
from typing import Any

import pytest

from clusterkit import Cluster, wait_for
from mdkit import (
    PodWatcher,
    condition,
    events_for,
    model_deployment,
    set_version,
    wait_condition,
    wait_serving,
)

pytestmark = pytest.mark.usefixtures("operator")


def revision_deployments(cluster: Cluster, namespace: str, name: str) -> dict[str, int]:
    items = cluster.get_json(
        "deployments", "-n", namespace, "-l", f"modelplane.io/deployment={name}"
    )["items"]
    return {d["metadata"]["name"]: d["spec"]["replicas"] for d in items}


def test_rolling_update_keeps_capacity_above_the_bound(cluster: Cluster, namespace: str) -> None:
    rollout = {"maxSurge": 1, "maxUnavailable": 1}
    cluster.apply(model_deployment("roll", replicas=4, rollout=rollout), namespace)
    wait_serving(cluster, namespace, "roll", "1.0.0")
    with PodWatcher(cluster, namespace, "roll") as watcher:
        set_version(cluster, namespace, "roll", "2.0.0")
        md = wait_serving(cluster, namespace, "roll", "2.0.0")
        time.sleep(1)
    seen = {p["metadata"]["labels"]["modelplane.io/revision"] for p in watcher.pods.values()}
    assert seen == {"2"}, "the watcher must have followed the rollout"
    assert watcher.min_ready is not None and watcher.min_ready >= 4 - 1
    assert watcher.max_pods <= 4 + 1
    assert md["status"]["currentRevision"] == 2
    assert revision_deployments(cluster, namespace, "roll") == {"roll-r1": 0, "roll-r2": 4}
    outcomes = [(h["revision"], h["outcome"]) for h in md["status"]["history"]]
    assert outcomes == [(2, "Succeeded"), (1, "Superseded")]


def test_rollout_on_a_gpu_full_cluster_completes_without_extra_gpus(
    cluster: Cluster, namespace: str
) -> None:
    if cluster.local is None:
        pytest.skip("adds a simulated GPU node: needs the local control plane")
    from localcluster import NodeSpec

    product = f"TEST-FULL-{uuid.uuid4().hex[:6].upper()}"
    node = NodeSpec(name=f"gpu-full-{product.lower()}", gpus=2, gpu_product=product).manifest()
    cluster.local.apply([node])
    try:
        gpu = {"gpu": {"count": 1, "product": product}}
        cluster.apply(model_deployment("full", replicas=2, runtime=gpu), namespace)
        wait_serving(cluster, namespace, "full", "1.0.0")
        with PodWatcher(cluster, namespace, "full") as watcher:
            set_version(cluster, namespace, "full", "2.0.0")
            wait_serving(cluster, namespace, "full", "2.0.0", timeout=120)
        assert watcher.max_pods <= 2  # never more pods than the node has GPUs
        assert any(e["reason"] == "GPUConstrained" for e in events_for(cluster, "full", namespace))
    finally:
        cluster.kubectl("delete", "md", "full", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "node", node["metadata"]["name"], "--wait=false", check=False)


@pytest.mark.parametrize("failure", ["crash", "unready", "init-fail"])
def test_failing_version_rolls_back_automatically_and_keeps_the_spec(
    cluster: Cluster, namespace: str, failure: str
) -> None:
    rollout = {"progressDeadlineSeconds": 10}
    cluster.apply(model_deployment("flaky", replicas=2, rollout=rollout), namespace)
    wait_serving(cluster, namespace, "flaky", "1.0.0")
    started = time.monotonic()
    set_version(
        cluster, namespace, "flaky", "2.0.0", pod={"labels": {"sim.modelplane.io/fail": failure}}
    )
    md = wait_condition(cluster, "flaky", namespace, "Ready", reason="RolledBack", timeout=60)
    assert time.monotonic() - started < 10 + 25  # within its deadline (plus a little)

    assert md["spec"]["model"]["version"] == "2.0.0"  # GitOps stays in sync
    status = md["status"]
    assert status["currentVersion"] == "1.0.0" and status["targetVersion"] == "2.0.0"
    assert condition(md, "Degraded")["status"] == "True"
    assert condition(md, "Stalled")["status"] == "True"
    expected = {
        "crash": "crash-looping",
        "unready": "no progress within 10s",
        "init-fail": "model download failed",
    }[failure]
    assert expected in condition(md, "Ready")["message"]
    assert status["history"][0]["outcome"] == "RolledBack"
    reasons = {e["reason"] for e in events_for(cluster, "flaky", namespace)}
    assert {"RolloutFailed", "RolledBack"} <= reasons
    time.sleep(4)  # no retry loop while the spec stays
    assert revision_deployments(cluster, namespace, "flaky") == {"flaky-r1": 2, "flaky-r2": 0}


def test_version_revert_and_rollback_to_reuse_kept_revisions(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(model_deployment("back", replicas=2), namespace)
    wait_serving(cluster, namespace, "back", "1.0.0")
    set_version(cluster, namespace, "back", "2.0.0")
    wait_serving(cluster, namespace, "back", "2.0.0")

    set_version(cluster, namespace, "back", "1.0.0")
    md = wait_serving(cluster, namespace, "back", "1.0.0", timeout=30)
    assert md["status"]["currentRevision"] == 1
    assert set(revision_deployments(cluster, namespace, "back")) == {"back-r1", "back-r2"}

    cluster.kubectl(
        "patch",
        "md",
        "back",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"rollout": {"rollbackTo": 2}}}),
    )
    md = wait_serving(cluster, namespace, "back", "2.0.0", timeout=30)
    assert md["status"]["currentRevision"] == 2
    assert set(revision_deployments(cluster, namespace, "back")) == {"back-r1", "back-r2"}


def test_canary_steps_show_as_pod_counts_and_promotion(cluster: Cluster, namespace: str) -> None:
    rollout = {
        "strategy": "Canary",
        "canary": {
            "steps": [{"weight": 25, "pause": {}}, {"weight": 50, "pause": {"duration": "3s"}}]
        },
    }
    cluster.apply(model_deployment("bird", replicas=4, rollout=rollout), namespace)
    wait_serving(cluster, namespace, "bird", "1.0.0")
    set_version(cluster, namespace, "bird", "2.0.0")
    md = wait_condition(cluster, "bird", namespace, "Ready", status="False", reason="CanaryPaused")
    assert "1/4" in condition(md, "Ready")["message"]
    wait_for(
        lambda: revision_deployments(cluster, namespace, "bird") == {"bird-r1": 3, "bird-r2": 1},
        "25% canary: 1 new pod, 3 old",
    )
    time.sleep(2)
    assert revision_deployments(cluster, namespace, "bird") == {"bird-r1": 3, "bird-r2": 1}

    cluster.kubectl(
        "annotate", "md", "bird", "-n", namespace, "modelplane.io/promote=1", "--overwrite"
    )
    wait_for(
        lambda: revision_deployments(cluster, namespace, "bird") == {"bird-r1": 2, "bird-r2": 2},
        "50% canary: 2 new pods, 2 old",
    )
    wait_serving(cluster, namespace, "bird", "2.0.0", timeout=30)  # after the timed pause
    assert revision_deployments(cluster, namespace, "bird") == {"bird-r1": 0, "bird-r2": 4}


def test_paused_rollout_holds_and_resumes(cluster: Cluster, namespace: str) -> None:
    cluster.apply(model_deployment("held", replicas=2), namespace)
    wait_serving(cluster, namespace, "held", "1.0.0")
    set_version(cluster, namespace, "held", "2.0.0", rollout={"paused": True})
    wait_condition(cluster, "held", namespace, "Ready", status="False", reason="RolloutPaused")
    time.sleep(2)
    assert revision_deployments(cluster, namespace, "held").get("held-r2", 0) == 0
    assert revision_deployments(cluster, namespace, "held")["held-r1"] == 2
    cluster.kubectl(
        "patch",
        "md",
        "held",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"rollout": {"paused": False}}}),
    )
    wait_serving(cluster, namespace, "held", "2.0.0")


@pytest.mark.reliability("Faults")
def test_operator_killed_mid_rollout_resumes_without_orphans_or_duplicates(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    rollout = {"strategy": "Canary", "canary": {"steps": [{"weight": 50, "pause": {}}]}}
    cluster.apply(model_deployment("phoenix", replicas=2, rollout=rollout), namespace)
    wait_serving(cluster, namespace, "phoenix", "1.0.0")
    set_version(cluster, namespace, "phoenix", "2.0.0")
    wait_condition(cluster, "phoenix", namespace, "Ready", status="False", reason="CanaryPaused")

    operator.stop(signal.SIGKILL)
    cluster.kubectl("annotate", "md", "phoenix", "-n", namespace, "modelplane.io/promote=go")
    operator.start()
    md = wait_serving(cluster, namespace, "phoenix", "2.0.0")
    assert revision_deployments(cluster, namespace, "phoenix") == {"phoenix-r1": 0, "phoenix-r2": 2}
    pods = cluster.get_json("pods", "-n", namespace, "-l", "modelplane.io/deployment=phoenix")[
        "items"
    ]
    assert sorted(p["metadata"]["labels"]["modelplane.io/revision"] for p in pods) == ["2", "2"]
    assert [h["revision"] for h in md["status"]["history"]] == [2, 1]


def test_history_and_kept_revisions_stay_within_the_limit(cluster: Cluster, namespace: str) -> None:
    cluster.apply(model_deployment("many", revisionHistoryLimit=1), namespace)
    wait_serving(cluster, namespace, "many", "1.0.0")
    for n in range(2, 6):
        set_version(cluster, namespace, "many", f"{n}.0.0")
        md = wait_serving(cluster, namespace, "many", f"{n}.0.0")
    wait_for(
        lambda: len(revision_deployments(cluster, namespace, "many")) == 2,
        "old revisions beyond the limit to be deleted",
    )
    assert set(revision_deployments(cluster, namespace, "many")) == {"many-r4", "many-r5"}
    assert len(md["status"]["history"]) <= 1 + 2
    assert md["status"]["history"][0]["version"] == "5.0.0"
