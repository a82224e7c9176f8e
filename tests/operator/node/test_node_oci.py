"""Models as OCI images from the local cluster's real registries, pinned per revision.

The registries are CNCF distribution on node-0's address (TLS from the cluster CA; one
wants htpasswd credentials). Models are pushed with ``modelplane package``'s pusher, the
storage initializer in real pods pulls them by the digest the operator resolved, and the
answers are checked against the model run in-process.
"""

from __future__ import annotations

import base64
import datetime
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from clusterkit import Cluster, wait_for
from localcluster.registries import RegistryInfo, registries
from modelplane_runtime.package import load_factory, package_model
from modelplane_runtime.publish import push_model
from nodekit import (
    EXAMPLES,
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


@dataclass(frozen=True)
class Models:
    """Two packaged tiny MLPs with different weights (so different bytes and digests)."""

    folders: dict[str, Path]
    expected: dict[str, np.ndarray]  # the in-process output for nodekit's INPUT


@pytest.fixture(scope="module")
def models(real_node: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Models:
    work = tmp_path_factory.mktemp("oci-models")
    folders, expected = {}, {}
    for version, shift in (("v1", 0.0), ("v2", 0.3)):
        module = load_factory(f"{EXAMPLES}:tiny_mlp")().eval()
        with torch.no_grad():
            for param in module.parameters():
                param.add_(shift)
            expected[version] = module(torch.from_numpy(INPUT)).numpy()
        folders[version] = work / version
        package_model(module, {"x": torch.randn(2, 16)}, folders[version], name="tiny")
    assert not np.allclose(expected["v1"], expected["v2"])
    return Models(folders, expected)


def _registry(cluster: Cluster, name: str) -> RegistryInfo:
    assert cluster.local is not None
    found = registries(cluster.local)
    assert name in found, f"the cluster has no {name} (hack/localcluster/registries.py)"
    return found[name]


def _push(reg: RegistryInfo, folder: Path, uri: str, tmp: Path, password: str = "") -> str:
    env = {"MODELPLANE_REGISTRY_CA_FILE": str(reg.ca_file), "HOME": str(tmp)}
    if reg.username:
        env |= {"MODELPLANE_REGISTRY_USERNAME": reg.username,
                "MODELPLANE_REGISTRY_PASSWORD": password or reg.password}  # fmt: skip
    return push_model(folder, uri, env=env).digest


def _md(cluster: Cluster, ns: str, name: str = "tiny") -> dict[str, Any]:
    md: dict[str, Any] = cluster.get_json("md", name, "-n", ns)
    return md


def _serves(cluster: Cluster, ns: str, store: Models, version: str) -> None:
    url = f"http://{cluster_ip(cluster, ns, 'tiny')}:80"

    def answers() -> bool:  # the old revision's pods may answer for a moment
        got_version, out = infer_json(url)
        return got_version == version and np.allclose(out, store.expected[version], atol=1e-5)

    wait_for(answers, f"the Service to answer with {version}'s output", timeout=60, interval=0.5)


def _revision_uri(cluster: Cluster, ns: str, revision: int) -> str:
    dep = cluster.get_json("deployment", f"tiny-r{revision}", "-n", ns)
    init = dep["spec"]["template"]["spec"]["initContainers"][0]
    return str(init["args"][0])


def test_a_rollback_serves_its_revisions_bytes_after_the_tag_moved(
    real_node: Cluster, images: Images, models: Models, node_ns: str, operator: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    reg = _registry(real_node, "registry")
    uri = f"oci://{reg.host}/{node_ns}/tiny:prod"
    d1 = _push(reg, models.folders["v1"], uri, tmp_path)
    real_node.apply(node_md("tiny", images, uri, "v1"), node_ns)
    wait_ready(real_node, node_ns, "tiny", timeout=240)
    _serves(real_node, node_ns, models, "v1")
    assert _revision_uri(real_node, node_ns, 1) == f"{uri}@{d1}"
    assert _md(real_node, node_ns)["status"]["history"][0]["uri"] == f"{uri}@{d1}"
    # The storage initializer says what it pulled, in the pod's status.
    pod = pods(real_node, node_ns, "modelplane.io/revision=1")[0]
    init = pod["status"]["initContainerStatuses"][0]["state"]["terminated"]
    assert init["message"].strip() == f"pulled {d1}"
    history = wait_for(lambda: _md(real_node, node_ns)["status"]["history"][0].get("modelDigest"),
                       "the fetched digest in history", timeout=30)  # fmt: skip
    assert history == d1

    d2 = _push(reg, models.folders["v2"], uri, tmp_path)  # the tag moves
    assert d2 != d1
    time.sleep(5)  # a moved tag alone rolls nothing out
    deployments = real_node.get_json("deployments", "-n", node_ns)["items"]
    assert [d["metadata"]["name"] for d in deployments] == ["tiny-r1"]
    _serves(real_node, node_ns, models, "v1")

    real_node.apply(node_md("tiny", images, uri, "v2"), node_ns)
    wait_ready(real_node, node_ns, "tiny", timeout=240)
    _serves(real_node, node_ns, models, "v2")
    assert _revision_uri(real_node, node_ns, 2) == f"{uri}@{d2}"

    # Back to v1: revision 1 again, by its digest, though the tag names v2's bytes now.
    real_node.apply(node_md("tiny", images, uri, "v1"), node_ns)
    wait_ready(real_node, node_ns, "tiny", timeout=240)
    _serves(real_node, node_ns, models, "v1")
    md = _md(real_node, node_ns)
    assert md["status"]["history"][0]["revision"] == 1
    assert md["status"]["history"][0]["uri"] == f"{uri}@{d1}"
    assert _revision_uri(real_node, node_ns, 1) == f"{uri}@{d1}"
    assert not any(d["metadata"]["name"] == "tiny-r3"
                   for d in real_node.get_json("deployments", "-n", node_ns)["items"])  # fmt: skip

    from kubernetes import client

    from modelplane_operator import plugin

    printed = plugin.status(client.CustomObjectsApi(real_node.api_client()), node_ns, "tiny")
    assert d1 in printed and d2 in printed  # both revisions' digests, under their lines

    # A restart asks the registry nothing and writes nothing: the digests are on record.
    from operatorkit import USERNAME

    time.sleep(2)
    operator.stop()
    since = datetime.datetime.now(datetime.UTC)
    operator.start()
    time.sleep(10)
    writes = [
        (e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("name"))
        for e in real_node.writes_since(USERNAME, node_ns, since)
    ]
    assert writes == []
    assert _revision_uri(real_node, node_ns, 1) == f"{uri}@{d1}"


def _pull_secret(cluster: Cluster, ns: str, name: str, reg: RegistryInfo, password: str) -> None:
    auth = base64.b64encode(f"{reg.username}:{password}".encode()).decode()
    config = json.dumps({"auths": {reg.host: {"auth": auth}}})
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
        },
        ns,
    )


def _let_the_operator_read_secrets(cluster: Cluster, ns: str) -> None:
    """What the chart's rbac.registrySecrets grants: get on Secrets, in this namespace."""
    from operatorkit import NAMESPACE, SERVICE_ACCOUNT

    cluster.kubectl("create", "role", "registry-secrets", "--verb=get", "--resource=secrets",
                    "-n", ns)  # fmt: skip
    cluster.kubectl("create", "rolebinding", "registry-secrets", "--role=registry-secrets",
                    f"--serviceaccount={NAMESPACE}:{SERVICE_ACCOUNT}", "-n", ns)  # fmt: skip


def _unservable(cluster: Cluster, ns: str, name: str, reason: str) -> dict[str, Any]:
    def reported() -> dict[str, Any] | None:
        md = _md(cluster, ns, name)
        return md if condition(md, "Ready").get("reason") == reason else None

    md: dict[str, Any] = wait_for(reported, f"md/{name} {reason}", timeout=60, interval=0.5)
    return md


def test_a_private_registry_needs_the_right_pull_secret(
    real_node: Cluster, images: Images, models: Models, node_ns: str, operator: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    reg = _registry(real_node, "registry-auth")
    uri = f"oci://{reg.host}/{node_ns}/tiny:v1"
    digest = _push(reg, models.folders["v1"], uri, tmp_path)
    _let_the_operator_read_secrets(real_node, node_ns)
    _pull_secret(real_node, node_ns, "wrong", reg, "not-the-password")
    _pull_secret(real_node, node_ns, "right", reg, reg.password)

    wrong = node_md("bad", images, uri, "v1", pod={"imagePullSecrets": [{"name": "wrong"}]})
    real_node.apply(wrong, node_ns)
    md = _unservable(real_node, node_ns, "bad", "RegistryAuthFailed")
    assert "refused the credentials" in condition(md, "Ready")["message"]
    assert condition(md, "Stalled")["status"] == "True"
    assert real_node.get_json("deployments", "-n", node_ns)["items"] == []
    assert reg.password not in json.dumps(md) and "not-the-password" not in json.dumps(md)

    right = node_md("tiny", images, uri, "v1", pod={"imagePullSecrets": [{"name": "right"}]})
    real_node.apply(right, node_ns)
    wait_ready(real_node, node_ns, "tiny", timeout=240)
    _serves(real_node, node_ns, models, "v1")
    assert _revision_uri(real_node, node_ns, 1) == f"{uri}@{digest}"


def test_a_missing_tag_is_reported_before_any_pod(
    real_node: Cluster, images: Images, node_ns: str, operator: Any
) -> None:
    reg = _registry(real_node, "registry")
    uri = f"oci://{reg.host}/{node_ns}/tiny:never-pushed"
    real_node.apply(node_md("tiny", images, uri, "v1"), node_ns)
    md = _unservable(real_node, node_ns, "tiny", "ModelNotFound")
    assert "never-pushed" in condition(md, "Ready")["message"]
    assert condition(md, "Stalled")["status"] == "True"
    time.sleep(3)
    assert real_node.get_json("deployments", "-n", node_ns)["items"] == []
    assert pods(real_node, node_ns) == []
    events = real_node.get_json("events", "-n", node_ns, "--field-selector", "reason=ModelNotFound")
    assert events["items"], "a Warning event says why"


def test_a_runtime_image_tag_is_pinned_and_a_moved_tag_changes_nothing(
    real_node: Cluster, models: Models, model_store: ModelStore, namespace: str, operator: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    """On simulated (kwok) nodes: only the template is looked at, no image is run."""
    reg = _registry(real_node, "registry")
    image = f"{reg.host}/{namespace}/runtime:stable"
    uri = f"oci://{image}"
    first = _push(reg, models.folders["v1"], uri, tmp_path)  # any image will do
    md = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "pinned"},
        "spec": {
            "model": {"version": "v1", "uri": model_store.uri("v1")},
            "runtime": {"image": image, "gpu": {"count": 0}},
        },
    }
    real_node.apply(md, namespace)

    def template_image() -> str | None:
        found = real_node.get_json("deployments", "-n", namespace)["items"]
        if not found:
            return None
        return str(found[0]["spec"]["template"]["spec"]["containers"][0]["image"])

    assert wait_for(template_image, "the revision's Deployment", timeout=60) == f"{image}@{first}"
    moved = _push(reg, models.folders["v2"], uri, tmp_path)
    assert moved != first
    time.sleep(5)
    assert template_image() == f"{image}@{first}"
    history = _md(real_node, namespace, "pinned")["status"]["history"]
    assert [h["image"] for h in history] == [f"{image}@{first}"]


def test_with_refresh_a_moved_tag_rolls_out_once_and_history_has_both_digests(
    real_node: Cluster, images: Images, models: Models, node_ns: str, operator: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    reg = _registry(real_node, "registry")
    uri = f"oci://{reg.host}/{node_ns}/tiny:latest"
    d1 = _push(reg, models.folders["v1"], uri, tmp_path)
    md = node_md("tiny", images, uri, "v1", model={"refreshInterval": "10s"})
    real_node.apply(md, node_ns)
    wait_ready(real_node, node_ns, "tiny", timeout=240)
    _serves(real_node, node_ns, models, "v1")
    d2 = _push(reg, models.folders["v2"], uri, tmp_path)

    def rolled_out() -> dict[str, Any] | None:
        found = _md(real_node, node_ns)
        history = found.get("status", {}).get("history") or []
        done = history and history[0].get("revision") == 2 and history[0]["outcome"] == "Succeeded"
        return found if done else None

    found = wait_for(rolled_out, "revision 2 for the moved tag", timeout=240, interval=1)
    entry = found["status"]["history"][0]
    assert entry["uri"] == f"{uri}@{d2}" and entry["movedFrom"] == f"{uri}@{d1}"
    assert found["status"]["history"][1]["uri"] == f"{uri}@{d1}"
    # The model's own bytes moved, not its version label: the output says which.
    url = f"http://{cluster_ip(real_node, node_ns, 'tiny')}:80"
    wait_for(lambda: np.allclose(infer_json(url)[1], models.expected["v2"], atol=1e-5),
             "v2's output", timeout=60, interval=0.5)  # fmt: skip
    events = real_node.get_json("events", "-n", node_ns, "--field-selector", "reason=TagMoved")
    (moved,) = events["items"]
    assert d1 in moved["message"] and d2 in moved["message"]
    time.sleep(25)  # two more refreshes find the same digest: nothing more rolls out
    names = sorted(
        d["metadata"]["name"] for d in real_node.get_json("deployments", "-n", node_ns)["items"]
    )
    assert names == ["tiny-r1", "tiny-r2"]


def test_an_image_volume_and_a_fetch_serve_the_same_model(
    real_node: Cluster, images: Images, models: Models, node_ns: str, operator: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    """From the private registry, so the kubelet, too, must use the model's secret."""
    reg = _registry(real_node, "registry-auth")
    uri = f"oci://{reg.host}/{node_ns}/tiny:v2"
    digest = _push(reg, models.folders["v2"], uri, tmp_path)
    _let_the_operator_read_secrets(real_node, node_ns)
    _pull_secret(real_node, node_ns, "model-pull", reg, reg.password)
    secret = {"secretRef": {"name": "model-pull"}}
    real_node.apply(node_md("fetched", images, uri, "v2", model=secret), node_ns)
    mounted = node_md("mounted", images, uri, "v2", model={**secret, "delivery": "ImageVolume"})
    real_node.apply(mounted, node_ns)
    for name in ("fetched", "mounted"):
        wait_ready(real_node, node_ns, name, timeout=240)

    (pod,) = pods(real_node, node_ns, "modelplane.io/deployment=mounted")
    assert "initContainers" not in pod["spec"]  # the kubelet mounted it: nothing copied
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "model")
    assert volume["image"]["reference"] == f"{reg.host}/{node_ns}/tiny@{digest}"
    assert {"name": "model-pull"} in pod["spec"]["imagePullSecrets"]

    outputs = {}
    for name in ("fetched", "mounted"):
        url = f"http://{cluster_ip(real_node, node_ns, name)}:80"
        version, outputs[name] = infer_json(url)
        assert version == "v2"
    assert np.array_equal(outputs["fetched"], outputs["mounted"])  # the same bytes, served
    assert np.allclose(outputs["mounted"], models.expected["v2"], atol=1e-5)

    # Both record the digest their pods hold: the initializer's word, and the kubelet's.
    def recorded(name: str) -> str | None:
        return _md(real_node, node_ns, name)["status"]["history"][0].get("modelDigest")

    for name in ("fetched", "mounted"):
        assert wait_for(lambda n=name: recorded(n), f"{name}'s digest", timeout=30) == digest
