"""TorchServe under modelplane's rollouts, on node-0: modelplane's TorchServe image (PyPI's
torchserve, Java from Debian) serving `.mar` archives made by `modelplane package --format
mar`, fetched by the storage initializer. Real pods, real traffic through the Service."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from clusterkit import Cluster, wait_for
from loadkit import ClosedLoop
from mdkit import condition, wait_condition
from nodekit import Images, ModelStore, cluster_ip, infer_json, node_md, pods, wait_ready

ROLLING = {"strategy": "RollingUpdate", "maxSurge": 1, "maxUnavailable": 0}
# A TorchServe pod: the Java server and one Python worker with torch.
RESOURCES = {"requests": {"cpu": "100m", "memory": "768Mi"}}
# TorchServe answers /ping as soon as the model is registered, seconds before its worker
# has loaded it; requests meanwhile wait in its queue. The clients wait that long too.
CLIENT_TIMEOUT_S = 60


def _ts_md(images: Images, uri: str, version: str, **spec: Any) -> dict[str, Any]:
    if not images.torchserve:
        pytest.fail("no TorchServe image in images.env: run make images")
    md = node_md("ts", images, uri, version, **spec)
    runtime = md["spec"]["runtime"]
    runtime.pop("batching")  # a setting of modelplane's runtime only
    runtime.update(image=images.torchserve, resources=RESOURCES, server={"kind": "torchserve"})
    return md


def _log(cluster: Cluster, ns: str, pod: str) -> str:
    return cluster.kubectl("logs", "-n", ns, pod, "-c", "runtime").stdout


def _settled(cluster: Cluster, ns: str, version: str) -> bool:
    md = cluster.get_json("md", "ts", "-n", ns)
    status = md.get("status", {})
    if status.get("currentVersion") != version or status.get("readyReplicas") != 2:
        return False
    left = pods(cluster, ns, "modelplane.io/deployment=ts")
    return all(p["metadata"]["labels"].get("app.kubernetes.io/version") == version for p in left)


def test_torchserve_is_ready_through_its_ping_and_answers_like_the_model_in_process(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    real_node.apply(_ts_md(images, model_store.mar_uri("v1"), "v1"), node_ns)
    wait_ready(real_node, node_ns, "ts", timeout=300)
    (pod,) = pods(real_node, node_ns, "modelplane.io/deployment=ts")
    runtime = pod["spec"]["containers"][0]
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert runtime["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    # Ready through TorchServe's own /ping, which answered only once the model was in.
    log = _log(real_node, node_ns, pod["metadata"]["name"])
    registered = log.find("Model tiny loaded.")
    first_ping = log.find('"GET /ping HTTP/1.1" 200')
    assert 0 <= registered < first_ping, log[-3000:]

    url = f"http://{cluster_ip(real_node, node_ns, 'ts', path='/ping')}:80"
    version, output = infer_json(url, timeout=CLIENT_TIMEOUT_S)  # v2 JSON, as modelplane's
    assert version == "v1"
    np.testing.assert_allclose(output, model_store.expected["v1"], atol=1e-5)


def test_a_rolling_update_of_the_mar_under_load_loses_nothing_and_a_broken_one_rolls_back(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    real_node.apply(
        _ts_md(images, model_store.mar_uri("v1"), "v1", replicas=2, rollout=ROLLING), node_ns
    )
    wait_ready(real_node, node_ns, "ts", timeout=300)
    url = f"http://{cluster_ip(real_node, node_ns, 'ts', path='/ping')}:80"
    v2 = _ts_md(images, model_store.mar_uri("v2"), "v2", replicas=2, rollout=ROLLING)
    # A connection per request: TorchServe cannot tell a kept-alive client to reconnect
    # while its pod drains (no "Connection: close", unlike modelplane's runtime), so such
    # a client's next request on a stopping pod can meet a closed connection.
    with ClosedLoop(url, clients=3, max_seconds=400, timeout=CLIENT_TIMEOUT_S, fresh=True) as load:
        time.sleep(3)
        real_node.apply(v2, node_ns)
        wait_for(lambda: _settled(real_node, node_ns, "v2"), "v1 -> v2", timeout=360, interval=1)
        time.sleep(3)
    figures = load.figures()
    served = [o.version for o in load.outcomes if o.ok]
    assert figures["failures"] == 0, (figures, figures["errors"])
    assert served[0] == "v1" and served[-10:] == ["v2"] * 10, figures["versions"]
    np.testing.assert_allclose(infer_json(url)[1], model_store.expected["v2"], atol=1e-5)

    broken = _ts_md(images, model_store.mar_uri("broken"), "v3", replicas=2, rollout=ROLLING)
    broken["spec"]["rollout"]["progressDeadlineSeconds"] = 240
    real_node.apply(broken, node_ns)
    md = wait_condition(real_node, "ts", node_ns, "Ready", reason="RolledBack", timeout=360)
    assert md["spec"]["model"]["version"] == "v3"  # the spec stays as applied
    assert md["status"]["currentVersion"] == "v2"
    message = condition(md, "Ready")["message"]
    # TorchServe's reason, through modelplane-torchserve's termination message.
    assert "failed to load in TorchServe" in message and "zip" in message.lower(), message
    assert md["status"]["history"][0]["outcome"] == "RolledBack"
    assert infer_json(url, timeout=CLIENT_TIMEOUT_S)[0] == "v2"  # still served


def _event_messages(cluster: Cluster, ns: str, reason: str) -> list[str]:
    events = cluster.get_json("events", "-n", ns, "--field-selector", f"reason={reason}")
    return [e["message"] for e in events["items"]]


def test_a_torchserve_canary_is_judged_on_torchserve_s_own_metrics_and_promoted(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    """The operator scrapes TorchServe's own metrics port (8082, not the serving port's
    /metrics, which TorchServe does not have) and reads its inference requests: without
    traffic the analysis waits, with traffic it promotes both steps on its own."""
    rules = {"interval": "8s", "minRequests": 20, "minSuccessRate": 99}
    rollout = {"strategy": "Canary", "canary": {"steps": [{"weight": 50, "pause": {}},
               {"weight": 100, "pause": {}}], "analysis": rules}}  # fmt: skip
    real_node.apply(_ts_md(images, model_store.mar_uri("v1"), "v1", replicas=2), node_ns)
    wait_ready(real_node, node_ns, "ts", timeout=300)
    url = f"http://{cluster_ip(real_node, node_ns, 'ts', path='/ping')}:80"
    real_node.apply(
        _ts_md(images, model_store.mar_uri("v2"), "v2", replicas=2, rollout=rollout), node_ns
    )

    def analysis() -> dict[str, Any]:
        md = real_node.get_json("md", "ts", "-n", node_ns)
        found: dict[str, Any] = md.get("status", {}).get("rollout", {}).get("analysis", {})
        return found

    idle = wait_for(
        lambda: (a := analysis()).get("verdict") == "NoData" and a,
        "the analysis to report too few requests", timeout=300, interval=1,
    )  # fmt: skip
    assert "requests < 20 needed to judge" in idle["message"], idle
    with ClosedLoop(url, clients=2, max_seconds=300, timeout=CLIENT_TIMEOUT_S, fresh=True) as load:
        md = wait_for(
            lambda: (m := real_node.get_json("md", "ts", "-n", node_ns))["status"].get(
                "currentVersion") == "v2" and condition(m, "Ready").get("reason")
            == "AllReplicasReady" and m,
            "v2 promoted by analysis", timeout=300, interval=1,
        )  # fmt: skip
    assert load.figures()["failures"] == 0, load.figures()["errors"]
    assert "modelplane.io/promote" not in md["metadata"].get("annotations", {})
    passed = _event_messages(real_node, node_ns, "CanaryStepComplete")
    assert sum("analysis passed" in m for m in passed) == 2, passed
    assert any("success 100.0%" in m for m in passed), passed
