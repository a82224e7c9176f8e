"""The operator against the real control plane: children, status, GPUs, drift, ownership."""

from __future__ import annotations

import datetime
import json
import re
import time
import uuid
from typing import Any

import pytest

from clusterkit import Cluster, wait_for
from mdkit import (
    admission_answers,
    condition,
    events_for,
    get,
    model_deployment,
    wait_condition,
)

pytestmark = pytest.mark.usefixtures("operator")


def test_create_makes_owned_ready_children_and_truthful_status(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(model_deployment("resnet", replicas=2), namespace)
    md = wait_condition(cluster, "resnet", namespace, "Ready", reason="AllReplicasReady")

    dep = get(cluster, "deployment", "resnet-r1", namespace)
    svc = get(cluster, "service", "resnet", namespace)
    assert dep is not None and svc is not None
    for child in (dep, svc):
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref["uid"] == md["metadata"]["uid"] and ref["controller"] is True
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "modelplane"
    runtime = dep["spec"]["template"]["spec"]["containers"][0]
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/v2/models/resnet/ready"
    pods = cluster.get_json("pods", "-n", namespace, "-l", md["status"]["selector"])["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("gpu-") or not cluster.simulated

    status = md["status"]
    assert status["observedGeneration"] == md["metadata"]["generation"]
    assert status["readyReplicas"] == 2 and status["ready"] == "2/2"
    assert status["currentVersion"] == status["targetVersion"] == "1.0.0"
    assert status["gpus"] == 2
    assert status["endpoint"] == f"http://resnet.{namespace}.svc.cluster.local/v2/models/resnet"
    assert condition(md, "Stalled")["status"] == "False"
    assert condition(md, "Reconciling")["status"] == "False"
    reasons = [e["reason"] for e in events_for(cluster, "resnet", namespace)]
    assert "AllReplicasReady" in reasons

    table = cluster.kubectl("get", "md", "resnet", "-n", namespace).stdout
    assert re.search(r"resnet\s+1\.0\.0\s+2/2\s+2\s+AllReplicasReady", table), table


def test_kubectl_wait_for_ready(cluster: Cluster, namespace: str) -> None:
    cluster.apply(model_deployment("waited"), namespace)
    proc = cluster.kubectl(
        "wait", "--for=condition=Ready", "md/waited", "-n", namespace, "--timeout=60s", check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_kubectl_scale_reaches_the_deployment(cluster: Cluster, namespace: str) -> None:
    cluster.apply(model_deployment("scaled"), namespace)
    wait_condition(cluster, "scaled", namespace, "Ready", reason="AllReplicasReady")
    cluster.kubectl("scale", "md/scaled", "-n", namespace, "--replicas=3")

    md = wait_for(
        lambda: (lambda m: m if m and m["status"].get("readyReplicas") == 3 else None)(
            get(cluster, "md", "scaled", namespace)
        ),
        "3 ready replicas",
    )
    assert md["status"]["replicas"] == 3
    dep = get(cluster, "deployment", "scaled-r1", namespace)
    assert dep is not None and dep["spec"]["replicas"] == 3
    scale = json.loads(
        cluster.kubectl(
            "get",
            "--raw",
            f"/apis/modelplane.io/v1alpha1/namespaces/{namespace}/modeldeployments/scaled/scale",
        ).stdout
    )
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "modelplane.io/deployment=scaled"


def test_gpu_shortage_reports_insufficient_gpu_then_recovers_on_a_new_node(
    cluster: Cluster, namespace: str
) -> None:
    if cluster.local is None:
        pytest.skip("adds a simulated GPU node: needs the local control plane")
    from localcluster import NodeSpec

    cluster.apply(model_deployment("big", runtime={"gpu": {"count": 8}}), namespace)
    md = wait_condition(
        cluster, "big", namespace, "Ready", status="False", reason="InsufficientGPU", timeout=30
    )
    assert "Insufficient nvidia.com/gpu" in condition(md, "Ready")["message"]
    assert condition(md, "Stalled")["status"] == "True"
    assert any(
        e["reason"] == "InsufficientGPU" and e["type"] == "Warning"
        for e in events_for(cluster, "big", namespace)
    )

    node = NodeSpec(name=f"gpu-big-{uuid.uuid4().hex[:5]}", gpus=8).manifest()
    cluster.local.apply([node])
    try:
        md = wait_condition(
            cluster, "big", namespace, "Ready", reason="AllReplicasReady", timeout=60
        )
        assert condition(md, "Stalled")["status"] == "False"
    finally:
        cluster.apply(model_deployment("big", replicas=0, runtime={"gpu": {"count": 8}}), namespace)
        cluster.kubectl("delete", "node", node["metadata"]["name"], "--wait=false")


def test_drift_in_owned_fields_is_reverted(cluster: Cluster, namespace: str) -> None:
    cluster.apply(model_deployment("drifty", replicas=2), namespace)
    wait_condition(cluster, "drifty", namespace, "Ready", reason="AllReplicasReady")
    dep = get(cluster, "deployment", "drifty-r1", namespace)
    assert dep is not None
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]

    cluster.kubectl(
        "set", "image", "deployment/drifty-r1", "runtime=evil.example/x:1", "-n", namespace
    )
    cluster.kubectl("scale", "deployment/drifty-r1", "--replicas=5", "-n", namespace)

    def reverted() -> dict[str, Any] | None:
        live = get(cluster, "deployment", "drifty-r1", namespace)
        assert live is not None
        spec = live["spec"]
        ok = spec["replicas"] == 2 and spec["template"]["spec"]["containers"][0]["image"] == image
        return live if ok else None

    wait_for(reverted, "the operator to revert image and replicas", timeout=30)
    wait_condition(cluster, "drifty", namespace, "Ready", reason="AllReplicasReady")


def test_unowned_service_of_the_same_name_is_left_alone_and_reported(
    cluster: Cluster, namespace: str
) -> None:
    foreign = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "taken", "labels": {"app": "someone-else"}},
        "spec": {"selector": {"app": "someone-else"}, "ports": [{"port": 8080}]},
    }
    cluster.apply(foreign, namespace)
    before = get(cluster, "service", "taken", namespace)
    assert before is not None

    cluster.apply(model_deployment("taken"), namespace)
    md = wait_condition(
        cluster, "taken", namespace, "Ready", status="False", reason="ResourceConflict"
    )
    assert f"Service {namespace}/taken" in condition(md, "Ready")["message"]
    assert condition(md, "Stalled")["status"] == "True"
    assert any(e["reason"] == "ResourceConflict" for e in events_for(cluster, "taken", namespace))

    time.sleep(3)  # give a misbehaving operator the chance to touch it
    after = get(cluster, "service", "taken", namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "ownerReferences" not in after["metadata"]
    assert after["spec"]["selector"] == {"app": "someone-else"}


def test_unowned_deployment_with_a_revision_name_is_left_alone(
    cluster: Cluster, namespace: str
) -> None:
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "squat-r1"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "squat"}},
            "template": {
                "metadata": {"labels": {"app": "squat"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
            },
        },
    }
    cluster.apply(foreign, namespace)
    before = get(cluster, "deployment", "squat-r1", namespace)
    assert before is not None
    cluster.apply(model_deployment("squat"), namespace)
    md = wait_condition(
        cluster, "squat", namespace, "Ready", status="False", reason="ResourceConflict"
    )
    assert f"Deployment {namespace}/squat-r1" in condition(md, "Ready")["message"]
    time.sleep(3)  # give a misbehaving operator the chance to touch it
    after = get(cluster, "deployment", "squat-r1", namespace)
    assert after is not None
    # Its controller keeps updating its status; its spec and metadata must stay the user's.
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    assert "ownerReferences" not in after["metadata"]
    managers = {m["manager"] for m in after["metadata"].get("managedFields", [])}
    assert "modelplane" not in managers


