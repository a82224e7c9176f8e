"""A TorchServe handler for modelplane's artifacts: Open Inference Protocol v2 JSON.

`modelplane package --format mar` bundles this file into the `.mar`, beside `model.pt2`
and `metadata.json`. TorchServe then serves the same program as modelplane's runtime, at
``POST /predictions/<model>`` with the v2 request body, and answers the v2 response body.

Self-contained on purpose (torch and the standard library only): the archive must load
in any TorchServe image, not only in modelplane's, so nothing of modelplane is imported.
Bad input gets HTTP 400 and ``{"error": ...}``, as from modelplane's runtime.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch

METADATA_FILE = "metadata.json"
DTYPES = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "BF16": torch.bfloat16,
    "FP32": torch.float32,
    "FP64": torch.float64,
}
DATATYPES = {dtype: name for name, dtype in DTYPES.items()}


class BadRequest(ValueError):
    """The client's request cannot be run: answered with 400."""


def _load_metadata(model_dir: str) -> dict[str, Any]:
    with open(os.path.join(model_dir, METADATA_FILE), encoding="utf-8") as source:
        meta: dict[str, Any] = json.load(source)
    if meta.get("quantization"):
        # int8 programs call modelplane's own operators, registered by its runtime.
        raise RuntimeError(
            f"this artifact is {meta['quantization']} quantized, which only modelplane's "
            "runtime serves; package it without --quantize for TorchServe"
        )
    return meta


def _body(request: dict[str, Any]) -> dict[str, Any]:
    raw = request.get("body", request.get("data"))
    if isinstance(raw, (bytes, bytearray, str)):  # TorchServe decodes only some types
        try:
            raw = json.loads(raw.decode("utf-8") if not isinstance(raw, str) else raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadRequest("the body must be a JSON object with 'inputs'")
    return raw


def _shape_fits(spec: list[int], shape: list[int]) -> bool:
    return len(spec) == len(shape) and all(s in (-1, d) for s, d in zip(spec, shape, strict=True))


def _values_fit(data: list[Any], datatype: str) -> bool:
    """Each value is a scalar of the datatype's kind and range, as modelplane's runtime
    checks: no float truncated to an integer, no 2 taken for a boolean, no nested list."""
    if datatype == "BOOL":
        return all(isinstance(v, bool) for v in data)
    if datatype.startswith(("INT", "UINT")):
        info = torch.iinfo(DTYPES[datatype])
        return all(
            isinstance(v, int) and not isinstance(v, bool) and info.min <= v <= info.max
            for v in data
        )
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data)


