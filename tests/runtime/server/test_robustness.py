"""Bad input to the runtime: schemathesis and hand-written abuse never get a 5xx.

Every answer to a bad request is a 4xx with `{"error": "..."}`, and the server stays
live, ready and correct afterwards. Cases schemathesis cannot make (slow clients, many
idle connections, non-HTTP bytes, a huge declared body) are written by hand.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from modelplane_runtime.package import load_factory, package_model
from reliabilitykit import Recorder, iterations
from runtimekit import EXAMPLES, RuntimeServer, StartServer

pytestmark = pytest.mark.reliability("Bad input to the runtime")

EXAMPLES_PER_OPERATION = iterations(ci=40, soak=300)
GOOD = {
    "inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "y", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]},
    ]
}


def _still_healthy(server: RuntimeServer) -> None:
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/models/addmul/ready").status_code == 200
    response = httpx.post(f"{server.url}/v2/models/addmul/infer", json=GOOD, timeout=10)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs == {"sum": [2, 3, 4, 5], "product": [1, 2, 3, 4]}


def _answer_is_clean(response: Any, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and body["error"], f"{what}: {response.text}"


def test_schemathesis_finds_no_server_error(
    addmul_server: RuntimeServer, reliability: Recorder
) -> None:
    """Schemathesis, positive and negative, on every operation of the OpenAPI document."""
    schema = schemathesis.openapi.from_url(f"{addmul_server.url}/v2/openapi.json")
    session = requests.Session()
    calls = 0
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        path_parameters = {
            p: v
            for p, v in {"name": "addmul", "version": "2"}.items()
            if "{" + p + "}" in operation.path
        }
        variants = [{}] + ([path_parameters] if path_parameters else [])
        for mode in GenerationMode:
            for fixed in variants:
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=fixed or None
                )

                @settings(
                    max_examples=EXAMPLES_PER_OPERATION,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(HealthCheck),
                )
                @given(strategy)
                def call(case: Any) -> None:
                    nonlocal calls
                    response = case.call(base_url=addmul_server.url, session=session, timeout=10)
                    calls += 1
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    _answer_is_clean(response, f"{case.method} {case.formatted_path}")

                # Unsatisfiable: nothing to make invalid (no parameters, no body).
                with contextlib.suppress(Unsatisfiable):
                    call()
    _still_healthy(addmul_server)
    reliability.record("requests", calls)
    reliability.record("statuses", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))


def test_slow_client_does_not_hold_up_others(
    addmul_server: RuntimeServer, reliability: Recorder
) -> None:
    """A client trickling its body byte by byte while others are served."""
    host, port = addmul_server.url.removeprefix("http://").split(":")
    body = json.dumps(GOOD).encode()
    slow = socket.create_connection((host, int(port)))
    slow.sendall(
        b"POST /v2/models/addmul/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    stop = threading.Event()

    def trickle() -> None:
        for byte in body:
            if stop.wait(0.05):
                return
            slow.sendall(bytes([byte]))

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    latencies = []
    try:
        for _ in range(20):
            started = time.monotonic()
            response = httpx.post(
                f"{addmul_server.url}/v2/models/addmul/infer", json=GOOD, timeout=10
            )
            latencies.append(time.monotonic() - started)
            assert response.status_code == 200
        assert max(latencies) < 2.0, latencies
    finally:
        stop.set()
        trickler.join()
        slow.close()
    _still_healthy(addmul_server)
    reliability.record("requests served during the trickle", len(latencies))
    reliability.record("slowest of them (s)", max(latencies))


def test_many_idle_connections_and_a_burst(
    addmul_server: RuntimeServer, reliability: Recorder
) -> None:
    """Hundreds of idle connections held open while a burst of requests is served."""
    host, port = addmul_server.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port))) for _ in range(300)]
    try:
        with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=64)) as client:

            def infer(_: int) -> int:
                url = f"{addmul_server.url}/v2/models/addmul/infer"
                return client.post(url, json=GOOD).status_code

            with ThreadPoolExecutor(max_workers=64) as pool:
                codes = list(pool.map(infer, range(400)))
        assert codes == [200] * len(codes)
    finally:
        for sock in idle:
            sock.close()
    _still_healthy(addmul_server)
    reliability.record("idle connections", len(idle))
    reliability.record("concurrent requests served", len(codes))


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\xff\xfe garbage that is not HTTP\r\n\r\n",
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v2/models/addmul/infer HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v2/models/addmul/infer HTTP/1.1\r\nHost: x\r\n"
        + b"X-Long: "
        + b"a" * 100_000
        + b"\r\n\r\n",
    ],
    ids=["not-http", "negative-length", "bad-chunk", "huge-header"],
)
def test_malformed_http_is_refused_and_the_server_stays_up(
    addmul_server: RuntimeServer, raw: bytes
) -> None:
    """Bytes that are not valid HTTP get a 4xx or a closed connection"""
    host, port = addmul_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    if answer:
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:200]
    _still_healthy(addmul_server)


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response: headers and body may arrive in separate segments."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    while lengths and len(body) < lengths[0]:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_huge_declared_body_is_refused_before_it_is_read(tiny_server: RuntimeServer) -> None:
    """A 50 GB Content-Length is refused at once with a 400, before any body is read"""
    host, port = tiny_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000000\r\n\r\n{"
        )
        answer = _read_response(sock)
    status = int(answer.split(b" ", 2)[1])
    assert status == 400, answer[:300]
    assert b'"error"' in answer
    assert tiny_server.get("/v2/health/live").status_code == 200


def test_a_shape_the_program_guards_against_is_400_and_the_server_goes_on(
    start_server: StartServer, tmp_path: Path
) -> None:
    # Metadata that promises more than the program accepts (batch up to 64 against the
    # program's own bound of 8): only the program's shape guard stands in the way.
    model_dir = tmp_path / "guarded"
    module = load_factory(f"{EXAMPLES}:tiny_mlp")()
    package_model(module, {"x": torch.randn(2, 16)}, model_dir, name="tiny", max_batch_size=8)
    metadata = json.loads((model_dir / "metadata.json").read_text())
    metadata["max_batch_size"] = 64
    (model_dir / "metadata.json").write_text(json.dumps(metadata))
    server = start_server(model_dir, MODELPLANE_MODEL_NAME="tiny")
    server.wait_ready()

    def infer(rows: int) -> httpx.Response:
        body = {
            "inputs": [
                {"name": "x", "shape": [rows, 16], "datatype": "FP32", "data": [0.5] * (rows * 16)}
            ]
        }
        return httpx.post(f"{server.url}/v2/models/tiny/infer", json=body, timeout=30)

    refused = infer(20)
    assert refused.status_code == 400
    assert "the model rejected the input" in refused.json()["error"]
    accepted = infer(8)
    assert accepted.status_code == 200
    assert accepted.json()["outputs"][0]["shape"] == [8, 4]
