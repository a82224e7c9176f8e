"""Does a live object already hold every field the operator wants in it?

Skipping applies that would change nothing keeps the operator at zero API writes
when the cluster already matches (after a restart, on every child event). The
comparison is semantic: the API server adds defaults, other field managers may
add their own map keys and list entries (which server-side apply leaves alone),
and quantities have several spellings ("1000m" == "1").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils.quantity import parse_quantity

# Lists that server-side apply merges by key: other managers' entries may stay.
_LIST_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "name",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
}
_QUANTITY_PARENTS = {"requests", "limits", "capacity", "allocatable"}


def contains(live: Any, desired: Any, key: str = "", parent: str = "") -> bool:
    """True when ``live`` holds everything ``desired`` says."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(
            contains(live[k], v, key=k, parent=key) if k in live else _omitted(v)
            for k, v in desired.items()
        )
    if isinstance(desired, Sequence) and not isinstance(desired, str):
        if not isinstance(live, Sequence) or isinstance(live, str):
            return False
        list_key = _LIST_KEYS.get(key)
        if list_key and all(isinstance(d, Mapping) and list_key in d for d in desired):
            by_key = {item.get(list_key): item for item in live if isinstance(item, Mapping)}
            ordered = [by_key.get(d[list_key]) for d in desired]
            return all(
                got is not None and contains(got, want, key)
                for got, want in zip(ordered, desired, strict=True)
            )
        return len(live) == len(desired) and all(
            contains(got, want, key) for got, want in zip(live, desired, strict=True)
        )
    if parent in _QUANTITY_PARENTS:
        return quantity(live) == quantity(desired)
    return bool(live == desired)


def _omitted(value: Any) -> bool:
    # The API server drops zero values of `omitempty` fields (EnvVar.value == "",
    # Toleration.effect == "", false, {}): their absence is no drift.
    if isinstance(value, str | Mapping | list | tuple):
        return not value
    return value is None or value is False or value == 0


def quantity(value: Any) -> Decimal | None:
    """A resource quantity as a number, or None when it is not one."""
    try:
        parsed: Decimal = parse_quantity(value)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, InvalidOperation):
        return None
    return parsed
