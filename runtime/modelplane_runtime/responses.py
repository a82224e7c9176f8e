"""The one table from error kinds to HTTP status codes, and the ``{"error"}`` body."""

from __future__ import annotations

from starlette.responses import JSONResponse

from .errors import ErrorKind, RuntimeServingError

STATUS = {
    ErrorKind.BAD_INPUT: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.NOT_READY: 503,
    ErrorKind.INTERNAL: 500,
}


def error_response(error: RuntimeServingError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=STATUS[error.kind])
