"""The kind path for users with Docker: hack/kind.sh gives a cluster the tests can use."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.kind
def test_kind_script_creates_a_cluster_with_a_gpu_node() -> None:
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "kind.sh")], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr
    kubeconfig = out.stdout.strip().splitlines()[-1]
    from localcluster import BIN_DIR

    nodes = json.loads(
        subprocess.run(
            [
                str(BIN_DIR / "kubectl"),
                f"--kubeconfig={kubeconfig}",
                "get",
                "nodes",
                "-l",
                "nvidia.com/gpu.present=true",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["items"]
    assert nodes and nodes[0]["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    # The images are loaded into every node, under the chart's and operator's defaults.
    images = subprocess.run(
        ["docker", "exec", "modelplane-worker", "crictl", "images", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for image in ("runtime", "storage-initializer", "operator"):
        assert f"ghcr.io/modelplane/{image}:0.1.0" in images, image
