"""The local cluster is real: scheduler, Deployment controller and GPU capacity behave."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clusterkit import Cluster, wait_for

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def deployment(
    name: str,
    gpus: int = 0,
    labels: dict[str, str] | None = None,
    progress_deadline: int = 600,
    replicas: int = 1,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/noop:1"}
    pod_spec: dict[str, Any] = {"containers": [container]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
        pod_spec["tolerations"] = [GPU_TOLERATION]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": progress_deadline,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, **(labels or {})}},
                "spec": pod_spec,
            },
        },
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return None


def pods(cluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json("pods", "-n", namespace, "-l", f"app={app}")[
        "items"
    ]
    return items


def test_kubectl_reports_the_pinned_release(cluster: Cluster) -> None:
    from localcluster import HACK_DIR

    pinned = dict(
        line.split("=", 1)
        for line in (HACK_DIR / "versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )["KUBERNETES_VERSION"]
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["clientVersion"]["gitVersion"] == pinned
    if cluster.local is not None:
        assert version["serverVersion"]["gitVersion"] == pinned


def test_gpu_nodes_advertise_capacity_labels_and_taint(cluster: Cluster) -> None:
    nodes = cluster.get_json("nodes", "-l", "nvidia.com/gpu.present=true")["items"]
    assert nodes, "no GPU nodes in the cluster"
    for node in nodes:
        # Whole GPUs, MIG devices (mixed strategy) or shared GPUs: some nvidia.com/ resource.
        gpus = {
            k: v for k, v in node["status"]["allocatable"].items() if k.startswith("nvidia.com/")
        }
        assert gpus and all(int(v) > 0 for v in gpus.values()), node["metadata"]["name"]
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"]
        taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints", [])}
        assert ("nvidia.com/gpu", "NoSchedule") in taints
        assert condition(node, "Ready")["status"] == "True"  # type: ignore[index]


def test_gpu_deployment_lands_on_a_gpu_node_and_becomes_available(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(deployment("one-gpu", gpus=1), namespace)

    def available() -> dict[str, Any] | None:
        obj = cluster.get_json("deployment", "one-gpu", "-n", namespace)
        cond = condition(obj, "Available")
        return obj if cond and cond["status"] == "True" else None

    wait_for(available, "Deployment one-gpu to become Available")
    (pod,) = pods(cluster, namespace, "one-gpu")
    node = cluster.get_json("node", pod["spec"]["nodeName"])
    # From a device plugin's nvidia.com/gpu, or from a DRA device that the gpu.nvidia.com
    # DeviceClass maps the resource to (the scheduler then names the claim it made).
    assert (
        "nvidia.com/gpu" in node["status"]["allocatable"]
        or (pod["status"]["extendedResourceClaimStatus"]["resourceClaimName"])
    )
    assert condition(pod, "Ready")["status"] == "True"  # type: ignore[index]


def test_cpu_pods_stay_off_tainted_gpu_nodes(cluster: Cluster, namespace: str) -> None:
    cluster.apply(deployment("cpu-only", replicas=4), namespace)
    scheduled = wait_for(
        lambda: (
            lambda ps: ps if len(ps) == 4 and all(p["spec"].get("nodeName") for p in ps) else None
        )(pods(cluster, namespace, "cpu-only")),
        "4 cpu-only pods to be scheduled",
    )
    for pod in scheduled:
        node = cluster.get_json("node", pod["spec"]["nodeName"])
        assert "nvidia.com/gpu" not in node["status"]["allocatable"]


def test_gpu_over_request_stays_pending_with_the_schedulers_message(
    cluster: Cluster, namespace: str
) -> None:
    # 16: more than any node has. Not more than 32: gpu.nvidia.com maps nvidia.com/gpu to
    # DRA devices, and the scheduler refuses a claim of over 32 devices with an error
    # (SchedulerError: "exceeds the claim limit of 32") instead of Unschedulable.
    cluster.apply(deployment("too-many-gpus", gpus=16), namespace)

    def unschedulable() -> dict[str, Any] | None:
        for pod in pods(cluster, namespace, "too-many-gpus"):
            cond = condition(pod, "PodScheduled")
            if cond and cond.get("reason") == "Unschedulable":
                return cond
        return None

    cond = wait_for(unschedulable, "the scheduler to mark the pod Unschedulable")
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    (pod,) = pods(cluster, namespace, "too-many-gpus")
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


@pytest.mark.parametrize("failure", ["crash", "unready", "init-fail"])
def test_failing_template_exceeds_its_progress_deadline(
    cluster: Cluster, namespace: str, failure: str
) -> None:
    if not cluster.simulated:
        pytest.skip("simulated failures need kwok nodes")
    name = f"fails-{failure}"
    manifest = deployment(name, labels={"sim.modelplane.io/fail": failure}, progress_deadline=5)
    manifest["spec"]["template"]["spec"]["initContainers"] = [
        {"name": "storage-initializer", "image": "registry.invalid/noop:1"}
    ]
    manifest["spec"]["template"]["metadata"]["annotations"] = {
        "sim.modelplane.io/message": f"simulated {failure}"
    }
    cluster.apply(manifest, namespace)

    def deadline_exceeded() -> dict[str, Any] | None:
        cond = condition(cluster.get_json("deployment", name, "-n", namespace), "Progressing")
        return cond if cond and cond.get("reason") == "ProgressDeadlineExceeded" else None

    cond = wait_for(deadline_exceeded, f"ProgressDeadlineExceeded for {name}", timeout=90)
    assert cond["status"] == "False"
    (pod,) = pods(cluster, namespace, name)
    assert condition(pod, "Ready")["status"] == "False"  # type: ignore[index]
    if failure == "crash":
        (status,) = pod["status"]["containerStatuses"]
        assert status["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        assert status["restartCount"] > 0
    elif failure == "unready":
        assert pod["status"]["phase"] == "Running"
        assert "running" in pod["status"]["containerStatuses"][0]["state"]
    else:
        assert pod["status"]["phase"] == "Pending"
        assert condition(pod, "Initialized")["status"] == "False"  # type: ignore[index]
        (init,) = pod["status"]["initContainerStatuses"]
        assert init["lastState"]["terminated"]["message"] == "simulated init-fail"