def test_a_conflict_does_not_start_the_rollout_clock(cluster: Cluster, namespace: str) -> None:
    """While the next revision's name is taken nothing is created, so nothing has started:
    once the name is free, the rollout gets its whole progress deadline (regression: the
    clock ran during the conflict and the new revision was rolled back at once)."""
    spec = {"rollout": {"progressDeadlineSeconds": 10}}
    cluster.apply(model_deployment("later", **spec), namespace)
    md = wait_condition(cluster, "later", namespace, "Ready", reason="AllReplicasReady")
    before = {k: md["status"][k] for k in ("rollout", "history")}
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "later-r2"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "later-squat"}},
            "template": {
                "metadata": {"labels": {"app": "later-squat"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
            },
        },
    }
    cluster.apply(foreign, namespace)
    cluster.apply(model_deployment("later", "2.0.0", **spec), namespace)
    md = wait_condition(
        cluster, "later", namespace, "Ready", status="False", reason="ResourceConflict"
    )
    time.sleep(12)  # longer than the progress deadline
    md = get(cluster, "md", "later", namespace)
    assert md is not None
    # Nothing was created, so the rollout's memory and history say nothing happened.
    assert {k: md["status"][k] for k in ("rollout", "history")} == before
    reasons = [e["reason"] for e in events_for(cluster, "later", namespace)]
    assert "RolloutStarted" not in reasons
    cluster.kubectl("delete", "deployment", "later-r2", "-n", namespace)
    md = wait_condition(cluster, "later", namespace, "Ready", reason="AllReplicasReady")
    assert md["status"]["currentRevision"] == 2
    assert md["status"]["currentVersion"] == "2.0.0"
    outcomes = {h["revision"]: h.get("outcome") for h in md["status"]["history"]}
    assert outcomes[2] not in ("RolledBack", "Failed"), md["status"]["history"]


