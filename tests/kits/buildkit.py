"""Small images built inside a test, with buildah, on the base image `make images`
made (Debian's Python, no Docker Hub), and pushed to one of the cluster's registries."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from localcluster.paths import CACHE_DIR

BUILDAH_ROOT = CACHE_DIR / "buildah" / "root"  # hack/images.sh's storage
RUNROOT = "/run/modelplane-buildah"
BASE_PREFIX = "localhost/modelplane/python:"


def buildah(*args: str) -> str:
    command = ["buildah", "--storage-driver", "overlay", "--root", str(BUILDAH_ROOT),
               "--runroot", RUNROOT, *args]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def base_image() -> str:
    names = buildah("images", "--format", "{{.Name}}:{{.Tag}}").split()
    bases = sorted(n for n in names if n.startswith(BASE_PREFIX))
    if not bases:
        raise AssertionError("no base image in buildah's storage: run make images")
    return bases[-1]


def python_server_image(script: Path, tag: str, port: int) -> str:
    """An image that runs ``script`` with the base image's python3, as uid 1000."""
    container = buildah("from", base_image())
    try:
        buildah("copy", container, str(script), "/srv/server.py")
        buildah(
            "config", "--entrypoint", json.dumps(["python3", "/srv/server.py"]),
            "--user", "1000:1000", "--port", str(port), container,
        )  # fmt: skip
        buildah("commit", "--quiet", container, tag)
    finally:
        buildah("rm", container)
    return tag


def push(tag: str, destination: str, ca_file: Path, work: Path) -> None:
    """Push to ``destination`` (host:port/repo:tag) over TLS the cluster CA signed."""
    certs = work / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca_file, certs / "ca.crt")
    buildah("push", "--quiet", "--cert-dir", str(certs), tag, f"docker://{destination}")
