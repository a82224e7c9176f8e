"""The OIP v2 codec on its own: BYTES tensors, binary chunks, value checks."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from modelplane_runtime.errors import ErrorKind, RuntimeServingError
from modelplane_runtime.protocol import decode_request, encode_response


def _bytes_chunk(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_bytes_tensor_from_json_and_binary_round_trip() -> None:
    doc = {"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["héllo", ""]}]}
    decoded = decode_request(json.dumps(doc).encode(), None)
    assert decoded.inputs["s"].tolist() == ["héllo".encode(), b""]

    chunk = _bytes_chunk([b"a", b"\x00\xffbin"])
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "shape": [1, 2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(chunk)},
                }
            ]
        }
    ).encode()
    decoded = decode_request(header + chunk, str(len(header)))
    assert decoded.inputs["s"].shape == (1, 2)
    assert decoded.inputs["s"].ravel().tolist() == [b"a", b"\x00\xffbin"]

    decoded.outputs = {"s": True}
    encoded = encode_response("m", "1", decoded, decoded.inputs, {"s": "BYTES"})
    assert encoded.json_length is not None
    assert encoded.body[encoded.json_length :] == chunk


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("UINT8", [256], "out of range"),
        ("INT32", [1.5], "do not match"),
        ("BOOL", [1], "do not match"),
        ("FP16", [1e6], "out of range"),
        ("BYTES", [1], "must be strings"),
        ("FP32", [[1, 2], [3]], "inhomogeneous|elements"),
    ],
)
def test_json_values_are_checked_against_the_datatype(
    datatype: str, data: list[object], message: str
) -> None:
    shape = [len(data)] if datatype != "FP32" else [3]
    doc = {"inputs": [{"name": "v", "shape": shape, "datatype": datatype, "data": data}]}
    with pytest.raises(RuntimeServingError, match=message) as info:
        decode_request(json.dumps(doc).encode(), None)
    assert info.value.kind is ErrorKind.BAD_INPUT


def test_unclaimed_binary_bytes_are_rejected() -> None:
    header = json.dumps(
        {"inputs": [{"name": "v", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    ).encode()
    with pytest.raises(RuntimeServingError, match="not claimed"):
        decode_request(header + b"\0\0\0\0", str(len(header)))


def test_json_numeric_data_keeps_its_dtype() -> None:
    doc = {"inputs": [{"name": "v", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]}
    array = decode_request(json.dumps(doc).encode(), None).inputs["v"]
    assert array.dtype == np.int64 and array.tolist() == [[1, 2], [3, 4]]


def _bad(body: bytes, header_length: str | None = None) -> str:
    with pytest.raises(RuntimeServingError) as caught:
        decode_request(body, header_length)
    assert caught.value.kind is ErrorKind.BAD_INPUT
    return caught.value.message


def _request(shape: list[int], data: object) -> bytes:
    tensor = {"name": "x", "datatype": "FP32", "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def test_json_too_deep_or_numbers_too_long_are_bad_input() -> None:
    deep = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":'
    deep += b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    assert "malformed JSON" in _bad(deep)
    huge_number = _request([1], [0]).replace(b"[0]", b"[" + b"9" * 5000 + b"]")
    assert "malformed JSON" in _bad(huge_number)


@pytest.mark.parametrize(
    "shape",
    [[1] * 70, [0, 10**30], [0, 2**40, 2**40], [2**63]],
    ids=["too-many-dims", "dim-beyond-int64", "too-big", "int64-max"],
)
def test_shapes_numpy_cannot_build_are_bad_input(shape: list[int]) -> None:
    assert "shape" in _bad(_request(shape, [1] if 0 not in shape else []))
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    ).encode()
    assert "shape" in _bad(header, str(len(header)))


def test_an_empty_outputs_list_asks_for_every_output() -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": []}
    ).encode()
    request = decode_request(body, None)
    encoded = encode_response("m", "1", request, {"y": np.ones(1, np.float32)}, {"y": "FP32"})
    assert [o["name"] for o in json.loads(encoded.body)["outputs"]] == ["y"]


@pytest.mark.parametrize(
    ("parameters", "where"),
    [
        ({"parameters": {"binary_data_output": "yes"}}, "binary_data_output"),
        ({"outputs": [{"name": "y", "parameters": {"binary_data": "no"}}]}, "binary_data"),
    ],
)
def test_binary_flags_must_be_booleans(parameters: dict[str, object], where: str) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
    assert where in _bad(json.dumps({**body, **parameters}).encode())


def test_duplicate_requested_outputs_are_bad_input() -> None:
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
        "outputs": [{"name": "y"}, {"name": "y", "parameters": {"binary_data": True}}],
    }
    assert "'y' requested twice" in _bad(json.dumps(body).encode())
