"""Other model servers under modelplane's pods: each kind's container, and what a
custom server must say of itself."""

from __future__ import annotations

from typing import Any

import pytest

from modelplane_operator.config import OperatorConfig
from modelplane_operator.manifests import build_pod_template
from modelplane_operator.revisions import template_hash
from modelplane_operator.servers import metrics_endpoint
from modelplane_operator.spec import SpecError, parse

CONFIG = OperatorConfig(runtime_image="r.io/runtime:1", gpu_runtime_image="r.io/runtime:1-cuda")


def _md(server: dict[str, Any] | None = None, **runtime: Any) -> Any:
    spec: dict[str, Any] = {
        "model": {"name": "tiny", "version": "v1", "uri": "s3://models/tiny/1"},
        "runtime": {"port": 9000, **runtime, **({"server": server} if server else {})},
    }
    return parse({"metadata": {"name": "tiny", "namespace": "ns", "uid": "u"}, "spec": spec})


def _container(md: Any) -> dict[str, Any]:
    spec = build_pod_template(md, CONFIG)["spec"]
    assert spec["initContainers"][0]["name"] == "storage-initializer"  # for every server
    return dict(spec["containers"][0])


def _probes(container: dict[str, Any]) -> tuple[str, str, str]:
    return tuple(  # type: ignore[return-value]
        container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")
    )


def test_the_default_server_is_modelplane_and_naming_it_changes_no_hash() -> None:
    plain = build_pod_template(_md(), CONFIG)
    named = build_pod_template(_md({"kind": "modelplane"}), CONFIG)
    assert template_hash(plain) == template_hash(named)
    runtime = plain["spec"]["containers"][0]
    assert runtime["command"] == ["modelplane-runtime"] and "args" not in runtime
    assert _probes(runtime) == ("/v2/models/tiny/ready", "/v2/health/live", "/v2/health/live")
    assert runtime["image"] == "r.io/runtime:1"


def test_torchserve_listens_on_the_port_and_reads_the_mar_from_the_model_folder() -> None:
    md = _md({"kind": "torchserve"})
    container = _container(md)
    assert container["image"] == OperatorConfig().torchserve_image
    # The supervisor that ends the container when the model fails to load.
    assert container["command"] == ["modelplane-torchserve"]
    assert "--model-store" in container["args"] and "tiny=tiny.mar" in container["args"]
    assert _probes(container) == ("/ping", "/ping", "/ping")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TS_INFERENCE_ADDRESS"] == "http://0.0.0.0:9000"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 9000, "metrics": 8082}
    annotations = build_pod_template(md, CONFIG)["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8082"


@pytest.mark.parametrize(
    ("uri", "registered"),
    [
        ("https://models.example/tiny/resnet-v2.mar", "tiny=resnet-v2.mar"),
        ("https://models.example/tiny/resnet-v2.mar?sig=abc", "tiny=resnet-v2.mar"),
        ("s3://models/tiny/archive.tar.gz", "tiny=tiny.mar"),
        ("pvc://models/tiny/", "tiny=tiny.mar"),
    ],
)
def test_torchserve_registers_the_archive_the_uri_names(uri: str, registered: str) -> None:
    md = parse(
        {
            "metadata": {"name": "tiny", "namespace": "ns", "uid": "u"},
            "spec": {
                "model": {"name": "tiny", "version": "v1", "uri": uri},
                "runtime": {"server": {"kind": "torchserve"}},
            },
        }
    )
    args = _container(md)["args"]
    assert args[args.index("--models") + 1] == registered


@pytest.mark.parametrize(
    ("kind", "ready", "flag"),
    [("triton", "/v2/health/ready", "--http-port=9000"), ("vllm", "/health", "--port=9000")],
)
def test_triton_and_vllm_are_told_the_port(kind: str, ready: str, flag: str) -> None:
    container = _container(_md({"kind": kind}, image=f"r.io/{kind}:1"))
    assert container["image"] == f"r.io/{kind}:1"
    assert flag in container["args"] and any("/mnt/models" in a for a in container["args"])
    assert _probes(container)[0] == ready


def test_a_built_in_server_takes_overrides() -> None:
    server = {"kind": "torchserve", "readinessPath": "/models/tiny", "args": ["--foreground"]}
    container = _container(_md(server))
    assert container["args"] == ["--foreground"]
    assert _probes(container) == ("/models/tiny", "/ping", "/ping")


def test_a_custom_server_runs_its_entrypoint_with_its_own_probes() -> None:
    server = {"kind": "custom", "readinessPath": "/ready", "metricsPort": 9100}
    container = _container(_md(server, image="r.io/mine:2"))
    assert "command" not in container and "args" not in container  # the image's entrypoint
    assert _probes(container) == ("/ready", "/ready", "/ready")
    assert [p["containerPort"] for p in container["ports"]] == [9000, 9100]
    live = {**server, "livenessPath": "/alive", "command": ["serve"], "args": ["--x"]}
    container = _container(_md(live, image="r.io/mine:2"))
    assert _probes(container) == ("/ready", "/alive", "/alive")
    assert container["command"] == ["serve"] and container["args"] == ["--x"]


@pytest.mark.parametrize(
    ("server", "runtime", "words"),
    [
        ({"kind": "custom", "readinessPath": "/ready"}, {}, "custom server needs spec.runtime"),
        ({"kind": "custom"}, {"image": "r.io/mine:2"}, "readinessPath"),
        ({"kind": "nginx"}, {}, "'nginx' is not one of modelplane, torchserve"),
        ({"kind": "custom", "readinessPath": "ready"}, {"image": "r"}, "starting with /"),
        ({"kind": "vllm", "args": "--port=1"}, {}, "list of strings"),
    ],
)
def test_an_incomplete_server_is_an_invalid_spec(
    server: dict[str, Any], runtime: dict[str, Any], words: str
) -> None:
    with pytest.raises(SpecError, match=words):
        _md(server, **runtime)


AUTOSCALING = {"minReplicas": 1, "maxReplicas": 3, "targetInFlight": 4}


def _metric_rules(kind: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "tiny"},
        "spec": {
            "model": {"version": "v1", "uri": "s3://m/1"},
            "runtime": {"server": {"kind": kind}, "image": "r.io/s:1"},
            **spec,
        },
    }


