"""DRA's CEL, evaluated over one ResourceSlice device, as the scheduler does.

DeviceClass and request selectors are CEL over ``device.driver``,
``device.attributes['<domain>'].<name>`` and ``device.capacity['<domain>'].<name>``, with
Kubernetes' ``quantity()`` and ``semver()`` and their ``compareTo``/``isGreaterThan``/
``isLessThan`` methods. cel-python evaluates the language; this module supplies the
device, those functions and the typed values (strings, ints, bools, versions,
quantities). An expression that fails to compile or evaluate matches nothing: the GPU
budget then counts fewer free devices, never more.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import celpy
from celpy import celtypes

from .compare import quantity as parse_quantity

log = logging.getLogger(__name__)

_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


class Version(celtypes.StringType):
    """A semantic version attribute (``{version: 575.57.8}``), ordered as one."""

    @property
    def key(self) -> tuple[int, int, int, int, str]:
        m = _SEMVER.match(str(self))
        if m is None:
            return (0, 0, 0, 0, str(self))
        major, minor, patch, pre = m.groups()
        # A release sorts after its pre-releases.
        return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


class Quantity(celtypes.DoubleType):
    """A capacity or quantity() value: its number, compared exactly where it is whole."""


def _quantity(text: Any) -> Quantity:
    parsed = parse_quantity(str(text))
    if parsed is None:
        raise ValueError(f"not a quantity: {text!r}")
    return Quantity(float(parsed))


def _semver(text: Any) -> Version:
    if _SEMVER.match(str(text)) is None:
        raise ValueError(f"not a semantic version: {text!r}")
    return Version(str(text))


def _compare(a: Any, b: Any) -> celtypes.IntType:
    left: Any
    right: Any
    if isinstance(a, Version) and isinstance(b, Version):
        left, right = a.key, b.key
    else:
        left, right = Decimal(str(a)), Decimal(str(b))
    return celtypes.IntType((left > right) - (left < right))


FUNCTIONS: dict[str, Any] = {
    "quantity": _quantity,
    "semver": _semver,
    "compareTo": _compare,
    "isGreaterThan": lambda a, b: celtypes.BoolType(_compare(a, b) > 0),
    "isLessThan": lambda a, b: celtypes.BoolType(_compare(a, b) < 0),
}


def _attribute(value: Mapping[str, Any]) -> Any:
    if "version" in value:
        return Version(str(value["version"]))
    if "string" in value:
        return celtypes.StringType(str(value["string"]))
    if "bool" in value:
        return celtypes.BoolType(bool(value["bool"]))
    if "int" in value:
        return celtypes.IntType(int(value["int"]))
    return None


def _qualified(driver: str, fields: Mapping[str, Any], convert: Any) -> celtypes.MapType:
    """Fields by domain: an unqualified name belongs to the driver's own domain."""
    domains: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        domain, _, short = name.rpartition("/")
        converted = convert(value) if isinstance(value, Mapping) else None
        if converted is not None:
            domains.setdefault(domain or driver, {})[short] = converted
    return celtypes.MapType(
        {
            celtypes.StringType(d): celtypes.MapType(
                {celtypes.StringType(k): v for k, v in values.items()}
            )
            for d, values in domains.items()
        }
    )


def _capacity(value: Mapping[str, Any]) -> Quantity | None:
    parsed = parse_quantity(str(value.get("value")))
    return None if parsed is None else Quantity(float(parsed))


def device_activation(driver: str, device: Mapping[str, Any]) -> dict[str, Any]:
    """The ``device`` variable for one ResourceSlice device of ``driver``."""
    return {
        "device": celtypes.MapType(
            {
                celtypes.StringType("driver"): celtypes.StringType(driver),
                celtypes.StringType("attributes"): _qualified(
                    driver, device.get("attributes") or {}, _attribute
                ),
                celtypes.StringType("capacity"): _qualified(
                    driver, device.get("capacity") or {}, _capacity
                ),
            }
        )
    }


@functools.lru_cache(maxsize=256)
def _program(expression: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression), functions=FUNCTIONS)


def matches(expression: str, activation: Mapping[str, Any]) -> bool:
    """Whether the expression is true for the device (false when it cannot be evaluated)."""
    try:
        result = _program(expression).evaluate(dict(activation))
    except Exception as exc:
        log.debug("CEL %r does not evaluate: %s", expression, exc)
        return False
    return result is True or (isinstance(result, celtypes.BoolType) and bool(result))
