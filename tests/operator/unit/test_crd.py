"""The CRD is complete enough for `kubectl explain` and the scale subresource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CRD = Path(__file__).resolve().parents[3] / "crds" / "modelplane.io_modeldeployments.yaml"


def schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version)


def undocumented(node: dict[str, Any], path: str = "") -> list[str]:
    missing = []
    for key, child in (node.get("properties") or {}).items():
        if key != "metadata" and not child.get("description"):
            missing.append(f"{path}.{key}")
        missing += undocumented(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        missing += undocumented(node["items"], f"{path}[]")
    return missing


def test_every_field_has_a_description() -> None:
    assert undocumented(schema()["schema"]["openAPIV3Schema"]) == []


def test_scale_and_status_subresources_and_printer_columns() -> None:
    version = schema()
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert version["subresources"]["status"] == {}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:6] == ["Version", "Ready", "GPUs", "Allocated", "Reason", "Age"]
    allocated = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Allocated")
    assert allocated["jsonPath"] == ".status.gpuAllocation.allocated"
    assert allocated["priority"] == 1  # shown by `kubectl get -o wide`