def _analysis(**rules: Any) -> dict[str, Any]:
    return {"canary": {"steps": [{"weight": 50}], "analysis": rules}}


@pytest.mark.parametrize(
    ("kind", "spec", "words"),
    [
        ("torchserve", {"autoscaling": AUTOSCALING}, "the torchserve server does not export"),
        ("custom", {"rollout": _analysis(minSuccessRate=99)}, "not known to count"),
        ("triton", {"rollout": _analysis(maxP99Latency="1s")}, "needs a latency histogram"),
        ("torchserve", {"rollout": _analysis(maxP99LatencyRatio=2)}, "judge it by minSuccessRate"),
    ],
)
def test_rules_a_server_s_metrics_cannot_answer_are_refused(
    kind: str, spec: dict[str, Any], words: str
) -> None:
    body = _metric_rules(kind, **spec)
    body["spec"]["runtime"]["server"]["readinessPath"] = "/ready"
    with pytest.raises(SpecError, match=words):
        parse(body)


@pytest.mark.parametrize(
    ("kind", "spec", "family"),
    [
        ("vllm", {"autoscaling": AUTOSCALING}, "vllm:num_requests_running"),
        ("triton", {"autoscaling": AUTOSCALING}, "nv_inference_pending_request_count"),
        ("torchserve", {"rollout": _analysis(minSuccessRate=99)}, "ts_inference_requests"),
        ("vllm", {"rollout": _analysis(maxP99Latency="2s")}, "vllm:e2e_request_latency"),
    ],
)
def test_rules_a_server_s_metrics_answer_are_read_from_its_own_endpoint(
    kind: str, spec: dict[str, Any], family: str
) -> None:
    md = parse(_metric_rules(kind, **spec))
    endpoint = metrics_endpoint(md)
    assert endpoint.dialect.name == kind
    assert endpoint.port == {"torchserve": 8082, "triton": 8002}.get(kind, md.port)
    read = endpoint.dialect
    assert (
        family in read.in_flight
        or (read.latency_bucket or "").startswith(family)
        or read.outcome_of(family, {}) is not None
    )
