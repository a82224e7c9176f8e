"""Digests pinned per revision: what a tag meant when the revision was made.

A revision is made once per distinct spec; at that moment the operator asks the registry
what the model's ``oci://`` tag (and, where configured, the runtime image's tag) names,
and the revision's pod template uses the digests. The answer is kept on the revision's
Deployment (the ``modelplane.io/pins`` annotation), so a restarted operator, a
reconcile of an unchanged spec and a rollback to a kept revision ask nothing and write
nothing: the revision serves the bytes it served before, wherever the tag has moved.
"""

from __future__ import annotations

import base64
import enum
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import modelplane_oci as oci
from modelplane_oci.reference import OCI_SCHEME

from .config import OperatorConfig
from .manifests import registry_secrets
from .revisions import Revision, template_hash
from .spec import ModelDeploymentSpec

DOCKER_CONFIG_KEY = ".dockerconfigjson"


class PinReason(enum.StrEnum):
    """Why a revision could not be made (status reasons)."""

    MODEL_NOT_FOUND = "ModelNotFound"
    IMAGE_NOT_FOUND = "ImageNotFound"
    AUTH_FAILED = "RegistryAuthFailed"
    UNREACHABLE = "RegistryUnreachable"


# A user must act on these (push the tag, fix the secret); the others may heal alone.
STALLING = frozenset({PinReason.MODEL_NOT_FOUND, PinReason.IMAGE_NOT_FOUND, PinReason.AUTH_FAILED})


@dataclass(frozen=True)
class Pins:
    """The digest references a revision serves ("" where nothing is pinned)."""

    model: str = ""  # oci://host/repo:tag@sha256:...
    image: str = ""  # host/repo:tag@sha256:...

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("model", self.model), ("image", self.image)) if v}

    @classmethod
    def from_annotation(cls, text: str) -> Pins:
        try:
            raw = json.loads(text) if text else {}
        except ValueError:
            return cls()
        if not isinstance(raw, Mapping):
            return cls()
        return cls(model=str(raw.get("model") or ""), image=str(raw.get("image") or ""))

    def __bool__(self) -> bool:
        return bool(self.model or self.image)


NO_PINS = Pins()


