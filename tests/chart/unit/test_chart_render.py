"""The Helm chart, rendered: `helm lint`, `helm template` for the main value combinations.

Assertions are on the rendered objects (and on the operator's own argument parser for the
flags the chart passes), not on template text.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster import BIN_DIR
from modelplane_operator.cli import build_parser
from modelplane_operator.config import DEFAULT_RUNTIME_IMAGE, OperatorConfig

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "modelplane"
HELM = BIN_DIR / "helm"
CRD_NAME = "modeldeployments.modelplane.io"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run hack/build-tools.sh")
    proc = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def render(*sets: str, namespace: str = "mp-system", release: str = "rel") -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = of_kind(docs, kind)
    return doc


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Rules as (apiGroup, resource, verb) triples: equal sets grant the same."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def deploy_rbac_rules() -> set[tuple[str, str, str]]:
    docs = list(yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()))
    return rule_set(one(docs, "ClusterRole")["rules"])


CLUSTER_SCOPED = {
    "nodes",
    "customresourcedefinitions",
    "namespaces",
    "resourceslices",
    "deviceclasses",
}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}


# --- lint, metadata, defaults -------------------------------------------------------------


@pytest.mark.parametrize(
    "sets",
    [(), ("watch.namespaces={a,b}", "replicas=3", "metrics.serviceMonitor.enabled=true")],
    ids=["defaults", "namespaced-ha"],
)
def test_helm_lint_passes(sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for s in sets:
        args += ["--set", s]
    proc = helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def test_chart_versions_and_default_images_match_the_operator() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == chart["appVersion"] == "0.1.0"
    c = container(render())
    assert c["image"] == "ghcr.io/modelplane/operator:0.1.0"
    assert f"--runtime-image={DEFAULT_RUNTIME_IMAGE}" in c["args"]
    defaults = OperatorConfig()
    for server in ("torchserve", "triton", "vllm"):
        assert f"--{server}-image={getattr(defaults, f'{server}_image')}" in c["args"]
    assert "ghcr.io/modelplane/operator:0.1.0" in (REPO / "operator" / "Dockerfile").read_text()


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "ab" * 32
    c = container(render(f"image.digest={digest}", "image.tag=9.9.9"))
    assert c["image"] == f"ghcr.io/modelplane/operator@{digest}"


def test_default_render_is_cluster_wide_single_replica_with_the_crd() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Service",
            "ServiceAccount",
        ]
    )
    args = build_parser().parse_args(container(docs)["args"])
    assert args.all_namespaces and args.namespace == []
    assert args.peering is None
    assert (args.metrics_port, args.health_port, args.log_format) == (9090, 8081, "json")
    assert args.bind_address == "0.0.0.0"


def test_operator_pod_meets_the_restricted_pod_security_standard() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # A read-only root: the only writable path is an emptyDir on /tmp.
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"][0]["emptyDir"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_probes_and_ports_follow_the_values() -> None:
    for metrics, health in ((9090, 8081), (9100, 8181)):
        docs = render(f"metrics.port={metrics}", f"health.port={health}")
        c = container(docs)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"metrics": metrics, "health": health}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        args = build_parser().parse_args(c["args"])
        assert (args.metrics_port, args.health_port) == (metrics, health)
        svc = one(docs, "Service")
        assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
        pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_runtime_and_log_values_become_operator_flags() -> None:
    docs = render(
        "runtime.image=registry.example/rt:2",
        "runtime.storageInitializerImage=registry.example/init:2",
        "runtime.gpuImage=registry.example/rt:2-cuda",
        "runtime.torchserveImage=registry.example/ts:2",
        "runtime.tritonImage=registry.example/triton:2",
        "runtime.vllmImage=registry.example/vllm:2",
        "logFormat=plain",
        "clusterDomain=corp.local",
        "extraArgs={--resync-seconds=30}",
    )
    args = build_parser().parse_args(container(docs)["args"])
    assert args.runtime_image == "registry.example/rt:2"
    assert args.storage_initializer_image == "registry.example/init:2"
    assert args.gpu_runtime_image == "registry.example/rt:2-cuda"
    servers = (args.torchserve_image, args.triton_image, args.vllm_image)
    assert servers == tuple(f"registry.example/{s}:2" for s in ("ts", "triton", "vllm"))
    assert args.log_format == "plain"
    assert args.cluster_domain == "corp.local"
    assert args.resync_seconds == 30.0


# --- RBAC ---------------------------------------------------------------------------------


def test_cluster_wide_rbac_equals_deploy_rbac_yaml() -> None:
    docs = render()
    role = one(docs, "ClusterRole")
    assert rule_set(role["rules"]) == deploy_rbac_rules()
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "mp-system"}
    ]
    assert of_kind(docs, "Role") == of_kind(docs, "RoleBinding") == []


def test_deploy_rbac_yaml_grants_no_more_than_the_operator_needs() -> None:
    rules = deploy_rbac_rules()
    assert ("", "secrets", "get") not in rules
    assert ("modelplane.io", "modeldeployments", "update") not in rules
    assert ("modelplane.io", "modeldeployments", "delete") not in rules
    assert ("modelplane.io", "modeldeployments/status", "update") not in rules
    assert ("", "events", "patch") not in rules  # events are created, never changed
    assert not any(group == "events.k8s.io" for group, _, _ in rules)
    assert not any(verb == "*" or res == "*" for _, res, verb in rules)


def test_namespaced_rbac_is_a_role_per_watched_namespace() -> None:
    docs = render("watch.namespaces={team-a,team-b}")
    args = build_parser().parse_args(container(docs)["args"])
    assert not args.all_namespaces and args.namespace == ["team-a", "team-b"]

    roles = of_kind(docs, "Role")
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    namespaced = {t for t in deploy_rbac_rules() if t[1] not in CLUSTER_SCOPED}
    for role in roles:
        assert rule_set(role["rules"]) == namespaced
    sa_name = one(docs, "ServiceAccount")["metadata"]["name"]
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": sa_name, "namespace": "mp-system"}
        ]
        assert b["roleRef"]["kind"] == "Role"

    # Cluster-wide: reads only — the cluster-scoped resources, and pods and claims for the
    # GPU budget.
    cluster_role = one(docs, "ClusterRole")
    granted = rule_set(cluster_role["rules"])
    assert {verb for _, _, verb in granted}.isdisjoint(WRITE_VERBS)
    assert {res for _, res, _ in granted} == CLUSTER_SCOPED | {"pods", "resourceclaims"}
    assert ("resource.k8s.io", "resourceclaims", "get") not in granted
    assert ("", "pods", "list") in granted
    assert ("apps", "deployments", "list") not in granted
    assert one(docs, "ClusterRoleBinding")["roleRef"]["name"] == cluster_role["metadata"]["name"]
    # Together they grant what deploy/rbac.yaml grants, pods `get` only where watched.
    assert granted | namespaced == deploy_rbac_rules()


def test_namespaced_without_gpu_budget_reads_has_no_cluster_wide_pod_or_node_access() -> None:
    docs = render("watch.namespaces={team-a}", "rbac.gpuBudgetReads=false")
    granted = rule_set(one(docs, "ClusterRole")["rules"])
    assert {res for _, res, _ in granted} == {"customresourcedefinitions", "namespaces"}
    assert {verb for _, _, verb in granted} == {"list", "watch"}
    (role,) = of_kind(docs, "Role")
    assert ("", "pods", "list") in rule_set(role["rules"])
    # Cluster-wide mode needs pods everywhere anyway: the value changes nothing there.
    assert rule_set(one(render("rbac.gpuBudgetReads=false"), "ClusterRole")["rules"]) == (
        deploy_rbac_rules()
    )


def test_rbac_create_false_renders_no_roles() -> None:
    docs = render("rbac.create=false")
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert of_kind(docs, kind) == []


# --- CRD ----------------------------------------------------------------------------------


def crd_sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((REPO / "crds").glob("*.yaml"))}


def test_chart_crd_copy_is_identical_to_crds_dir() -> None:
    copies = {p.name: p.read_text() for p in sorted((CHART / "files" / "crds").glob("*.yaml"))}
    assert copies == crd_sources(), "run hack/sync-chart-crds.sh"


def test_crd_enabled_and_kept_by_default() -> None:
    (crd,) = of_kind(render(), "CustomResourceDefinition")
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    (source,) = (yaml.safe_load(t) for t in crd_sources().values())
    del crd["metadata"]["annotations"]
    assert crd == source


def test_crd_keep_false_and_enabled_false() -> None:
    (crd,) = of_kind(render("crds.keep=false"), "CustomResourceDefinition")
    assert crd["metadata"]["name"] == CRD_NAME
    assert "annotations" not in crd["metadata"]
    assert of_kind(render("crds.enabled=false"), "CustomResourceDefinition") == []


def test_kopf_peering_crds_ship_in_helm_crds_dir() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    names = {d["metadata"]["name"]: d["spec"]["scope"] for d in docs}
    assert names == {
        "clusterkopfpeerings.kopf.dev": "Cluster",
        "kopfpeerings.kopf.dev": "Namespaced",
    }


# --- replicas > 1: peering, PDB -----------------------------------------------------------


def test_single_replica_has_no_pdb_and_runs_standalone() -> None:
    docs = render()
    assert of_kind(docs, "PodDisruptionBudget") == []
    assert of_kind(docs, "ClusterKopfPeering") == []
    assert "command" not in container(docs)
    assert not any(t[0] == "kopf.dev" for t in rule_set(one(docs, "ClusterRole")["rules"]))


def test_replicas_above_one_add_pdb_peering_args_and_rbac_cluster_wide() -> None:
    docs = render("replicas=3")
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        dep["spec"]["template"]["metadata"]["labels"].items()
    )
    args = build_parser().parse_args(container(docs)["args"])
    assert args.peering == "modelplane" and args.all_namespaces
    assert one(docs, "ClusterKopfPeering")["metadata"]["name"] == "modelplane"
    peering_rules = {t for t in rule_set(one(docs, "ClusterRole")["rules"]) if t[0] == "kopf.dev"}
    assert peering_rules == {
        ("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")
    }


def test_replicas_above_one_namespaced_peering_is_per_namespace() -> None:
    docs = render("replicas=2", "watch.namespaces={team-a,team-b}", "peering.name=mp")
    peerings = of_kind(docs, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("team-a", "mp"),
        ("team-b", "mp"),
    ]
    for role in of_kind(docs, "Role"):
        assert {t for t in rule_set(role["rules"]) if t[0] == "kopf.dev"} == {
            ("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")
        }
    assert not any(t[0] == "kopf.dev" for t in rule_set(one(docs, "ClusterRole")["rules"]))
    assert of_kind(docs, "ClusterKopfPeering") == []


def test_replicas_draw_a_random_peering_priority(tmp_path: Path) -> None:
    """kopf pauses all peers of equal priority: the chart's command appends a random one."""
    c = container(render("replicas=2"))
    fake = tmp_path / "modelplane-operator"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    priorities = set()
    for _ in range(5):
        out = subprocess.run(
            [*c["command"], *c["args"]], capture_output=True, text=True, env=env, check=True
        ).stdout.splitlines()
        assert out[: len(c["args"])] == c["args"], "the chart's args pass through unchanged"
        args = build_parser().parse_args(out)
        assert args.peering == "modelplane" and 0 <= args.priority <= 65535
        priorities.add(args.priority)
    assert len(priorities) > 1, f"priorities are not random: {priorities}"
    assert c["command"][0] == "/bin/sh", shlex.join(c["command"])


