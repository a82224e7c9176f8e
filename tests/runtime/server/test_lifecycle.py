"""Readiness, load failures, authentication and graceful shutdown of real server processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.http as triton

from runtimekit import StartServer

TINY_BODY = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


def _copy_model(source: Path, target: Path) -> None:
    # Artifact first, metadata last: the order `modelplane package` writes them in.
    target.mkdir(exist_ok=True)
    shutil.copy(source / "model.pt2", target / "model.pt2")
    shutil.copy(source / "metadata.json", target / "metadata.json")


def _edited_copy(source: Path, target: Path, edit: dict[str, str]) -> Path:
    """A copy of the model whose metadata.json has `edit` applied."""
    _copy_model(source, target)
    meta = json.loads((target / "metadata.json").read_text())
    (target / "metadata.json").write_text(json.dumps({**meta, **edit}))
    return target


def test_not_ready_until_model_files_arrive_and_load(
    start_server: StartServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"  # not even created yet
    server = start_server(model_dir, MODELPLANE_MODEL_NAME="tiny")
    server.wait("/v2/health/live")
    for path in ("/v2/models/tiny/ready", "/v2/health/ready", "/v2/models/tiny"):
        response = server.get(path)
        assert response.status_code == 503
        assert "waiting for model files" in response.json()["error"]
    infer = httpx.post(f"{server.url}/v2/models/tiny/infer", json=TINY_BODY)
    assert infer.status_code == 503
    model_dir.mkdir()
    time.sleep(0.6)
    assert server.get("/v2/models/tiny/ready").status_code == 503
    # A tarball unpacked by the storage initializer lands in a subfolder.
    _copy_model(tiny_model_dir, model_dir / "tiny-1.0")
    server.wait_ready()
    infer = httpx.post(f"{server.url}/v2/models/tiny/infer", json=TINY_BODY)
    assert infer.status_code == 200, infer.text
    assert infer.json()["outputs"][0]["shape"] == [1, 4]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_requested_without_gpu_is_a_clear_not_ready_error(
    start_server: StartServer, tiny_model_dir: Path
) -> None:
    server = start_server(
        tiny_model_dir,
        MODELPLANE_MODEL_NAME="tiny",
        MODELPLANE_DEVICE="cuda",
        MODELPLANE_EXIT_ON_ERROR="false",
    )
    response = server.wait("/v2/models/tiny/ready", status=503)
    deadline = time.monotonic() + 60
    while "failed to load" not in response.json()["error"] and time.monotonic() < deadline:
        time.sleep(0.2)
        response = server.get("/v2/models/tiny/ready")
    assert response.status_code == 503
    assert "no usable CUDA device" in response.json()["error"]
    assert server.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"torch_version": "1.13.1"}, "incompatible artifact: exported with torch 1.13.1"),
        ({"artifact_sha256": "0" * 64}, "does not match the sha256"),
        ({"format": "something/v9"}, "metadata format"),
    ],
)
def test_bad_artifact_stays_not_ready_with_reason(
    start_server: StartServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    edit: dict[str, str],
    message: str,
) -> None:
    model_dir = _edited_copy(tiny_model_dir, tmp_path / "model", edit)
    server = start_server(model_dir, MODELPLANE_MODEL_NAME="tiny", MODELPLANE_EXIT_ON_ERROR="false")
    deadline = time.monotonic() + 60
    response = server.wait("/v2/models/tiny/ready", status=503)
    while "failed" not in response.json()["error"] and time.monotonic() < deadline:
        time.sleep(0.2)
        response = server.get("/v2/models/tiny/ready")
    assert message in response.json()["error"]
    infer = httpx.post(f"{server.url}/v2/models/tiny/infer", json=TINY_BODY)
    assert infer.status_code == 503


@pytest.mark.parametrize(
    ("env", "edit", "message"),
    [
        ({}, {"torch_version": "1.13.1"}, "incompatible artifact: exported with torch 1.13.1"),
        pytest.param(
            {"MODELPLANE_DEVICE": "cuda"},
            {},
            "no usable CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs no GPU"),
        ),
        ({"MODELPLANE_PRECISION": "int8"}, {}, "needs an int8 artifact"),
    ],
)
def test_a_model_that_cannot_load_ends_the_process_with_the_reason(
    start_server: StartServer,
    tiny_model_dir: Path,
    tmp_path: Path,
    env: dict[str, str],
    edit: dict[str, str],
    message: str,
) -> None:
    """By default (Triton's --exit-on-error), so that the pod's status says why."""
    model_dir = _edited_copy(tiny_model_dir, tmp_path / "model", edit)
    termination_log = tmp_path / "termination-log"
    server = start_server(
        model_dir,
        MODELPLANE_MODEL_NAME="tiny",
        MODELPLANE_TERMINATION_LOG=str(termination_log),
        **env,
    )
    assert server.process.wait(timeout=90) == 1, server.log()
    reason = termination_log.read_text()
    assert reason.startswith("model 'tiny' failed to load: "), reason
    assert message in reason
    assert message in server.log()


def test_a_half_written_metadata_file_is_waited_out_not_fatal(
    start_server: StartServer, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Outside Kubernetes the files may still be on their way when metadata.json shows up."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(tiny_model_dir / "model.pt2", model_dir / "model.pt2")
    full = (tiny_model_dir / "metadata.json").read_text()
    (model_dir / "metadata.json").write_text(full[:40])
    server = start_server(model_dir, MODELPLANE_MODEL_NAME="tiny")
    # A copy in progress keeps its file's modification time fresh (on a busy machine the
    # server may take seconds to start, and the runtime judges by that time).
    deadline = time.monotonic() + 60
    live = False
    while time.monotonic() < deadline and not live:
        os.utime(model_dir / "metadata.json")
        try:
            live = server.get("/v2/health/live").status_code == 200
        except httpx.TransportError:
            time.sleep(0.2)
    for _ in range(5):
        time.sleep(0.2)
        os.utime(model_dir / "metadata.json")
    (model_dir / "metadata.json").write_text(full)
    server.wait_ready()
    assert server.process.poll() is None


def test_a_folder_with_files_but_no_metadata_ends_the_process(
    start_server: StartServer, tmp_path: Path
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("weights.bin", "README"):
        (model_dir / name).write_text("not a modelplane artifact")
        long_ago = time.time() - 3600  # as a finished download looks to the runtime
        os.utime(model_dir / name, (long_ago, long_ago))
    termination_log = tmp_path / "termination-log"
    server = start_server(
        model_dir, MODELPLANE_MODEL_NAME="tiny", MODELPLANE_TERMINATION_LOG=str(termination_log)
    )
    assert server.process.wait(timeout=60) == 1, server.log()
    reason = termination_log.read_text()
    assert "found no model in" in reason and "README, weights.bin" in reason, reason


def test_the_termination_message_is_valid_utf8_of_at_most_4096_bytes(tmp_path: Path) -> None:
    from modelplane_runtime.termination import write_termination_message

    path = tmp_path / "termination-log"
    write_termination_message("bad name: mod\udce9l/" + "\u00e9" * 3000, str(path))
    data = path.read_bytes()
    assert len(data) <= 4096
    text = data.decode("utf-8")  # raises if cut mid-character
    assert text.startswith("bad name: mod\\udce9l/")
    write_termination_message("x", str(tmp_path / "no-such-dir" / "log"))  # never raises


@pytest.mark.reliability("Access")
def test_bearer_token_guards_the_api_not_the_probes(
    start_server: StartServer, tiny_model_dir: Path
) -> None:
    server = start_server(
        tiny_model_dir, MODELPLANE_MODEL_NAME="tiny", MODELPLANE_AUTH_TOKEN="s3cret"
    )
    server.wait_ready()
    failures = 'nv_inference_request_failure{model="tiny",reason="unauthorized",version="1"}'
    assert f"{failures} 0.0" in server.get("/metrics").text
    url = f"{server.url}/v2/models/tiny/infer"
    assert httpx.post(url, json=TINY_BODY).status_code == 401
    wrong = httpx.post(url, json=TINY_BODY, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert "bearer token" in wrong.json()["error"]
    assert server.get("/v2/models/tiny").status_code == 401
    assert f"{failures} 2.0" in server.get("/metrics").text  # refused inferences count
    for open_path in ("/v2/health/live", "/v2/health/ready", "/v2/models/tiny/ready", "/metrics"):
        assert server.get(open_path).status_code == 200, open_path
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    x = triton.InferInput("x", [1, 16], "FP32")
    x.set_data_from_numpy(np.ones((1, 16), np.float32))
    result = client.infer("tiny", [x], headers={"Authorization": "Bearer s3cret"})
    out = result.as_numpy("output0")
    assert out is not None and out.shape == (1, 4)


def test_sigterm_first_turns_readiness_off_and_closes_kept_alive_connections(
    start_server: StartServer, tiny_model_dir: Path
) -> None:
    """The drain before shutdown: not ready, still serving, every response closes."""
    server = start_server(
        tiny_model_dir, MODELPLANE_MODEL_NAME="tiny", MODELPLANE_DRAIN_DELAY_S="3"
    )
    server.wait_ready()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        before = client.post("/v2/models/tiny/infer", json=TINY_BODY)
        assert before.status_code == 200 and before.headers.get("connection") != "close"
        server.process.terminate()
        started = time.monotonic()
        ready = wait_for_status(client, "/v2/models/tiny/ready", 503)
        assert "shutting down" in ready.json()["error"]
        assert client.get("/v2/health/ready").status_code == 503
        during = client.post("/v2/models/tiny/infer", json=TINY_BODY)
        assert during.status_code == 200, during.text
        assert during.json()["outputs"][0]["shape"] == [1, 4]
        assert during.headers["connection"] == "close"
        assert server.process.poll() is None, "still serving during the drain delay"
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert time.monotonic() - started >= 2.5


def wait_for_status(client: httpx.Client, path: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + 5
    while True:
        response = client.get(path)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return response
        time.sleep(0.05)


def test_sigterm_drains_in_flight_requests(start_server: StartServer, tiny_model_dir: Path) -> None:
    server = start_server(tiny_model_dir, MODELPLANE_MODEL_NAME="tiny", MODELPLANE_BATCHING="true")
    server.wait_ready()
    body = json.dumps(TINY_BODY).encode()

    def slow_upload() -> Iterator[bytes]:
        # Half the body now, the rest after SIGTERM: the request is in flight throughout.
        yield body[: len(body) // 2]
        time.sleep(2.0)
        yield body[len(body) // 2 :]

    answers: list[httpx.Response] = []
    sender = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{server.url}/v2/models/tiny/infer", content=slow_upload(), timeout=30)
        )
    )
    started = time.monotonic()
    sender.start()
    time.sleep(0.7)
    assert not answers, "the request should still be uploading"
    server.process.terminate()
    sender.join(timeout=30)
    # uvicorn re-raises the captured SIGTERM once drained, so the status is -SIGTERM.
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert len(answers) == 1
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["outputs"][0]["shape"] == [1, 4]
    assert time.monotonic() - started >= 2.0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/v2/health/live", timeout=2)
