"""gzip and deflate bodies, as tritonclient's compression options send and expect them."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from modelplane_runtime.compression import response_encoding
from runtimekit import RuntimeServer, session_server

X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
BODY = {"inputs": [{"name": "x", "shape": [2, 16], "datatype": "FP32", "data": X.ravel().tolist()}]}


@pytest.fixture(scope="module")
def server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    env = {"MODELPLANE_MODEL_NAME": "tiny", "MODELPLANE_MAX_REQUEST_BYTES": "100000"}
    yield from session_server(tmp_path_factory, tiny_model_dir, env)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests_and_responses_match_plain_ones(
    server: RuntimeServer, algorithm: str
) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    x = triton.InferInput("x", list(X.shape), "FP32")
    x.set_data_from_numpy(X, binary_data=True)
    plain = client.infer("tiny", [x]).as_numpy("output0")
    squeezed = client.infer(
        "tiny",
        [x],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    ).as_numpy("output0")
    assert plain is not None and squeezed is not None
    np.testing.assert_array_equal(plain, squeezed)


def test_compressed_json_bodies_and_accept_encoding(server: RuntimeServer) -> None:
    url = f"{server.url}/v2/models/tiny/infer"
    raw = json.dumps(BODY).encode()
    identity = {"Accept-Encoding": "identity"}  # httpx asks for gzip by default
    plain = httpx.post(url, content=raw, headers=identity).json()
    for encoding, packed in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw))):
        answer = httpx.post(url, content=packed, headers={"Content-Encoding": encoding, **identity})
        assert answer.status_code == 200, answer.text
        assert "content-encoding" not in answer.headers  # not asked for
        assert answer.json() == plain
    small = httpx.post(url, content=raw, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers  # a few hundred bytes: not worth it
    rows = np.linspace(-1, 1, 64 * 16, dtype=np.float32)
    large = json.dumps(
        {"inputs": [{"name": "x", "shape": [64, 16], "datatype": "FP32", "data": rows.tolist()}]}
    ).encode()
    expected = httpx.post(url, content=large, headers=identity)
    asked = httpx.post(url, content=large, headers={"Accept-Encoding": "br, gzip;q=0.5"})
    assert asked.headers["content-encoding"] == "gzip"
    assert int(asked.headers["content-length"]) < len(expected.content)
    assert asked.json() == expected.json()  # httpx decompresses what it was told is gzip


@pytest.mark.parametrize(
    ("headers", "body", "message"),
    [
        ({"Content-Encoding": "br"}, b"whatever", "unsupported Content-Encoding 'br'"),
        ({"Content-Encoding": "gzip"}, b"not gzip at all", "not valid gzip"),
        (
            {"Content-Encoding": "gzip"},
            gzip.compress(json.dumps(BODY).encode())[:30],
            "truncated gzip",
        ),
        (
            {"Content-Encoding": "gzip"},
            gzip.compress(b" " * 5_000_000),
            "too large once decompressed",
        ),
    ],
)
def test_bad_compressed_bodies_are_400_with_a_reason(
    server: RuntimeServer, headers: dict[str, str], body: bytes, message: str
) -> None:
    answer = httpx.post(f"{server.url}/v2/models/tiny/infer", content=body, headers=headers)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


@pytest.mark.unit
def test_accept_encoding_choice() -> None:
    assert response_encoding(b"gzip, deflate") == "gzip"
    assert response_encoding(b"deflate") == "deflate"
    assert response_encoding(b"gzip;q=0, deflate;q=0.1") == "deflate"
    assert response_encoding(b"br") is None
    assert response_encoding(b"*") == "gzip"
    assert response_encoding(b"identity") is None
