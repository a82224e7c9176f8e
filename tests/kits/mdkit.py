"""Helpers for ModelDeployment tests against a real cluster."""

from __future__ import annotations

import json
from typing import Any

from clusterkit import Cluster, wait_for


def model_deployment(name: str, version: str = "1.0.0", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"version": version, "uri": f"s3://models/{name}/{version}"},
        "runtime": {"gpu": {"count": 1}},
        "replicas": 1,
    }
    body.update(spec)
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": body,
    }


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    obj: dict[str, Any] = json.loads(proc.stdout)
    return obj


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in (obj or {}).get("status", {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}


def wait_condition(
    cluster: Cluster,
    name: str,
    namespace: str,
    type_: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        md = get(cluster, "modeldeployment", name, namespace)
        cond = condition(md, type_)
        if cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            return md
        return None

    return wait_for(probe, f"{type_}={status} ({reason or 'any reason'}) on md/{name}", timeout)


def events_for(cluster: Cluster, name: str, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get_json(
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind=ModelDeployment,involvedObject.name={name}",
    )["items"]
    return items


def wait_serving(
    cluster: Cluster, namespace: str, name: str, version: str, timeout: float = 90
) -> dict[str, Any]:
    """Wait until ``version`` serves every replica (Ready, AllReplicasReady)."""

    def probe() -> dict[str, Any] | None:
        md = get(cluster, "md", name, namespace)
        ready = condition(md, "Ready")
        if (
            md
            and md.get("status", {}).get("currentVersion") == version
            and ready.get("reason") == "AllReplicasReady"
        ):
            return md
        return None

    try:
        return wait_for(probe, f"md/{name} serving {version}", timeout)
    except AssertionError as exc:
        md = get(cluster, "md", name, namespace) or {}
        status = md.get("status", {})
        summary = {
            "generation": md.get("metadata", {}).get("generation"),
            "observedGeneration": status.get("observedGeneration"),
            "currentVersion": status.get("currentVersion"),
            "targetVersion": status.get("targetVersion"),
            "conditions": [
                (c["type"], c["status"], c.get("reason"), c.get("message"))
                for c in status.get("conditions", [])
            ],
            "rollout": status.get("rollout"),
        }
        raise AssertionError(f"{exc}\nmd/{name} now: {json.dumps(summary, indent=1)}") from None


def admission_answers(cluster: Cluster, namespace: str) -> str:
    """Create a throwaway Deployment as a server-side dry run: what admission answered
    (kubectl's stderr; empty when allowed). Tests poll it until their policy or webhook
    is in force."""
    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "refused-probe"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }
    out = cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(probe),
        check=False,
    )
    return out.stderr if out.returncode else ""
