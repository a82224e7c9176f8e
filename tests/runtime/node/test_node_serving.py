"""modelplane's own images serving a model on a real pod of node-0, end to end."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from clusterkit import Cluster, wait_for
from localcluster.pki import NODE_NAME
from nodekit import (
    INPUT,
    Images,
    ModelStore,
    cluster_ip,
    condition,
    infer_json,
    node_md,
    pods,
    wait_ready,
)

SELECTOR = "modelplane.io/deployment=tiny"


def _runtime_pod(cluster: Cluster, ns: str) -> dict[str, Any]:
    running = [p for p in pods(cluster, ns, SELECTOR) if p["status"].get("phase") == "Running"]
    assert len(running) == 1, [p["metadata"]["name"] for p in running]
    return running[0]


def _seconds(since: str, until: str) -> float:
    from datetime import datetime

    parse = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00"))  # noqa: E731
    return (parse(until) - parse(since)).total_seconds()


def _ready_since(pod: dict[str, Any]) -> str:
    return str(condition(pod, "Ready")["lastTransitionTime"])


def test_a_model_from_http_serves_through_its_service_on_the_real_node(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    """Storage initializer download, load, the kubelet's probe, inference via the Service."""
    real_node.apply(node_md("tiny", images, model_store.uri("v1"), "v1"), namespace=node_ns)
    md = wait_ready(real_node, node_ns, "tiny")
    pod = _runtime_pod(real_node, node_ns)
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["podIP"].startswith("198.18.16.")
    statuses = {s["name"]: s for s in pod["status"]["containerStatuses"]}
    assert statuses["runtime"]["ready"] and statuses["runtime"]["restartCount"] == 0
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["exitCode"] == 0
    # Both containers ran under the restricted profile (the namespace enforces it), as
    # uid 1000 on a read-only root filesystem: they can write only their emptyDirs.
    emptydirs = {v["name"] for v in pod["spec"]["volumes"] if "emptyDir" in v}
    for container in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        security = {**pod["spec"]["securityContext"], **container["securityContext"]}
        assert security["readOnlyRootFilesystem"] is True and security["runAsNonRoot"] is True
        assert security.get("runAsUser", 1000) == 1000
        writable = {m["name"] for m in container["volumeMounts"] if not m.get("readOnly")}
        writable -= {
            m["name"] for m in container["volumeMounts"] if "serviceaccount" in m["mountPath"]
        }
        assert writable <= emptydirs, (container["name"], writable)
    # Ready only after load and warm-up: the kubelet's probe turned it Ready after the
    # runtime logged so (kubectl logs reaches the real kubelet).
    log = real_node.kubectl("logs", "-n", node_ns, pod["metadata"]["name"], "-c", "runtime").stdout
    assert "model tiny version v1 is ready" in log
    started = statuses["runtime"]["state"]["running"]["startedAt"]
    assert _ready_since(pod) >= started
    print(
        f"pod start to Ready: {_seconds(pod['metadata']['creationTimestamp'], _ready_since(pod))} s"
    )

    # From this machine to the ClusterIP (kube-proxy), with tritonclient.
    client = triton.InferenceServerClient(f"{cluster_ip(real_node, node_ns, 'tiny')}:80")
    x = triton.InferInput("x", list(INPUT.shape), "FP32")
    x.set_data_from_numpy(INPUT, binary_data=True)
    result = client.infer("tiny", [x])
    assert result.get_response()["model_version"] == "v1"
    np.testing.assert_allclose(
        result.as_numpy("output0"), model_store.expected["v1"], rtol=1e-5, atol=1e-6
    )

    # From a client pod to the DNS name in status.endpoint (CoreDNS, kube-proxy).
    endpoint = md["status"]["endpoint"]
    assert endpoint == f"http://tiny.{node_ns}.svc.cluster.local/v2/models/tiny"
    answer = _infer_from_a_pod(real_node, node_ns, images, endpoint)
    assert answer["model_version"] == "v1"
    out = answer["outputs"][0]
    got = np.asarray(out["data"], np.float32).reshape(out["shape"])
    np.testing.assert_allclose(got, model_store.expected["v1"], rtol=1e-5, atol=1e-6)


CLIENT = """
import json, sys, urllib.request
x = {"name": "x", "shape": %(shape)s, "datatype": "FP32", "data": %(data)s}
body = json.dumps({"inputs": [x]}).encode()
headers = {"Content-Type": "application/json"}
request = urllib.request.Request(sys.argv[1] + "/infer", body, headers)
print(urllib.request.urlopen(request, timeout=20).read().decode())
"""


