"""Open Inference Protocol v2 codec: JSON and binary-extension tensors <-> numpy arrays.

The binary tensor extension is chosen by the `Inference-Header-Content-Length` header,
never by Content-Type, as tritonclient and the KServe client expect.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import bad_input
from .metadata import NUMPY_DTYPES

HEADER_LENGTH = "inference-header-content-length"

Array = np.ndarray[Any, Any]


@dataclasses.dataclass
class InferRequest:
    """A decoded inference request."""

    id: str | None
    inputs: dict[str, Array]
    # None: every output; else name -> whether that output goes back as binary.
    outputs: dict[str, bool] | None
    binary_by_default: bool


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse a request body; every malformed input raises a bad-input error."""
    binary = b""
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError:
            raise bad_input("Inference-Header-Content-Length must be an integer") from None
        if json_len < 0 or json_len > len(body):
            raise bad_input("Inference-Header-Content-Length exceeds the body length")
        body, binary = body[:json_len], body[json_len:]
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and integers past the digit limit;
        # RecursionError, nesting deeper than the parser goes.
        raise bad_input(f"malformed JSON: {type(exc).__name__}: {exc}"[:300]) from None
    if not isinstance(doc, dict):
        raise bad_input("the request body must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise bad_input("'inputs' must be a non-empty list")
    inputs: dict[str, Array] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        name, array, used = _decode_input(raw, index, binary, offset)
        if name in inputs:
            raise bad_input(f"input {name!r} appears twice")
        inputs[name] = array
        offset += used
    if offset != len(binary):
        raise bad_input(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    params = _params(doc.get("parameters"), "parameters")
    binary_default = _flag(params, "binary_data_output", False, "parameters")
    outputs: dict[str, bool] | None = None
    raw_outputs = doc.get("outputs")
    # An empty list asks for nothing in particular: every output, as Triton answers.
    if raw_outputs is not None and raw_outputs != []:
        if not isinstance(raw_outputs, list):
            raise bad_input("'outputs' must be a list")
        outputs = {}
        for index, raw in enumerate(raw_outputs):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise bad_input(f"outputs[{index}] must be an object with a string 'name'")
            out_params = _params(raw.get("parameters"), f"outputs[{index}].parameters")
            if raw["name"] in outputs:
                raise bad_input(f"output {raw['name']!r} requested twice")
            where = f"outputs[{index}].parameters"
            outputs[raw["name"]] = _flag(out_params, "binary_data", binary_default, where)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_input("'id' must be a string")
    return InferRequest(request_id, inputs, outputs, binary_default)


def _flag(params: dict[str, Any], key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise bad_input(f"{where}.{key} must be true or false, got {value!r}"[:200])
    return value


def _params(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise bad_input(f"{where} must be an object")
    return raw


def _decode_input(raw: Any, index: int, binary: bytes, offset: int) -> tuple[str, Array, int]:
    where = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise bad_input(f"{where} must be an object")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise bad_input(f"{where}.name must be a non-empty string")
    if not isinstance(datatype, str) or datatype not in NUMPY_DTYPES:
        raise bad_input(f"input {name!r}: unsupported datatype {datatype!r}")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad_input(f"input {name!r}: shape must be a list of non-negative integers")
    count = math.prod(shape)
    params = _params(raw.get("parameters"), f"input {name!r} parameters")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad_input(f"input {name!r}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise bad_input(f"input {name!r}: binary_data_size runs past the end of the body")
        chunk = binary[offset : offset + size]
        return name, _from_binary(name, datatype, shape, count, chunk), size
    if "data" not in raw:
        raise bad_input(f"input {name!r} has neither 'data' nor binary_data_size")
    return name, _from_json(name, datatype, shape, count, raw["data"]), 0


def _from_binary(name: str, datatype: str, shape: list[int], count: int, chunk: bytes) -> Array:
    if datatype == "BYTES":
        items: list[bytes] = []
        pos = 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise bad_input(f"input {name!r}: truncated BYTES element length")
            (length,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + length > len(chunk):
                raise bad_input(f"input {name!r}: truncated BYTES element")
            items.append(chunk[pos : pos + length])
            pos += length
        if len(items) != count:
            raise bad_input(f"input {name!r}: {len(items)} BYTES elements for shape {shape}")
        return _shaped(np.array(items, dtype=np.object_), shape, name)
    dtype = NUMPY_DTYPES[datatype].newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise bad_input(
            f"input {name!r}: {len(chunk)} bytes do not hold shape {shape} of {datatype}"
        )
    # A copy: frombuffer is read-only, and torch warns on non-writable arrays.
    return _shaped(np.frombuffer(chunk, dtype=dtype).astype(NUMPY_DTYPES[datatype]), shape, name)


def _from_json(name: str, datatype: str, shape: list[int], count: int, data: Any) -> Array:
    if datatype == "BYTES":
        flat = _flatten(data, name)
        if len(flat) != count:
            raise bad_input(f"input {name!r}: {len(flat)} elements for shape {shape}")
        items = []
        for item in flat:
            if not isinstance(item, str):
                raise bad_input(f"input {name!r}: BYTES data must be strings")
            items.append(item.encode("utf-8"))
        return _shaped(np.array(items, dtype=np.object_), shape, name)
    try:
        array = np.asarray(data)
    except ValueError as exc:  # ragged nesting
        raise bad_input(f"input {name!r}: {exc}") from None
    if array.size != count:
        raise bad_input(f"input {name!r}: {array.size} elements do not fill shape {shape}")
    kind = array.dtype.kind
    if count and (
        (datatype == "BOOL" and kind != "b")
        or (datatype != "BOOL" and kind not in "iuf")
        or (datatype[:2] in ("IN", "UI") and kind == "f")
    ):
        raise bad_input(f"input {name!r}: data values do not match datatype {datatype}")
    try:
        with np.errstate(over="raise", invalid="raise"):
            converted = array.astype(NUMPY_DTYPES[datatype], casting="unsafe")
        if kind in "iu" and not np.array_equal(converted, array):
            raise FloatingPointError
    except (FloatingPointError, OverflowError):
        raise bad_input(f"input {name!r}: values out of range for {datatype}") from None
    return _shaped(converted, shape, name)


def _shaped(array: Array, shape: list[int], name: str) -> Array:
    # The element count matches already; numpy still refuses some shapes (more than 64
    # dimensions, or sizes past what it can index, such as [0, 10**30]).
    try:
        return array.reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise bad_input(f"input {name!r}: shape {shape} cannot be served: {exc}") from None


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


@dataclasses.dataclass
class EncodedResponse:
    """A response body and, for the binary extension, the JSON header length."""

    body: bytes
    json_length: int | None


def check_requested_outputs(request: InferRequest, model_outputs: Collection[str]) -> None:
    """Refuse outputs the model does not have (before any compute is spent on them)."""
    requested = request.outputs
    if requested is None or all(name in model_outputs for name in requested):
        return  # the common case, on every request: no sorting, no sets
    unknown = sorted(set(requested) - set(model_outputs))
    known = sorted(model_outputs)
    raise bad_input(f"unknown requested outputs {unknown}; model outputs are {known}")


def encode_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, Array],
    datatypes: Mapping[str, str],
) -> EncodedResponse:
    """Serialize outputs: JSON data, or binary chunks after the JSON header where asked."""
    if request.outputs is None:
        wanted: Sequence[tuple[str, bool]] = [(name, request.binary_by_default) for name in outputs]
    else:
        check_requested_outputs(request, outputs)
        wanted = list(request.outputs.items())
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    entries = []
    chunks: list[bytes] = []
    for name, as_binary in wanted:
        array = outputs[name]
        datatype = datatypes[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if as_binary:
            chunk = _to_binary(datatype, array)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = _to_json_data(datatype, array)
        entries.append(entry)
    doc["outputs"] = entries
    header = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    if not chunks:
        return EncodedResponse(header, None)
    return EncodedResponse(header + b"".join(chunks), len(header))


def _to_binary(datatype: str, array: Array) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.reshape(-1):
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _to_json_data(datatype: str, array: Array) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    values: list[Any] = flat.tolist()
    return values
