"""Storage credentials stay in their Secret: never in logs, events, status or children."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from clusterkit import Cluster
from mdkit import model_deployment, wait_condition


@pytest.mark.reliability("Access")
def test_storage_credentials_never_leave_the_secret(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    secret_value = f"AKIA-{uuid.uuid4().hex}"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-credentials"},
            "stringData": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": secret_value},
        },
        namespace,
    )
    md = model_deployment("private")
    md["spec"]["model"]["secretRef"] = {"name": "s3-credentials"}
    cluster.apply(md, namespace)
    wait_condition(cluster, "private", namespace, "Ready", reason="AllReplicasReady")

    # The failure path too: a version whose storage initializer fails.
    md["spec"]["model"]["version"] = "2.0.0"
    md["spec"]["pod"] = {"labels": {"sim.modelplane.io/fail": "init-fail"}}
    md["spec"]["rollout"] = {"progressDeadlineSeconds": 10}
    cluster.apply(md, namespace)
    wait_condition(cluster, "private", namespace, "Ready", reason="RolledBack", timeout=60)

    places = {
        "status": json.dumps(cluster.get_json("md", "private", "-n", namespace)),
        "events": json.dumps(cluster.get_json("events", "-n", namespace)),
        "deployments": json.dumps(cluster.get_json("deployments", "-n", namespace)),
        "pods": json.dumps(cluster.get_json("pods", "-n", namespace)),
        "operator log": operator.log_path.read_text(errors="replace"),
    }
    leaked = [where for where, text in places.items() if secret_value in text]
    assert leaked == []
    pod_spec = cluster.get_json("deployment", "private-r1", "-n", namespace)["spec"]["template"]
    init = pod_spec["spec"]["initContainers"][0]
    assert init["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert all("envFrom" not in c for c in pod_spec["spec"]["containers"])


@pytest.mark.reliability("Access")
@pytest.mark.usefixtures("operator")
def test_the_operator_cannot_read_secrets(cluster: Cluster, namespace: str) -> None:
    from operatorkit import USERNAME

    for verb in ("get", "list", "watch"):
        out = cluster.kubectl(
            "auth", "can-i", verb, "secrets", "-n", namespace, f"--as={USERNAME}", check=False
        )
        assert out.stdout.strip() == "no", (verb, out.stdout, out.stderr)
