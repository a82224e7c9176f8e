"""The Open Inference Protocol surface, through tritonclient (JSON and binary) and raw HTTP."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from runtimekit import RuntimeServer


def _client(server: RuntimeServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def _addmul(
    server: RuntimeServer, x: np.ndarray, y: np.ndarray, binary_in: bool, binary_out: bool
) -> dict[str, np.ndarray]:
    client = _client(server)
    inputs = []
    for name, array in (("x", x), ("y", y)):
        tensor = triton.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array, binary_data=binary_in)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in ("sum", "product")]
    result = client.infer("addmul", inputs, model_version="2", outputs=outputs)
    return {name: result.as_numpy(name) for name in ("sum", "product")}


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_tritonclient_json_and_binary(
    addmul_server: RuntimeServer, binary_in: bool, binary_out: bool
) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4), dtype=np.float32)
    y = rng.standard_normal((3, 4), dtype=np.float32)
    out = _addmul(addmul_server, x, y, binary_in, binary_out)
    np.testing.assert_array_equal(out["sum"], x + y)
    np.testing.assert_array_equal(out["product"], x * y)


def test_tritonclient_health_and_metadata(addmul_server: RuntimeServer) -> None:
    client = _client(addmul_server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("addmul")
    assert client.is_model_ready("addmul", "2")
    assert not client.is_model_ready("addmul", "3")
    meta = client.get_model_metadata("addmul")
    assert meta["versions"] == ["2"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("x", "FP32", [-1, 4]),
        ("y", "FP32", [-1, 4]),
    ]
    assert [t["name"] for t in meta["outputs"]] == ["sum", "product"]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_raw_http_json_infer_with_nested_data_and_id(addmul_server: RuntimeServer) -> None:
    body = {
        "id": "req-7",
        "inputs": [
            {
                "name": "x",
                "shape": [2, 4],
                "datatype": "FP32",
                "data": [[1, 2, 3, 4], [5, 6, 7, 8]],
            },
            {"name": "y", "shape": [2, 4], "datatype": "FP32", "data": [1, 1, 1, 1, 2, 2, 2, 2]},
        ],
        "outputs": [{"name": "product"}],
    }
    response = httpx.post(f"{addmul_server.url}/v2/models/addmul/infer", json=body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["id"] == "req-7"
    assert doc["model_name"] == "addmul" and doc["model_version"] == "2"
    assert doc["outputs"] == [
        {
            "name": "product",
            "datatype": "FP32",
            "shape": [2, 4],
            "data": [1, 2, 3, 4, 10, 12, 14, 16],
        }
    ]


def test_binary_decided_by_header_not_content_type(addmul_server: RuntimeServer) -> None:
    """A binary body sent as application/json still decodes: the header decides."""
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "shape": [1, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 16},
                }
                for n in ("x", "y")
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = httpx.post(
        f"{addmul_server.url}/v2/models/addmul/versions/2/infer",
        content=header + x.tobytes() + x.tobytes(),
        headers={
            "Content-Type": "application/json",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert response.status_code == 200, response.text
    json_len = int(response.headers["Inference-Header-Content-Length"])
    doc = json.loads(response.content[:json_len])
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    blob = response.content[json_len:]
    assert sizes == [16, 16] and len(blob) == 32
    np.testing.assert_array_equal(np.frombuffer(blob[:16], np.float32), (x + x).ravel())
    np.testing.assert_array_equal(np.frombuffer(blob[16:], np.float32), (x * x).ravel())


GOOD_X = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
GOOD_Y = {"name": "y", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}


@pytest.mark.reliability("Bad input to the runtime")
@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        (b"{not json", "malformed JSON"),
        (b"[]", "JSON object"),
        (b'{"inputs": []}', "non-empty list"),
        (json.dumps({"inputs": [GOOD_X]}).encode(), "missing \\['y'\\]"),
        (json.dumps({"inputs": [GOOD_X, GOOD_Y, {**GOOD_X, "name": "z"}]}).encode(), "unexpected"),
        (json.dumps({"inputs": [{**GOOD_X, "shape": [1, 5]}, GOOD_Y]}).encode(), "elements"),
        (
            json.dumps({"inputs": [{**GOOD_X, "shape": [2, 2]}, GOOD_Y]}).encode(),
            "must have shape",
        ),
        (json.dumps({"inputs": [{**GOOD_X, "datatype": "FP64"}, GOOD_Y]}).encode(), "datatype"),
        (json.dumps({"inputs": [{**GOOD_X, "datatype": "NOPE"}, GOOD_Y]}).encode(), "datatype"),
        (
            json.dumps({"inputs": [{**GOOD_X, "data": ["a", "b", "c", "d"]}, GOOD_Y]}).encode(),
            "match",
        ),
        (json.dumps({"inputs": [{**GOOD_X, "shape": [-1, 4]}, GOOD_Y]}).encode(), "non-negative"),
        (json.dumps({"inputs": [GOOD_X, GOOD_Y], "outputs": [{"name": "nope"}]}).encode(), "nope"),
        (
            json.dumps(
                {
                    "inputs": [
                        {**GOOD_X, "shape": [17, 4], "data": [0.0] * 68},
                        {**GOOD_Y, "shape": [17, 4], "data": [0.0] * 68},
                    ]
                }
            ).encode(),
            "batch size 17",
        ),
    ],
)
def test_bad_input_is_400_with_error(
    addmul_server: RuntimeServer, body: bytes, pattern: str
) -> None:
    response = httpx.post(f"{addmul_server.url}/v2/models/addmul/infer", content=body)
    assert response.status_code == 400, response.text
    assert re.search(pattern, response.json()["error"])


@pytest.mark.reliability("Bad input to the runtime")
@pytest.mark.parametrize(
    ("header", "pattern"), [("abc", "integer"), ("999999", "exceeds"), ("5", "malformed")]
)
def test_bad_binary_header_is_400(addmul_server: RuntimeServer, header: str, pattern: str) -> None:
    response = httpx.post(
        f"{addmul_server.url}/v2/models/addmul/infer",
        content=json.dumps({"inputs": [GOOD_X, GOOD_Y]}).encode(),
        headers={"Inference-Header-Content-Length": header},
    )
    assert response.status_code == 400
    assert re.search(pattern, response.json()["error"])


@pytest.mark.reliability("Bad input to the runtime")
def test_binary_size_mismatch_is_400(addmul_server: RuntimeServer) -> None:
    x = {"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}
    header = json.dumps({"inputs": [x, GOOD_Y]}).encode()
    response = httpx.post(
        f"{addmul_server.url}/v2/models/addmul/infer",
        content=header + b"\0" * 12,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "do not hold shape" in response.json()["error"]


@pytest.mark.reliability("Bad input to the runtime")
def test_body_too_large_is_400(tiny_server: RuntimeServer) -> None:
    response = httpx.post(f"{tiny_server.url}/v2/models/tiny/infer", content=b" " * 1_000_001)
    assert response.status_code == 400
    assert "too large" in response.json()["error"]


def test_tritonclient_bad_shape_raises_with_server_message(addmul_server: RuntimeServer) -> None:
    client = _client(addmul_server)
    x = triton.InferInput("x", [1, 3], "FP32")
    x.set_data_from_numpy(np.zeros((1, 3), np.float32))
    y = triton.InferInput("y", [1, 3], "FP32")
    y.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="must have shape"):
        client.infer("addmul", [x, y])


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other",
        "/v2/models/other/ready",
        "/v2/models/addmul/versions/9",
        "/v2/models/addmul/versions/9/ready",
        "/v2/nothing-here",
    ],
)
def test_unknown_model_or_version_is_404(addmul_server: RuntimeServer, path: str) -> None:
    response = addmul_server.get(path)
    assert response.status_code == 404
    assert response.json()["error"]


def test_infer_unknown_version_is_404(addmul_server: RuntimeServer) -> None:
    body = {"inputs": [GOOD_X, GOOD_Y]}
    response = httpx.post(f"{addmul_server.url}/v2/models/addmul/versions/1/infer", json=body)
    assert response.status_code == 404
    assert "unknown version" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/models/addmul/infer", 405),
        ("PUT", "/v2/models/addmul/versions/2/infer", 405),
        ("POST", "/v2/models//infer", 404),
        ("POST", "/v2/models/addmul/versions//infer", 404),
        ("POST", "/v2/models/addmul/extra/infer", 404),
        ("POST", "/v3/models/addmul/infer", 404),
    ],
)
def test_infer_paths_outside_the_protocol_get_json_errors(
    addmul_server: RuntimeServer, method: str, path: str, status: int
) -> None:
    body = {"inputs": [GOOD_X, GOOD_Y]}
    response = httpx.request(method, f"{addmul_server.url}{path}", json=body)
    assert response.status_code == status
    assert response.json()["error"]


def test_infer_versioned_path_answers(addmul_server: RuntimeServer) -> None:
    body = {"inputs": [GOOD_X, GOOD_Y]}
    response = httpx.post(f"{addmul_server.url}/v2/models/addmul/versions/2/infer", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))
    assert [o["name"] for o in response.json()["outputs"]] == ["sum", "product"]


def test_openapi_document_lists_the_routes(addmul_server: RuntimeServer) -> None:
    doc = addmul_server.get("/v2/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/v2/models/{name}/infer" in doc["paths"]
    assert "/v2/health/live" in doc["paths"]