def _owned_by(cluster: Cluster, kind: str, namespace: str, uid: str) -> list[str]:
    """Names of the objects of ``kind`` whose owner reference is the ModelDeployment ``uid``."""
    items = cluster.get_json(kind, "-n", namespace)["items"]
    return [
        o["metadata"]["name"]
        for o in items
        if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))
    ]


def test_delete_cascades_to_children(cluster: Cluster, namespace: str) -> None:
    """The real children (revision Deployments doomed-rN and the Service), found by owner."""
    cluster.apply(model_deployment("doomed"), namespace)
    wait_condition(cluster, "doomed", namespace, "Ready", reason="AllReplicasReady")
    cluster.apply(model_deployment("doomed", version="2.0.0"), namespace)  # a second revision
    wait_for(
        lambda: len(_owned_by(cluster, "deployments", namespace, _uid(cluster, namespace))) == 2,
        "two revision Deployments",
    )
    uid = _uid(cluster, namespace)
    assert sorted(_owned_by(cluster, "deployments", namespace, uid)) == ["doomed-r1", "doomed-r2"]
    assert _owned_by(cluster, "services", namespace, uid) == ["doomed"]
    cluster.kubectl("delete", "md", "doomed", "-n", namespace)
    wait_for(
        lambda: (
            not any(
                _owned_by(cluster, kind, namespace, uid) for kind in ("deployments", "services")
            )
            and not cluster.get_json(
                "pods", "-n", namespace, "-l", "modelplane.io/deployment=doomed"
            )["items"]
        ),
        "the garbage collector to remove every revision Deployment, the Service and the pods",
    )


def _uid(cluster: Cluster, namespace: str) -> str:
    uid: str = cluster.get_json("md", "doomed", "-n", namespace)["metadata"]["uid"]
    return uid


