"""Someone else's model server under modelplane's rollouts, on node-0: a small HTTP
server built in the test (its own port and probe paths), pushed to the cluster's
registry and pulled by the kubelet. Ready means its readiness path said so; a version
that crashes is rolled back automatically, with the spec kept."""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from buildkit import push, python_server_image
from clusterkit import Cluster, wait_for
from localcluster.registries import registries
from mdkit import condition, wait_condition
from nodekit import Images, ModelStore, cluster_ip, node_md, pods, wait_ready

SERVER = Path(__file__).parent / "servers" / "custom_server.py"
PORT = 9000
LOAD_SECONDS = 4


@pytest.fixture(scope="module")
def custom_image(real_node: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    assert real_node.local is not None
    reg = registries(real_node.local)["registry"]
    ref = f"{reg.host}/servers/custom-server:1"
    local = python_server_image(SERVER, "localhost/modelplane-test/custom-server:1", PORT)
    push(local, ref, reg.ca_file, tmp_path_factory.mktemp("push"))
    return ref


def _custom_md(images: Images, image: str, uri: str, version: str) -> dict[str, Any]:
    md = node_md("custom", images, uri, version)
    runtime = md["spec"]["runtime"]
    runtime.pop("batching")  # a setting of modelplane's runtime only
    runtime.update(
        image=image,
        port=PORT,
        env=[{"name": "LOAD_SECONDS", "value": str(LOAD_SECONDS)}],
        server={
            "kind": "custom",
            "readinessPath": "/healthz/ready",
            "livenessPath": "/healthz/live",
            "metricsPath": "/stats",
        },
    )
    return md


def _model(cluster: Cluster, ns: str) -> dict[str, Any]:
    ip = cluster_ip(cluster, ns, "custom", path="/healthz/live")
    response = httpx.get(f"http://{ip}:80/model", timeout=5)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def _when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_custom_server_is_ready_when_it_says_so_and_rolls_back_when_it_crashes(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any,
    custom_image: str,
) -> None:  # fmt: skip
    real_node.apply(_custom_md(images, custom_image, model_store.uri("v1"), "v1"), node_ns)
    wait_ready(real_node, node_ns, "custom", timeout=180)
    (pod,) = pods(real_node, node_ns, "modelplane.io/deployment=custom")
    container = pod["status"]["containerStatuses"][0]
    # Pulled from the cluster registry by the kubelet: known by that repository's digest.
    assert container["imageID"].startswith(f"{custom_image.rpartition(':')[0]}@sha256:")
    started = _when(container["state"]["running"]["startedAt"])
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    # Ready only once its readiness path answered 200: after its load, not at start.
    assert (_when(ready["lastTransitionTime"]) - started).total_seconds() >= LOAD_SECONDS - 1
    assert _model(real_node, node_ns)["version"] == "v1"
    assert len(_model(real_node, node_ns)["sha256"]) == 64  # it read the model folder

    real_node.apply(_custom_md(images, custom_image, model_store.uri("v2"), "v2"), node_ns)
    wait_ready(real_node, node_ns, "custom", timeout=180)
    wait_for(lambda: _model(real_node, node_ns)["version"] == "v2", "v2 served", timeout=30)

    bad = _custom_md(images, custom_image, model_store.uri("v2"), "crash-v3")
    bad["spec"]["rollout"] = {"progressDeadlineSeconds": 60}
    real_node.apply(bad, node_ns)
    md = wait_condition(real_node, "custom", node_ns, "Ready", reason="RolledBack", timeout=180)
    assert md["spec"]["model"]["version"] == "crash-v3"  # the spec stays as applied
    assert md["status"]["currentVersion"] == "v2"
    assert "crash" in condition(md, "Ready")["message"]
    assert md["status"]["history"][0]["outcome"] == "RolledBack"
    time.sleep(2)
    assert _model(real_node, node_ns)["version"] == "v2"  # still served, throughout
