"""A request whose client disconnects while it waits is dropped before its forward pass."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from modelplane_runtime.package import load_factory, package_model
from runtimekit import EXAMPLES, RuntimeServer, SlowTinyMLP, StartServer

ROWS = 64


def _metric(server: RuntimeServer, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(server.get("/metrics").text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _wait_metric(
    server: RuntimeServer, name: str, want: float, timeout: float = 30, **labels: str
) -> None:
    deadline = time.monotonic() + timeout
    while (got := _metric(server, name, **labels)) != want:
        assert time.monotonic() < deadline, f"{name}{labels} stayed {got}, wanted {want}"
        time.sleep(0.02)


def _body(rows: int) -> bytes:
    x = np.random.default_rng(rows).standard_normal((rows, 16), dtype=np.float32)
    return json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [rows, 16], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
    ).encode()


@pytest.fixture(scope="module")
def very_slow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny MLP's results after a long forward pass (about a second for 64 rows)."""
    out = tmp_path_factory.mktemp("very-slow")
    module = SlowTinyMLP(load_factory(f"{EXAMPLES}:tiny_mlp")(), depth=200)
    package_model(module, {"x": torch.randn(2, 16)}, out, name="slow", max_batch_size=ROWS)
    return out


@pytest.mark.parametrize("batching", ["true", "false"])
def test_a_waiting_request_whose_client_left_is_never_computed(
    very_slow_model_dir: Path, start_server: StartServer, batching: str
) -> None:
    server = start_server(
        very_slow_model_dir, MODELPLANE_MODEL_NAME="slow", MODELPLANE_BATCHING=batching
    )
    server.wait_ready()
    url = f"{server.url}/v2/models/slow/infer"
    rows_before = _metric(server, "nv_inference_count")
    answers: dict[str, httpx.Response] = {}

    def call(key: str) -> None:
        answers[key] = httpx.post(url, content=_body(ROWS), timeout=120)

    # A and C: long forward passes; whichever comes first runs, the other waits. The
    # order does not matter, only that one runs while B waits behind it.
    staying = [threading.Thread(target=call, args=(key,)) for key in ("a", "c")]
    for thread in staying:
        thread.start()
    _wait_metric(server, "nv_inference_pending_request_count", 1)
    # In flight: the one computing and the one waiting.
    _wait_metric(server, "modelplane_requests_in_flight", 2)
    # B: queued too, then its client hangs up.
    host, port = server.url.removeprefix("http://").split(":")
    body = _body(ROWS)
    leaving = socket.create_connection((host, int(port)))
    leaving.sendall(
        b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    _wait_metric(server, "nv_inference_pending_request_count", 2)
    leaving.close()
    _wait_metric(server, "nv_inference_request_failure", 1, reason="cancelled")
    _wait_metric(server, "nv_inference_pending_request_count", 1)  # C still waits
    _wait_metric(server, "modelplane_requests_in_flight", 2)  # B left: no longer counted
    for thread in staying:
        thread.join()
    _wait_metric(server, "modelplane_requests_in_flight", 0)

    assert answers["a"].status_code == 200 and answers["c"].status_code == 200
    assert len(answers["c"].json()["outputs"][0]["data"]) == ROWS * 4
    # Rows computed: A's and C's; B's never reached the model.
    assert _metric(server, "nv_inference_count") - rows_before == 2 * ROWS
    assert _metric(server, "nv_inference_request_success") == 2
    assert server.get("/v2/health/ready").status_code == 200