def _tensor(raw: Any, spec: dict[str, Any]) -> torch.Tensor:
    name = spec["name"]
    if not isinstance(raw, dict):
        raise BadRequest(f"input {name!r} must be an object")
    shape, datatype, data = raw.get("shape"), raw.get("datatype"), raw.get("data")
    if datatype != spec["datatype"]:
        wanted = spec["datatype"]
        raise BadRequest(f"input {name!r}: datatype {datatype!r}, the model takes {wanted}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise BadRequest(f"input {name!r}: shape must be a list of integers >= 0")
    if not _shape_fits(spec["shape"], shape):
        raise BadRequest(f"input {name!r}: shape {shape} does not fit the model's {spec['shape']}")
    if not isinstance(data, list) or len(data) != math.prod(shape):
        raise BadRequest(f"input {name!r}: data must be a flat list of {math.prod(shape)} values")
    if not _values_fit(data, datatype):
        raise BadRequest(f"input {name!r}: data holds values that are not {datatype}")
    try:
        return torch.tensor(data, dtype=DTYPES[datatype]).reshape(shape)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BadRequest(f"input {name!r}: {exc}") from None


def _inputs(body: dict[str, Any], specs: list[dict[str, Any]]) -> list[torch.Tensor]:
    given = body.get("inputs")
    if not isinstance(given, list):
        raise BadRequest("'inputs' must be a list of tensors")
    by_name = {t.get("name"): t for t in given if isinstance(t, dict)}
    missing = [s["name"] for s in specs if s["name"] not in by_name]
    unknown = sorted(str(n) for n in set(by_name) - {s["name"] for s in specs})
    if missing or unknown or len(by_name) != len(given):
        raise BadRequest(
            f"the model takes inputs {[s['name'] for s in specs]}; missing {missing}, "
            f"unknown {unknown}"
        )
    return [_tensor(by_name[s["name"]], s) for s in specs]


def _check_batch(tensors: list[torch.Tensor], max_batch_size: int) -> None:
    if max_batch_size > 0 and tensors and tensors[0].shape[0] > max_batch_size:
        rows = tensors[0].shape[0]
        raise BadRequest(f"batch of {rows} rows exceeds max_batch_size {max_batch_size}")


def _output(name: str, tensor: torch.Tensor) -> dict[str, Any]:
    values = tensor.detach().cpu()
    datatype = DATATYPES.get(values.dtype)
    if datatype is None:
        raise ValueError(
            f"output {name!r} has torch dtype {values.dtype}, which has no v2 datatype"
        )
    if values.dtype == torch.bfloat16:
        values = values.float()  # JSON numbers; the datatype still says BF16
    return {
        "name": name,
        "shape": list(values.shape),
        "datatype": datatype,
        "data": values.reshape(-1).tolist(),
    }


class ModelplaneHandler:
    """Loads the exported program once per worker and answers each request in a batch."""

    def __init__(self) -> None:
        self.program: Any = None
        self.device = torch.device("cpu")
        self.meta: dict[str, Any] = {}
        self.model_name = ""
        self.model_version = ""

    def initialize(self, context: Any) -> None:
        model_dir = context.system_properties["model_dir"]
        self.meta = _load_metadata(model_dir)
        artifact = os.path.join(model_dir, self.meta.get("artifact", "model.pt2"))
        # TorchServe gives a worker its GPU (gpu_id) when the pod has GPUs.
        gpu = context.system_properties.get("gpu_id")
        use_gpu = gpu is not None and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{gpu}" if use_gpu else "cpu")
        self.program = torch.export.load(artifact).module().to(self.device)
        manifest = getattr(context, "manifest", None) or {}
        model = manifest.get("model", {})
        # The name it was registered by (`--models NAME=file.mar`), which clients use.
        self.model_name = getattr(context, "model_name", "") or model.get("modelName", "")
        self.model_version = str(model.get("modelVersion", ""))

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[dict[str, Any]]:
        return [self._answer(request, index, context) for index, request in enumerate(data)]

    def _answer(self, request: dict[str, Any], index: int, context: Any) -> dict[str, Any]:
        try:
            body = _body(request)
            tensors = _inputs(body, self.meta["inputs"])
            _check_batch(tensors, int(self.meta.get("max_batch_size", 0)))
        except BadRequest as exc:
            context.set_response_status(400, "Bad Request", idx=index)
            return {"error": str(exc)}
        try:
            with torch.inference_mode():
                result = self.program(*(t.to(self.device) for t in tensors))
            outputs = result if isinstance(result, (list, tuple)) else (result,)
            names = [s["name"] for s in self.meta["outputs"]]
            encoded = [_output(n, t) for n, t in zip(names, outputs, strict=False)]
        except Exception as exc:  # the program's own failure, not the client's input
            context.set_response_status(500, "Internal Server Error", idx=index)
            return {"error": f"model failed: {' '.join(str(exc).split())[:500]}"}
        answer: dict[str, Any] = {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "outputs": encoded,
        }
        if "id" in body:
            answer["id"] = body["id"]
        return answer


_service = ModelplaneHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[dict[str, Any]] | None:
    """TorchServe's entry point for a module handler (called with None to initialise)."""
    if _service.program is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
