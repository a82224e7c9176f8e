"""Bad input to the API: generated ModelDeployments are refused readably or reported.

Hypothesis builds manifests that mix valid values with the mistakes people make (wrong
types, negative counts, unknown schemes, bad quantities, reserved labels, odd unicode).
Each is created for real. A refusal must be a 422 whose message names the field; an
accepted object must end up with a Ready condition and a reason for its generation, and
the operator must neither crash, nor hot-loop, nor leave half of an object's children.
"""

from __future__ import annotations

import collections
import datetime
import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterkit import Cluster, wait_for
from mdkit import condition, get, model_deployment, wait_condition
from reliabilitykit import Recorder, iterations

pytestmark = pytest.mark.reliability("Bad input to the API")

GENERATED = iterations(ci=500, soak=1500)
WRITE_BOUND = 30  # API writes per object over the whole test; a hot loop makes thousands

label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=16)
small_int = st.integers(-3, 20)


def either(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> Any:
    """Mostly valid values: a manifest usually has a mistake or two, not twenty."""
    # Not one_of(valid, invalid): that picks each branch half the time. Shrinks to valid.
    return st.integers(1, 10).flatmap(lambda roll: invalid if roll == 10 else valid)


name_like = either(label, text)


def optional(required: dict[str, Any] | None = None, **fields: Any) -> Any:
    return st.fixed_dictionaries(required or {}, optional=fields)


quantity = either(
    st.sampled_from(["1", "500m", "2Gi", "0.5", "1e3", "100Mi"]),
    st.one_of(text, st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False)),
)
resource_list = st.dictionaries(
    either(
        st.sampled_from(["cpu", "memory", "ephemeral-storage"]),
        st.sampled_from(["nvidia.com/gpu", "example.com/x"]) | text,
    ),
    quantity,
    max_size=3,
)
model = either(
    optional(
        {
            "version": either(
                st.from_regex(r"[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True), text
            ),
            "uri": either(
                st.sampled_from(
                    [
                        "s3://b/m",
                        "gs://b/m",
                        "https://h/m.tar.gz",
                        "http://h/m",
                        "file:///m",
                        "pvc://claim/m",
                    ]
                ),
                st.one_of(
                    text,
                    st.builds("{}://{}".format, st.sampled_from(["ftp", "hdfs", "S3", ""]), text),
                ),
            ),
        },
        name=name_like,
        format=either(st.just("torch-export"), st.sampled_from(["torchscript", "onnx"]) | text),
        sha256=either(st.from_regex(r"[0-9a-f]{64}", fullmatch=True), text),
        secretRef=optional(name=name_like),
    ),
    st.one_of(text, st.integers(), st.just({})),
)
env_entry = optional(
    {"name": either(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), text)},
    value=text,
    valueFrom=either(
        st.just({"secretKeyRef": {"name": "creds", "key": "token"}}),
        st.dictionaries(text, text, max_size=2),
    ),
)
runtime = optional(
    image=either(st.sampled_from(["ghcr.io/x/runtime:1", "runtime@sha256:" + "a" * 64]), text),
    port=either(st.integers(1024, 65535), st.integers(-1, 70000)),
    resources=optional(requests=resource_list, limits=resource_list),
    gpu=optional(
        count=either(st.integers(0, 4), small_int),
        product=name_like,
        resource=either(
            st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/gpu.shared"]),
            text,
        ),
    ),
    gpuClaim=optional(
        count=either(st.integers(1, 4), small_int),
        deviceClassName=either(st.sampled_from(["gpu.nvidia.com", "mig.nvidia.com"]), text),
        product=either(st.just("NVIDIA H100 80GB HBM3"), text),
        minMemory=either(st.sampled_from(["40Gi", "10000Mi"]), text),
        migProfile=either(st.sampled_from(["1g.10gb", "3g.40gb"]), text),
        selectors=st.lists(
            either(st.just("device.attributes['gpu.nvidia.com'].architecture == 'Hopper'"), text),
            max_size=2,
        ),
        sharing=optional(
            strategy=either(st.sampled_from(["TimeSlicing", "MPS"]), text),
            config=st.dictionaries(label, st.integers(0, 100), max_size=1),
        ),
    ),
    env=st.lists(env_entry, max_size=3),
    batching=optional(
        enabled=st.booleans(),
        maxBatchSize=either(st.integers(1, 64), st.integers(-1, 5000)),
        maxQueueDelayMs=either(st.integers(0, 50), st.integers(-1, 20000)),
    ),
)
int_or_percent = either(
    st.integers(0, 3) | st.from_regex(r"[0-9]{1,2}%", fullmatch=True),
    st.integers(-2, 5) | text,
)
rollout = optional(
    strategy=either(st.sampled_from(["RollingUpdate", "Recreate", "Canary"]), text),
    maxSurge=int_or_percent,
    maxUnavailable=int_or_percent,
    progressDeadlineSeconds=either(st.integers(10, 600), st.integers(-1, 100000)),
    autoRollback=st.booleans(),
    paused=st.booleans(),
    rollbackTo=small_int,
    canary=optional(
        steps=st.lists(
            optional(
                {"weight": either(st.integers(1, 100), st.integers(-5, 120))},
                pause=st.one_of(
                    st.just({}),
                    optional(
                        duration=either(st.from_regex(r"[0-9]{1,2}[smh]", fullmatch=True), text)
                    ),
                ),
            ),
            max_size=4,
        )
    ),
)
label_key = either(label, st.sampled_from(["modelplane.io/x", "app.kubernetes.io/name"]) | text)
pod = optional(
    nodeSelector=st.dictionaries(label_key, name_like, max_size=2),
    tolerations=st.lists(
        optional(
            key=name_like,
            operator=either(st.sampled_from(["Exists", "Equal"]), text),
            value=name_like,
            effect=either(st.sampled_from(["NoSchedule", "NoExecute", ""]), text),
            tolerationSeconds=small_int,
        ),
        max_size=2,
    ),
    affinity=either(st.just({}), st.dictionaries(text, text, max_size=1)),
    serviceAccountName=name_like,
    priorityClassName=name_like,
    imagePullSecrets=st.lists(optional(name=name_like), max_size=2),
    annotations=st.dictionaries(label_key, text, max_size=2),
    labels=st.dictionaries(label_key, name_like, max_size=2),
)
spec = optional(
    {"model": model},
    runtime=runtime,
    replicas=either(st.integers(0, 2), st.sampled_from([-1, 1001]) | text),
    rollout=rollout,
    revisionHistoryLimit=either(st.integers(0, 5), st.integers(-1, 60)),
    pod=pod,
    surprise=text,  # unknown fields are pruned, never an error
)


