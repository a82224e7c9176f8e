"""`kubectl modelplane rollback` without a revision picks the one that served before."""

from __future__ import annotations

from modelplane_operator.plugin import previous_revision


def test_previous_revision_skips_one_that_never_served() -> None:
    # 1 served, 2 was replaced by 3 before it finished, 3 serves now: "back" means 1.
    obj = {
        "status": {
            "currentRevision": 3,
            "history": [
                {"revision": 3, "outcome": "Succeeded"},
                {"revision": 2, "outcome": "Interrupted"},
                {"revision": 1, "outcome": "Superseded"},
            ],
        }
    }
    assert previous_revision(obj) == 1


def test_no_previous_revision_when_only_the_current_one_served() -> None:
    obj = {"status": {"currentRevision": 1, "history": [{"revision": 1, "outcome": "Succeeded"}]}}
    assert previous_revision(obj) is None
