"""JSON merge patches (RFC 7386): what the operator sends to change a status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_patch(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``live`` into ``desired``.

    Keys that ``desired`` no longer has become null, so they are removed; an
    empty result means the live status is already as wanted.
    """
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = live.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = merge_patch(old, value)
            if nested:
                patch[key] = nested
        elif old != value:
            patch[key] = value
    for key in live:
        if key not in desired:
            patch[key] = None
    return patch


def status_differs(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when writing ``desired`` would change the live status."""
    return bool(merge_patch(live, desired))
