"""POST .../infer over HTTP as a bare ASGI app: the one hot path.

It parses the request headers in one pass, reads the body (bounded, optionally
compressed), hands it to the data plane (dataplane.py, which knows no HTTP), and writes
the answer (compressed when the client accepts it), with no framework layer in between;
every failure maps to its status through one table (responses.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .compression import MIN_COMPRESSED_BYTES, decode_body, encode_body, response_encoding
from .dataplane import DataPlane
from .errors import ClientDisconnected, RuntimeServingError, bad_input
from .protocol import HEADER_LENGTH
from .responses import error_response

_HEADER_LENGTH = HEADER_LENGTH.encode()


async def _read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise bad_input(f"request body too large: {int(declared)} bytes, the limit is {limit}")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise bad_input(f"request body too large: the limit is {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _until_disconnected(receive: Receive) -> None:
    # The body has been read whole, so the server's next message is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


class InferEndpoint:
    """POST .../infer as a bare ASGI app: the one hot path, kept free of framework layers.

    Starlette routes it like any endpoint (and answers other methods with 405); the
    `FastInfer` front door calls it directly, which is the same code without the routing
    and middleware cost that would otherwise rival a small model's forward pass.
    """

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope["path_params"]
        await self.handle(params["name"], params.get("version"), scope, receive, send)

    async def handle(
        self, name: str, version: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        request = _InferHeaders.read(scope)
        try:
            status, body, headers = await self._infer(name, version, request, receive)
        except ClientDisconnected:
            return  # nobody to answer
        if request.accept_encoding is not None:
            body, headers = _compressed(body, headers, request.accept_encoding)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _infer(
        self, name: str, version: str | None, request: _InferHeaders, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        limit = self.dataplane.service.settings.max_request_bytes

        async def body() -> bytes:
            raw = await _read_body(receive, request.content_length, limit)
            if request.content_encoding is None:
                return raw
            return decode_body(raw, request.content_encoding, limit)

        try:
            encoded = await self.dataplane.infer(
                name, version, body, request.header_length, lambda: _until_disconnected(receive)
            )
        except RuntimeServingError as exc:
            return self._error(exc)
        length = str(len(encoded.body)).encode()
        if encoded.json_length is None:
            return (
                200,
                encoded.body,
                [(b"content-type", b"application/json"), (b"content-length", length)],
            )
        return (
            200,
            encoded.body,
            [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", length),
                (_HEADER_LENGTH, str(encoded.json_length).encode()),
            ],
        )

    @staticmethod
    def _error(error: RuntimeServingError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        response = error_response(error)
        return response.status_code, bytes(response.body), response.raw_headers


@dataclass(frozen=True)
class _InferHeaders:
    """The request headers the infer path reads, found in one pass over them."""

    content_length: bytes | None = None
    header_length: str | None = None  # Inference-Header-Content-Length
    content_encoding: bytes | None = None
    accept_encoding: bytes | None = None

    @classmethod
    def read(cls, scope: Scope) -> _InferHeaders:
        found: dict[str, Any] = {}
        for key, value in scope["headers"]:
            if key == b"content-length":
                found["content_length"] = value
            elif key == _HEADER_LENGTH:
                found["header_length"] = value.decode("latin-1")
            elif key == b"content-encoding":
                found["content_encoding"] = value
            elif key == b"accept-encoding":
                found["accept_encoding"] = value
        return cls(**found)


def _compressed(
    body: bytes, headers: list[tuple[bytes, bytes]], accept_encoding: bytes
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The response compressed as the client accepts, when it is large enough to gain.

    Inference-Header-Content-Length keeps counting the uncompressed JSON header, as
    Triton does: the client decompresses first, then splits the body.
    """
    encoding = response_encoding(accept_encoding)
    if encoding is None or len(body) < MIN_COMPRESSED_BYTES:
        return body, headers
    body = encode_body(body, encoding)
    headers = [(k, v) for k, v in headers if k != b"content-length"]
    headers += [
        (b"content-encoding", encoding.value.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    return body, headers


class FastInfer:
    """Sends POST /v2/models/{name}[/versions/{version}]/infer straight to the endpoint;
    everything else goes through the Starlette app."""

    def __init__(self, app: ASGIApp, endpoint: InferEndpoint) -> None:
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            parts = scope["path"].split("/")
            # ["", "v2", "models", name, "infer"] or [..., name, "versions", version, "infer"]
            if parts[-1] == "infer" and parts[1:3] == ["v2", "models"] and all(parts[3:-1]):
                if len(parts) == 5:
                    await self.endpoint.handle(parts[3], None, scope, receive, send)
                    return
                if len(parts) == 7 and parts[4] == "versions":
                    await self.endpoint.handle(parts[3], parts[5], scope, receive, send)
                    return
        await self.app(scope, receive, send)
