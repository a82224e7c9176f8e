"""The pure builders produce the children the runtime contract and PSS expect."""

from __future__ import annotations

from typing import Any

import pytest

from factories import md_body
from modelplane_operator.config import OperatorConfig
from modelplane_operator.manifests import (
    build_claim_template,
    build_deployment,
    build_pod_template,
    build_service,
    endpoint,
    revision_identity,
)
from modelplane_operator.revisions import template_hash
from modelplane_operator.spec import parse

CONFIG = OperatorConfig(
    runtime_image="example.com/runtime:1", gpu_runtime_image="example.com/runtime:1-cuda"
)


def containers(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = dep["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["initContainers"] + spec["containers"]}


def test_deployment_runs_the_runtime_with_the_container_contract() -> None:
    dep = build_deployment(parse(md_body()), CONFIG, 1, "h", 2)
    runtime = containers(dep)["runtime"]
    assert runtime["image"] == "example.com/runtime:1-cuda"  # the example model has a GPU
    assert runtime["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert runtime["readinessProbe"]["httpGet"]["path"] == "/v2/models/resnet/ready"
    assert runtime["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    mounts = {m["mountPath"]: m for m in runtime["volumeMounts"]}
    assert mounts["/mnt/models"]["readOnly"] is True
    init = containers(dep)["storage-initializer"]
    assert init["args"] == ["s3://models/resnet/1.0.0", "/mnt/models"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"


def test_gpu_count_becomes_limit_toleration_and_product_selector() -> None:
    body = md_body(runtime={"gpu": {"count": 2, "product": "NVIDIA-H100-80GB-HBM3"}})
    dep = build_deployment(parse(body), CONFIG, 1, "h", 2)
    pod = dep["spec"]["template"]["spec"]
    assert containers(dep)["runtime"]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_cpu_model_has_no_gpu_limit_or_toleration() -> None:
    dep = build_deployment(
        parse(md_body(runtime={"resources": {"limits": {"cpu": "2"}}})), CONFIG, 1, "h", 2
    )
    pod = dep["spec"]["template"]["spec"]
    assert containers(dep)["runtime"]["resources"] == {"limits": {"cpu": "2"}}
    assert "tolerations" not in pod and "nodeSelector" not in pod


@pytest.mark.parametrize("name", ["runtime", "storage-initializer"])
def test_containers_meet_the_restricted_pod_security_standard(name: str) -> None:
    dep = build_deployment(parse(md_body()), CONFIG, 1, "h", 2)
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = containers(dep)[name]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True


def test_labels_owner_and_selector() -> None:
    md = parse(md_body())
    dep = build_deployment(md, CONFIG, 3, "abc", 2)
    svc = build_service(md)
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "modelplane.io/v1alpha1",
            "kind": "ModelDeployment",
            "name": "resnet",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "modelplane"
    assert labels["app.kubernetes.io/version"] == "1.0.0"
    assert svc["spec"]["selector"] == {"modelplane.io/deployment": "resnet"}
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert endpoint(md, CONFIG) == "http://resnet.ml.svc.cluster.local/v2/models/resnet"


def test_secret_credentials_reach_only_the_storage_initializer_environment() -> None:
    body = md_body()
    body["spec"]["model"]["secretRef"] = {"name": "s3-creds"}
    dep = build_deployment(parse(body), CONFIG, 1, "h", 2)
    assert containers(dep)["storage-initializer"]["envFrom"] == [
        {"secretRef": {"name": "s3-creds"}}
    ]
    assert "envFrom" not in containers(dep)["runtime"]


def test_user_pod_overrides_are_merged_but_cannot_replace_modelplane_labels() -> None:
    body = md_body(
        pod={
            "labels": {"team": "vision"},
            "annotations": {"sidecar.istio.io/inject": "false"},
            "nodeSelector": {"zone": "a"},
            "serviceAccountName": "models",
        }
    )
    dep = build_deployment(parse(body), CONFIG, 1, "h", 2)
    template = dep["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "vision"
    assert template["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert template["spec"]["nodeSelector"]["zone"] == "a"
    assert template["spec"]["serviceAccountName"] == "models"


def test_each_revision_is_its_own_deployment_behind_the_shared_selector() -> None:
    md = parse(md_body())
    dep = build_deployment(md, CONFIG, 3, "abc", 2)
    assert dep["metadata"]["name"] == "resnet-r3"
    assert dep["metadata"]["annotations"]["modelplane.io/template-hash"] == "abc"
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"]["matchLabels"] == {
        "modelplane.io/deployment": "resnet",
        "modelplane.io/revision": "3",
    }
    assert dep["spec"]["template"]["metadata"]["labels"]["modelplane.io/revision"] == "3"
    assert build_service(md)["spec"]["selector"] == {"modelplane.io/deployment": "resnet"}


def test_user_env_cannot_override_the_runtime_contract() -> None:
    body = md_body(
        runtime={
            "env": [
                {"name": "MODELPLANE_MODEL_DIR", "value": "/x"},
                {"name": "LOG_LEVEL", "value": "debug"},
            ]
        }
    )
    env = {
        e["name"]: e.get("value")
        for e in containers(build_deployment(parse(body), CONFIG, 1, "h", 2))["runtime"]["env"]
    }
    assert env["MODELPLANE_MODEL_DIR"] == "/mnt/models"
    assert env["LOG_LEVEL"] == "debug"


def test_precision_reaches_the_runtime_only_when_set() -> None:
    def runtime_env(body: dict[str, Any]) -> dict[str, str]:
        runtime = containers(build_deployment(parse(body), CONFIG, 1, "h", 2))["runtime"]
        return {e["name"]: e.get("value", "") for e in runtime["env"]}

    # Unset: the template is what it was before the field existed (no surprise rollout),
    # and a MODELPLANE_PRECISION the user put in runtime.env still applies.
    assert "MODELPLANE_PRECISION" not in runtime_env(md_body())
    user_env = [{"name": "MODELPLANE_PRECISION", "value": "bfloat16"}]
    gpu_body = md_body(runtime={"gpu": {"count": 1}, "env": user_env})
    assert runtime_env(gpu_body)["MODELPLANE_PRECISION"] == "bfloat16"
    # Set: the field wins over runtime.env.
    gpu_body["spec"]["runtime"]["precision"] = "float16"
    assert runtime_env(gpu_body)["MODELPLANE_PRECISION"] == "float16"
    cpu_body = md_body(runtime={"gpu": {"count": 0}, "precision": "int8"})
    env = runtime_env(cpu_body)
    assert env["MODELPLANE_PRECISION"] == "int8" and env["MODELPLANE_DEVICE"] == "cpu"


def test_gpu_models_get_the_cuda_image_and_every_model_the_storage_image() -> None:
    """The CPU runtime image would crash-loop on a GPU node with MODELPLANE_DEVICE=cuda,
    and only the storage initializer's own image can fetch s3:// and gs:// URIs."""
    config = OperatorConfig(
        runtime_image="example.com/runtime:1",
        gpu_runtime_image="example.com/runtime:1-cuda",
        storage_initializer_image="example.com/storage:1",
    )
    for gpus, image, device in (
        (0, "example.com/runtime:1", "cpu"),
        (1, "example.com/runtime:1-cuda", "cuda"),
    ):
        body = md_body(runtime={"gpu": {"count": gpus}})
        dep = build_deployment(parse(body), config, 1, "h", 2)
        runtime = containers(dep)["runtime"]
        assert runtime["image"] == image
        assert {"name": "MODELPLANE_DEVICE", "value": device} in runtime["env"]
        assert containers(dep)["storage-initializer"]["image"] == "example.com/storage:1"
    own = md_body(
        runtime={
            "gpu": {"count": 1},
            "image": "mine/rt:7",
            "storageInitializerImage": "mine/init:7",
        }
    )
    dep = build_deployment(parse(own), config, 1, "h", 2)
    assert containers(dep)["runtime"]["image"] == "mine/rt:7"
    assert containers(dep)["storage-initializer"]["image"] == "mine/init:7"


def test_a_device_named_in_runtime_env_chooses_the_device_and_the_image() -> None:
    """GPUs requested imply cuda and the CUDA image, unless runtime.env names the device:
    then the GPUs stay requested and the runtime computes where it says."""
    config = OperatorConfig(
        runtime_image="example.com/runtime:1", gpu_runtime_image="example.com/runtime:1-cuda"
    )
    on_cpu = [{"name": "MODELPLANE_DEVICE", "value": "cpu"}]
    body = md_body(runtime={"gpu": {"count": 1, "resource": "example.com/gpu"}, "env": on_cpu})
    runtime = containers(build_deployment(parse(body), config, 1, "h", 2))["runtime"]
    devices = [e["value"] for e in runtime["env"] if e["name"] == "MODELPLANE_DEVICE"]
    assert devices == ["cpu"]
    assert runtime["image"] == "example.com/runtime:1"
    assert runtime["resources"]["limits"] == {"example.com/gpu": "1"}
    # Read as the runtime reads it: " CPU " is cpu.
    shouted = md_body(
        runtime={"gpu": {"count": 1}, "env": [{"name": "MODELPLANE_DEVICE", "value": " CPU "}]}
    )
    assert parse(shouted).device == "cpu"
    assert containers(build_deployment(parse(shouted), config, 1, "h", 2))["runtime"]["image"] == (
        "example.com/runtime:1"
    )


def test_mig_and_shared_extended_resources_become_their_own_limits() -> None:
    for resource in ("nvidia.com/mig-1g.10gb", "nvidia.com/gpu.shared"):
        body = md_body(runtime={"gpu": {"count": 1, "resource": resource}})
        dep = build_deployment(parse(body), CONFIG, 1, "h", 2)
        assert containers(dep)["runtime"]["resources"]["limits"] == {resource: "1"}
        tolerations = dep["spec"]["template"]["spec"]["tolerations"]
        assert {
            "key": "nvidia.com/gpu",
            "operator": "Exists",
            "effect": "NoSchedule",
        } in tolerations


def test_device_claim_mode_gives_each_revision_its_template_and_each_pod_a_claim() -> None:
    claim = {
        "count": 2,
        "product": "NVIDIA H100 80GB HBM3",
        "minMemory": "40Gi",
        "selectors": ["device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"],
        "sharing": {"strategy": "MPS", "config": {"defaultActiveThreadPercentage": 50}},
    }
    md = parse(md_body(runtime={"gpuClaim": claim}))
    dep = build_deployment(md, CONFIG, 3, "h", 2)
    pod = dep["spec"]["template"]["spec"]
    runtime = containers(dep)["runtime"]
    assert runtime["image"] == "example.com/runtime:1-cuda"
    assert runtime["resources"] == {"claims": [{"name": "gpu"}]}  # no extended resource
    assert pod["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "resnet-r3-gpu"}]
    assert "nodeSelector" not in pod  # the scheduler picks nodes by their devices
    env = {e["name"]: e["value"] for e in runtime["env"]}
    assert env["MODELPLANE_DEVICE"] == "cuda"

    live = {**dep, "metadata": {**dep["metadata"], "uid": "dep-uid"}}
    template = build_claim_template(md, md.gpu_claim, 3, live)  # type: ignore[arg-type]
    assert template["apiVersion"] == "resource.k8s.io/v1"
    assert template["metadata"]["name"] == "resnet-r3-gpu"
    assert template["metadata"]["ownerReferences"][0]["uid"] == "dep-uid"
    devices = template["spec"]["spec"]["devices"]
    (request,) = devices["requests"]
    assert request["exactly"]["deviceClassName"] == "gpu.nvidia.com"
    assert request["exactly"]["count"] == 2
    expressions = [s["cel"]["expression"] for s in request["exactly"]["selectors"]]
    assert expressions == [
        "device.attributes['gpu.nvidia.com'].productName == 'NVIDIA H100 80GB HBM3'",
        "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0",
        "device.attributes['gpu.nvidia.com'].architecture == 'Hopper'",
    ]
    (config,) = devices["config"]
    assert config["opaque"]["driver"] == "gpu.nvidia.com"
    assert config["opaque"]["parameters"] == {
        "apiVersion": "resource.nvidia.com/v1beta1",
        "kind": "GpuConfig",
        "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 50}},
    }


def test_a_changed_claim_is_a_new_revision_and_plain_gpus_keep_their_hash() -> None:
    def revision_hash(body: dict[str, Any]) -> str:
        md = parse(body)
        return template_hash(revision_identity(md, build_pod_template(md, CONFIG)))

    one = revision_hash(md_body(runtime={"gpuClaim": {"count": 1}}))
    two = revision_hash(md_body(runtime={"gpuClaim": {"count": 2}}))
    assert one != two
    # Objects made before device claims existed keep the hash of their pod template.
    plain = parse(md_body())
    assert revision_hash(md_body()) == template_hash(build_pod_template(plain, CONFIG))
