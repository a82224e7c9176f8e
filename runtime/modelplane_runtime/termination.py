"""The termination message: the line Kubernetes shows for a container that exited.

Kubelet mounts `/dev/termination-log` into every container and copies what it holds into
the pod's status (`lastState.terminated.message`), where `kubectl describe pod` and the
operator's status read it. Outside Kubernetes the file does not exist and nothing is
written, unless a path is given explicitly.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PATH = Path("/dev/termination-log")
MAX_BYTES = 4096  # what kubelet keeps of it


def write_termination_message(message: str, explicit_path: str | None = None) -> None:
    """Best effort: nothing here may raise, or the failure being reported would be lost."""
    try:
        path = Path(explicit_path) if explicit_path else DEFAULT_PATH
        if not (explicit_path or path.exists()):
            return
        # Undecodable file names arrive as lone surrogates: escape them, and cut on a
        # character boundary so the API server gets valid UTF-8.
        text = message.strip().encode("utf-8", "backslashreplace")[: MAX_BYTES - 1]
        path.write_text(text.decode("utf-8", "ignore") + "\n", encoding="utf-8")
    except Exception:
        return
