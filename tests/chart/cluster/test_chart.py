"""The Helm chart against the real control plane: install, upgrade, uninstall, and its RBAC.

Pods are simulated, so the operator Deployment the chart creates only *looks* Running. To
prove the chart's RBAC is enough, the operator runs out of cluster with a TokenRequest
token of the chart's ServiceAccount and the scope/peering flags of the chart's Deployment,
and serves a model through an upgrade; `kubectl auth can-i --as` proves it is tight.

The session's shared CRD and operator stay in place: releases go to their own namespace
with crds.enabled=false (the CRD toggle is checked with a server-side dry run), and the
session operator is stopped only while the chart's identity runs, then restarted.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster, Helm, wait_for
from mdkit import condition, get, model_deployment, wait_condition
from reliabilitykit import Recorder

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "modelplane"
CRD = "modeldeployments.modelplane.io"
KOPF_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")

pytestmark = pytest.mark.usefixtures("crds")


@pytest.fixture
def helm(cluster: Cluster, tmp_path: Path) -> Helm:
    return Helm(cluster, tmp_path / "helm")


@pytest.fixture
def kopf_crds_cleanup(cluster: Cluster) -> Iterator[None]:
    """Remove kopf's peering CRDs afterwards if this test's install brought them."""
    present = {
        name
        for name in KOPF_CRDS
        if cluster.kubectl("get", "crd", name, check=False).returncode == 0
    }
    yield
    for name in set(KOPF_CRDS) - present:
        cluster.kubectl("delete", "crd", name, "--wait=false", check=False)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def restricted(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )


def operator_deployment(cluster: Cluster, namespace: str, release: str) -> dict[str, Any]:
    items = cluster.get_json(
        "deployments", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}"
    )["items"]
    (dep,) = items
    return dict(dep)


def scope_and_peering_args(dep: dict[str, Any]) -> tuple[str, ...]:
    """The chart's flags that decide what the operator watches and how it peers."""
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    keep = ("--all-namespaces", "--namespace", "--peering")
    return tuple(a for a in c["args"] if a.startswith(keep))


def wait_operator_ready(cluster: Cluster, namespace: str, release: str, replicas: int) -> None:
    """The chart's Deployment reports ready pods (kwok), admitted under restricted PSS."""

    def probe() -> bool:
        dep = operator_deployment(cluster, namespace, release)
        return bool(dep.get("status", {}).get("readyReplicas") == replicas)

    wait_for(probe, f"{replicas} ready operator pod(s) of {release}", timeout=60)
    refused = [
        e["message"]
        for e in cluster.get_json("events", "-n", namespace)["items"]
        if e["reason"] == "FailedCreate"
    ]
    assert refused == []