def _readable_refusal(name: str, status: int, body: str) -> str:
    """The refusal a user sees in `kubectl apply`: a 422 naming the field and the rule."""
    assert status == 422, (status, body)
    details = json.loads(body)
    message: str = details["message"]
    assert message.startswith(f'ModelDeployment.modelplane.io "{name}" is invalid: '), message
    causes = details.get("details", {}).get("causes", [])
    assert all(cause.get("message") for cause in causes), causes
    # Every refusal names a field of the spec; the API server may add a field-less note
    # ("some validation rules were not checked ...") beside it.
    fields = [c["field"] for c in causes if c.get("field", "").startswith("spec")]
    assert fields, message
    assert "Internal error" not in message and "panic" not in message
    return fields[0].split("[")[0]


def _operator_metric(operator: Any, prefix: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in operator.metrics().splitlines()
        if line.startswith(prefix)
    )


def test_generated_manifests_are_refused_readably_or_reported(
    cluster: Cluster, namespace: str, operator: Any, reliability: Recorder
) -> None:
    """Generated ModelDeployment manifests: refused at admission or reported by a condition."""
    if cluster.local is None:
        pytest.skip("counts writes in the local API server's audit log")
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from operatorkit import USERNAME

    api = client.CustomObjectsApi(cluster.api_client())
    since = datetime.datetime.now(datetime.UTC)
    unexpected_before = _operator_metric(
        operator, 'modelplane_reconcile_errors_total{kind="unexpected"}'
    )
    accepted: list[str] = []
    refused_fields: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=GENERATED,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(spec)
    def admit(body: dict[str, Any]) -> None:
        name = f"fz-{len(accepted) + sum(refused_fields.values())}"
        manifest = {
            "apiVersion": "modelplane.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": body,
        }
        try:
            api.create_namespaced_custom_object(
                "modelplane.io", "v1alpha1", namespace, "modeldeployments", manifest
            )
        except ApiException as exc:
            refused_fields[_readable_refusal(name, exc.status, exc.body)] += 1
        else:
            accepted.append(name)

    admit()
    tried = len(accepted) + sum(refused_fields.values())
    assert accepted and refused_fields, "the generator should produce both kinds"

    def reported() -> dict[str, dict[str, Any]] | None:
        items = api.list_namespaced_custom_object(
            "modelplane.io", "v1alpha1", namespace, "modeldeployments"
        )["items"]
        done = {
            md["metadata"]["name"]: md
            for md in items
            if md.get("status", {}).get("observedGeneration") == md["metadata"]["generation"]
            and condition(md, "Ready").get("reason")
        }
        return done if len(done) == len(accepted) else None

    objects = wait_for(reported, f"all {len(accepted)} accepted objects reported", timeout=600)
    time.sleep(5)  # anything still writing now is looping

    # The operator neither crashed nor failed on a surprise.
    assert operator.proc is not None and operator.proc.poll() is None, operator.log_tail()
    unexpected = _operator_metric(operator, 'modelplane_reconcile_errors_total{kind="unexpected"}')
    assert unexpected == unexpected_before, operator.log_tail(80)

    # No object half-made: a Service only beside a Deployment and the other way round.
    deployments = cluster.get_json("deployments", "-n", namespace)["items"]
    services = cluster.get_json("services", "-n", namespace)["items"]
    with_deployment = {d["metadata"]["labels"]["modelplane.io/deployment"] for d in deployments}
    with_service = {s["metadata"]["name"] for s in services}
    half_made = {
        name: (objects[name]["spec"], condition(objects[name], "Ready"))
        for name in with_deployment ^ with_service
    }
    assert not half_made, json.dumps(half_made, indent=1, ensure_ascii=False)[:4000]

    # Bounded writes per object.
    writes: collections.Counter[str] = collections.Counter()
    for event in cluster.audit_events():
        ref = event["objectRef"]
        if (
            event["user"]["username"] == USERNAME
            and ref.get("namespace") == namespace
            and _after(event, since)
        ):
            owner = (
                ref.get("name", "").rsplit("-r", 1)[0]
                if ref.get("resource") == "deployments"
                else ref.get("name", "")
            )
            writes[owner.split(".")[0]] += 1
    busiest = writes.most_common(1)[0] if writes else ("", 0)
    assert busiest[1] <= WRITE_BOUND, f"{busiest} writes: a hot loop"

    reasons = collections.Counter(condition(md, "Ready")["reason"] for md in objects.values())
    reliability.record("manifests generated and created", tried)
    reliability.record("refused at admission", sum(refused_fields.values()))
    reliability.record("accepted and reported", len(accepted))
    reliability.record(
        "most refused fields", ", ".join(f"{f} ({n})" for f, n in refused_fields.most_common(5))
    )
    reliability.record("Ready reasons", ", ".join(f"{r} ({n})" for r, n in reasons.most_common()))
    reliability.record("most writes for one object", busiest[1])


