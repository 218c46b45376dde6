"""The generated PKI: a CA that signs a loopback serving certificate and a system:masters client."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.devcluster import pki


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_certificate_is_signed_by_the_ca_and_covers_loopback(tmp_path: Path) -> None:
    """The API server certificate verifies against the CA and names 127.0.0.1 and the service IP."""
    paths = pki.generate(tmp_path, "unit", "10.96.0.1")
    ca, serving = _cert(paths.ca_cert), _cert(paths.serving_cert)
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("10.96.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    usage = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_admin_certificate_is_in_system_masters(tmp_path: Path) -> None:
    """The admin identity is a client certificate whose organization is system:masters."""
    paths = pki.generate(tmp_path, "unit", "10.96.0.1")
    admin = _cert(paths.admin_cert)
    admin.verify_directly_issued_by(_cert(paths.ca_cert))
    organizations = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert organizations == ["system:masters"]


def test_private_keys_are_private(tmp_path: Path) -> None:
    """Key files are readable by their owner only."""
    paths = pki.generate(tmp_path, "unit", "10.96.0.1")
    for key in (paths.ca_key, paths.serving_key, paths.admin_key, paths.sa_key):
        assert key.stat().st_mode & 0o077 == 0


def test_each_cluster_gets_its_own_ca(tmp_path: Path) -> None:
    """Two clusters never trust each other's certificates."""
    one = pki.generate(tmp_path / "one", "one", "10.96.0.1")
    two = pki.generate(tmp_path / "two", "two", "10.96.0.1")
    ca_one, ca_two = _cert(one.ca_cert), _cert(two.ca_cert)
    assert ca_one.public_key() != ca_two.public_key()
    assert isinstance(ca_one.public_key(), ec.EllipticCurvePublicKey)
