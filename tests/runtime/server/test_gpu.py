"""CUDA placement and reduced precision; skipped without CUDA (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from modelplane_runtime.model import LoadedModel
from runtimekit import StartServer

pytestmark = pytest.mark.gpu


def _inputs(rows: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(rows).standard_normal((rows, 16), dtype=np.float32)}


def test_model_runs_on_the_gpu_and_matches_cpu(tiny_model_dir: Path) -> None:
    cpu = LoadedModel.load(tiny_model_dir / "metadata.json", device="cpu")
    gpu = LoadedModel.load(tiny_model_dir / "metadata.json", device="cuda")
    assert {p.device.type for p in gpu.module.parameters()} == {"cuda"}
    gpu.warm_up()
    x = _inputs(8)
    np.testing.assert_allclose(
        gpu.predict(x)["output0"], cpu.predict(x)["output0"], rtol=1e-3, atol=1e-4
    )


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_reduced_precision_keeps_the_wire_datatype(tiny_model_dir: Path, precision: str) -> None:
    reference = LoadedModel.load(tiny_model_dir / "metadata.json", device="cpu")
    model = LoadedModel.load(tiny_model_dir / "metadata.json", device="cuda", precision=precision)
    dtypes = {p.dtype for p in model.module.parameters()}
    assert dtypes == {getattr(torch, precision)}
    x = _inputs(16)
    got = model.predict(x)["output0"]
    assert got.dtype == np.float32, "outputs keep the FP32 datatype their metadata declares"
    np.testing.assert_allclose(got, reference.predict(x)["output0"], rtol=5e-2, atol=5e-2)


def test_server_on_cuda_serves_and_reports_gpu_memory(
    start_server: StartServer, tiny_model_dir: Path
) -> None:
    server = start_server(
        tiny_model_dir,
        MODELPLANE_MODEL_NAME="tiny",
        MODELPLANE_DEVICE="cuda",
        MODELPLANE_PRECISION="float16",
    )
    server.wait_ready()
    body = {"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": [0.1] * 32}]}
    response = httpx.post(f"{server.url}/v2/models/tiny/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["datatype"] == "FP32"
    metrics = server.get("/metrics").text
    used = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("nv_gpu_memory_used_bytes{")
    ]
    assert used and max(used) > 0
