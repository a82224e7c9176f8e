"""Digest pinning's pure parts: which images are pinned, the recorded pins, the template."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane_operator.config import OperatorConfig
from modelplane_operator.manifests import build_deployment, build_pod_template, pinned
from modelplane_operator.pinning import Pins, pin_digest, wants_image_pin
from modelplane_operator.revisions import PINS_ANNOTATION, observe_revisions, template_hash
from modelplane_operator.spec import SpecError, parse

DIGEST = "sha256:" + "cd" * 32


def _md(
    uri: str = "oci://registry.example.com/models/tiny:v1", model: Any = None, **runtime: Any
) -> Any:
    return parse(
        {
            "metadata": {"name": "tiny", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": {
                "model": {"version": "v1", "uri": uri, **(model or {})},
                "runtime": runtime,
                "pod": {"imagePullSecrets": [{"name": "pull"}]},
            },
        }
    )


@pytest.mark.parametrize(
    ("image", "registries", "wanted"),
    [
        ("ghcr.io/modelplane/runtime:0.1.0", ("*",), True),
        ("ghcr.io/modelplane/runtime:0.1.0", (), False),
        ("ghcr.io/modelplane/runtime:0.1.0", ("198.18.0.10:5000",), False),
        ("198.18.0.10:5000/runtime:v1", ("198.18.0.10:5000",), True),
        (f"ghcr.io/modelplane/runtime@{DIGEST}", ("*",), False),  # pinned by its author
        ("localhost/modelplane/runtime:abc", ("*",), False),  # in a node's store only
    ],
)
def test_which_images_are_pinned(image: str, registries: tuple[str, ...], wanted: bool) -> None:
    assert wants_image_pin(image, OperatorConfig(pin_image_registries=registries)) is wanted


def test_pins_round_trip_through_the_annotation_and_tolerate_garbage() -> None:
    pins = Pins(model=f"oci://r.io/m:v1@{DIGEST}", image=f"r.io/rt:1@{DIGEST}")
    assert Pins.from_annotation(__import__("json").dumps(pins.as_dict())) == pins
    assert Pins.from_annotation("") == Pins() and not Pins()
    assert Pins.from_annotation("{not json") == Pins()
    assert Pins.from_annotation("[1, 2]") == Pins()
    assert pin_digest("r.io/m:v1", DIGEST) == f"r.io/m:v1@{DIGEST}"
    assert pin_digest(f"r.io/m:v1@sha256:{'0' * 64}", DIGEST) == f"r.io/m:v1@{DIGEST}"


def test_a_pinned_revision_serves_digests_and_keeps_the_specs_hash() -> None:
    md = _md()
    config = OperatorConfig(runtime_image="r.io/rt:1", registry_ca="PEM")
    spec_hash = template_hash(build_pod_template(md, config))
    pins = {"model": f"{md.uri}@{DIGEST}", "image": f"r.io/rt:1@{DIGEST}"}
    dep = build_deployment(md, config, 3, spec_hash, 2, pins)
    pod = dep["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert init["args"][0] == f"oci://registry.example.com/models/tiny:v1@{DIGEST}"
    assert pod["containers"][0]["image"] == f"r.io/rt:1@{DIGEST}"
    env = {e["name"]: e["value"] for e in init["env"]}
    assert env["MODELPLANE_REGISTRY_CA"] == "PEM"
    # The pull secret reaches the initializer as a read-only file, never as env.
    assert "envFrom" not in init
    assert {"name": "registry-auth", "mountPath": env["MODELPLANE_REGISTRY_AUTH_DIR"],
            "readOnly": True} in init["volumeMounts"]  # fmt: skip
    sources = next(v for v in pod["volumes"] if v["name"] == "registry-auth")["projected"]
    assert sources["sources"][0]["secret"]["name"] == "pull"
    assert all("registry-auth" not in str(c.get("volumeMounts")) for c in pod["containers"])
    # Observed again, the revision has the spec's hash and tells its pins.
    rev = observe_revisions([dep], [])[3]
    assert rev.hash == spec_hash
    assert Pins.from_annotation(rev.pins).as_dict() == pins
    assert dep["metadata"]["annotations"][PINS_ANNOTATION]
    assert pinned(md, {}) == md


def test_an_oci_uri_without_a_registry_is_an_invalid_spec() -> None:
    with pytest.raises(SpecError, match="names its registry"):
        _md(uri="oci://models/tiny:v1")
    with pytest.raises(SpecError, match="oci"):
        _md(uri="ftp://x/y")


def test_nothing_to_pin_needs_no_registry_and_no_secret() -> None:
    from modelplane_operator.pinning import NO_PINS, PinError, PinReason, resolve_pins

    def denied(namespace: str, name: str) -> Any:
        raise PinError(PinReason.AUTH_FAILED, f"may not read Secret {namespace}/{name}")

    md = _md(uri="s3://bucket/tiny")
    assert resolve_pins(md, "ghcr.io/modelplane/runtime:0.1.0", OperatorConfig(), denied) == (
        NO_PINS,
        [],
    )


def _rev(number: int, hash_: str, model: str, made_for: str = "") -> Any:
    from modelplane_operator.revisions import Revision

    pins = __import__("json").dumps({"model": model})
    return Revision(number, hash_, "v1", model, "", 1, 1, 1, (), pins, made_for)


def test_choosing_pins_asks_the_registry_only_when_it_must() -> None:
    from modelplane_operator.pinning import Choice, PinError, PinReason, choose_pins

    a, b = f"oci://r.io/m:prod@sha256:{'a' * 64}", f"oci://r.io/m:prod@sha256:{'b' * 64}"
    asked: list[int] = []

    def registry_says(model: str) -> Any:
        def resolve() -> tuple[Pins, list[str]]:
            asked.append(1)
            return Pins(model=model), []

        return resolve

    # A new spec: asked, and its revision gets the spec's hash.
    assert choose_pins("s1", [], False, registry_says(a)) == Choice(Pins(model=a), "s1")
    # Its revision exists: recorded digests, nothing asked, whatever the tag says now.
    r1 = _rev(1, "s1", a)
    assert choose_pins("s1", [r1], False, registry_says(b)) == Choice(Pins(model=a), "s1")
    assert len(asked) == 1
    # A refresh that finds the same digest keeps the revision.
    assert choose_pins("s1", [r1], True, registry_says(a)).revision_hash == "s1"
    # A refresh that finds a new digest: a revision of its own, recording where it came from.
    moved = choose_pins("s1", [r1], True, registry_says(b))
    assert moved.pins == Pins(model=b) and moved.moved_from == a
    assert moved.revision_hash not in ("s1", "")
    # The same move seen again gives the same revision; a move back reuses revision 1.
    r2 = _rev(2, moved.revision_hash, b, made_for="s1")
    assert choose_pins("s1", [r1, r2], False, registry_says(a)).pins == Pins(model=b)
    assert choose_pins("s1", [r1, r2], True, registry_says(a)).revision_hash == "s1"
    # Another spec's revisions are not this spec's.
    assert choose_pins("s2", [r1, r2], False, registry_says(b)).revision_hash == "s2"

    # A registry down during a refresh: the serving revision stays, with a warning.
    def down() -> tuple[Pins, list[str]]:
        raise PinError(PinReason.UNREACHABLE, "no answer")

    kept = choose_pins("s1", [r1], True, down)
    assert kept.revision_hash == "s1" and kept.pins == Pins(model=a) and kept.warnings
    with pytest.raises(PinError):
        choose_pins("s3", [r1], True, down)  # a new spec cannot start without digests


def test_refresh_interval_needs_an_oci_uri() -> None:
    md = parse(
        {
            "metadata": {"name": "t", "namespace": "n", "uid": "u"},
            "spec": {"model": {"version": "v1", "uri": "oci://r.io/m:1", "refreshInterval": "5m"}},
        }
    )
    assert md.refresh_s == 300
    with pytest.raises(SpecError, match="oci"):
        parse(
            {
                "metadata": {"name": "t"},
                "spec": {"model": {"version": "v1", "uri": "s3://b/m", "refreshInterval": "5m"}},
            }
        )


def test_a_refresh_is_due_once_per_interval() -> None:
    from modelplane_operator.metering import Meters

    meters = Meters()
    assert meters.refresh_due("u", 30, now=100.0)  # a fresh operator asks once at start
    assert not meters.refresh_due("u", 30, now=120.0)
    assert meters.refresh_due("u", 30, now=131.0)
    assert meters.refresh_due("other", 30, now=131.0)


def _pod(message: str, exit_code: int = 0) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "message": message}
    return {"status": {"initContainerStatuses": [
        {"name": "storage-initializer", "state": {"terminated": terminated}}]}}  # fmt: skip


def test_what_pods_fetched_lands_in_history_and_a_change_behind_one_uri_shows() -> None:
    from modelplane_operator.pods import fetched_digest
    from modelplane_operator.revisions import Revision
    from modelplane_operator.rollout.history import record_fetched

    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert fetched_digest(_pod(f"content {a}\n")) == a
    assert fetched_digest(_pod(f"pulled {b}")) == b
    assert fetched_digest(_pod("model download failed: 404", exit_code=1)) == ""
    assert fetched_digest({"status": {}}) == ""

    def revs(*pods: dict[str, Any]) -> dict[int, Revision]:
        return {1: Revision(1, "h", "v1", "http://m", "", len(pods), len(pods), 0, pods)}

    hist = [{"revision": 1, "outcome": "Succeeded"}, {"revision": 1, "outcome": "Superseded"}]
    hist, changed = record_fetched(hist, revs(_pod(f"content {a}"), _pod(f"content {a}")))
    assert hist[0]["modelDigest"] == a and "modelDigest" not in hist[1] and changed == []
    assert record_fetched(hist, revs(_pod(f"content {a}"))) == (hist, [])  # nothing new
    # A pod restarted later fetched other bytes from the same URI.
    hist, changed = record_fetched(hist, revs(_pod(f"content {b}")))
    assert hist[0]["modelDigests"] == [a, b] and "modelDigest" not in hist[0]
    assert changed == [(1, [a, b])]
    assert record_fetched(hist, revs(_pod(f"content {b}")))[1] == []  # told once


def test_an_image_volume_mounts_the_pinned_digest_with_no_initializer() -> None:
    md = _md(model={"delivery": "ImageVolume", "secretRef": {"name": "model-pull"}})
    config = OperatorConfig(runtime_image="r.io/rt:1", registry_ca="PEM")
    dep = build_deployment(md, config, 2, "h", 1, {"model": f"{md.uri}@{DIGEST}"})
    pod = dep["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    # By digest alone, so the kubelet cannot mount what the tag names later.
    reference = f"registry.example.com/models/tiny@{DIGEST}"
    assert volumes["model"] == {
        "name": "model",
        "image": {"reference": reference, "pullPolicy": "IfNotPresent"},
    }
    assert "registry-auth" not in volumes  # the kubelet pulls: no credentials in the pod
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/mnt/models", "readOnly": True}
    # The kubelet pulls the model with the pod's pull secrets, the model's own among them.
    assert pod["imagePullSecrets"] == [{"name": "pull"}, {"name": "model-pull"}]
    fetch = build_pod_template(_md(model={"delivery": "Fetch"}), config)
    assert fetch == build_pod_template(_md(), config)  # Fetch is the default: same hash
    assert fetch["spec"]["initContainers"][0]["name"] == "storage-initializer"
    assert fetch["spec"]["imagePullSecrets"] == [{"name": "pull"}]


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ({"uri": "s3://models/tiny/1", "delivery": "ImageVolume"}, "ImageVolume needs an oci://"),
        ({"delivery": "Volume"}, "'Volume' is not one of Fetch, ImageVolume"),
    ],
)
def test_delivery_is_checked(model: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        _md(model=model)


def test_the_digest_a_pod_mounted_is_read_from_its_volume_status() -> None:
    from modelplane_operator.pods import fetched_digest

    def pod(image_ref: str, name: str = "model") -> dict[str, Any]:
        status = {"image": {"imageRef": image_ref}}
        mount = {"name": name, "mountPath": "/mnt/models", "volumeStatus": status}
        return {"status": {"containerStatuses": [{"name": "runtime", "volumeMounts": [mount]}]}}

    assert fetched_digest(pod(f"198.18.0.10:5000/models/tiny@{DIGEST}")) == DIGEST
    assert fetched_digest(pod(DIGEST)) == ""  # an image ID, not the manifest digest
    assert fetched_digest(pod(f"r.io/other@{DIGEST}", name="tmp")) == ""
    assert fetched_digest({"status": {}}) == ""
    # Without the kubelet's word: the volume's digest, once a container runs with it.
    volume = {"name": "model", "image": {"reference": f"r.io/models/tiny@{DIGEST}"}}
    running = {"spec": {"volumes": [volume]}, "status": {"containerStatuses": [{"started": True}]}}
    assert fetched_digest(running) == DIGEST
    assert fetched_digest({**running, "status": {"containerStatuses": [{"started": False}]}}) == ""
    by_tag = {"name": "model", "image": {"reference": "r.io/models/tiny:v1"}}
    assert fetched_digest({**running, "spec": {"volumes": [by_tag]}}) == ""
