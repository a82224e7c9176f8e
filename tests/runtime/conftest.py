"""Fixtures for runtime tests: locally built models and real server processes.

Each server is `python -m modelplane_runtime` (uvicorn) on a free 127.0.0.1 port, with the
checkout's runtime package first on PYTHONPATH; every one is stopped when its fixture ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from modelplane_runtime.package import load_factory, package_model
from runtimekit import EXAMPLES, AddMul, RuntimeServer, SlowTinyMLP, StartServer, session_server


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example tiny MLP (16 -> 64 -> 4), packaged with max batch size 64."""
    out = tmp_path_factory.mktemp("tiny")
    module = load_factory(f"{EXAMPLES}:tiny_mlp")()
    package_model(module, {"x": torch.randn(2, 16)}, out, name="tiny", max_batch_size=64)
    return out


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny MLP's results from a forward pass of tens of milliseconds (max batch 64)."""
    out = tmp_path_factory.mktemp("slow")
    module = SlowTinyMLP(load_factory(f"{EXAMPLES}:tiny_mlp")())
    package_model(module, {"x": torch.randn(2, 16)}, out, name="slow", max_batch_size=64)
    return out


@pytest.fixture(scope="session")
def addmul_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("addmul")
    examples = {"x": torch.randn(2, 4), "y": torch.randn(2, 4)}
    package_model(AddMul(), examples, out, max_batch_size=16, output_names=["sum", "product"])
    return out


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """A factory for servers that live as long as the test; all are stopped afterwards."""
    servers: list[RuntimeServer] = []

    def start(model_dir: Path, **env: str) -> RuntimeServer:
        server = RuntimeServer(model_dir, tmp_path / f"runtime-{len(servers)}.log", env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _batching(name: str) -> dict[str, str]:
    return {
        "MODELPLANE_MODEL_NAME": name,
        "MODELPLANE_BATCHING": "true",
        "MODELPLANE_MAX_BATCH_SIZE": "8",
        "MODELPLANE_MAX_QUEUE_DELAY_MS": "50",
    }


@pytest.fixture(scope="session")
def tiny_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[RuntimeServer]:
    """The tiny MLP with dynamic batching (max 8 rows, 50 ms queue delay)."""
    env = {
        **_batching("tiny"),
        "MODELPLANE_MODEL_VERSION": "1",
        "MODELPLANE_MAX_REQUEST_BYTES": "1000000",
    }
    yield from session_server(tmp_path_factory, tiny_model_dir, env)


@pytest.fixture(scope="session")
def slow_server(
    tmp_path_factory: pytest.TempPathFactory, slow_model_dir: Path
) -> Iterator[RuntimeServer]:
    """Dynamic batching (max 8 rows, 50 ms queue delay) in front of a slow forward pass."""
    yield from session_server(tmp_path_factory, slow_model_dir, _batching("slow"))


@pytest.fixture(scope="session")
def addmul_server(
    tmp_path_factory: pytest.TempPathFactory, addmul_model_dir: Path
) -> Iterator[RuntimeServer]:
    """Two inputs and two outputs, without batching."""
    env = {"MODELPLANE_MODEL_NAME": "addmul", "MODELPLANE_MODEL_VERSION": "2"}
    yield from session_server(tmp_path_factory, addmul_model_dir, env)
