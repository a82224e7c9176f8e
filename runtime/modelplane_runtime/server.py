"""The runtime's ASGI application and process: routes, data plane and model lifecycle
put together, served by uvicorn until SIGTERM (then drain) or a model that cannot load."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route
from starlette.types import ASGIApp

from .config import Settings
from .dataplane import DataPlane
from .fastpath import FastInfer, InferEndpoint
from .lifecycle import ModelService
from .routes import BearerAuth, CloseWhileDraining, Routes, http_error

log = logging.getLogger(__name__)


def create_app(settings: Settings, service: ModelService | None = None) -> ASGIApp:
    """The ASGI application; the model loads in the background after startup."""
    service = service or ModelService(settings)
    routes = Routes(service)
    infer = InferEndpoint(DataPlane(service))

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
        exception_handlers={HTTPException: http_error},
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
