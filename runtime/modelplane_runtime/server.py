"""HTTP routes of the Open Inference Protocol v2 on Starlette; errors map through one table."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .batcher import DynamicBatcher, Executor
from .compression import MIN_COMPRESSED_BYTES, decode_body, encode_body, response_encoding
from .config import Settings
from .errors import ClientDisconnected, ErrorKind, RuntimeServingError, bad_input
from .metadata import METADATA_FILE, PLATFORM, find_metadata
from .metrics import CANCELLED, Metrics
from .model import LoadedModel, ModelLoadError
from .openapi import openapi_document
from .protocol import HEADER_LENGTH, check_requested_outputs, decode_request, encode_response
from .termination import write_termination_message

log = logging.getLogger(__name__)

STATUS = {
    ErrorKind.BAD_INPUT: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.NOT_READY: 503,
    ErrorKind.INTERNAL: 500,
}
WAIT_FOR_FILES_S = 0.5
# Files written this recently may still be half-written: a load that fails is retried.
SETTLE_S = 2.0
# A folder that holds files but no metadata.json, unchanged this long, is not a model.
NO_METADATA_AFTER_S = 30.0
_HEADER_LENGTH = HEADER_LENGTH.encode()


def error_response(error: RuntimeServingError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=STATUS[error.kind])


def _recently_changed(folder: Path, seconds: float) -> bool:
    """Whether anything directly in `folder` was modified within the last `seconds`."""
    try:
        newest = max((p.stat().st_mtime for p in folder.iterdir()), default=0.0)
    except OSError:
        return False
    return time.time() - newest < seconds


def _not_a_model(model_dir: Path) -> str | None:
    """Why a folder that has files but no metadata.json will never be a model (None while
    it is empty or still changing: the files may be on their way)."""
    if not model_dir.is_dir():
        return None
    children = sorted(model_dir.iterdir())
    if not children or any(
        _recently_changed(folder, NO_METADATA_AFTER_S)
        for folder in (model_dir, *(c for c in children if c.is_dir()))
    ):
        return None
    names = [c.name for c in children]
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return (
        f"found no model in {model_dir}: it holds {shown} but no {METADATA_FILE} (directly or "
        "in its only subfolder); the model URI must point at what `modelplane package` wrote"
    )


class ModelService:
    """The one model this process serves: its loading state, executor and metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model: LoadedModel | None = None
        self.executor: Executor | None = None
        self.ready = False
        self.draining = False  # SIGTERM received: not ready, keep-alive connections close
        self.state = "starting"
        self.exit_code = 0  # what the process exits with once the server has stopped
        self.stop_server: Callable[[], None] = lambda: None  # set by serve()
        gpu = settings.device == "cuda"
        self.metrics = Metrics(settings.model_name, settings.model_version, gpu)

    async def load(self) -> None:
        """Wait for the model files, load, warm up, then turn ready. A failure stays
        not-ready with the reason, and ends the process when exit_on_error is set."""
        settings = self.settings
        try:
            while (path := find_metadata(settings.model_dir)) is None:
                self.state = f"waiting for model files (metadata.json) in {settings.model_dir}"
                not_a_model = _not_a_model(settings.model_dir)
                if not_a_model:
                    self._load_failed(not_a_model)
                    return
                await asyncio.sleep(WAIT_FOR_FILES_S)
        except OSError as exc:
            self._load_failed(f"cannot read the model folder {settings.model_dir}: {exc}")
            return
        while True:
            self.state = "loading"
            try:
                model = await asyncio.to_thread(
                    LoadedModel.load, path, settings.device, settings.precision
                )
                break
            except ModelLoadError as exc:
                if _recently_changed(path.parent, SETTLE_S):
                    # Still being copied in (outside Kubernetes, where no init container
                    # finishes first): a half-written file is no verdict yet.
                    self.state = "waiting for the model files to settle"
                    await asyncio.sleep(SETTLE_S)
                    continue
                self._load_failed(f"failed to load: {exc}")
                return
            except Exception as exc:
                log.exception("model %s failed to load", settings.model_name)
                self._load_failed(f"failed to load: {type(exc).__name__}: {exc}")
                return
        try:
            self.state = "warming up"
            typical_s = await asyncio.to_thread(model.warm_up)
        except Exception as exc:
            log.exception("model %s failed to warm up", settings.model_name)
            self._load_failed(f"failed to warm up: {type(exc).__name__}: {exc}")
            return
        meta = model.metadata
        executor: Executor
        if settings.batching and meta.batched:
            size = min(settings.max_batch_size, meta.max_batch_size)
            delay_s = settings.max_queue_delay_ms / 1000
            executor = DynamicBatcher(model.predict, size, delay_s, typical_s)
        else:
            executor = Executor(model.predict, typical_s)
        executor.on_batch = self.metrics.batch_executed
        self.metrics.count_pending(executor.pending)
        executor.inline_allowed = model.device.type == "cpu"
        await executor.start()
        self.model, self.executor = model, executor
        self.ready = True
        self.state = "ready"
        log.info("model %s version %s is ready", settings.model_name, settings.model_version)

    def _load_failed(self, reason: str) -> None:
        name = self.settings.model_name
        self.state = reason
        log.error("model %s is not ready: %s", name, reason)
        if not self.settings.exit_on_error:
            return
        self.exit_code = 1
        try:
            write_termination_message(f"model {name!r} {reason}", self.settings.termination_log)
            log.error(
                "exiting: the model cannot be served (MODELPLANE_EXIT_ON_ERROR=false keeps "
                "the server up, not ready)"
            )
        finally:
            self.stop_server()

    async def close(self) -> None:
        if self.executor is not None:
            await self.executor.stop()

    def check_name(self, name: str, version: str | None) -> None:
        if name != self.settings.model_name:
            raise RuntimeServingError(ErrorKind.NOT_FOUND, f"unknown model {name!r}")
        if version is not None and version != self.settings.model_version:
            raise RuntimeServingError(
                ErrorKind.NOT_FOUND, f"unknown version {version!r} of model {name!r}"
            )

    def check_not_draining(self) -> None:
        """Readiness only: a draining server still answers inference requests."""
        if self.draining:
            name = self.settings.model_name
            raise RuntimeServingError(ErrorKind.NOT_READY, f"model {name!r} is shutting down")

    def require_ready(self) -> tuple[LoadedModel, Executor]:
        if not self.ready or self.model is None or self.executor is None:
            name = self.settings.model_name
            raise RuntimeServingError(
                ErrorKind.NOT_READY, f"model {name!r} is not ready: {self.state}"
            )
        return self.model, self.executor


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

    def __init__(self, service: ModelService) -> None:
        self.service = service

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
        started = time.perf_counter()
        service = self.service
        try:
            service.check_name(name, version)
        except RuntimeServingError as exc:
            return self._error(exc)
        try:
            model, executor = service.require_ready()
            with executor.admit():
                limit = service.settings.max_request_bytes
                body = await _read_body(receive, request.content_length, limit)
                if request.content_encoding is not None:
                    body = decode_body(body, request.content_encoding, limit)
                decoded = decode_request(body, request.header_length)
                rows = model.validate(decoded.inputs)
                check_requested_outputs(decoded, model.output_datatypes)
                outputs, stats = await executor.run(
                    decoded.inputs, rows, lambda: _until_disconnected(receive)
                )
                encoded = encode_response(
                    name, service.settings.model_version, decoded, outputs, model.output_datatypes
                )
        except RuntimeServingError as exc:
            service.metrics.request_failed(exc.kind.value)
            return self._error(exc)
        except ClientDisconnected:
            service.metrics.request_failed(CANCELLED)
            raise
        except Exception as exc:
            # Only a model or runtime fault gets here: every bad input is rejected above.
            log.exception("inference failed")
            service.metrics.request_failed(ErrorKind.INTERNAL.value)
            return self._error(
                RuntimeServingError(ErrorKind.INTERNAL, f"inference failed: {type(exc).__name__}")
            )
        service.metrics.request_succeeded(time.perf_counter() - started, stats.queue_s)
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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def create_app(settings: Settings, service: ModelService | None = None) -> ASGIApp:
    """The ASGI application; the model loads in the background after startup."""
    service = service or ModelService(settings)
    routes = Routes(service)
    infer = InferEndpoint(service)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        loading = asyncio.create_task(service.load(), name="modelplane-load")
        try:
            yield {}
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await service.close()

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    app = Starlette(
        # The hot route first: Starlette tries routes in order.
        routes=[
            Route(model + "/infer", infer, methods=["POST"]),
            Route(versioned + "/infer", infer, methods=["POST"]),
            Route("/v2/health/live", routes.live),
            Route("/v2/health/ready", routes.server_ready),
            Route("/v2", routes.server_metadata),
            Route(model, routes.model_metadata),
            Route(versioned, routes.model_metadata),
            Route(model + "/ready", routes.model_ready),
            Route(versioned + "/ready", routes.model_ready),
            Route("/metrics", routes.metrics),
            Route("/v2/openapi.json", routes.openapi),
            Route("/openapi.json", routes.openapi),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.service = service
    front: ASGIApp = FastInfer(app, infer)
    if settings.auth_token:
        front = BearerAuth(front, settings.auth_token, service.metrics)
    return CloseWhileDraining(front, service)


def serve(settings: Settings, log_level: str = "info") -> int:
    """Run the server until SIGTERM (then drain) or a model that cannot load; return the
    process's exit code."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """The first SIGTERM drains (service.draining) for drain_delay_s before uvicorn's
        graceful shutdown: a pod stops accepting only after endpoints have moved on."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if service.draining or settings.drain_delay_s <= 0:
                super().handle_exit(sig, frame)
                return
            service.draining = True
            log.info("draining for %.1f s before shutting down", settings.drain_delay_s)
            timer = threading.Timer(
                settings.drain_delay_s, lambda: setattr(self, "should_exit", True)
            )
            timer.daemon = True
            timer.start()

    service = ModelService(settings)
    server = DrainingServer(
        uvicorn.Config(
            create_app(settings, service),
            host=settings.host,
            port=settings.port,
            workers=1,
            log_level=log_level,
            access_log=settings.access_log,
            timeout_graceful_shutdown=settings.drain_timeout_s,
            server_header=False,
        )
    )

    def stop() -> None:
        server.should_exit = True

    service.stop_server = stop
    server.run()
    return service.exit_code
