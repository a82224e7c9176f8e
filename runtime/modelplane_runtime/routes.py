"""The HTTP surface around the data plane: health, metadata, metrics and OpenAPI routes,
bearer authentication, and ``Connection: close`` while draining."""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .errors import ErrorKind, RuntimeServingError
from .lifecycle import ModelService
from .metadata import PLATFORM
from .metrics import Metrics
from .openapi import openapi_document
from .responses import error_response


class CloseWhileDraining:
    """While draining, every response says ``Connection: close``: a client on a kept-alive
    connection then reconnects, and the Service sends it to a pod that is not leaving."""

    def __init__(self, app: ASGIApp, service: ModelService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.service.draining or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, closing)


class Routes:
    """Handlers; each one is thin and turns RuntimeServingError into its status code."""

    def __init__(self, service: ModelService) -> None:
        self.service = service

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def server_ready(self, request: Request) -> Response:
        try:
            self.service.require_ready()
            self.service.check_not_draining()
        except RuntimeServingError as exc:
            return error_response(exc)
        return JSONResponse({"ready": True})

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(
            {"name": "modelplane", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    def _name(self, request: Request) -> tuple[str, str | None]:
        params = request.path_params
        name, version = params["name"], params.get("version")
        self.service.check_name(name, version)
        return name, version

    async def model_ready(self, request: Request) -> Response:
        try:
            self._name(request)
            self.service.require_ready()
            self.service.check_not_draining()
        except RuntimeServingError as exc:
            return error_response(exc)
        return JSONResponse({"name": self.service.settings.model_name, "ready": True})

    async def model_metadata(self, request: Request) -> Response:
        try:
            name, _ = self._name(request)
            model, _ = self.service.require_ready()
        except RuntimeServingError as exc:
            return error_response(exc)
        meta = model.metadata
        return JSONResponse(
            {
                "name": name,
                "versions": [self.service.settings.model_version],
                "platform": PLATFORM,
                "inputs": [t.to_json() for t in meta.inputs],
                "outputs": [t.to_json() for t in meta.outputs],
                "parameters": {
                    "max_batch_size": meta.max_batch_size,
                    **({"quantization": meta.quantization} if meta.quantization else {}),
                },
            }
        )

    async def metrics(self, request: Request) -> Response:
        return Response(self.service.metrics.render(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(self.service.settings.model_name))


class BearerAuth:
    """Requires `Authorization: Bearer <token>` on the API; probes and metrics stay open
    because kubelet and Prometheus scrape them without credentials."""

    def __init__(self, app: ASGIApp, token: str, metrics: Metrics) -> None:
        self.app = app
        self.token = token.encode("utf-8")
        self.metrics = metrics

    @staticmethod
    def _open(path: str) -> bool:
        return (
            path.startswith("/v2/health/")
            or path in ("/metrics", "/v2/openapi.json", "/openapi.json")
            or (path.startswith("/v2/models/") and path.endswith("/ready"))
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(presented.strip(), self.token):
            error = RuntimeServingError(ErrorKind.UNAUTHORIZED, "missing or wrong bearer token")
            if scope["path"].endswith("/infer"):
                self.metrics.request_failed(error.kind.value)
            response = error_response(error)
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
