"""The operator's own parsing: defaults and errors for objects admission let through."""

from __future__ import annotations

import pytest

from factories import md_body
from modelplane_operator.spec import SpecError, parse


def test_defaults_match_the_crd() -> None:
    body = md_body()
    del body["spec"]["runtime"]
    del body["spec"]["replicas"]
    md = parse(body)
    assert md.replicas == 1
    assert md.gpu.count == 0
    assert md.model_name == "resnet"
    assert md.port == 8080
    assert md.rollout.strategy == "RollingUpdate"
    assert md.rollout.max_surge == 1 and md.rollout.max_unavailable == 0
    assert md.revision_history_limit == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": {"version": "1.0", "uri": "ftp://x"}}, "schemes"),
        ({"model": {"version": "bad version", "uri": "s3://x"}}, "version"),
        ({"model": {"version": "1", "uri": "s3://x"}, "replicas": -1}, "replicas"),
        (
            {
                "model": {"version": "1", "uri": "s3://x"},
                "runtime": {"resources": {"limits": {"nvidia.com/gpu": 1}}},
            },
            "gpu.count",
        ),
        (
            {"model": {"version": "1", "uri": "s3://x"}, "runtime": {"precision": "float8"}},
            "precision must be one of",
        ),
        (
            {"model": {"version": "1", "uri": "s3://x"}, "runtime": {"precision": "float16"}},
            "runs on a GPU",
        ),
        (
            {
                "model": {"version": "1", "uri": "s3://x"},
                "runtime": {"precision": "int8", "gpu": {"count": 1}},
            },
            "int8 runs on CPUs",
        ),
    ],
)
def test_unservable_specs_raise_readable_errors(spec: dict, message: str) -> None:  # type: ignore[type-arg]
    body = md_body()
    body["spec"] = spec
    with pytest.raises(SpecError, match=message):
        parse(body)


def test_canary_steps_parse_into_typed_steps_with_their_pauses() -> None:
    from factories import md_body
    from modelplane_operator.spec import CanaryStep, Pause, parse, parse_duration

    steps = [
        {"weight": 10},
        {"weight": 25, "pause": {"duration": "30s"}},
        {"weight": 50, "pause": {"duration": "5m"}},
        {"weight": 75, "pause": {}},
    ]
    md = parse(md_body(rollout={"strategy": "Canary", "canary": {"steps": steps}}))
    assert md.rollout.canary_steps == (
        CanaryStep(10),
        CanaryStep(25, Pause(30.0)),
        CanaryStep(50, Pause(300.0)),
        CanaryStep(75, Pause(None)),  # held until a manual promotion
    )
    assert parse_duration("1h") == 3600.0
    for bad in ("", "5", "m", "1.5m", "-1s", "10d"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def claim_runtime(**claim: object) -> dict[str, object]:
    return runtime_only(gpuClaim=claim)


def runtime_only(**runtime: object) -> dict[str, object]:
    return {"model": {"version": "1", "uri": "s3://x"}, "runtime": runtime}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {
                "model": {"version": "1", "uri": "s3://x"},
                "runtime": {"gpu": {"count": 1}, "gpuClaim": {}},
            },
            "keep one",
        ),
        (claim_runtime(migProfile="1g.10gb", deviceClassName="gpu.nvidia.com"), "mig.nvidia.com"),
        (claim_runtime(migProfile="1g.10gb", sharing={"strategy": "TimeSlicing"}), "MPS only"),
        (claim_runtime(sharing={"strategy": "Sometimes"}), "TimeSlicing, MPS"),
        (claim_runtime(minMemory="lots"), "quantity such as 40Gi"),
        (claim_runtime(product="x' || true || '"), "product name"),
        (claim_runtime(count=0), "gpuClaim.count"),
        (
            {
                "model": {"version": "1", "uri": "s3://x"},
                "runtime": {"gpu": {"resource": "kubernetes.io/gpu"}},
            },
            "extended resource",
        ),
        (
            {
                "model": {"version": "1", "uri": "s3://x"},
                "runtime": {"resources": {"limits": {"nvidia.com/mig-1g.10gb": 1}}},
            },
            "gpu.count",
        ),
        (
            {
                "model": {"version": "1", "uri": "s3://x"},
                "runtime": {"gpuClaim": {}, "precision": "int8"},
            },
            "int8 runs on CPUs",
        ),
    ],
)
def test_inconsistent_gpu_modes_say_what_to_write_instead(spec: dict, message: str) -> None:  # type: ignore[type-arg]
    body = md_body()
    body["spec"] = spec
    with pytest.raises(SpecError, match=message):
        parse(body)


def test_device_claim_defaults_and_gpu_totals() -> None:
    body = md_body(runtime={"gpuClaim": {"count": 2}, "precision": "bfloat16"}, replicas=3)
    md = parse(body)
    assert md.gpu.count == 0 and md.gpu_claim is not None
    assert md.gpu_claim.device_class == "gpu.nvidia.com"
    assert md.gpus_per_replica == 2 and md.gpus_requested == 6 and md.uses_gpu
    mig = parse(md_body(runtime={"gpuClaim": {"migProfile": "1g.10gb"}})).gpu_claim
    assert mig is not None and mig.device_class == "mig.nvidia.com" and mig.count == 1
    shared = parse(md_body(runtime={"gpu": {"count": 1, "resource": "nvidia.com/gpu.shared"}}))
    assert shared.gpu.resource == "nvidia.com/gpu.shared" and shared.gpu_claim is None
