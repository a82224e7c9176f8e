"""Helpers for runtime tests: a server process wrapper, a free port, a tiny exact model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "models" / "mlp.py"
START_TIMEOUT_S = 90


class AddMul(torch.nn.Module):
    """Two inputs, two outputs, exact arithmetic: easy to check element by element."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + y, x * y


class SlowTinyMLP(torch.nn.Module):
    """The tiny MLP's exact results, from a forward pass of tens of milliseconds.

    Requests that arrive while one pass runs must queue, so a test of batching does not
    depend on how closely a loaded machine delivers concurrent requests. The slow branch
    is multiplied by zero: outputs stay those of the small, row-distinct MLP.
    """

    def __init__(self, tiny: torch.nn.Module, width: int = 2048, depth: int = 8) -> None:
        super().__init__()
        self.tiny = tiny
        self.widen = torch.nn.Linear(16, width)
        self.heavy = torch.nn.Linear(width, width)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.widen(x))
        for _ in range(self.depth):
            hidden = torch.tanh(self.heavy(hidden))
        out: torch.Tensor = self.tiny(x) + 0.0 * hidden.sum(dim=1, keepdim=True)
        return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RuntimeServer:
    """One runtime process; `stop()` sends SIGTERM (the pod's shutdown path) and reaps it."""

    def __init__(self, model_dir: Path, log_path: Path, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = env.get("MODELPLANE_MODEL_NAME", "model")
        self.log_path = log_path
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "runtime"), os.environ.get("PYTHONPATH", "")]
            ),
            "MODELPLANE_HOST": "127.0.0.1",
            "MODELPLANE_PORT": str(self.port),
            "MODELPLANE_MODEL_DIR": str(model_dir),
            "MODELPLANE_DEVICE": "cpu",
            **env,
        }
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelplane_runtime"],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def wait(self, path: str = "/v2/health/live", status: int = 200) -> httpx.Response:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"runtime exited early:\n{self.log()}")
            try:
                response = self.get(path)
                if response.status_code == status:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{path} never answered {status}:\n{self.log()}")

    def wait_ready(self) -> None:
        self.wait(f"/v2/models/{self.name}/ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


StartServer = Callable[..., RuntimeServer]


def session_server(
    factory: pytest.TempPathFactory, model_dir: Path, env: dict[str, str]
) -> Iterator[RuntimeServer]:
    """A server for a whole session (or module): started once, stopped at the end."""
    server = RuntimeServer(model_dir, factory.mktemp("log") / "runtime.log", env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
