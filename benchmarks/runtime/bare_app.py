"""The bare handler: the runtime's forward pass behind the least Python that answers the
benchmark's request (binary tensor in, binary tensor out), on uvicorn like the echo floor.

No validation, no metrics, no batching, no error handling: it is not a server anyone should
run, but it shows what the HTTP floor plus one forward pass costs in the same conditions,
and so how much of the runtime's latency its own protocol handling adds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from modelplane_runtime.model import LoadedModel

_MODEL = LoadedModel.load(Path(os.environ["BARE_MODEL_DIR"]) / "metadata.json")
_INPUT = _MODEL.metadata.inputs[0]
_OUTPUT = _MODEL.metadata.outputs[0]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    json_length = int(dict(scope["headers"])[b"inference-header-content-length"])
    shape = json.loads(body[:json_length])["inputs"][0]["shape"]
    x = np.frombuffer(body[json_length:], dtype=np.float32).reshape(shape).copy()
    out = _MODEL.predict({_INPUT.name: x})[_OUTPUT.name]
    chunk = out.tobytes()
    entry = {"name": _OUTPUT.name, "datatype": _OUTPUT.datatype, "shape": list(out.shape)}
    entry["parameters"] = {"binary_data_size": len(chunk)}
    header = json.dumps({"model_name": "bare", "outputs": [entry]}).encode()
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(header) + len(chunk)).encode()),
        (b"inference-header-content-length", str(len(header)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": header + chunk})
