"""Watch re-lists repeat every object; the controller reconciles each version once."""

from __future__ import annotations

import kopf

from modelplane_operator.controller import Controller


def body(uid: str, version: str) -> kopf.Body:
    return kopf.Body({"metadata": {"uid": uid, "resourceVersion": version}})


def test_a_version_is_handled_once_and_a_new_version_again() -> None:
    seen = Controller().seen
    assert not seen.already(body("u1", "10"))
    assert seen.already(body("u1", "10"))  # the re-list repeat
    assert not seen.already(body("u1", "11"))  # a real change
    assert not seen.already(body("u2", "10"))  # another object


def test_forgotten_objects_are_new_again_and_bodies_without_versions_always_count() -> None:
    seen = Controller().seen
    assert not seen.already(body("u3", "5"))
    seen.forget(body("u3", "5"))
    assert not seen.already(body("u3", "5"))
    assert not seen.already(kopf.Body({"metadata": {}}))
    assert not seen.already(kopf.Body({"metadata": {}}))


def test_each_controller_keeps_its_own_state() -> None:
    one, other = Controller(), Controller()
    one.seen.already(body("u4", "1"))
    one.pause()
    assert not other.seen.already(body("u4", "1"))
    assert not other.paused and one.paused
