"""A real HorizontalPodAutoscaler scales a ModelDeployment through its scale subresource,
on CPU usage that metrics-server reads from the real kubelet."""

from __future__ import annotations

import json
from typing import Any

from clusterkit import Cluster, wait_for
from loadkit import ClosedLoop
from nodekit import Images, ModelStore, cluster_ip, node_md, wait_ready


def test_an_hpa_scales_a_model_deployment_on_real_cpu_usage(
    real_node: Cluster, images: Images, model_store: ModelStore, node_ns: str, operator: Any
) -> None:
    """1 replica, a CPU target of 20% of a 50m request: load through the Service makes 2."""
    real_node.apply(node_md("tiny", images, model_store.uri("v1"), "v1"), namespace=node_ns)
    wait_ready(real_node, node_ns, "tiny")

    def pod_metrics() -> list[dict[str, Any]] | None:
        raw = real_node.kubectl(
            "get", "--raw", f"/apis/metrics.k8s.io/v1beta1/namespaces/{node_ns}/pods", check=False
        )
        items: list[dict[str, Any]] = json.loads(raw.stdout or "{}").get("items", [])
        return items or None

    wait_for(pod_metrics, "metrics-server's figures for the model pod", timeout=120, interval=2)
    real_node.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "tiny"},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "modelplane.io/v1alpha1",
                    "kind": "ModelDeployment",
                    "name": "tiny",
                },
                "minReplicas": 1,
                "maxReplicas": 2,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 20},
                        },
                    }
                ],
            },
        },
        namespace=node_ns,
    )

    def scaled() -> dict[str, Any] | None:
        md = real_node.get_json("md", "tiny", "-n", node_ns)
        ready = md.get("status", {}).get("readyReplicas")
        return md if md["spec"]["replicas"] == 2 and ready == 2 else None

    url = f"http://{cluster_ip(real_node, node_ns, 'tiny')}:80"
    with ClosedLoop(url, clients=2, max_seconds=180) as load:
        md = wait_for(scaled, "the HPA to scale the ModelDeployment to 2", timeout=180, interval=2)
    hpa = real_node.get_json("hpa", "tiny", "-n", node_ns)
    assert hpa["status"]["desiredReplicas"] == 2
    assert hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"] > 20
    assert md["status"]["replicas"] == 2
    assert load.figures()["failures"] == 0
    # The HPA wrote through the scale subresource (audit log), not the spec itself.
    scale_writes = [
        e
        for e in real_node.audit_events()
        if e.get("objectRef", {}).get("resource") == "modeldeployments"
        and e["objectRef"].get("subresource") == "scale"
        and e["objectRef"].get("namespace") == node_ns
        and e["user"]["username"] == "system:serviceaccount:kube-system:horizontal-pod-autoscaler"
    ]
    assert scale_writes, "the HPA's scale write is in the audit log"
