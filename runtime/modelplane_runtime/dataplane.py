"""The data plane: one inference request, knowing no HTTP.

Check the model's name, then, counted as in flight: read the body (a callable the
transport gives), decode JSON or binary tensors, validate them against the model's
metadata, run them on the executor (batched or not) and encode the answer. Every
outcome is counted in the metrics; every failure is a RuntimeServingError, which the
transport maps to its status (responses.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from .disconnect import ClientGone
from .errors import ClientDisconnected, ErrorKind, RuntimeServingError
from .lifecycle import ModelService
from .metrics import CANCELLED
from .protocol import EncodedResponse, check_requested_outputs, decode_request, encode_response

log = logging.getLogger(__name__)
BodyReader = Callable[[], Awaitable[bytes]]


class DataPlane:
    def __init__(self, service: ModelService) -> None:
        self.service = service

    async def infer(
        self,
        name: str,
        version: str | None,
        body: BodyReader,
        header_length: str | None,
        client_gone: ClientGone | None = None,
    ) -> EncodedResponse:
        """The encoded answer to one request (``header_length``: the binary extension's
        JSON header size). A client gone before its pass started raises ClientDisconnected."""
        started = time.perf_counter()
        service = self.service
        service.check_name(name, version)  # another model's name: not this model's metric
        try:
            model, executor = service.require_ready()
            with executor.admit():
                decoded = decode_request(await body(), header_length)
                rows = model.validate(decoded.inputs)
                check_requested_outputs(decoded, model.output_datatypes)
                outputs, stats = await executor.run(decoded.inputs, rows, client_gone)
                encoded = encode_response(
                    name, service.settings.model_version, decoded, outputs, model.output_datatypes
                )
        except RuntimeServingError as exc:
            service.metrics.request_failed(exc.kind.value)
            raise
        except ClientDisconnected:
            service.metrics.request_failed(CANCELLED)
            raise
        except Exception as exc:
            # Only a model or runtime fault gets here: every bad input is rejected above.
            log.exception("inference failed")
            service.metrics.request_failed(ErrorKind.INTERNAL.value)
            message = f"inference failed: {type(exc).__name__}"
            raise RuntimeServingError(ErrorKind.INTERNAL, message) from exc
        service.metrics.request_succeeded(time.perf_counter() - started, stats.queue_s)
        return encoded
