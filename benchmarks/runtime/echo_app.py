"""The HTTP floor: a bare ASGI app on uvicorn that reads the request and answers a canned
response of the same size and format as the runtime's (binary tensor extension)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_BODY = Path(os.environ["ECHO_RESPONSE_FILE"]).read_bytes()
_HEADERS = [
    (b"content-type", b"application/octet-stream"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"inference-header-content-length", os.environ["ECHO_HEADER_LENGTH"].encode()),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})