def can_i(cluster: Cluster, user: str, *args: str) -> bool:
    proc = cluster.kubectl("auth", "can-i", *args, f"--as={user}", check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr
    return answer == "yes"


def chart_operator(
    cluster: Cluster, workdir: Path, dep: dict[str, Any], extra: tuple[str, ...] = ()
) -> Any:
    """The operator with the chart's ServiceAccount token and flags (not started)."""
    from operatorkit import OperatorProcess, token_kubeconfig

    sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = token_kubeconfig(
        cluster,
        workdir / "chart.kubeconfig",
        duration="1h",
        service_account=(dep["metadata"]["namespace"], sa),
    )
    proc = OperatorProcess(cluster, workdir, extra_args=(*scope_and_peering_args(dep), *extra))
    proc.kubeconfig = kubeconfig
    return proc


def run_as_chart_identity(
    cluster: Cluster,
    session_operator: Any,
    workdir: Path,
    dep: dict[str, Any],
    extra: tuple[str, ...] = (),
) -> Any:
    """Start the operator as the chart's identity; the session operator is stopped first."""
    proc = chart_operator(cluster, workdir, dep, extra)
    session_operator.stop()
    proc.start()
    return proc


def restart_session_operator(operator: Any) -> None:
    """Start the session operator again; on new ports if the old ones were taken meanwhile
    (a port freed by its stop can be handed out as an ephemeral port in between)."""
    from localcluster import free_port

    try:
        operator.start()
    except AssertionError as exc:
        if "Address already in use" not in str(exc):
            raise
        operator.health_port, operator.metrics_port = free_port(), free_port()
        operator.start()


def serve_and_upgrade(cluster: Cluster, namespace: str, name: str) -> None:
    """The core scenario: Ready with its Deployment and Service, then a version upgrade."""
    cluster.apply(model_deployment(name), namespace)
    md = wait_condition(cluster, name, namespace, "Ready", reason="AllReplicasReady")
    dep = get(cluster, "deployment", f"{name}-r1", namespace)
    svc = get(cluster, "service", name, namespace)
    assert dep is not None and svc is not None
    for child in (dep, svc):
        assert child["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
    assert md["status"]["currentVersion"] == "1.0.0"

    patch = {"spec": {"model": {"version": "2.0.0", "uri": f"s3://models/{name}/2.0.0"}}}
    cluster.kubectl("patch", "md", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))

    def upgraded() -> dict[str, Any] | None:
        md = get(cluster, "md", name, namespace)
        if (
            md
            and md["status"].get("currentVersion") == "2.0.0"
            and condition(md, "Ready").get("reason") == "AllReplicasReady"
        ):
            return md
        return None

    wait_for(upgraded, f"md/{name} serving 2.0.0", timeout=90)
    assert get(cluster, "deployment", f"{name}-r2", namespace) is not None


def writes_by(cluster: Cluster, user: str, namespace: str) -> set[tuple[str, str]]:
    return {
        (e["verb"], e["objectRef"].get("resource", ""))
        for e in cluster.audit_events()
        if e["user"]["username"] == user and e["objectRef"].get("namespace") == namespace
    }


@pytest.mark.reliability("Access")
def test_cluster_wide_install_upgrade_uninstall_with_a_sufficient_tight_identity(
    cluster: Cluster,
    namespace: str,
    helm: Helm,
    operator: Any,
    tmp_path: Path,
    kopf_crds_cleanup: None,
) -> None:
    release, models, peering = unique("mp"), unique("chart-models"), unique("peer")
    restricted(cluster, namespace)
    cluster.kubectl("create", "namespace", models)
    installed = False
    try:
        out = helm(
            "install",
            release,
            str(CHART),
            "-n",
            namespace,
            "--set",
            "crds.enabled=false",
            "--set",
            f"peering.name={peering}",
            "--wait",
            "--timeout=90s",
        ).stdout
        installed = True
        assert "The operator watches ModelDeployments in every namespace." in out
        wait_operator_ready(cluster, namespace, release, replicas=1)
        dep = operator_deployment(cluster, namespace, release)
        sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
        user = f"system:serviceaccount:{namespace}:{sa}"
        fullname = dep["metadata"]["name"]
        role = cluster.get_json("clusterrole", fullname)
        assert cluster.get_json("clusterrolebinding", fullname)["subjects"][0]["name"] == sa
        assert get(cluster, "service", f"{fullname}-metrics", namespace) is not None
        assert get(cluster, "poddisruptionbudget", fullname, namespace) is None
        assert not any("kopf.dev" in r["apiGroups"] for r in role["rules"])

        # Scale to two replicas: PDB, peering object and RBAC, --peering.
        helm(
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            "--reuse-values",
            "--set",
            "replicas=2",
            "--wait",
            "--timeout=90s",
        )
        wait_operator_ready(cluster, namespace, release, replicas=2)
        dep = operator_deployment(cluster, namespace, release)
        assert f"--peering={peering}" in scope_and_peering_args(dep)
        pdb = cluster.get_json("poddisruptionbudget", fullname, "-n", namespace)
        assert pdb["spec"]["minAvailable"] == 1
        cluster.get_json("clusterkopfpeering", peering)

        # Sufficient: the operator, as the chart's ServiceAccount with its flags, serves.
        proc = run_as_chart_identity(cluster, operator, tmp_path / "op", dep, ("--priority=7",))
        try:
            serve_and_upgrade(cluster, models, "charted")
            peers = cluster.get_json("clusterkopfpeering", peering).get("status", {})
            assert [p["priority"] for p in peers.values()] == [7]
        finally:
            proc.stop()
            restart_session_operator(operator)
        if cluster.local is not None:
            writes = writes_by(cluster, user, models)
            # Server-side apply of the children, status patches: all as the chart's identity.
            expected = {
                ("patch", "deployments"),
                ("patch", "services"),
                ("patch", "modeldeployments"),
            }
            assert expected <= writes, writes

        # Tight: what it may and may not do.
        allowed = [
            ("create", "deployments.apps", "-n", models),
            ("patch", "modeldeployments.modelplane.io", "--subresource=status", "-n", models),
            ("list", "nodes"),
            ("patch", f"clusterkopfpeerings.kopf.dev/{peering}"),
            # Device-claim mode: a template per revision, the pods' claims, the devices.
            ("create", "resourceclaimtemplates.resource.k8s.io", "-n", models),
            ("delete", "resourceclaimtemplates.resource.k8s.io", "-n", models),
            ("list", "resourceclaims.resource.k8s.io", "-A"),
            ("list", "resourceslices.resource.k8s.io"),
            ("list", "deviceclasses.resource.k8s.io"),
        ]
        denied = [
            ("get", "secrets", "-n", models),
            ("create", "resourceclaims.resource.k8s.io", "-n", models),
            ("patch", "resourceclaims.resource.k8s.io", "-n", models),
            ("patch", "resourceclaimtemplates.resource.k8s.io", "-n", models),
            ("create", "resourceslices.resource.k8s.io"),
            ("create", "deviceclasses.resource.k8s.io"),
            ("list", "secrets", "-A"),
            ("delete", "modeldeployments.modelplane.io", "-n", models),
            ("update", "modeldeployments.modelplane.io", "-n", models),
            ("patch", "modeldeployments.modelplane.io", "-n", models),
            ("create", "pods", "-n", models),
            ("delete", "services", "-n", models),
            ("list", "configmaps", "-n", models),
            ("create", "clusterroles.rbac.authorization.k8s.io"),
            ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
            ("patch", "nodes"),
        ]
        assert [a for a in allowed if not can_i(cluster, user, *a)] == []
        assert [d for d in denied if can_i(cluster, user, *d)] == []

        helm("uninstall", release, "-n", namespace, "--wait", "--timeout=60s")
        installed = False
        for kind in ("clusterrole", "clusterrolebinding", "clusterkopfpeering"):
            name = peering if kind == "clusterkopfpeering" else fullname
            assert cluster.kubectl("get", kind, name, check=False).returncode != 0, kind
        wait_for(
            lambda: get(cluster, "deployment", fullname, namespace) is None,
            "the operator Deployment to go",
        )
        assert get(cluster, "serviceaccount", sa, namespace) is None
        assert not can_i(cluster, user, "list", "nodes")
        cluster.kubectl("get", "crd", CRD)  # the shared CRD was never the chart's
    finally:
        if installed:
            helm("uninstall", release, "-n", namespace, check=False)
        cluster.kubectl("delete", "namespace", models, "--wait=false", check=False)


@pytest.mark.reliability("Access")
def test_namespaced_install_watches_and_may_write_only_its_namespaces(
    cluster: Cluster, namespace: str, helm: Helm, operator: Any, tmp_path: Path
) -> None:
    release, watched, other = unique("mp"), unique("chart-watched"), unique("chart-other")
    restricted(cluster, namespace)
    for ns in (watched, other):
        cluster.kubectl("create", "namespace", ns)
    installed = False
    try:
        out = helm(
            "install",
            release,
            str(CHART),
            "-n",
            namespace,
            "--skip-crds",
            "--set",
            "crds.enabled=false",
            "--set",
            f"watch.namespaces={{{watched}}}",
            "--wait",
            "--timeout=90s",
        ).stdout
        installed = True
        assert f"only in: {watched}" in out
        wait_operator_ready(cluster, namespace, release, replicas=1)
        dep = operator_deployment(cluster, namespace, release)
        assert scope_and_peering_args(dep) == (f"--namespace={watched}",)
        sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
        user = f"system:serviceaccount:{namespace}:{sa}"
        fullname = dep["metadata"]["name"]
        assert get(cluster, "role", fullname, watched) is not None
        assert get(cluster, "role", fullname, other) is None
        assert cluster.kubectl("get", "clusterrole", fullname, check=False).returncode != 0

        proc = run_as_chart_identity(cluster, operator, tmp_path / "op", dep)
        try:
            serve_and_upgrade(cluster, watched, "scoped")
            cluster.apply(model_deployment("ignored"), other)
        finally:
            proc.stop()
            restart_session_operator(operator)
        if cluster.local is not None:
            assert writes_by(cluster, user, other) == set()

        allowed = [
            ("create", "deployments.apps", "-n", watched),
            ("patch", "modeldeployments.modelplane.io", "--subresource=status", "-n", watched),
            ("create", "events", "-n", watched),
            ("list", "nodes"),
            ("list", "pods", "-A"),  # the documented trade-off: the GPU budget
            ("list", "resourceclaims.resource.k8s.io", "-A"),  # the same, for device claims
            ("list", "resourceslices.resource.k8s.io"),
            ("create", "resourceclaimtemplates.resource.k8s.io", "-n", watched),
        ]
        denied = [
            ("create", "deployments.apps", "-n", other),
            ("create", "resourceclaimtemplates.resource.k8s.io", "-n", other),
            ("get", "resourceclaims.resource.k8s.io", "-n", other),
            ("list", "deployments.apps", "-n", other),
            ("create", "services", "-n", other),
            ("patch", "modeldeployments.modelplane.io", "--subresource=status", "-n", other),
            ("create", "events", "-n", other),
            ("get", "pods", "-n", other),
            ("get", "secrets", "-n", watched),
            ("delete", "modeldeployments.modelplane.io", "-n", watched),
            ("update", "modeldeployments.modelplane.io", "-n", watched),
            ("create", "deployments.apps", "-n", namespace),
        ]
        assert [a for a in allowed if not can_i(cluster, user, *a)] == []
        assert [d for d in denied if can_i(cluster, user, *d)] == []

        # Tighter still: no cluster-wide reads for the GPU budget; the operator still serves.
        helm(
            "upgrade", release, str(CHART), "-n", namespace, "--reuse-values",
            "--set", "rbac.gpuBudgetReads=false", "--wait", "--timeout=90s",
        )  # fmt: skip
        assert not can_i(cluster, user, "list", "pods", "-A")
        assert not can_i(cluster, user, "list", "nodes")
        assert not can_i(cluster, user, "list", "resourceclaims.resource.k8s.io", "-A")
        assert can_i(cluster, user, "list", "pods", "-n", watched)
        proc = run_as_chart_identity(cluster, operator, tmp_path / "op-tight", dep)
        try:
            serve_and_upgrade(cluster, watched, "tight")
        finally:
            proc.stop()
            restart_session_operator(operator)

        helm("uninstall", release, "-n", namespace, "--wait", "--timeout=60s")
        installed = False
        assert get(cluster, "role", fullname, watched) is None
        assert not can_i(cluster, user, "create", "deployments.apps", "-n", watched)
    finally:
        if installed:
            helm("uninstall", release, "-n", namespace, check=False)
        for ns in (watched, other):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize("keep", [True, False])
def test_chart_crd_is_accepted_by_the_api_server(cluster: Cluster, helm: Helm, keep: bool) -> None:
    """The chart's CRD (crds.enabled) passes a server-side dry run against the shared one."""
    rendered = helm(
        "template",
        "crdcheck",
        str(CHART),
        "--show-only",
        "templates/crd.yaml",
        "--set",
        f"crds.keep={str(keep).lower()}",
    ).stdout
    dry = json.loads(
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "--field-manager=chart-test",
            "-o",
            "json",
            "-f",
            "-",
            input=rendered,
        ).stdout
    )
    live = cluster.get_json("crd", CRD)
    assert dry["spec"] == live["spec"]
    annotations = dry["metadata"].get("annotations", {})
    assert (annotations.get("helm.sh/resource-policy") == "keep") is keep
    # The dry run changed nothing.
    after = cluster.get_json("crd", CRD)
    assert after["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]


def test_plain_bundle_is_accepted_by_the_api_server(cluster: Cluster, operator: Any) -> None:
    """`kubectl apply -f crds/ -f deploy/modelplane.yaml` works (server-side dry run; the
    session operator's deploy/rbac.yaml made the namespace, which a dry run cannot)."""
    proc = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server",
        "--field-manager=bundle-test", "-f", str(REPO / "crds"),
        "-f", str(REPO / "deploy" / "modelplane.yaml"),
    )  # fmt: skip
    applied = proc.stdout
    for line in (
        "namespace/modelplane-system",
        "serviceaccount/modelplane-operator",
        "clusterrole.rbac.authorization.k8s.io/modelplane-operator",
        "clusterrolebinding.rbac.authorization.k8s.io/modelplane-operator",
        "service/modelplane-operator-metrics",
        "deployment.apps/modelplane-operator",
        f"customresourcedefinition.apiextensions.k8s.io/{CRD}",
    ):
        assert line in applied, applied
    assert get(cluster, "deployment", "modelplane-operator", "modelplane-system") is None


