"""`kubectl modelplane` edits the ModelDeployment the way a user would; the operator acts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clusterkit import Cluster
from mdkit import get, model_deployment, wait_condition, wait_serving

pytestmark = pytest.mark.usefixtures("operator")


def plugin(cluster: Cluster, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    from operatorkit import python_path

    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PYTHONPATH": python_path()}
    return subprocess.run(
        [sys.executable, "-m", "modelplane_operator.plugin", "-n", namespace, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_status_pause_resume_rollback_promote(cluster: Cluster, namespace: str) -> None:
    rollout = {"strategy": "Canary", "canary": {"steps": [{"weight": 50, "pause": {}}]}}
    cluster.apply(model_deployment("cli", replicas=2, rollout=rollout), namespace)
    wait_serving(cluster, namespace, "cli", "1.0.0")
    patch = {"spec": {"model": {"version": "2.0.0", "uri": "s3://models/cli/2.0.0"}}}
    cluster.kubectl("patch", "md", "cli", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    wait_condition(cluster, "cli", namespace, "Ready", status="False", reason="CanaryPaused")

    out = plugin(cluster, namespace, "status", "cli")
    assert out.returncode == 0, out.stderr
    assert "serving 1.0.0 (revision 1), target 2.0.0 (revision 2)" in out.stdout
    assert "CanaryPaused" in out.stdout and "Progressing" in out.stdout

    assert plugin(cluster, namespace, "promote", "cli").returncode == 0
    wait_serving(cluster, namespace, "cli", "2.0.0")

    assert plugin(cluster, namespace, "rollback", "cli").returncode == 0
    md = wait_serving(cluster, namespace, "cli", "1.0.0")
    assert md["spec"]["rollout"]["rollbackTo"] == 1
    assert md["spec"]["model"]["version"] == "2.0.0"  # only rollbackTo was edited

    assert plugin(cluster, namespace, "undo-rollback", "cli").returncode == 0
    wait_serving(cluster, namespace, "cli", "2.0.0")

    assert plugin(cluster, namespace, "pause", "cli").returncode == 0
    assert get(cluster, "md", "cli", namespace)["spec"]["rollout"]["paused"] is True  # type: ignore[index]
    assert plugin(cluster, namespace, "resume", "cli").returncode == 0
    assert get(cluster, "md", "cli", namespace)["spec"]["rollout"]["paused"] is False  # type: ignore[index]

    missing = plugin(cluster, namespace, "status", "nope")
    assert missing.returncode == 1 and "404" in missing.stderr
