"""TorchServe with modelplane's `.mar`: `modelplane package --format mar`, served by the real
TorchServe (PyPI's, with the machine's Java) under `modelplane-torchserve`, on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from modelplane_runtime.cli import main
from modelplane_runtime.package import load_factory
from runtimekit import EXAMPLES, REPO, free_port

pytest.importorskip("ts", reason="torchserve is not installed (the torchserve extra)")
if shutil.which("java") is None:
    pytest.skip("TorchServe needs Java, and java is not on PATH", allow_module_level=True)

CONFIG = REPO / "runtime" / "torchserve" / "config.properties"
START_S = 120
ROWS = np.linspace(-1.0, 1.0, 3 * 16, dtype=np.float32).reshape(3, 16)
BODY = {
    "id": "r1",
    "inputs": [{"name": "x", "shape": [3, 16], "datatype": "FP32", "data": ROWS.ravel().tolist()}],
}


class TorchServe:
    """One `modelplane-torchserve` process over a model store, on free loopback ports."""

    def __init__(self, store: Path, mar: str, work: Path) -> None:
        self.port, metrics = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.termination = work / "termination-log"
        self.log_path = work / "torchserve.log"
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "runtime"), os.environ.get("PYTHONPATH", "")]
            ),
            "TS_CONFIG_FILE": str(CONFIG),
            "TS_INFERENCE_ADDRESS": f"http://127.0.0.1:{self.port}",
            "TS_MANAGEMENT_ADDRESS": f"http://127.0.0.1:{free_port()}",
            "TS_METRICS_ADDRESS": f"http://127.0.0.1:{metrics}",
            "LOG_LOCATION": str(work / "logs"),
            "METRICS_LOCATION": str(work / "logs"),
            "MODELPLANE_TERMINATION_LOG": str(self.termination),
        }
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self._log = self.log_path.open("wb")
        # cwd: TorchServe keeps its pid file and worker sockets in the temp folder.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelplane_runtime.torchserve", "--ncs",
             "--disable-token-auth", "--model-store", str(store), "--models", f"tiny={mar}"],
            env={**env, "TMPDIR": str(work)}, cwd=work, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited early:\n{self.log()}"
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"/ping never answered 200:\n{self.log()}")

    def exit_code(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.exit_code(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    code = main(["package", f"{EXAMPLES}:tiny_mlp", "-o", str(folder), "--format", "mar",
                 "--name", "tiny", "--version", "v7", "--max-batch-size", "8"])  # fmt: skip
    assert code == 0
    with (
        zipfile.ZipFile(folder / "tiny.mar") as good,
        zipfile.ZipFile(folder / "broken.mar", "w") as broken,
    ):
        for item in good.infolist():
            data = good.read(item)
            broken.writestr(item, data[:1000] if item.filename == "model.pt2" else data)
    return folder


@pytest.fixture
def serve(store: Path, tmp_path: Path) -> Iterator[Callable[[str], TorchServe]]:
    started: list[TorchServe] = []

    def start(mar: str) -> TorchServe:
        server = TorchServe(store, mar, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.stop()


def test_the_mar_answers_v2_json_like_the_model_in_process(
    serve: Callable[[str], TorchServe],
) -> None:
    server = serve("tiny.mar")
    server.wait_healthy()
    # /ping is Healthy once the model is registered; requests wait for the worker to load.
    response = httpx.post(f"{server.url}/predictions/tiny", json=BODY, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("tiny", "v7", "r1")
    (output,) = answer["outputs"]
    with torch.no_grad():
        expected = load_factory(f"{EXAMPLES}:tiny_mlp")()(torch.from_numpy(ROWS)).numpy()
    assert output["shape"] == list(expected.shape) and output["datatype"] == "FP32"
    served = np.asarray(output["data"], np.float32).reshape(expected.shape)
    np.testing.assert_allclose(served, expected, atol=1e-5)

    for body, words in (
        ({"inputs": [{**BODY["inputs"][0], "name": "y"}]}, "missing ['x']"),  # type: ignore[dict-item]
        ({"inputs": [{**BODY["inputs"][0], "datatype": "INT64"}]}, "the model takes FP32"),  # type: ignore[dict-item]
        ({"inputs": [{**BODY["inputs"][0], "shape": [3, 15]}]}, "does not fit"),  # type: ignore[dict-item]
        ({"inputs": [{"name": "x", "shape": [9, 16], "datatype": "FP32", "data": [0.0] * 144}]},
         "exceeds max_batch_size 8"),
    ):  # fmt: skip
        bad = httpx.post(f"{server.url}/predictions/tiny", json=body, timeout=30)
        assert bad.status_code == 400, bad.text
        assert words in bad.json()["error"]
    metrics = httpx.get(server.metrics_url, timeout=10).text
    assert "Requests4XX" in metrics and "ts_inference_requests_total" in metrics

    # SIGTERM stops TorchServe's Java server too: the port is free once it has exited.
    assert server.stop() == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/ping", timeout=2)


@pytest.mark.parametrize(
    ("mar", "opening", "cause"),
    [
        # A worker cannot load it: TorchServe alone restarts the worker forever.
        ("broken.mar", "model 'tiny' failed to load in TorchServe: ", "zip"),
        # It cannot be registered: TorchServe alone goes on serving no model at all.
        ("absent.mar", "archive 'absent.mar' could not be registered in TorchServe: ",
         "modelnotfoundexception"),
    ],
)  # fmt: skip
def test_a_mar_that_cannot_serve_ends_the_server_with_torchserve_s_reason(
    serve: Callable[[str], TorchServe], mar: str, opening: str, cause: str
) -> None:
    """Either way TorchServe's /ping would answer Healthy; here the container ends."""
    server = serve(mar)
    assert server.exit_code(timeout=START_S) == 1, server.log()
    message = server.termination.read_text()
    assert message.startswith(opening) and cause in message.lower(), message
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/ping", timeout=2)
