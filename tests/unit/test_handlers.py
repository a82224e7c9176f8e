"""Watch re-lists repeat every object; the handlers reconcile each version once."""

from __future__ import annotations

import kopf

from modelplane_operator.handlers import _already_seen, _forget


def body(uid: str, version: str) -> kopf.Body:
    return kopf.Body({"metadata": {"uid": uid, "resourceVersion": version}})


def test_a_version_is_handled_once_and_a_new_version_again() -> None:
    assert not _already_seen(body("u1", "10"))
    assert _already_seen(body("u1", "10"))  # the re-list repeat
    assert not _already_seen(body("u1", "11"))  # a real change
    assert not _already_seen(body("u2", "10"))  # another object


def test_forgotten_objects_are_new_again_and_bodies_without_versions_always_count() -> None:
    assert not _already_seen(body("u3", "5"))
    _forget(body("u3", "5"))
    assert not _already_seen(body("u3", "5"))
    assert not _already_seen(kopf.Body({"metadata": {}}))
    assert not _already_seen(kopf.Body({"metadata": {}}))
