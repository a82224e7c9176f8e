"""Pure builders of the child objects of a ModelDeployment: plain dicts, no I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from modelplane_oci.reference import OCI_SCHEME, parse_oci_uri

from . import servers
from .config import OperatorConfig
from .podmetrics import SERVER_ANNOTATION
from .revisions import (
    PINS_ANNOTATION,
    REVISION_LABEL,
    SPEC_HASH,
    TEMPLATE_HASH,
    deployment_name,
)
from .spec import (
    API_VERSION,
    GPU_RESOURCE,
    KIND,
    MIG_CLASS,
    NVIDIA_DRIVER,
    GpuClaim,
    ModelDelivery,
    ModelDeploymentSpec,
    ServerKind,
    SharingStrategy,
)

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# The pod's name for its GPU claim, and the one request in it.
GPU_CLAIM = "gpu"
GPU_CONFIG_API = "resource.nvidia.com/v1beta1"
MODEL_DIR = servers.MODEL_DIR  # where every server finds the model
MODEL_VOLUME = "model"
# The storage initializer's registry credentials (oci:// models), one Docker config per
# pull secret, read-only and in that container only.
REGISTRY_AUTH_DIR = "/var/run/modelplane/registry-auth"
DEPLOYMENT_LABEL = "modelplane.io/deployment"
MANAGED_BY = "modelplane"
RUNTIME_CONTAINER = "runtime"
STORAGE_CONTAINER = "storage-initializer"
SERVICE_PORT = 80
RUNTIME_UID = 1000


def selector_labels(md: ModelDeploymentSpec) -> dict[str, str]:
    """Labels that select every serving pod of a ModelDeployment (stable across versions)."""
    return {DEPLOYMENT_LABEL: md.name}


def selector_string(md: ModelDeploymentSpec) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(md).items())


def common_labels(md: ModelDeploymentSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelplane-runtime",
        "app.kubernetes.io/instance": md.name,
        "app.kubernetes.io/version": md.version,
        "app.kubernetes.io/component": "predictor",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(md),
    }


def owner_reference(md: ModelDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.name,
        "uid": md.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def endpoint(md: ModelDeploymentSpec, config: OperatorConfig) -> str:
    host = f"{md.name}.{md.namespace}.svc.{config.cluster_domain}"
    return f"http://{host}/v2/models/{md.model_name}"


def _restricted_container_security() -> dict[str, Any]:
    # Satisfies the `restricted` Pod Security Standard.
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _runtime_env(md: ModelDeploymentSpec) -> list[dict[str, Any]]:
    ours = [
        {"name": "MODELPLANE_MODEL_NAME", "value": md.model_name},
        {"name": "MODELPLANE_MODEL_VERSION", "value": md.version},
        {"name": "MODELPLANE_MODEL_DIR", "value": MODEL_DIR},
        {"name": "MODELPLANE_PORT", "value": str(md.port)},
        {"name": "MODELPLANE_DEVICE", "value": md.device},
        {"name": "MODELPLANE_BATCHING", "value": "true" if md.batching.enabled else "false"},
        {"name": "MODELPLANE_MAX_BATCH_SIZE", "value": str(md.batching.max_batch_size)},
        {"name": "MODELPLANE_MAX_QUEUE_DELAY_MS", "value": str(md.batching.max_queue_delay_ms)},
    ]
    if md.precision is not None:
        # Only when set: a ModelDeployment without it keeps its template (and its pods)
        # as it was, and a MODELPLANE_PRECISION in runtime.env still applies.
        ours.append({"name": "MODELPLANE_PRECISION", "value": md.precision})
    taken = {e["name"] for e in ours}
    return ours + [dict(e) for e in md.env if e.get("name") not in taken]


def _resources(md: ModelDeploymentSpec) -> dict[str, Any]:
    requests = {k: str(v) for k, v in (md.resources.get("requests") or {}).items()}
    limits = {k: str(v) for k, v in (md.resources.get("limits") or {}).items()}
    if md.gpu.count:
        limits[md.gpu.resource] = str(md.gpu.count)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    if md.gpu_claim is not None:
        out["claims"] = [{"name": GPU_CLAIM}]
    return out


def _storage_initializer(md: ModelDeploymentSpec, config: OperatorConfig) -> dict[str, Any]:
    env = [{"name": "MODELPLANE_STORAGE_URI", "value": md.uri}]
    if md.sha256:
        env.append({"name": "MODELPLANE_STORAGE_SHA256", "value": md.sha256})
    container: dict[str, Any] = {
        "name": STORAGE_CONTAINER,
        "image": md.storage_image or config.storage_initializer_image,
        "command": ["modelplane-storage"],
        "args": [md.uri, MODEL_DIR],
        "env": env,
        "volumeMounts": [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR}],
        "securityContext": _restricted_container_security(),
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    }
    if md.uri.startswith(OCI_SCHEME):
        # Registry credentials as files (a Docker config per pull secret), never env.
        if registry_secrets(md):
            env.append({"name": "MODELPLANE_REGISTRY_AUTH_DIR", "value": REGISTRY_AUTH_DIR})
            container["volumeMounts"].append(
                {"name": "registry-auth", "mountPath": REGISTRY_AUTH_DIR, "readOnly": True}
            )
        if config.registry_ca:
            env.append({"name": "MODELPLANE_REGISTRY_CA", "value": config.registry_ca})
        if config.insecure_registries:
            env.append(
                {
                    "name": "MODELPLANE_INSECURE_REGISTRIES",
                    "value": ",".join(config.insecure_registries),
                }
            )
    elif md.secret_name:
        # Credentials reach the process environment only; never args, status or logs.
        container["envFrom"] = [{"secretRef": {"name": md.secret_name}}]
    if md.uri.startswith("pvc://"):
        container["volumeMounts"].append(
            {"name": "model-source", "mountPath": "/mnt/pvc", "readOnly": True}
        )
    return container


def registry_secrets(md: ModelDeploymentSpec) -> list[str]:
    """Secrets whose registry credentials apply to an oci:// model: secretRef, then the
    pod's imagePullSecrets (the ones the kubelet uses for the same registry)."""
    names = [md.secret_name] if md.secret_name else []
    names += [str(s.get("name")) for s in md.pod.image_pull_secrets if s.get("name")]
    return list(dict.fromkeys(names))


