"""TorchServe 0.12 handler for the same .pt2 artifact, behind its JSON prediction API.

A request body is {"data": [[...], ...]} (rows); with TorchServe's batching, `data` holds
several requests and each gets its own rows back.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

_module: Any = None


def _load(context: Any) -> Any:
    global _module
    if _module is None:
        model_dir = context.system_properties.get("model_dir")
        _module = torch.export.load(os.path.join(model_dir, "model.pt2")).module()
    return _module


def handle(data: Any, context: Any) -> list[Any] | None:
    module = _load(context)
    if data is None:
        return None
    rows = []
    for request in data:
        body = request.get("body") or request.get("data")
        if isinstance(body, bytes | bytearray):
            body = json.loads(body)
        rows.append(torch.tensor(body["data"], dtype=torch.float32))
    counts = [len(r) for r in rows]
    with torch.inference_mode():
        out = module(torch.cat(rows))
    results = []
    start = 0
    for count in counts:
        results.append({"output0": out[start : start + count].tolist()})
        start += count
    return results
