"""The chart installs the operator as a real pod from its image, and it reconciles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterkit import Cluster, Helm, wait_for
from localcluster.pki import NODE_NAME
from nodekit import Images, ModelStore, cluster_ip, condition, infer_json, node_md, pods, wait_ready

CHART = Path(__file__).resolve().parents[3] / "charts" / "modelplane"


def _operator_ready(cluster: Cluster, ns: str) -> dict[str, Any] | None:
    for pod in pods(cluster, ns, "app.kubernetes.io/component=operator"):
        if condition(pod, "Ready").get("status") == "True":
            return pod
    return None


def test_the_chart_runs_the_operator_in_cluster_with_only_its_service_account(
    real_node: Cluster,
    images: Images,
    model_store: ModelStore,
    node_ns: str,
    operator: Any,
    tmp_path: Path,
) -> None:
    """In-cluster config, the release's ServiceAccount RBAC, a model served end to end."""
    helm = Helm(real_node, tmp_path / "helm")
    repository, tag = images.operator.rsplit(":", 1)
    operator.stop()  # the session's operator watches every namespace: only the pod may act
    try:
        helm(
            "install",
            "mp",
            str(CHART),
            "-n",
            node_ns,
            "--wait",
            "--timeout=180s",
            "--set",
            "crds.enabled=false",
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag}",
            "--set",
            f"watch.namespaces={{{node_ns}}}",
            "--set",
            f"runtime.image={images.runtime}",
            "--set",
            f"runtime.storageInitializerImage={images.storage}",
            "--set-string",
            "nodeSelector.modelplane\\.io/real-node=true",
            "--set",
            "tolerations[0].key=modelplane.io/real-node",
            "--set",
            "tolerations[0].operator=Exists",
        )
        pod = wait_for(
            lambda: _operator_ready(real_node, node_ns), "the operator pod Ready", timeout=120
        )
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert pod["spec"]["serviceAccountName"] == "mp-modelplane-operator"
        container = pod["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "KUBECONFIG" not in {e["name"] for e in container.get("env", [])}

        body = node_md("tiny", images, model_store.uri("v1"), "v1")
        del body["spec"]["runtime"]["image"], body["spec"]["runtime"]["storageInitializerImage"]
        real_node.apply(body, namespace=node_ns)  # the images come from the chart's values
        wait_ready(real_node, node_ns, "tiny")
        version, _ = infer_json(f"http://{cluster_ip(real_node, node_ns, 'tiny')}:80")
        assert version == "v1"

        user = f"system:serviceaccount:{node_ns}:mp-modelplane-operator"
        writers = {
            e["user"]["username"]
            for e in real_node.audit_events()
            if e.get("objectRef", {}).get("namespace") == node_ns
            and e.get("objectRef", {}).get("resource") in ("deployments", "services")
            and e.get("objectRef", {}).get("name", "").startswith("tiny")
            and e["verb"] in ("create", "patch", "update")
        }
        # Kubernetes' own controllers write Deployment status; nobody else may write.
        controllers = {w for w in writers if w.startswith("system:serviceaccount:kube-system:")}
        assert writers - controllers == {user}, writers
        log = real_node.kubectl("logs", "-n", node_ns, pod["metadata"]["name"]).stdout
        assert "tiny" in log
    finally:
        helm("uninstall", "mp", "-n", node_ns, "--wait", check=False)
        operator.start()