def runtime_image(md: ModelDeploymentSpec, config: OperatorConfig) -> str:
    return md.image or servers.default_image(md, config)


def _ports(md: ModelDeploymentSpec, server: servers.Profile) -> list[dict[str, Any]]:
    ports = [{"name": "http", "containerPort": md.port, "protocol": "TCP"}]
    if server.metrics_port != md.port:
        ports.append({"name": "metrics", "containerPort": server.metrics_port, "protocol": "TCP"})
    return ports


def _runtime_container(md: ModelDeploymentSpec, config: OperatorConfig) -> dict[str, Any]:
    server = servers.profile(md)
    container: dict[str, Any] = {
        "name": RUNTIME_CONTAINER,
        "image": runtime_image(md, config),
        **({"command": list(server.command)} if server.command is not None else {}),
        **({"args": list(server.args)} if server.args else {}),
        "ports": _ports(md, server),
        "env": _runtime_env(md) + [{"name": k, "value": v} for k, v in server.env],
        "volumeMounts": [
            {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "readinessProbe": {
            "httpGet": {"path": server.readiness_path, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": server.liveness_path, "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        # Loading and warming a large model can take minutes; liveness waits for it.
        "startupProbe": {
            "httpGet": {"path": server.liveness_path, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 120,
        },
        "securityContext": _restricted_container_security(),
    }
    resources = _resources(md)
    if resources:
        container["resources"] = resources
    return container


def build_pod_template(md: ModelDeploymentSpec, config: OperatorConfig) -> dict[str, Any]:
    """The serving pod template: storage initializer + runtime, restricted security."""
    labels = {**md.pod.labels, **common_labels(md)}
    server = servers.profile(md)
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(server.metrics_port),
        "prometheus.io/path": server.metrics_path,
        **md.pod.annotations,
    }
    if md.server.kind is not ServerKind.MODELPLANE:
        # Only for other servers: modelplane's own templates (and their hashes) stay as
        # they were.
        annotations[SERVER_ANNOTATION] = md.server.kind.value
    volumes: list[dict[str, Any]] = [_model_volume(md), {"name": "tmp", "emptyDir": {}}]
    if md.uri.startswith(OCI_SCHEME) and registry_secrets(md) and not mounts_image(md):
        volumes.append(
            {
                "name": "registry-auth",
                "projected": {
                    "sources": [
                        {
                            "secret": {
                                "name": name,
                                "items": [{"key": ".dockerconfigjson", "path": f"{name}.json"}],
                                "optional": True,
                            }
                        }
                        for name in registry_secrets(md)
                    ]
                },
            }
        )
    if md.uri.startswith("pvc://"):
        claim = md.uri.removeprefix("pvc://").split("/", 1)[0]
        volumes.append(
            {
                "name": "model-source",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
    spec: dict[str, Any] = {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        **({} if mounts_image(md) else {"initContainers": [_storage_initializer(md, config)]}),
        "containers": [_runtime_container(md, config)],
        "volumes": volumes,
    }
    node_selector = dict(md.pod.node_selector)
    tolerations = [dict(t) for t in md.pod.tolerations]
    if md.gpu.count and md.gpu.product:
        node_selector[GPU_PRODUCT_LABEL] = md.gpu.product
    if md.uses_gpu:
        # GPU nodes carry the nvidia.com/gpu taint in every mode (DRA ones too).
        gpu_toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        if gpu_toleration not in tolerations:
            tolerations.append(gpu_toleration)
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    if md.pod.affinity:
        spec["affinity"] = dict(md.pod.affinity)
    if md.pod.service_account_name:
        spec["serviceAccountName"] = md.pod.service_account_name
    if md.pod.priority_class_name:
        spec["priorityClassName"] = md.pod.priority_class_name
    pull_secrets = _image_pull_secrets(md)
    if pull_secrets:
        spec["imagePullSecrets"] = pull_secrets
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def mounts_image(md: ModelDeploymentSpec) -> bool:
    """Whether the kubelet mounts the model image itself (no storage initializer)."""
    return md.delivery is ModelDelivery.IMAGE_VOLUME


def _model_volume(md: ModelDeploymentSpec) -> dict[str, Any]:
    """/mnt/models: the pinned model image as an image volume, or an emptyDir that the
    storage initializer fills."""
    if not mounts_image(md):
        return {"name": MODEL_VOLUME, "emptyDir": {}}
    ref = parse_oci_uri(md.uri)
    if ref.digest:
        ref = replace(ref, tag="")  # by digest alone: the bytes the revision pinned
    return {"name": MODEL_VOLUME, "image": {"reference": str(ref), "pullPolicy": "IfNotPresent"}}


def _image_pull_secrets(md: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """The pod's pull secrets; a mounted model image is pulled by the kubelet, so its
    secretRef joins them."""
    secrets = [dict(s) for s in md.pod.image_pull_secrets]
    if mounts_image(md) and md.secret_name and {"name": md.secret_name} not in secrets:
        secrets.append({"name": md.secret_name})
    return secrets


def build_deployment(
    md: ModelDeploymentSpec,
    config: OperatorConfig,
    revision: int,
    template_hash: str,
    replicas: int,
    pins: Mapping[str, str] | None = None,
    spec_hash: str = "",
) -> dict[str, Any]:
    """The Deployment of one revision: ``<name>-r<revision>``, its pods behind the Service.

    The planner decides ``replicas``; the template never changes for a revision.
    ``pins`` ({"model": oci-uri@digest, "image": image@digest}) replace the spec's tags
    in the template and are recorded on the Deployment; the hash stays the spec's.
    """
    pins = {k: v for k, v in (pins or {}).items() if v}
    template = build_pod_template(pinned(md, pins), config)
    revision_label = {REVISION_LABEL: str(revision)}
    template["metadata"]["labels"].update(revision_label)
    if md.gpu_claim is not None:
        # Each pod gets its own claim from its revision's template: two revisions never
        # share a claim, and a claim lives and is freed with its pod.
        template["spec"]["resourceClaims"] = [
            {"name": GPU_CLAIM, "resourceClaimTemplateName": claim_template_name(md.name, revision)}
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(md.name, revision),
            "namespace": md.namespace,
            "labels": {**common_labels(md), **revision_label},
            "annotations": {
                TEMPLATE_HASH: template_hash,
                **({PINS_ANNOTATION: json.dumps(pins, sort_keys=True)} if pins else {}),
                **({SPEC_HASH: spec_hash} if spec_hash and spec_hash != template_hash else {}),
            },
            "ownerReferences": [owner_reference(md)],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {**selector_labels(md), **revision_label}},
            "progressDeadlineSeconds": md.rollout.progress_deadline_seconds,
            "revisionHistoryLimit": 1,
            "template": template,
        },
    }


def pinned(md: ModelDeploymentSpec, pins: Mapping[str, str]) -> ModelDeploymentSpec:
    """The spec with its tags replaced by the digests pinned for a revision."""
    return replace(md, uri=pins.get("model") or md.uri, image=pins.get("image") or md.image)


def build_service(md: ModelDeploymentSpec) -> dict[str, Any]:
    """The stable ClusterIP Service in front of every serving pod."""
    labels = common_labels(md)
    del labels["app.kubernetes.io/version"]  # the Service outlives versions
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": md.name,
            "namespace": md.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(md)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(md),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def claim_template_name(md_name: str, revision: int) -> str:
    return f"{deployment_name(md_name, revision)}-gpu"


def revision_identity(md: ModelDeploymentSpec, template: Mapping[str, Any]) -> Mapping[str, Any]:
    """What a revision's hash covers: the pod template and, in device-claim mode, the
    claim it asks for (the template names the claim per revision, so it cannot)."""
    if md.gpu_claim is None:
        return template  # the hash of every ModelDeployment made before claims existed
    return {"template": template, "gpuClaim": claim_spec(md.gpu_claim)}


def device_selectors(claim: GpuClaim) -> list[str]:
    """CEL selectors of the claim's request: the typed fields, then the user's own."""
    attributes = f"device.attributes['{NVIDIA_DRIVER}']"
    out = []
    if claim.product:
        out.append(f"{attributes}.productName == '{claim.product}'")
    if claim.mig_profile:
        out.append(f"{attributes}.profile == '{claim.mig_profile}'")
    if claim.min_memory:
        out.append(
            f"device.capacity['{NVIDIA_DRIVER}'].memory.compareTo(quantity('{claim.min_memory}'))"
            " >= 0"
        )
    return out + list(claim.selectors)


def claim_spec(claim: GpuClaim) -> dict[str, Any]:
    """The ResourceClaim spec every pod of a revision gets (resource.k8s.io/v1)."""
    exactly: dict[str, Any] = {
        "deviceClassName": claim.device_class,
        "allocationMode": "ExactCount",
        "count": claim.count,
    }
    selectors = device_selectors(claim)
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    devices: dict[str, Any] = {"requests": [{"name": GPU_CLAIM, "exactly": exactly}]}
    if claim.sharing is not None:
        mps = claim.sharing.strategy is SharingStrategy.MPS
        key = "mpsConfig" if mps else "timeSlicingConfig"
        sharing: dict[str, Any] = {"strategy": claim.sharing.strategy.value}
        if claim.sharing.config:
            sharing[key] = dict(claim.sharing.config)
        kind = "MigDeviceConfig" if claim.device_class == MIG_CLASS else "GpuConfig"
        parameters = {"apiVersion": GPU_CONFIG_API, "kind": kind, "sharing": sharing}
        devices["config"] = [
            {"requests": [GPU_CLAIM], "opaque": {"driver": NVIDIA_DRIVER, "parameters": parameters}}
        ]
    return {"devices": devices}


def build_claim_template(
    md: ModelDeploymentSpec, claim: GpuClaim, revision: int, deployment: Mapping[str, Any]
) -> dict[str, Any]:
    """The ResourceClaimTemplate of one revision, owned by that revision's Deployment
    (garbage-collected with it)."""
    meta = deployment["metadata"]
    # No blockOwnerDeletion: it would need update on deployments/finalizers, and a
    # Deployment's deletion need not wait for its template.
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": claim_template_name(md.name, revision),
            "namespace": md.namespace,
            "labels": {**common_labels(md), REVISION_LABEL: str(revision)},
            "ownerReferences": [owner],
        },
        "spec": {"spec": claim_spec(claim)},
    }
