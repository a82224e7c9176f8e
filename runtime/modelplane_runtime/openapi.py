"""The OpenAPI 3.1 document for the REST surface (served at /v2/openapi.json)."""

from __future__ import annotations

from typing import Any

from . import __version__


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _op(summary: str, ok: str, errors: tuple[int, ...], **extra: Any) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK", "content": _json(ok)}}
    for code in errors:
        responses[str(code)] = {"description": _ERRORS[code], "content": _json("Error")}
    return {"summary": summary, "responses": responses, **extra}


_ERRORS = {
    400: "Bad input: shape, datatype, malformed JSON or a body over the size limit",
    401: "Missing or wrong bearer token (only when MODELPLANE_AUTH_TOKEN is set)",
    404: "Unknown model or version",
    503: "The model is not ready (waiting for files, loading, warming up or failed)",
}

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                "INT64", "FP16", "FP32", "FP64", "BYTES",
            ],
        },
        "parameters": {"type": "object"},
        "data": {"description": "Row-major values, flat or nested; absent for binary data"},
    },
}  # fmt: skip


def openapi_document(model_name: str) -> dict[str, Any]:
    """Describe the v2 REST routes; the binary extension is noted on the infer operation."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"modelplane runtime serving {model_name!r}",
            "version": __version__,
            "description": "Open Inference Protocol v2 (KServe v2 / Triton HTTP) REST API",
        },
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }


def _paths() -> dict[str, Any]:
    name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    infer = _op(
        "Run inference",
        "InferResponse",
        (400, 401, 404, 503),
        description=(
            "JSON body, or with the `Inference-Header-Content-Length` header a JSON header "
            "of that many bytes followed by binary tensors (binary tensor data extension)."
        ),
        requestBody={"required": True, "content": _json("InferRequest")},
    )
    return {
        "/v2/health/live": {"get": _op("Server liveness", "Live", ())},
        "/v2/health/ready": {"get": _op("Server readiness", "Ready", (503,))},
        "/v2": {"get": _op("Server metadata", "ServerMetadata", (401,))},
        "/v2/models/{name}": {
            "get": _op("Model metadata", "ModelMetadata", (401, 404, 503)),
            "parameters": [name],
        },
        "/v2/models/{name}/versions/{version}": {
            "get": _op("Model version metadata", "ModelMetadata", (401, 404, 503)),
            "parameters": [name, version],
        },
        "/v2/models/{name}/ready": {
            "get": _op("Model readiness", "Ready", (404, 503)),
            "parameters": [name],
        },
        "/v2/models/{name}/versions/{version}/ready": {
            "get": _op("Model version readiness", "Ready", (404, 503)),
            "parameters": [name, version],
        },
        "/v2/models/{name}/infer": {"post": infer, "parameters": [name]},
        "/v2/models/{name}/versions/{version}/infer": {
            "post": infer,
            "parameters": [name, version],
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text format"}},
            }
        },
    }


def _schemas() -> dict[str, Any]:
    tensor_list = {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}}
    return {
        "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
        "Live": {"type": "object", "properties": {"live": {"type": "boolean"}}},
        "Ready": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        "ServerMetadata": {"type": "object"},
        "ModelMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": tensor_list,
                "outputs": tensor_list,
            },
        },
        "Tensor": _TENSOR,
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": tensor_list,
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
        "InferResponse": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": tensor_list,
            },
        },
    }
