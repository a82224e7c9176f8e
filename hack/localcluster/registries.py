"""The local cluster's OCI registries: CNCF distribution's ``registry``, built from its Go
modules (hack/build-tools.sh), serving TLS on node-0's address.

Two of them, as a cluster with a private registry has: ``registry`` takes anyone,
``registry-auth`` wants the htpasswd user written to ``registries.json`` (for
imagePullSecrets tests). Both use the cluster CA's certificate; containerd trusts it
through its hosts directory, the tests and the operator through the CA file. Storage
lives in the cluster's folder: models pushed in one cluster are gone with it.
"""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import addresses
from .components import Component, Site
from .processes import run

NAMES = ("registry", "registry-auth")
USER = "modelplane"


@dataclass(frozen=True)
class RegistryInfo:
    """What a test or the operator needs to use one registry."""

    host: str  # host:port
    ca_file: Path
    username: str = ""
    password: str = ""


def registries(c: Site) -> dict[str, RegistryInfo]:
    """The running cluster's registries by name (empty without a real node)."""
    path = c.dir / "registry" / "registries.json"
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {
        name: RegistryInfo(**{**info, "ca_file": Path(info["ca_file"])})
        for name, info in raw.items()
    }


def host(c: Site, name: str) -> str:
    return f"{addresses.NODE_IP}:{c.port(name)}"


def _config(c: Site, name: str) -> Path:
    root = c.dir / "registry"
    storage = root / name / "data"
    storage.mkdir(parents=True, exist_ok=True)
    auth = ""
    if name == "registry-auth":
        auth = f"""auth:
  htpasswd:
    realm: modelplane-local
    path: {root / "htpasswd"}
"""
    config = root / f"{name}.yml"
    config.write_text(
        f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {host(c, name)}
  tls:
    certificate: {c.pki / "registry.crt"}
    key: {c.pki / "registry.key"}
{auth}"""
    )
    return config


def _prepare(c: Site) -> None:
    root = c.dir / "registry"
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    # bcrypt, as distribution's htpasswd reader wants (apache2-utils' htpasswd -B).
    line = run("htpasswd", "-Bbn", USER, password).strip()
    (root / "htpasswd").write_text(line + "\n")
    ca = str(c.pki / "ca.crt")
    info = {
        "registry": {"host": host(c, "registry"), "ca_file": ca},
        "registry-auth": {
            "host": host(c, "registry-auth"),
            "ca_file": ca,
            "username": USER,
            "password": password,
        },
    }
    path = root / "registries.json"
    path.write_text(json.dumps(info, indent=2))
    path.chmod(0o600)
    for name in NAMES:
        _config(c, name)


def _answers(c: Site, name: str) -> bool:
    """GET /v2/ answers (200 open, 401 for the htpasswd one) over TLS the CA signed."""
    context = ssl.create_default_context(cafile=str(c.pki / "ca.crt"))
    try:
        with urllib.request.urlopen(f"https://{host(c, name)}/v2/", timeout=2, context=context):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


def _command(name: str):  # type: ignore[no-untyped-def]
    def command(c: Site) -> list[str]:
        return [c.binary("registry"), "serve", str(c.dir / "registry" / f"{name}.yml")]

    return command


def containerd_hosts(c: Site, hosts_dir: Path) -> None:
    """containerd's hosts.toml for each registry: its CA, so kubelet pulls over TLS."""
    for name in NAMES:
        address = host(c, name)
        folder = hosts_dir / address
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(
            f'server = "https://{address}"\n\n[host."https://{address}"]\n'
            f'  capabilities = ["pull", "resolve"]\n  ca = "{c.pki / "ca.crt"}"\n'
        )


COMPONENTS = (
    Component("registry", _command("registry"), prepare=_prepare,
              ready=lambda c: _answers(c, "registry"), ports=("registry",)),
    Component("registry-auth", _command("registry-auth"),
              ready=lambda c: _answers(c, "registry-auth"), ports=("registry-auth",)),
)  # fmt: skip