@pytest.mark.reliability("Faults")
def test_two_peered_replicas_one_acts_and_the_other_takes_over(
    cluster: Cluster,
    namespace: str,
    helm: Helm,
    operator: Any,
    tmp_path: Path,
    kopf_crds_cleanup: None,
    reliability: Recorder,
) -> None:
    """replicas=2: with the chart's peering flags and RBAC, one replica acts at a time.

    In cluster each replica draws a random priority (the Deployment's command); here the two
    processes get fixed, different ones so the test knows which one should act.
    """
    release, models, peering = unique("mp"), unique("chart-ha"), unique("peer")
    cluster.kubectl("create", "namespace", models)
    installed = False
    procs: list[Any] = []
    try:
        helm(
            "install", release, str(CHART), "-n", namespace,
            "--set", "crds.enabled=false", "--set", "replicas=2",
            "--set", f"peering.name={peering}", "--wait", "--timeout=90s",
        )  # fmt: skip
        installed = True
        dep = operator_deployment(cluster, namespace, release)
        # The standby's resync runs every 2 s: a paused replica must not reconcile from
        # the copies it held when it paused.
        low = chart_operator(cluster, tmp_path / "low", dep, ("--priority=1", "--resync-seconds=2"))
        high = chart_operator(cluster, tmp_path / "high", dep, ("--priority=2",))
        procs = [low, high]

        def logged(proc: Any, text: str, times: int = 1) -> bool:
            return proc.log_tail(500).count(text) >= times

        operator.stop()
        low.start()
        wait_for(lambda: logged(low, "Resuming operations"), "the lone replica to act")
        cluster.apply(model_deployment("early"), models)
        wait_condition(cluster, "early", models, "Ready", reason="AllReplicasReady")
        high.start()
        wait_for(
            lambda: logged(low, "Pausing operations in favour of"),
            "the low-priority replica to stand by",
        )
        time.sleep(1)  # let a handler in flight at the pause finish
        handled = low.log_tail(100_000).count("Handler '")
        cluster.apply(model_deployment("first"), models)
        wait_condition(cluster, "first", models, "Ready", reason="AllReplicasReady")
        peers = cluster.get_json("clusterkopfpeering", peering)["status"]
        assert sorted(p["priority"] for p in peers.values()) == [1, 2]
        assert low.log_tail(100_000).count("Handler '") == handled, "the standby acted"
        assert high.log_tail(100_000).count("Handler 'on_modeldeployment' succeeded") >= 1

        # An upgrade of an object the standby knew before it paused: the active replica
        # rolls it out, and nothing undoes it afterwards.
        def early() -> dict[str, Any]:
            md: dict[str, Any] = cluster.get_json("modeldeployment", "early", "-n", models)
            return md

        cluster.apply(model_deployment("early", version="2.0.0"), models)
        wait_for(
            lambda: early().get("status", {}).get("currentVersion") == "2.0.0",
            "the upgrade to roll out",
            timeout=60,
        )
        wait_condition(cluster, "early", models, "Ready", reason="AllReplicasReady")

        def children() -> dict[str, Any]:
            deps = cluster.get_json("deployments", "-n", models)["items"]
            return {
                "status": early()["status"],
                **{d["metadata"]["name"]: d["metadata"]["generation"] for d in deps},
            }

        settled = children()
        time.sleep(6)  # three of the standby's resync periods
        assert children() == settled, "something changed the rolled-out object afterwards"

        # The active replica dies without a goodbye: the standby takes over once the
        # peering lifetime (15 s) has passed since its last keep-alive.
        killed = time.monotonic()
        high.stop(signal.SIGKILL)
        wait_for(
            lambda: logged(low, "Resuming operations", 2), "the standby to take over", timeout=45
        )
        failover = time.monotonic() - killed
        assert failover <= 30, f"failover took {failover:.0f}s"
        cluster.apply(model_deployment("second"), models)
        wait_condition(cluster, "second", models, "Ready", reason="AllReplicasReady")
        reliability.record("failover after SIGKILL of the active replica (s)", failover)
    finally:
        for proc in procs:
            proc.stop()
        restart_session_operator(operator)
        if installed:
            helm("uninstall", release, "-n", namespace, check=False)
        cluster.kubectl("delete", "namespace", models, "--wait=false", check=False)
