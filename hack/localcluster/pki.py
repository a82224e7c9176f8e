"""Certificates of the local cluster, from one throwaway CA made at every start."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .addresses import KUBERNETES_SERVICE_IP, NODE_IP

NODE_NAME = "node-0"
VALIDITY = datetime.timedelta(days=365)
SKEW = datetime.timedelta(minutes=5)  # valid a little before now: clocks differ


def write_pki(pki: Path) -> None:
    """A CA, serving and client certificates of every component, the SA keys."""
    ca = _CA.create(pki)
    apiserver_dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    apiserver_dns.append("kubernetes.default.svc.cluster.local")
    apiserver_ips = ["127.0.0.1", NODE_IP, KUBERNETES_SERVICE_IP]
    ca.server("kube-apiserver", "apiserver", apiserver_dns, apiserver_ips)
    ca.client("modelplane-admin", "system:masters", "admin")
    # The real node: the API server's client cert for kubelet (logs, exec), the kubelet's
    # own client cert (the Node authorizer's system:node:<name>) and serving cert, and
    # kube-proxy's client cert (bound to system:node-proxier by the default RBAC).
    ca.client("kube-apiserver-kubelet-client", "system:masters", "apiserver-kubelet")
    ca.client(f"system:node:{NODE_NAME}", "system:nodes", "kubelet-client")
    ca.server(NODE_NAME, "kubelet-serving", [NODE_NAME], [NODE_IP])
    ca.client("system:kube-proxy", None, "kube-proxy")
    # The aggregator's client cert (metrics-server trusts the user headers it sends).
    ca.client("front-proxy-client", None, "front-proxy-client")
    ca.server("metrics-server", "metrics-server", ["metrics-server.kube-system.svc"], [NODE_IP])
    # The cluster's OCI registries (registries.py), served on node-0's address.
    ca.server("registry", "registry", ["localhost"], [NODE_IP, "127.0.0.1"])
    _write_service_account_keys(pki)


def write_registry_pki(pki: Path) -> None:
    """A CA and a registry certificate for 127.0.0.1 alone (a registry outside a cluster)."""
    ca = _CA.create(pki)
    ca.server("registry", "registry", ["localhost"], ["127.0.0.1"])


@dataclass(frozen=True)
class _CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    pki: Path
    now: datetime.datetime

    @classmethod
    def create(cls, pki: Path) -> _CA:
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        usage = x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        cert = (
            _builder(_name("modelplane-local-ca"), _name("modelplane-local-ca"), key, now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        _save_key(key, pki / "ca.key")
        _save_cert(cert, pki / "ca.crt")
        return cls(key, cert, pki, now)

    def client(self, cn: str, org: str | None, out: str) -> None:
        self._issue(cn, org, ExtendedKeyUsageOID.CLIENT_AUTH, out, None)

    def server(self, cn: str, out: str, dns: list[str], ips: list[str]) -> None:
        names = [x509.DNSName(d) for d in dns]
        addresses = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        alt = x509.SubjectAlternativeName([*names, *addresses])
        self._issue(cn, None, ExtendedKeyUsageOID.SERVER_AUTH, out, alt)

    def _issue(
        self,
        cn: str,
        org: str | None,
        usage: x509.ObjectIdentifier,
        out: str,
        alt: x509.SubjectAlternativeName | None,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(_name(cn, org), self.cert.subject, key, self.now)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if alt is not None:
            builder = builder.add_extension(alt, critical=False)
        _save_key(key, self.pki / f"{out}.key")
        _save_cert(builder.sign(self.key, hashes.SHA256()), self.pki / f"{out}.crt")


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + VALIDITY)
    )


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _write_service_account_keys(pki: Path) -> None:
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _save_key(sa_key, pki / "sa.key")
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _save_key(key: Any, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _save_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
