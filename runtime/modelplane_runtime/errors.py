"""The runtime's one error type; the HTTP layer maps its kind to a status code."""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """Why a request or a load failed, independent of the transport."""

    BAD_INPUT = "bad_input"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    NOT_READY = "not_ready"
    INTERNAL = "internal"


class RuntimeServingError(Exception):
    """An error with a user-facing message and a kind that decides the response status."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def bad_input(message: str) -> RuntimeServingError:
    """An error caused by the request (answered with 400)."""
    return RuntimeServingError(ErrorKind.BAD_INPUT, message)


class ClientDisconnected(Exception):
    """The client went away before its answer was ready: there is no one to answer."""
