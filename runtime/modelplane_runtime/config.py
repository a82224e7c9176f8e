"""Runtime settings, read from the environment the operator sets (MODELPLANE_*)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable has a value the runtime cannot use."""


def _int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{key} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{key} must be true or false, got {raw!r}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the server needs; `from_env` documents the variables."""

    model_name: str = "model"
    model_version: str = "1"
    model_dir: Path = Path("/mnt/models")
    host: str = "0.0.0.0"
    port: int = 8080
    device: str = "cpu"
    precision: str = "float32"
    batching: bool = False
    max_batch_size: int = 32
    max_queue_delay_ms: int = 5
    max_request_bytes: int = 64 << 20
    auth_token: str = ""
    # SIGTERM first turns readiness off and closes keep-alive connections for this long,
    # while endpoints and kube-proxy stop sending new requests; then the graceful
    # shutdown waits up to drain_timeout_s for requests in flight. Together they stay
    # under the pod's default 30 s grace period.
    drain_delay_s: float = 5.0
    drain_timeout_s: int = 20
    access_log: bool = False
    # Triton's --exit-on-error: a model that cannot load ends the process, with the reason
    # as its termination message, so Kubernetes (and the operator) report it.
    exit_on_error: bool = True
    termination_log: str = ""  # "" is /dev/termination-log where it exists

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        token = env.get("MODELPLANE_AUTH_TOKEN", "").strip()
        token_file = env.get("MODELPLANE_AUTH_TOKEN_FILE", "").strip()
        if token_file and not token:
            try:
                token = Path(token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"MODELPLANE_AUTH_TOKEN_FILE: {exc}") from None
        return cls(
            model_name=env.get("MODELPLANE_MODEL_NAME", "model") or "model",
            model_version=env.get("MODELPLANE_MODEL_VERSION", "1") or "1",
            model_dir=Path(env.get("MODELPLANE_MODEL_DIR", "/mnt/models")),
            host=env.get("MODELPLANE_HOST", "0.0.0.0"),
            port=_int(env, "MODELPLANE_PORT", 8080, minimum=0),
            device=env.get("MODELPLANE_DEVICE", "cpu").strip().lower() or "cpu",
            precision=env.get("MODELPLANE_PRECISION", "float32").strip().lower() or "float32",
            batching=_bool(env, "MODELPLANE_BATCHING", False),
            max_batch_size=_int(env, "MODELPLANE_MAX_BATCH_SIZE", 32, minimum=1),
            max_queue_delay_ms=_int(env, "MODELPLANE_MAX_QUEUE_DELAY_MS", 5),
            max_request_bytes=_int(env, "MODELPLANE_MAX_REQUEST_BYTES", 64 << 20, minimum=1),
            auth_token=token,
            drain_delay_s=float(_int(env, "MODELPLANE_DRAIN_DELAY_S", 5)),
            drain_timeout_s=_int(env, "MODELPLANE_DRAIN_TIMEOUT_S", 20),
            access_log=_bool(env, "MODELPLANE_ACCESS_LOG", False),
            exit_on_error=_bool(env, "MODELPLANE_EXIT_ON_ERROR", True),
            termination_log=env.get("MODELPLANE_TERMINATION_LOG", "").strip(),
        )