def _after(event: dict[str, Any], since: datetime.datetime) -> bool:
    stamp = datetime.datetime.fromisoformat(
        event["requestReceivedTimestamp"].replace("Z", "+00:00")
    )
    return stamp >= since


@pytest.mark.found(
    "Characters beyond the Basic Multilingual Plane (an emoji in a pod annotation) made every "
    "server-side apply of the object fail: the API client escaped them as UTF-16 surrogate "
    "pairs, which the API server's YAML decoder refuses"
)
def test_emoji_in_pod_annotations_reach_the_deployment(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    note = "serves 🚀 models 𝄞"
    cluster.apply(model_deployment("unicode", pod={"annotations": {"note": note}}), namespace)
    wait_condition(cluster, "unicode", namespace, "Ready", reason="AllReplicasReady")
    deployment = get(cluster, "deployment", "unicode-r1", namespace)
    assert deployment is not None
    assert deployment["spec"]["template"]["metadata"]["annotations"]["note"] == note


@pytest.mark.found(
    "A ModelDeployment whose Deployment the API server refused got no condition at all "
    "(only an operator log line), and its Service was created without a Deployment"
)
def test_a_child_the_api_server_refuses_is_reported_and_nothing_is_half_made(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    # Admission cannot see this mistake: an empty nodeSelectorTerms list is refused only
    # when it lands in a real pod template.
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
        }
    }
    cluster.apply(model_deployment("refused", pod={"affinity": affinity}), namespace)
    md = wait_condition(cluster, "refused", namespace, "Stalled", reason="InvalidSpec")
    message = condition(md, "Ready")["message"]
    assert "Deployment" in message and "nodeSelectorTerms" in message, message
    assert condition(md, "Ready")["status"] == "False"
    assert get(cluster, "deployment", "refused-r1", namespace) is None
    assert get(cluster, "service", "refused", namespace) is None

    # Fixing the spec recovers, with both children.
    cluster.kubectl(
        "patch", "md", "refused", "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/spec/pod/affinity"}]),
    )  # fmt: skip
    wait_condition(cluster, "refused", namespace, "Ready", reason="AllReplicasReady")
    assert get(cluster, "service", "refused", namespace) is not None