# --- metrics ------------------------------------------------------------------------------


def test_service_monitor_toggle() -> None:
    assert of_kind(render(), "ServiceMonitor") == []
    docs = render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.team=ml")
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["metadata"]["labels"]["team"] == "ml"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["mp-system"]}


# --- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicas=two", r"/replicas.*got string, want integer"),
        ("replicas=0", r"/replicas.*minimum"),
        ("logFormat=xml", r"/logFormat.*must be one of 'json', 'plain', 'full'"),
        ("watch.namespaces={Team_A}", r"/watch/namespaces/0.*'Team_A' does not match pattern"),
        ("replica=2", r"additional properties 'replica' not allowed"),
        ("crds.enabled=maybe", r"/crds/enabled.*want boolean"),
        ("metrics.port=70000", r"/metrics/port.*maximum"),
        ("image.digest=latest", r"/image/digest.*does not match pattern"),
    ],
)
def test_schema_rejects_bad_values_with_a_readable_message(value: str, message: str) -> None:
    proc = helm("template", "rel", str(CHART), "--set", value, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert re.search(message, proc.stderr), proc.stderr


def test_equal_metrics_and_health_ports_are_refused() -> None:
    proc = helm("template", "rel", str(CHART), "--set", "metrics.port=8081", check=False)
    assert proc.returncode != 0
    assert "metrics.port and health.port must differ" in proc.stderr


# --- the plain bundle ---------------------------------------------------------------------


def test_committed_bundle_equals_a_fresh_render(tmp_path: Path) -> None:
    fresh = tmp_path / "modelplane.yaml"
    subprocess.run(
        ["bash", str(REPO / "hack" / "render-bundle.sh"), str(fresh)],
        check=True,
        capture_output=True,
        env={**os.environ, "HELM": str(HELM)},
    )
    committed = (REPO / "deploy" / "modelplane.yaml").read_text()
    assert committed == fresh.read_text(), "run hack/render-bundle.sh"


def test_bundle_uses_the_identity_of_deploy_rbac_yaml() -> None:
    bundle = [d for d in yaml.safe_load_all((REPO / "deploy" / "modelplane.yaml").read_text()) if d]
    rbac = [d for d in yaml.safe_load_all((REPO / "deploy" / "rbac.yaml").read_text()) if d]
    assert of_kind(bundle, "CustomResourceDefinition") == []
    for kind in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        assert one(bundle, kind)["metadata"]["name"] == one(rbac, kind)["metadata"]["name"]
    assert (
        one(bundle, "Namespace")["metadata"]["labels"]
        == one(rbac, "Namespace")["metadata"]["labels"]
    )
    assert rule_set(one(bundle, "ClusterRole")["rules"]) == deploy_rbac_rules()
    assert (
        one(bundle, "ClusterRoleBinding")["subjects"] == one(rbac, "ClusterRoleBinding")["subjects"]
    )
    dep = one(bundle, "Deployment")
    assert dep["metadata"]["namespace"] == "modelplane-system"
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "modelplane-operator"


def test_service_monitor_needs_the_metrics_service() -> None:
    proc = helm(
        "template", "rel", str(CHART),
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in proc.stderr


# --- the operator image -------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """operator/Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    text = (REPO / "operator" / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def test_operator_image_is_slim_non_root_and_torch_free() -> None:
    text = (REPO / "operator" / "Dockerfile").read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    *build, final = dockerfile_stages()
    runs = " ".join(args for stage in build for i, args in stage if i == "RUN")
    installs = re.findall(r"pip install (\S+)", runs)
    assert installs == ['".[operator]"'], installs  # no runtime extra, no torch
    assert "torch" not in runs.replace("pip show torch", "")
    final_instructions = dict(final)
    assert final_instructions["USER"] == "1000:1000"
    assert final_instructions["ENTRYPOINT"] == '["modelplane-operator"]'
    # The final stage copies the dependencies' venv and installs only modelplane itself.
    final_runs = [args for i, args in final if i == "RUN"]
    assert len(final_runs) == 1 and "pip install --no-deps --no-compile /src" in final_runs[0]
    # What the build copies is what the context (Dockerfile.dockerignore) lets through;
    # the README is not copied (a placeholder), so documentation edits keep the image.
    ignore = (REPO / "operator" / "Dockerfile.dockerignore").read_text()
    for kept in ("pyproject.toml", "operator/modelplane_operator/**"):
        assert f"!{kept}" in ignore
    assert "!README.md" not in ignore


def test_pod_labels_add_to_the_standard_ones_once_and_never_touch_the_selector() -> None:
    part_of = "podLabels.app\\.kubernetes\\.io/part-of=x"
    args = ["template", "rel", str(CHART), "--show-only", "templates/deployment.yaml"]
    text = helm(*args, "--set", "podLabels.team=ml", "--set", part_of).stdout
    # Once in the Deployment's labels, once in the pod's: a repeated key is invalid YAML
    # to strict parsers and the last spelling would win.
    assert text.count("app.kubernetes.io/part-of:") == 2, text
    labels = yaml.safe_load(text)["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "ml" and labels["app.kubernetes.io/part-of"] == "x"
    selector = "podLabels.app\\.kubernetes\\.io/name=other"
    refused = helm(*args, "--set", selector, check=False)
    assert refused.returncode != 0
    assert "podLabels must not set app.kubernetes.io/name" in refused.stderr


def test_registry_values_reach_the_operator_and_secrets_stay_closed_unless_asked() -> None:
    plain = render()
    assert ("", "secrets", "get") not in rule_set(one(plain, "ClusterRole")["rules"])
    assert not any(e["name"].startswith("MODELPLANE_PIN") for e in container(plain)["env"])
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    docs = render(
        "rbac.registrySecrets=true",
        "registries.pinImages={registry.example.com,ghcr.io}",
        f"registries.caBundle={pem}",
    )
    granted = rule_set(one(docs, "ClusterRole")["rules"])
    assert ("", "secrets", "get") in granted
    assert ("", "secrets", "list") not in granted and ("", "secrets", "watch") not in granted
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["MODELPLANE_PIN_IMAGE_REGISTRIES"] == "registry.example.com,ghcr.io"
    ca = one(docs, "ConfigMap")
    assert ca["data"]["ca.crt"].strip() == pem
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "registry-ca")
    assert env["MODELPLANE_REGISTRY_CA_FILE"].startswith(mount["mountPath"])
    assert build_parser().parse_args(["--pin-image-registries", "a,b"]).pin_image_registries
