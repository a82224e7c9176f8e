"""The termination message: the line Kubernetes shows for a container that exited.

Kubelet mounts `/dev/termination-log` into every container and copies what it holds into
the pod's status (`lastState.terminated.message`), where `kubectl describe pod` and the
operator's status read it. Outside Kubernetes the file does not exist and nothing is
written, unless a path is given explicitly.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

DEFAULT_PATH = Path("/dev/termination-log")
MAX_BYTES = 4096  # what kubelet keeps of it


def write_termination_message(message: str, explicit_path: str | None = None) -> None:
    """Best effort: a failure to write must not hide the failure being reported."""
    path = Path(explicit_path) if explicit_path else DEFAULT_PATH
    if not (explicit_path or path.exists()):
        return
    data = (message.strip() + "\n").encode("utf-8")[:MAX_BYTES]
    with contextlib.suppress(OSError):
        path.write_bytes(data)
