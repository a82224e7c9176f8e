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
from collections.abc import Callable
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
    return {n: RegistryInfo(**{**i, "ca_file": Path(i["ca_file"])}) for n, i in raw.items()}


def host(c: Site, name: str) -> str:
    return f"{addresses.NODE_IP}:{c.port(name)}"


def distribution_config(
    storage: Path,
    address: str,
    pki: Path | None = None,
    htpasswd: Path | None = None,
    read_only: bool = False,
) -> str:
    """distribution's configuration: filesystem storage (deletes allowed), TLS with the
    pki folder's registry certificate or plain HTTP, htpasswd or none, read-only or not."""
    maintenance = "  maintenance:\n    readonly:\n      enabled: true\n" if read_only else ""
    tls = ""
    if pki is not None:
        tls = f"  tls:\n    certificate: {pki / 'registry.crt'}\n    key: {pki / 'registry.key'}\n"
    auth = ""
    if htpasswd is not None:
        auth = f"auth:\n  htpasswd:\n    realm: modelplane-local\n    path: {htpasswd}\n"
    return f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
{maintenance}http:
  addr: {address}
{tls}{auth}"""


def write_config(root: Path, name: str, address: str, pki: Path, htpasswd: Path | None) -> Path:
    """One cluster registry's configuration: storage under root, TLS, htpasswd or none."""
    storage = root / name / "data"
    storage.mkdir(parents=True, exist_ok=True)
    config = root / f"{name}.yml"
    config.write_text(distribution_config(storage, address, pki, htpasswd))
    return config


def write_htpasswd(path: Path, user: str = USER) -> str:
    """A bcrypt htpasswd file (apache2-utils' htpasswd -B, as distribution wants); the password."""
    password = secrets.token_urlsafe(18)
    path.write_text(run("htpasswd", "-Bbn", user, password).strip() + "\n")
    path.chmod(0o600)
    return password


def answers(address: str, ca_file: Path) -> bool:
    """GET /v2/ answers (200 open, 401 for the htpasswd one) over TLS the CA signed."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(f"https://{address}/v2/", timeout=2, context=context):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except OSError:
        return False


def _prepare(c: Site) -> None:
    root = c.dir / "registry"
    root.mkdir(parents=True, exist_ok=True)
    password = write_htpasswd(root / "htpasswd")
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
    write_config(root, "registry", host(c, "registry"), c.pki, None)
    write_config(root, "registry-auth", host(c, "registry-auth"), c.pki, root / "htpasswd")


def _command(name: str) -> Callable[[Site], list[str]]:
    def command(c: Site) -> list[str]:
        return [c.binary("registry"), "serve", str(c.dir / "registry" / f"{name}.yml")]

    return command


def _ready(name: str) -> Callable[[Site], bool]:
    return lambda c: answers(host(c, name), c.pki / "ca.crt")


def containerd_hosts(c: Site, hosts_dir: Path) -> None:
    """containerd's hosts.toml for each registry: its CA, so the kubelet pulls over TLS."""
    for name in NAMES:
        address = host(c, name)
        folder = hosts_dir / address
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(
            f'server = "https://{address}"\n\n[host."https://{address}"]\n'
            f'  capabilities = ["pull", "resolve"]\n  ca = "{c.pki / "ca.crt"}"\n'
        )


COMPONENTS = (
    Component("registry", _command("registry"), prepare=_prepare, ready=_ready("registry"),
              ports=("registry",)),
    Component("registry-auth", _command("registry-auth"), ready=_ready("registry-auth"),
              ports=("registry-auth",), binary="registry"),
)  # fmt: skip
