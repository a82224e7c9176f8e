"""GitOps tools read ModelDeployment status as meant: Argo CD's Lua and kstatus."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster, wait_for
from mdkit import get, model_deployment, wait_condition

pytestmark = pytest.mark.usefixtures("operator")
REPO = Path(__file__).resolve().parents[3]


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run gitops/argocd/health.lua the way Argo CD does: `obj` in, `hs` out."""
    from lupa import LuaRuntime  # type: ignore[import-not-found]

    lua = LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    script = (REPO / "gitops" / "argocd" / "health.lua").read_text()
    run = lua.eval(f"function(obj) {script} end")
    hs = run(to_lua(obj))
    return str(hs["status"]), str(hs["message"])


def kstatus(obj: dict[str, Any]) -> str:
    from localcluster import BIN_DIR

    out = subprocess.run(
        [str(BIN_DIR / "kstatus")],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[1]


def patch(cluster: Cluster, namespace: str, name: str, body: dict[str, Any]) -> None:
    cluster.kubectl("patch", "md", name, "-n", namespace, "--type=merge", "-p", json.dumps(body))


def test_health_of_every_phase_for_argocd_and_kstatus(cluster: Cluster, namespace: str) -> None:
    v2 = {"model": {"version": "2.0.0", "uri": "s3://models/x/2.0.0"}}
    for name in ("healthy", "progressing", "rolledback", "paused"):
        cluster.apply(model_deployment(name), namespace)
    cluster.apply(model_deployment("stalled", runtime={"gpu": {"count": 16}}), namespace)
    for name in ("healthy", "progressing", "rolledback", "paused"):
        wait_condition(cluster, name, namespace, "Ready", reason="AllReplicasReady")

    patch(
        cluster,
        namespace,
        "progressing",
        {"spec": {**v2, "pod": {"labels": {"sim.modelplane.io/fail": "unready"}}}},
    )
    patch(
        cluster,
        namespace,
        "rolledback",
        {"spec": {**v2, "pod": {"labels": {"sim.modelplane.io/fail": "crash"}}}},
    )
    patch(cluster, namespace, "paused", {"spec": {**v2, "rollout": {"paused": True}}})

    states = {
        "healthy": ("AllReplicasReady", "Healthy", "Current"),
        "progressing": ("RolloutInProgress", "Progressing", "InProgress"),
        "rolledback": ("RolledBack", "Degraded", "Failed"),
        "paused": ("RolloutPaused", "Suspended", "InProgress"),
        "stalled": ("InsufficientGPU", "Degraded", "Failed"),
    }
    for name, (reason, argo, kstat) in states.items():
        status = "True" if reason in ("AllReplicasReady", "RolledBack") else "False"
        wait_condition(cluster, name, namespace, "Ready", status=status, reason=reason)
        obj = get(cluster, "md", name, namespace)
        assert obj is not None
        health, message = argocd_health(obj)
        assert (name, health) == (name, argo), message
        assert (name, kstatus(obj)) == (name, kstat)


def test_a_generation_not_yet_observed_is_progressing_everywhere(cluster: Cluster) -> None:
    obj = {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "x", "namespace": "y", "generation": 3},
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}],
        },
    }
    assert argocd_health(obj)[0] == "Progressing"
    assert kstatus(obj) == "InProgress"


def test_kustomize_overlay_deploys_and_a_git_change_upgrades(
    cluster: Cluster, namespace: str
) -> None:
    base = REPO / "examples" / "gitops" / "base"
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-k", str(base))
    wait_condition(cluster, "resnet", namespace, "Ready", reason="AllReplicasReady")

    # The production overlay is "the same repo after a commit": version 1.1.0, 3 replicas.
    overlay = cluster.kubectl(
        "kustomize", str(REPO / "examples" / "gitops" / "overlays" / "production")
    ).stdout
    overlay = overlay.replace("namespace: models", f"namespace: {namespace}")
    cluster.kubectl("apply", "--server-side", "-f", "-", input=overlay)
    md = wait_for(
        lambda: (
            lambda m: (
                m
                if m
                and m.get("status", {}).get("currentVersion") == "1.1.0"
                and m["status"].get("readyReplicas") == 3
                else None
            )
        )(get(cluster, "md", "resnet", namespace)),
        "the overlay's version 1.1.0 on 3 replicas",
    )
    assert md["status"]["currentRevision"] == 2
    health, _ = argocd_health(md)
    assert health == "Healthy" and kstatus(md) == "Current"
