"""A reconcile that fails on transient API errors is requeued with backoff: it converges
within seconds, not at the next resync (120 s)."""

from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Cluster, wait_for
from mdkit import admission_answers, model_deployment, wait_condition

pytestmark = pytest.mark.usefixtures("operator")


class Refuser:
    """An admission webhook answering 503 to the operator's first ``count`` Deployment writes."""

    def __init__(self, user: str, namespace: str, count: int) -> None:
        self.user, self.namespace, self.left = user, namespace, count
        self.refused = 0
        self.seen = 0
        self._lock = threading.Lock()

    def review(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.seen += 1
            ours = request["userInfo"]["username"] == self.user
            if ours and request.get("namespace") == self.namespace and self.left > 0:
                self.left -= 1
                self.refused += 1
                return {
                    "uid": request["uid"],
                    "allowed": False,
                    "status": {"code": 503, "message": "the test's webhook: try again later"},
                }
        return {"uid": request["uid"], "allowed": True}


def _serving_cert(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "refuser")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def refuser(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Refuser]:
    from operatorkit import USERNAME

    webhook = Refuser(USERNAME, namespace, count=6)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": webhook.review(review["request"]),
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    cert, key = _serving_cert(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    name = f"refuser-{namespace}"
    cluster.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "refuser.modelplane.test",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{server.server_address[1]}/validate",
                        "caBundle": base64.b64encode(cert.read_bytes()).decode(),
                    },
                    "rules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ],
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }
            ],
        }
    )
    try:

        def active() -> bool:
            admission_answers(cluster, namespace)
            return webhook.seen > 0

        wait_for(active, "the webhook to be called", timeout=30)
        yield webhook
    finally:
        cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)
        server.shutdown()


def _retries(operator: Any) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith("modelplane_reconcile_retries_total "):
            return float(line.split()[-1])
    return 0.0


def test_writes_refused_with_503_are_retried_with_backoff_and_converge_in_seconds(
    cluster: Cluster, namespace: str, operator: Any, refuser: Refuser
) -> None:
    retries = _retries(operator)
    started = time.monotonic()
    cluster.apply(model_deployment("retried"), namespace)
    wait_condition(cluster, "retried", namespace, "Ready", reason="AllReplicasReady", timeout=40)
    seconds = time.monotonic() - started
    # Six refusals outlast the client's own three tries per call: whole reconciles failed
    # and were requeued (0.5 s, then 1 s), long before the 120 s resync.
    assert refuser.refused == 6
    assert _retries(operator) - retries >= 2
    assert seconds < 30, seconds
    assert "modelplane_workqueue_depth " in operator.metrics()
