"""Bad manifests are refused by `kubectl apply` with a message a user understands."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterkit import Cluster

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

VALID: dict[str, Any] = {
    "apiVersion": "modelplane.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "valid"},
    "spec": {
        "model": {"version": "1.0.0", "uri": "s3://models/valid/1.0.0"},
        "runtime": {"gpu": {"count": 1}},
    },
}


def variant(path: str, value: Any, name: str = "invalid") -> dict[str, Any]:
    """VALID with one field set (or removed when value is ...)."""
    body = copy.deepcopy(VALID)
    body["metadata"]["name"] = name
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return body


CASES = [
    (
        "half precision without a GPU",
        variant("spec.runtime", {"gpu": {"count": 0}, "precision": "bfloat16"}),
        "runtime.precision float16 and bfloat16 run on a GPU",
    ),
    (
        "int8 on a GPU",
        variant("spec.runtime.precision", "int8"),
        "runtime.precision int8 runs on CPUs",
    ),
    ("unknown precision", variant("spec.runtime.precision", "fp8"), 'Unsupported value: "fp8"'),
    ("uri scheme", variant("spec.model.uri", "ftp://models/x"), "model.uri must start with"),
    ("uri without location", variant("spec.model.uri", "s3://"), "model.uri must start with"),
    ("pvc uri", variant("spec.model.uri", "pvc://Bad_Claim/x"), "pvc://<claim-name>/<path"),
    (
        "oci uri without registry",
        variant("spec.model.uri", "oci://models/tiny:1"),
        "oci://<registry host>/<repository>",
    ),
    (
        "oci uri with a bad tag",
        variant("spec.model.uri", "oci://r.io/m:bad tag"),
        "oci://<registry host>/<repository>",
    ),
    (
        "refresh of a non-oci uri",
        variant("spec.model.refreshInterval", "5m"),
        "model.refreshInterval needs an oci:// uri",
    ),
    (
        "refresh too often",
        variant("spec.model", {"version": "1", "uri": "oci://r.io/m:1", "refreshInterval": "2s"}),
        "at least 10s",
    ),
    (
        "refresh not a duration",
        variant("spec.model", {"version": "1", "uri": "oci://r.io/m:1", "refreshInterval": "soon"}),
        "a duration like 30s",
    ),
    (
        "image volume of a non-oci uri",
        variant("spec.model.delivery", "ImageVolume"),
        "model.delivery ImageVolume needs an oci:// uri",
    ),
    (
        "unknown delivery",
        variant("spec.model", {"version": "1", "uri": "oci://r.io/m:1", "delivery": "Mount"}),
        'supported values: "Fetch", "ImageVolume"',
    ),
    (
        "custom server without an image",
        variant("spec.runtime.server", {"kind": "custom", "readinessPath": "/ready"}),
        "runtime.image is required for a custom server",
    ),
    (
        "custom server without a readiness path",
        variant("spec.runtime", {"image": "r.io/mine:1", "server": {"kind": "custom"}}),
        "runtime.server.readinessPath is required for a custom server",
    ),
    (
        "server probe path without a slash",
        variant("spec.runtime.server", {"kind": "vllm", "readinessPath": "health"}),
        "spec.runtime.server.readinessPath",
    ),
    (
        "unknown server",
        variant("spec.runtime.server", {"kind": "nginx"}),
        'supported values: "modelplane", "torchserve", "triton", "vllm", "custom"',
    ),
    (
        "precision of another server",
        variant("spec.runtime", {"server": {"kind": "torchserve"}, "precision": "int8"}),
        "runtime.precision and runtime.batching are settings of modelplane's own runtime",
    ),
    (
        "autoscaling a server without an in-flight gauge",
        variant(
            "spec",
            {
                "model": {"version": "1", "uri": "s3://m/1"},
                "runtime": {"server": {"kind": "torchserve"}},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "targetInFlight": 4},
            },
        ),
        "spec.autoscaling scales on in-flight requests, which this server does not export",
    ),
    (
        "a p99 rule on a server without a latency histogram",
        variant(
            "spec",
            {
                "model": {"version": "1", "uri": "s3://m/1"},
                "runtime": {"server": {"kind": "triton"}},
                "rollout": {
                    "strategy": "Canary",
                    "canary": {"steps": [{"weight": 50}], "analysis": {"maxP99Latency": "1s"}},
                },
            },
        ),
        "maxP99LatencyRatio need a latency histogram",
    ),
    (
        "analysis of a custom server",
        variant(
            "spec",
            {
                "model": {"version": "1", "uri": "s3://m/1"},
                "runtime": {
                    "image": "r.io/mine:1",
                    "server": {"kind": "custom", "readinessPath": "/ready"},
                },
                "rollout": {
                    "strategy": "Canary",
                    "canary": {"steps": [{"weight": 50}], "analysis": {"minSuccessRate": 99}},
                },
            },
        ),
        "a custom server's metrics",
    ),
    ("version with space", variant("spec.model.version", "1.0 beta"), "model.version must be"),
    ("version too long", variant("spec.model.version", "1" * 64), "spec.model.version"),
    ("missing version", variant("spec.model.version", ...), "spec.model.version: Required value"),
    ("missing uri", variant("spec.model.uri", ...), "spec.model.uri: Required value"),
    ("format", variant("spec.model.format", "onnx"), 'supported values: "torch-export"'),
    ("sha256", variant("spec.model.sha256", "abc"), "64 lowercase hexadecimal"),
    ("negative replicas", variant("spec.replicas", -1), "spec.replicas"),
    ("negative gpus", variant("spec.runtime.gpu", {"count": -1}), "spec.runtime.gpu.count"),
    ("too many gpus", variant("spec.runtime.gpu", {"count": 64}), "spec.runtime.gpu.count"),
    (
        "gpu in resources",
        variant("spec.runtime.resources", {"limits": {"nvidia.com/gpu": 1}}),
        "set GPUs with runtime.gpu.count",
    ),
    (
        "product without gpus",
        variant("spec.runtime.gpu", {"count": 0, "product": "NVIDIA-A100"}),
        "runtime.gpu.product needs runtime.gpu.count",
    ),
    (
        "requests above limits",
        variant(
            "spec.runtime.resources", {"requests": {"memory": "8Gi"}, "limits": {"memory": "4Gi"}}
        ),
        "requests must not exceed",
    ),
    (
        "bad quantity",
        variant("spec.runtime.resources", {"limits": {"cpu": "lots"}}),
        "spec.runtime.resources.limits.cpu",
    ),
    ("strategy", variant("spec.rollout", {"strategy": "BlueGreen"}), "supported values"),
    (
        "surge and unavailable both zero",
        variant("spec.rollout", {"maxSurge": 0, "maxUnavailable": 0}),
        "cannot both be 0",
    ),
    ("bad surge", variant("spec.rollout", {"maxSurge": "lots"}), "rollout.maxSurge must be"),
    (
        "unavailable over 100%",
        variant("spec.rollout", {"maxUnavailable": "200%"}),
        "from 0% to 100%",
    ),
    (
        "zero spelled 00%",
        variant("spec.rollout", {"maxSurge": "00%", "maxUnavailable": 0}),
        "rollout.maxSurge must be",
    ),
    (
        "canary without steps",
        variant("spec.rollout", {"strategy": "Canary"}),
        "Canary strategy needs",
    ),
    (
        "decreasing canary weights",
        variant(
            "spec.rollout",
            {"strategy": "Canary", "canary": {"steps": [{"weight": 50}, {"weight": 10}]}},
        ),
        "weights must not decrease",
    ),
    (
        "reserved pod label",
        variant("spec.pod", {"labels": {"modelplane.io/revision": "x"}}),
        "modelplane sets those itself",
    ),
    ("uppercase name", variant("spec.replicas", 1, name="ResNet"), "metadata.name"),
    ("name too long", variant("spec.replicas", 1, name="m" * 53), "at most 52 characters"),
    ("port", variant("spec.runtime.port", 80), "spec.runtime.port"),
    (
        "env value and valueFrom",
        variant(
            "spec.runtime.env",
            [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
        ),
        "value or valueFrom, not both",
    ),
    # GPU modes that contradict each other, or name what the driver cannot serve.
    (
        "extended gpus and a device claim",
        variant("spec.runtime", {"gpu": {"count": 1}, "gpuClaim": {"count": 1}}),
        "both ask for GPUs: keep one",
    ),
    (
        "mig profile on the gpu class",
        variant(
            "spec.runtime",
            {"gpuClaim": {"migProfile": "1g.10gb", "deviceClassName": "gpu.nvidia.com"}},
        ),
        "uses the mig.nvidia.com DeviceClass",
    ),
    (
        "time-sliced mig",
        variant(
            "spec.runtime",
            {"gpuClaim": {"migProfile": "1g.10gb", "sharing": {"strategy": "TimeSlicing"}}},
        ),
        "MIG devices are shared through MPS only",
    ),
    (
        "unknown sharing strategy",
        variant("spec.runtime", {"gpuClaim": {"sharing": {"strategy": "Always"}}}),
        'supported values: "TimeSlicing", "MPS"',
    ),
    (
        "min memory not a quantity",
        variant("spec.runtime", {"gpuClaim": {"minMemory": "a lot"}}),
        "spec.runtime.gpuClaim.minMemory",
    ),
    (
        "quote in a claim product",
        variant("spec.runtime", {"gpuClaim": {"product": "A100' || true"}}),
        "spec.runtime.gpuClaim.product",
    ),
    (
        "kubernetes.io resource",
        variant("spec.runtime.gpu", {"count": 1, "resource": "kubernetes.io/gpu"}),
        "runtime.gpu.resource must be an extended resource",
    ),
    (
        "mig resource in resources",
        variant("spec.runtime.resources", {"limits": {"nvidia.com/mig-1g.10gb": 1}}),
        "or runtime.gpuClaim, not runtime.resources.limits",
    ),
    (
        "int8 on a claimed gpu",
        variant("spec.runtime", {"gpuClaim": {}, "precision": "int8"}),
        "remove runtime.gpuClaim",
    ),
    (
        "analysis without a rule",
        variant(
            "spec.rollout",
            {
                "strategy": "Canary",
                "canary": {"steps": [{"weight": 50}], "analysis": {"interval": "30s"}},
            },
        ),
        "rollout.canary.analysis needs a rule to judge by",
    ),
    (
        "analysis latency without a unit",
        variant(
            "spec.rollout",
            {
                "strategy": "Canary",
                "canary": {"steps": [{"weight": 50}], "analysis": {"maxP99Latency": "250"}},
            },
        ),
        "spec.rollout.canary.analysis.maxP99Latency",
    ),
    (
        "analysis success rate above 100",
        variant(
            "spec.rollout",
            {
                "strategy": "Canary",
                "canary": {"steps": [{"weight": 50}], "analysis": {"minSuccessRate": 101}},
            },
        ),
        "spec.rollout.canary.analysis.minSuccessRate",
    ),
    (
        "autoscaling min above max",
        variant("spec.autoscaling", {"minReplicas": 4, "maxReplicas": 2, "targetInFlight": 4}),
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    ),
    (
        "autoscaling without a target",
        variant("spec.autoscaling", {"maxReplicas": 2}),
        "spec.autoscaling.targetInFlight: Required value",
    ),
    # Found by the manifest fuzz: the API server answered 500 to every apply of such a pod.
    (
        "duplicate image pull secret",
        variant("spec.pod", {"imagePullSecrets": [{"name": "reg"}, {"name": "reg"}]}),
        "spec.pod.imagePullSecrets[1]: Duplicate value",
    ),
]


@pytest.mark.parametrize(("manifest", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_manifest_is_refused_with_a_readable_message(
    cluster: Cluster, namespace: str, crds: None, manifest: dict[str, Any], message: str
) -> None:
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False
    )
    assert proc.returncode != 0, f"accepted: {manifest}"
    assert message in proc.stderr, proc.stderr
    absent = cluster.kubectl(
        "get", "md", manifest["metadata"]["name"], "-n", namespace, check=False
    )
    assert absent.returncode != 0


def test_valid_manifest_is_accepted_and_defaulted(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    proc = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(VALID), check=False
    )
    assert proc.returncode == 0, proc.stderr
    md = cluster.get_json("md", "valid", "-n", namespace)
    assert md["spec"]["replicas"] == 1
    assert md["spec"]["model"]["format"] == "torch-export"
    assert md["spec"]["rollout"]["strategy"] == "RollingUpdate"
    assert md["spec"]["runtime"]["port"] == 8080


def test_kubectl_explain_reads_the_field_descriptions(cluster: Cluster, crds: None) -> None:
    out = cluster.kubectl("explain", "modeldeployment.spec.model.uri").stdout
    assert "pvc://claim/path" in out
    out = cluster.kubectl("explain", "md.spec.runtime.gpu").stdout
    assert "nvidia.com/gpu" in out
    # Every field of the GPU modes says what it does.
    fields = [
        "runtime.gpu.resource",
        *(f"runtime.gpuClaim.{f}" for f in ("deviceClassName", "count", "product", "minMemory")),
        *(f"runtime.gpuClaim.{f}" for f in ("migProfile", "selectors", "sharing")),
        "runtime.gpuClaim.sharing.strategy",
        "runtime.gpuClaim.sharing.config",
    ]
    for field in fields:
        out = cluster.kubectl("explain", f"md.spec.{field}").stdout
        description = out.split("DESCRIPTION:", 1)[1].strip()
        assert len(description) > 20, (field, out)
    out = cluster.kubectl("explain", "md.status.gpuAllocation").stdout
    assert "allocated" in out


def test_scaling_an_autoscaled_model_deployment_is_refused_with_the_reason(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """What an HPA (or kubectl scale) would do through the scale subresource is refused
    while spec.autoscaling is set; without it, scaling works as before."""
    body = variant("spec.autoscaling", {"maxReplicas": 3, "targetInFlight": 4}, name="auto")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))
    proc = cluster.kubectl("scale", "md/auto", "--replicas", "3", "-n", namespace, check=False)
    assert proc.returncode != 0, proc.stdout
    assert "spec.replicas cannot change while spec.autoscaling is set" in proc.stderr
    assert cluster.get_json("md", "auto", "-n", namespace)["spec"]["replicas"] == 1
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(VALID))
    cluster.kubectl("scale", "md/valid", "--replicas", "2", "-n", namespace)
    assert cluster.get_json("md", "valid", "-n", namespace)["spec"]["replicas"] == 2


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_manifest_is_accepted(
    cluster: Cluster, namespace: str, crds: None, path: Path
) -> None:
    """What the README points users at must pass admission as it is."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path} holds no manifest"
    proc = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False
    )
    assert proc.returncode == 0, proc.stderr