class PinError(Exception):
    def __init__(self, reason: PinReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


SecretReader = Callable[[str, str], Mapping[str, Any] | None]  # (namespace, name) -> Secret


def pin_digest(text: str, digest: str) -> str:
    """``text`` with its digest set (a tag stays for people reading it; the digest wins)."""
    return f"{text.split('@', 1)[0]}@{digest}"


def wants_image_pin(image: str, config: OperatorConfig) -> bool:
    """Whether the operator resolves this image: its registry is configured, and it is in one."""
    try:
        ref = oci.parse_reference(image)
    except oci.ReferenceError:
        return False  # the kubelet will say what is wrong with it
    if ref.digest or ref.local_only:
        return False
    allowed = config.pin_image_registries
    return "*" in allowed or ref.host in allowed


def resolve_pins(
    md: ModelDeploymentSpec, image: str, config: OperatorConfig, secret: SecretReader
) -> tuple[Pins, list[str]]:
    """Ask the registries what the spec's tags name now; (pins, warnings)."""
    pin_model, pin_image = md.uri.startswith(OCI_SCHEME), wants_image_pin(image, config)
    if not (pin_model or pin_image):
        return NO_PINS, []  # no registry asked, no Secret read
    auth = _docker_configs(md, secret)
    model = ""
    if pin_model:
        ref = oci.parse_oci_uri(md.uri)
        digest = _resolve(ref, auth, config, PinReason.MODEL_NOT_FOUND, "model")
        model = pin_digest(md.uri, digest)
    warnings: list[str] = []
    pinned_image = ""
    if pin_image:
        ref = oci.parse_reference(image)
        try:
            pinned_image = pin_digest(
                image, _resolve(ref, auth, config, PinReason.IMAGE_NOT_FOUND, "image")
            )
        except PinError as exc:
            if exc.reason is not PinReason.UNREACHABLE:
                raise
            # The kubelet may still reach a registry the operator cannot: the revision
            # runs by tag, and says so, rather than not at all.
            warnings.append(f"runtime image {image} not pinned: {exc}")
    return Pins(model=model, image=pinned_image), warnings


@dataclass(frozen=True)
class _Auth:
    configs: tuple[Mapping[str, Any], ...]  # the pull secrets' Docker configs
    refused: str = ""  # why a named Secret could not be read (told if the registry asks)


def _resolve(
    ref: oci.Reference, auth: _Auth, config: OperatorConfig, missing: PinReason, what: str
) -> str:
    registry = oci.registry_for(ref, auth.configs, config.registry_ca, config.insecure_registries)
    try:
        return registry.resolve(ref).digest
    except oci.NotFound as exc:
        raise PinError(missing, f"{what} {ref} not found: {exc}") from None
    except oci.AuthFailed as exc:
        raise PinError(
            PinReason.AUTH_FAILED, f"{exc}{'; ' + auth.refused if auth.refused else ''}"
        ) from None
    except oci.Unreachable as exc:
        raise PinError(
            PinReason.UNREACHABLE, f"cannot reach the registry of {ref}: {exc}"
        ) from None
    except oci.RegistryError as exc:
        raise PinError(PinReason.UNREACHABLE, f"{what} {ref}: {exc}") from None


def _docker_configs(md: ModelDeploymentSpec, secret: SecretReader) -> _Auth:
    """The named Secrets' Docker configs; a Secret the operator may not read is skipped
    (an open registry needs none) and remembered for the message."""
    configs, refused = [], ""
    for name in registry_secrets(md):
        try:
            found = secret(md.namespace, name)
        except PinError as exc:
            refused = str(exc)
            continue
        raw = ((found or {}).get("data") or {}).get(DOCKER_CONFIG_KEY)
        if not raw:
            continue  # not a registry secret (a secretRef of S3 keys, say)
        try:
            configs.append(json.loads(base64.b64decode(raw)))
        except ValueError:
            message = f"Secret {name}: {DOCKER_CONFIG_KEY} is not JSON"
            raise PinError(PinReason.AUTH_FAILED, message) from None
    return _Auth(tuple(configs), refused)


@dataclass(frozen=True)
class Choice:
    """The digests and the revision (by hash) the spec asks for now."""

    pins: Pins
    revision_hash: str
    warnings: tuple[str, ...] = ()
    moved_from: str = ""  # the model's previous pinned URI, when a refresh found a new digest


Resolver = Callable[[], tuple[Pins, list[str]]]


def choose_pins(
    spec_hash: str, revisions: Iterable[Revision], refresh_due: bool, resolve: Resolver
) -> Choice:
    """Recorded digests when the spec has a revision (nothing asked), unless a refresh
    is due (spec.model.refreshInterval): then a moved tag means a revision of its own,
    whose hash covers the spec and the new digests."""
    mine = sorted((r for r in revisions if r.spec_hash == spec_hash), key=lambda r: r.number)
    if not mine:
        pins, warnings = resolve()  # a new spec: failures stop it before any pod
        return Choice(pins, spec_hash, tuple(warnings))
    newest = mine[-1]
    recorded = Pins.from_annotation(newest.pins)
    if not refresh_due:
        return Choice(recorded, newest.hash)
    try:
        fresh, warnings = resolve()
    except PinError as exc:  # the serving revision stays; the next refresh asks again
        return Choice(recorded, newest.hash, (f"tag not refreshed: {exc}",))
    fresh = Pins(model=fresh.model or recorded.model, image=fresh.image or recorded.image)
    if fresh == recorded:
        return Choice(recorded, newest.hash, tuple(warnings))
    for rev in mine:  # the tag moved back to digests a kept revision serves
        if Pins.from_annotation(rev.pins) == fresh:
            return Choice(fresh, rev.hash, tuple(warnings), recorded.model)
    moved = template_hash({"spec": spec_hash, "pins": fresh.as_dict()})
    return Choice(fresh, moved, tuple(warnings), recorded.model)