@pytest.mark.found(
    "A new version whose Deployment the API server refused first scaled the serving "
    "revision down (its scale came before the refused apply) and left it there"
)
def test_a_refused_new_version_leaves_the_serving_revision_whole(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    from mdkit import wait_serving

    rollout = {"maxSurge": 0, "maxUnavailable": 1}
    cluster.apply(model_deployment("keeps", replicas=2, rollout=rollout), namespace)
    wait_serving(cluster, namespace, "keeps", "1.0.0")
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
        }
    }
    refused = model_deployment("keeps", "2.0.0", replicas=2, rollout=rollout)
    refused["spec"]["pod"] = {"affinity": affinity}
    cluster.apply(refused, namespace)
    md = wait_condition(cluster, "keeps", namespace, "Stalled", reason="InvalidSpec")
    time.sleep(2)  # more reconciles: still nothing scaled down
    deployment = get(cluster, "deployment", "keeps-r1", namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    assert get(cluster, "deployment", "keeps-r2", namespace) is None
    md = get(cluster, "md", "keeps", namespace)
    assert condition(md, "Available")["status"] == "True"  # version 1.0.0 still serves


@pytest.mark.found(
    "A new ModelDeployment asking for rollbackTo a revision that never existed got its "
    "Service but no Deployment"
)
def test_rollback_to_an_unknown_revision_on_a_new_object_makes_no_service(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    cluster.apply(model_deployment("nowhere", rollout={"rollbackTo": 4}), namespace)
    md = wait_condition(
        cluster, "nowhere", namespace, "Ready", status="False", reason="RevisionNotFound"
    )
    assert "rollbackTo 4" in condition(md, "Ready")["message"]
    time.sleep(2)  # nothing else is coming
    assert get(cluster, "service", "nowhere", namespace) is None
    assert cluster.get_json("deployments", "-n", namespace)["items"] == []


@pytest.mark.found(
    "A pod field the API server's apply machinery cannot type (an unknown key under "
    "pod.affinity, duplicate imagePullSecrets) got a 500 on every apply; the operator took "
    "it for an outage, retried silently for ever and never reported the object"
)
def test_a_child_the_api_server_cannot_apply_is_reported(
    cluster: Cluster, namespace: str, operator: Any
) -> None:
    cluster.apply(model_deployment("untyped", pod={"affinity": {"nodeAfinity": {}}}), namespace)
    md = wait_condition(cluster, "untyped", namespace, "Stalled", reason="InvalidSpec")
    message = condition(md, "Ready")["message"]
    assert "nodeAfinity" in message and "not declared in schema" in message, message
    assert get(cluster, "service", "untyped", namespace) is None