def test_operator_restart_makes_no_writes_when_nothing_changed(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    if cluster.local is None:
        pytest.skip("counts writes in the local API server's audit log")
    from operatorkit import USERNAME

    for name in ("steady-a", "steady-b"):
        cluster.apply(model_deployment(name, replicas=2), namespace)
    for name in ("steady-a", "steady-b"):
        wait_condition(cluster, name, namespace, "Ready", reason="AllReplicasReady")
    time.sleep(2)  # let trailing pod events settle

    operator.stop()
    since = datetime.datetime.now(datetime.UTC)
    operator.start()
    # Every ModelDeployment is listed and reconciled at start-up; give it time.
    wait_for(lambda: _reconciled_unchanged(operator) >= 2, "start-up reconciles", timeout=30)
    time.sleep(5)

    writes = cluster.writes_since(USERNAME, namespace, since)
    assert writes == [], [
        (
            e["verb"],
            e["objectRef"].get("resource"),
            e["objectRef"].get("name"),
            e["objectRef"].get("subresource"),
            e["userAgent"],
        )
        for e in writes
    ]


def test_sixty_idle_seconds_with_ready_objects_make_zero_writes(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    """Steady state: nothing is written (the benchmark showed it; this test asserts it)."""
    if cluster.local is None:
        pytest.skip("counts writes in the local API server's audit log")
    from operatorkit import USERNAME

    for name in ("idle-a", "idle-b"):
        cluster.apply(model_deployment(name, replicas=2), namespace)
    for name in ("idle-a", "idle-b"):
        wait_condition(cluster, name, namespace, "Ready", reason="AllReplicasReady")
    time.sleep(3)  # trailing pod events and the last status write
    since = datetime.datetime.now(datetime.UTC)
    time.sleep(60)
    writes = [
        (e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("name"))
        for e in cluster.writes_since(USERNAME, namespace, since)
    ]
    assert writes == []


def _reconciled_unchanged(operator: Any) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith('modelplane_reconciles_total{result="unchanged"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.reliability("Access")
def test_pods_are_admitted_under_the_restricted_pod_security_standard(
    cluster: Cluster, namespace: str
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    cluster.apply(model_deployment("secure"), namespace)
    md = wait_condition(cluster, "secure", namespace, "Ready", reason="AllReplicasReady")
    assert md["status"]["readyReplicas"] == 1
    warnings = [
        e
        for e in cluster.get_json("events", "-n", namespace)["items"]
        if e["reason"] == "FailedCreate"
    ]
    assert warnings == []


def test_namespace_scoped_operator_leaves_other_namespaces_alone(
    cluster: Cluster, operator: Any, tmp_path: Any
) -> None:
    from operatorkit import OperatorProcess

    watched, ignored = (f"scoped-{kind}-{uuid.uuid4().hex[:5]}" for kind in ("in", "out"))
    for ns in (watched, ignored):
        cluster.kubectl("create", "namespace", ns)
    operator.stop()  # only the scoped operator runs during this test
    scoped = OperatorProcess(cluster, tmp_path, extra_args=("--namespace", watched))
    scoped.kubeconfig = operator.kubeconfig
    try:
        scoped.start()
        for ns in (watched, ignored):
            cluster.apply(model_deployment("scoped"), ns)
        wait_condition(cluster, "scoped", watched, "Ready", reason="AllReplicasReady")
        time.sleep(3)
        untouched = get(cluster, "md", "scoped", ignored)
        assert untouched is not None and "status" not in untouched
        # The real children are scoped-rN and a Service: none exist where it is not watched.
        assert cluster.get_json("deployments", "-n", watched)["items"]
        assert not cluster.get_json("deployments", "-n", ignored)["items"]
        assert get(cluster, "service", "scoped", ignored) is None
    finally:
        scoped.stop()
        operator.start()
        for ns in (watched, ignored):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _metric_sum(text: str, family: str, **labels: str) -> float:
    """The sum of ``family``'s samples whose labels include ``labels``."""
    total = 0.0
    for found, value in re.findall(rf"^{family}(?:\{{([^}}]*)\}})? (\S+)$", text, re.M):
        sample_labels = dict(re.findall(r'(\w+)="([^"]*)"', found))
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total


def test_the_operator_metrics_move_with_what_it_does(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    """Reconciles, their duration, API requests and writes by kind, and a refused write."""
    before = operator.metrics()
    cluster.apply(model_deployment("counted", replicas=1), namespace)
    wait_condition(cluster, "counted", namespace, "Ready", reason="AllReplicasReady")
    after = operator.metrics()

    def moved(family: str, **labels: str) -> float:
        return _metric_sum(after, family, **labels) - _metric_sum(before, family, **labels)

    assert moved("modelplane_reconciles_total") >= 1
    assert moved("modelplane_reconcile_duration_seconds_count") >= 1
    assert moved("modelplane_api_requests_total") >= 2
    assert moved("modelplane_api_writes_total", kind="Deployment", verb="apply") >= 1
    assert moved("modelplane_api_writes_total", kind="Service", verb="apply") >= 1

    # A write the API server refuses (a ValidatingAdmissionPolicy, no webhook needed) is an
    # invalid reconcile, said in status.
    policy = f"refuse-{namespace}"
    cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!object.metadata.name.startsWith('refused-')",
                        "message": "refused by the test",
                    }
                ],
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    try:

        def policy_active() -> bool:
            return "refused by the test" in admission_answers(cluster, namespace)

        wait_for(policy_active, "the admission policy to take effect", timeout=30)
        before = operator.metrics()
        cluster.apply(model_deployment("refused"), namespace)
        md = wait_condition(cluster, "refused", namespace, "Ready", status="False")
        message = condition(md, "Ready").get("message", "")
        assert "refused by the test" in message, message
        wait_for(
            lambda: (
                _metric_sum(operator.metrics(), "modelplane_reconciles_total", result="invalid")
                > _metric_sum(before, "modelplane_reconciles_total", result="invalid")
            ),
            "the refused reconcile counted as invalid",
        )
        # A refusal is the spec's problem, reported in status, not an operator error.
        after = operator.metrics()
        errors = "modelplane_reconcile_errors_total"
        assert _metric_sum(after, errors) == _metric_sum(before, errors)
        assert get(cluster, "deployment", "refused-r1", namespace) is None
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding", policy, check=False)
        cluster.kubectl("delete", "validatingadmissionpolicy", policy, check=False)
