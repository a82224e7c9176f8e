"""Skipping no-op applies: live objects carry defaults and other managers' fields."""

from __future__ import annotations

from modelplane_operator.compare import contains


def test_server_defaults_and_extra_keys_do_not_count_as_drift() -> None:
    desired = {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}}
    live = {
        "spec": {
            "progressDeadlineSeconds": 600,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "image": "y"},
                        {"name": "a", "image": "x", "imagePullPolicy": "IfNotPresent"},
                    ]
                }
            },
        }
    }
    assert contains(live, desired)


def test_changed_owned_field_is_drift() -> None:
    desired = {
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}
    }
    assert not contains({"spec": {"replicas": 3, "template": desired["spec"]["template"]}}, desired)
    changed_image = {
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "a", "image": "evil"}]}},
        }
    }
    assert not contains(changed_image, desired)


def test_quantities_compare_by_value() -> None:
    desired = {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
    assert contains({"resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}}}, desired)
    assert not contains({"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}, desired)


def test_atomic_lists_must_match_exactly() -> None:
    desired = {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}
    assert contains({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}, desired)
    assert not contains({"tolerations": []}, desired)
    assert not contains(
        {
            "tolerations": [
                {"key": "a", "operator": "Exists"},
                {"key": "nvidia.com/gpu", "operator": "Exists"},
            ]
        },
        desired,
    )


def test_missing_object_or_key_is_drift() -> None:
    assert not contains({}, {"metadata": {"labels": {"a": "b"}}})
    assert not contains({"metadata": {"labels": {}}}, {"metadata": {"labels": {"a": "b"}}})


def test_zero_values_the_api_server_omits_count_as_present() -> None:
    # Go's `omitempty` drops EnvVar.value == "" and Toleration.effect == "" from what the
    # API server returns; re-applying them on every reconcile would never end.
    desired = {
        "env": [{"name": "HF_HUB_OFFLINE", "value": ""}],
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": ""}],
        "hostNetwork": False,
        "labels": {},
    }
    live = {
        "env": [{"name": "HF_HUB_OFFLINE"}],
        "tolerations": [{"key": "dedicated", "operator": "Exists"}],
    }
    assert contains(live, desired)
    assert not contains(live, {"env": [{"name": "HF_HUB_OFFLINE", "value": "1"}]})