def _infer_from_a_pod(cluster: Cluster, ns: str, images: Images, endpoint: str) -> dict[str, Any]:
    script = CLIENT % {"shape": list(INPUT.shape), "data": INPUT.ravel().tolist()}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"modelplane.io/real-node": "true"},
            "tolerations": [{"key": "modelplane.io/real-node", "operator": "Exists"}],
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "client",
                    "image": images.runtime,
                    "command": ["python", "-c", script, endpoint],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    cluster.apply(pod, namespace=ns)

    def finished() -> str | None:
        phase = cluster.get_json("pod", "client", "-n", ns)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_for(finished, "the client pod to finish", timeout=120, interval=1)
    output = cluster.kubectl("logs", "-n", ns, "client").stdout
    assert phase == "Succeeded", output
    answer: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return answer


def test_a_model_from_a_pvc_path_serves_and_metrics_move_with_traffic(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    """pvc:// (a hostPath PV on node-0); /metrics scraped at the pod address counts each request."""
    pv_name = f"models-{node_ns}"
    real_node.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(model_store.root), "type": "Directory"},
                "claimRef": {"namespace": node_ns, "name": "models"},
            },
        }
    )
    try:
        real_node.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "models"},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "volumeName": pv_name,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
            namespace=node_ns,
        )
        real_node.apply(node_md("tiny", images, "pvc://models/tiny-v2", "v2"), namespace=node_ns)
        wait_ready(real_node, node_ns, "tiny")
        pod_ip = _runtime_pod(real_node, node_ns)["status"]["podIP"]
        base = f"http://{pod_ip}:8080"
        before = _successes(base)
        sent = 25
        for _ in range(sent):
            version, out = infer_json(base)
            assert version == "v2"
        np.testing.assert_allclose(out, model_store.expected["v2"], rtol=1e-5, atol=1e-6)
        assert _successes(base) - before == sent
    finally:
        real_node.kubectl("delete", "pv", pv_name, "--wait=false", check=False)


def _successes(base_url: str) -> float:
    import httpx

    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    match = re.search(r'^nv_inference_request_success\{[^}]*model="tiny"[^}]*\} (\S+)$', text, re.M)
    assert match, text[:2000]
    return float(match.group(1))


@pytest.mark.parametrize(
    ("broken", "artifact", "sha256", "reason"),
    [
        ("foreign", "foreign", "", "incompatible artifact: exported with torch 1.13.1"),
        ("badsum", "v1", "0" * 64, "sha256 mismatch"),
    ],
)
def test_a_version_that_cannot_load_really_restarts_and_is_rolled_back(
    real_node: Cluster,
    images: Images,
    model_store: ModelStore,
    node_ns: str,
    operator: Any,
    broken: str,
    artifact: str,
    sha256: str,
    reason: str,
) -> None:
    """The runtime (or the storage initializer) exits with its reason; real restarts; the
    operator rolls back and quotes it."""
    real_node.apply(node_md("tiny", images, model_store.uri("v1"), "v1"), namespace=node_ns)
    wait_ready(real_node, node_ns, "tiny")
    body = node_md("tiny", images, model_store.uri(artifact), broken)
    if sha256:
        body["spec"]["model"]["sha256"] = sha256
    body["spec"]["rollout"] = {"progressDeadlineSeconds": 600}
    real_node.apply(body, namespace=node_ns)

    restarts = [0]

    def rolled_back() -> dict[str, Any] | None:
        for pod in pods(real_node, node_ns, f"app.kubernetes.io/version={broken}"):
            status = pod["status"]
            counts = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
            restarts.append(max((c.get("restartCount", 0) for c in counts), default=0))
        md = real_node.get_json("md", "tiny", "-n", node_ns)
        return md if condition(md, "Ready").get("reason") == "RolledBack" else None

    started = time.monotonic()
    md = wait_for(rolled_back, "the automatic rollback", timeout=300, interval=2)
    seconds = time.monotonic() - started
    messages = " ".join(c.get("message", "") for c in md["status"]["conditions"])
    assert reason in messages, messages
    assert md["spec"]["model"]["version"] == broken  # the spec stays as written
    assert md["status"]["currentVersion"] == "v1"
    # The broken pods really exited and restarted before the rollback (the kubelet's counts).
    assert max(restarts) >= 1, restarts
    history = json.dumps(md["status"].get("history", []))
    assert broken in history
    version, _ = infer_json(f"http://{cluster_ip(real_node, node_ns, 'tiny')}:80")
    assert version == "v1"
    print(f"rolled back {broken} in {seconds:.0f} s")
