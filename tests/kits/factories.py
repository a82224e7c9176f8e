"""Small builders of ModelDeployment bodies for unit tests."""

from __future__ import annotations

import copy
from typing import Any


def md_body(**spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"version": "1.0.0", "uri": "s3://models/resnet/1.0.0"},
        "runtime": {"gpu": {"count": 1}},
        "replicas": 2,
    }
    for key, value in spec_overrides.items():
        spec[key] = value
    return {
        "apiVersion": "modelplane.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet", "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": copy.deepcopy(spec),
    }
