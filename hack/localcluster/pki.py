"""Certificates of the local cluster, from one throwaway CA made at every start."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

from .addresses import KUBERNETES_SERVICE_IP, NODE_IP

NODE_NAME = "node-0"


def write_pki(pki: Path) -> None:
    """A CA, serving and client certificates of every component, the SA keys."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def save_key(key: Any, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def save_cert(cert: x509.Certificate, path: Path) -> None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("modelplane-local-ca"))
        .issuer_name(name("modelplane-local-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    save_key(ca_key, pki / "ca.key")
    save_cert(ca_cert, pki / "ca.crt")

    def issue(
        cn: str, org: str | None, server: bool, out: str, dns: list[str], ips: list[str]
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn, org))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(d) for d in dns]
                    + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
                ),
                critical=False,
            )
        save_key(key, pki / f"{out}.key")
        save_cert(builder.sign(ca_key, hashes.SHA256()), pki / f"{out}.crt")

    apiserver_dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    apiserver_dns.append("kubernetes.default.svc.cluster.local")
    apiserver_ips = ["127.0.0.1", NODE_IP, KUBERNETES_SERVICE_IP]
    issue("kube-apiserver", None, True, "apiserver", apiserver_dns, apiserver_ips)
    issue("modelplane-admin", "system:masters", False, "admin", [], [])
    # The real node: the API server's client cert for kubelet (logs, exec), the kubelet's
    # own client cert (the Node authorizer's system:node:<name>) and serving cert, and
    # kube-proxy's client cert (bound to system:node-proxier by the default RBAC).
    issue("kube-apiserver-kubelet-client", "system:masters", False, "apiserver-kubelet", [], [])
    issue(f"system:node:{NODE_NAME}", "system:nodes", False, "kubelet-client", [], [])
    issue(NODE_NAME, None, True, "kubelet-serving", [NODE_NAME], [NODE_IP])
    issue("system:kube-proxy", None, False, "kube-proxy", [], [])
    # The aggregator's client cert (metrics-server trusts the user headers it sends).
    issue("front-proxy-client", None, False, "front-proxy-client", [], [])
    issue(
        "metrics-server",
        None,
        True,
        "metrics-server",
        ["metrics-server.kube-system.svc"],
        [NODE_IP],
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    save_key(sa_key, pki / "sa.key")
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
