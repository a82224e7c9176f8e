"""Other servers' /metrics read as the figures canary analysis and autoscaling judge:
requests by outcome, a latency histogram where the server has one, in-flight work."""

from __future__ import annotations

import math

import pytest

from modelplane_operator.analysis import Snapshot, figures
from modelplane_operator.config import OperatorConfig
from modelplane_operator.manifests import build_pod_template
from modelplane_operator.podmetrics import (
    MODELPLANE,
    SERVER_ANNOTATION,
    TORCHSERVE,
    TRITON,
    VLLM,
    MetricsEndpoint,
    parse_sample,
)
from modelplane_operator.spec import parse

# TorchServe 0.12's metrics endpoint with metrics_mode=prometheus, as it answered here.
TORCHSERVE_TEXT = """\
# HELP Requests2XX Torchserve prometheus counter metric with unit: Count
# TYPE Requests2XX counter
Requests2XX{Level="Host",Hostname="vm",} 40.0
# HELP Requests4XX Torchserve prometheus counter metric with unit: Count
# TYPE Requests4XX counter
Requests4XX{Level="Host",Hostname="vm",} 3.0
# HELP Requests5XX Torchserve prometheus counter metric with unit: Count
# TYPE Requests5XX counter
Requests5XX{Level="Host",Hostname="vm",} 2.0
# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="tiny",model_version="default",hostname="vm",} 45.0
"""

# Triton's names (its metrics documentation).
TRITON_TEXT = """\
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="resnet",version="1"} 120
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="resnet",reason="BACKEND",version="1"} 4
nv_inference_request_failure{model="resnet",reason="REJECTED",version="1"} 1
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="resnet",version="1"} 6
"""

# vLLM's OpenAI server: its own families and prometheus-fastapi-instrumentator's.
VLLM_TEXT = """\
# TYPE http_requests_total counter
http_requests_total{handler="/v1/chat/completions",method="POST",status="2xx"} 90.0
http_requests_total{handler="/v1/chat/completions",method="POST",status="4xx"} 5.0
http_requests_total{handler="/v1/chat/completions",method="POST",status="5xx"} 1.0
http_requests_total{handler="/health",method="GET",status="2xx"} 300.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="llama"} 7.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="llama"} 2.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.5",model_name="llama"} 10.0
vllm:e2e_request_latency_seconds_bucket{le="2.5",model_name="llama"} 80.0
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="llama"} 91.0
vllm:e2e_request_latency_seconds_count{model_name="llama"} 91.0
vllm:e2e_request_latency_seconds_sum{model_name="llama"} 120.0
"""


def test_torchserve_counts_answers_by_status_class() -> None:
    got = parse_sample(TORCHSERVE_TEXT, "p", 1.0, 2.0, TORCHSERVE)
    assert (got.successes, got.client_errors, got.server_errors) == (40, 3, 2)
    assert got.buckets == {} and got.in_flight == 0  # it exports neither


def test_torchserve_before_its_first_inference_request_counts_zero() -> None:
    # TorchServe creates ts_inference_requests_total at its first increment.
    text = "\n".join(TORCHSERVE_TEXT.splitlines()[:3]) + "\n"
    got = parse_sample(text, "p", 1.0, 2.0, TORCHSERVE)
    assert (got.successes, got.client_errors, got.server_errors) == (0, 0, 0)


def test_triton_counts_every_failure_as_the_server_s() -> None:
    got = parse_sample(TRITON_TEXT, "p", 1.0, 2.0, TRITON)
    assert (got.successes, got.client_errors, got.server_errors, got.in_flight) == (120, 0, 5, 6)


def test_vllm_reads_its_api_s_answers_its_latency_histogram_and_running_plus_waiting() -> None:
    got = parse_sample(VLLM_TEXT, "p", 1.0, 2.0, VLLM)
    # The health checks' own 2xx are not requests for the model.
    assert (got.successes, got.client_errors, got.server_errors) == (90, 5, 1)
    assert got.in_flight == 9
    assert got.buckets == {0.5: 10.0, 2.5: 80.0, math.inf: 91.0}


@pytest.mark.parametrize(
    ("text", "dialect"),
    [(TORCHSERVE_TEXT, MODELPLANE), (VLLM_TEXT, TORCHSERVE), (TORCHSERVE_TEXT, VLLM)],
)
def test_another_server_s_metrics_are_not_read_as_this_one_s(text: str, dialect: object) -> None:
    with pytest.raises(ValueError, match=r"none of the .* server's request metrics"):
        parse_sample(text, "p", 1.0, 2.0, dialect)  # type: ignore[arg-type]


def _torchserve(total: int, client: int, server: int, at: float) -> str:
    return (
        "# TYPE ts_inference_requests_total counter\n"
        f'ts_inference_requests_total{{model_name="tiny",model_version="default",}} {total}\n'
        f'# TYPE Requests2XX counter\nRequests2XX{{Level="Host",}} {10 * at}\n'
        f'# TYPE Requests4XX counter\nRequests4XX{{Level="Host",}} {client}\n'
        f'# TYPE Requests5XX counter\nRequests5XX{{Level="Host",}} {server}\n'
    )


def test_torchserve_s_interval_differences_its_counters_before_deriving_successes() -> None:
    """Requests4XX counts answers that were no inference (a 404 on another path): the
    derived successes may fall between scrapes, which must not read as a reset."""
    start = parse_sample(_torchserve(45, 3, 2, 10), "p", 1.0, 10.0, TORCHSERVE)
    end = parse_sample(_torchserve(50, 13, 2, 20), "p", 1.0, 20.0, TORCHSERVE)
    assert end.successes < start.successes
    got = figures(Snapshot(10.0, {"p": start}), Snapshot(20.0, {"p": end}))
    # 5 inference requests and 10 client errors: no success is invented, none doubled.
    assert (got.successes, got.client_errors, got.server_errors) == (0, 10, 0)
    restarted = parse_sample(_torchserve(4, 1, 0, 30), "p", 25.0, 30.0, TORCHSERVE)
    got = figures(Snapshot(20.0, {"p": end}), Snapshot(30.0, {"p": restarted}))
    assert (got.successes, got.client_errors) == (3, 1)  # a new process: all it counted


def test_each_pod_is_read_as_the_server_its_revision_runs() -> None:
    """A rollout from TorchServe to modelplane's runtime: the stable pods are still
    TorchServe's, on its metrics port, whatever the spec says now."""
    now = MetricsEndpoint(8080, "/metrics", MODELPLANE)
    old = now.of_pod(
        {
            "prometheus.io/port": "8082",
            "prometheus.io/path": "/metrics",
            SERVER_ANNOTATION: "torchserve",
        }
    )
    assert (old.port, old.dialect) == (8082, TORCHSERVE)
    assert now.of_pod({"prometheus.io/port": "9000"}) == MetricsEndpoint(
        9000, "/metrics", MODELPLANE
    )
    assert now.of_pod({"prometheus.io/port": "x"}).port == 8080  # unreadable: the spec's


def test_other_servers_pods_say_which_server_they_run() -> None:
    def annotations(kind: str) -> dict[str, str]:
        body = {
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
            "spec": {
                "model": {"name": "m", "version": "1", "uri": "s3://m/1"},
                "runtime": {"server": {"kind": kind}, "image": "r.io/s:1"},
            },
        }
        template = build_pod_template(parse(body), OperatorConfig())
        return dict(template["metadata"]["annotations"])

    assert annotations("vllm")[SERVER_ANNOTATION] == "vllm"
    assert SERVER_ANNOTATION not in annotations("modelplane")  # its templates as before
