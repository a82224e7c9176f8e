"""A real registry (CNCF distribution, built by hack/build-tools.sh) on 127.0.0.1 for one
test module: TLS from a throwaway CA, optionally htpasswd."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localcluster.paths import BIN_DIR
from localcluster.pki import write_registry_pki
from localcluster.processes import free_port
from localcluster.registries import answers, write_config, write_htpasswd


@dataclass(frozen=True)
class LocalRegistry:
    host: str
    ca_file: Path
    username: str = ""
    password: str = ""

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()


@contextmanager
def local_registry(work: Path, auth: bool = False) -> Iterator[LocalRegistry]:
    binary = BIN_DIR / "registry"
    if not binary.exists():
        raise AssertionError(f"{binary} is missing: run hack/build-tools.sh")
    pki = work / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    write_registry_pki(pki)
    address = f"127.0.0.1:{free_port()}"
    password = write_htpasswd(work / "htpasswd") if auth else ""
    config = write_config(work, "registry", address, pki, work / "htpasswd" if auth else None)
    log = (work / "registry.log").open("wb")
    proc = subprocess.Popen([str(binary), "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not answers(address, pki / "ca.crt"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((work / "registry.log").read_text())
            time.sleep(0.1)
        yield LocalRegistry(address, pki / "ca.crt", "modelplane" if auth else "", password)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
