"""The dev cluster's PKI: one CA, the apiserver's serving cert, client certs, the SA key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ortkube.devcluster import network

VALID_FOR = datetime.timedelta(days=365)
# The in-cluster names clients may use for the apiserver, plus loopback where it listens.
APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
APISERVER_IPS = (network.HOST, network.KUBERNETES_SERVICE_IP)

# Client identities: file stem -> (CN = user name, O = groups). Bootstrap RBAC already binds
# roles to the controller-manager and scheduler users, so they run with real, narrow rights.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("ortkube-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
}


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: fast to generate on a small CI machine, accepted by every Kubernetes component.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
    )


def new_ca(common_name: str = "ortkube-dev-ca") -> KeyPair:
    """A self-signed CA that signs every other cert of the cluster."""
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _sign(ca: KeyPair, builder: x509.CertificateBuilder) -> bytes:
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def new_serving_cert(ca: KeyPair, dns_names: tuple[str, ...], ips: tuple[str, ...]) -> KeyPair:
    """A TLS server cert for loopback and the usual in-cluster names of the apiserver."""
    key = _new_key()
    issuer = x509.load_pem_x509_certificate(ca.cert_pem).subject
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    builder = (
        _builder(_name(dns_names[0]), issuer, key.public_key())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    return KeyPair(_sign(ca, builder), _key_pem(key))


def new_client_cert(ca: KeyPair, user: str, groups: tuple[str, ...]) -> KeyPair:
    """A client cert; the apiserver reads the user from CN and the groups from O."""
    key = _new_key()
    issuer = x509.load_pem_x509_certificate(ca.cert_pem).subject
    builder = _builder(_name(user, groups), issuer, key.public_key()).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    )
    return KeyPair(_sign(ca, builder), _key_pem(key))


def new_service_account_key() -> KeyPair:
    """The key that signs service account tokens; cert_pem holds its public key."""
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(public, _key_pem(key))


def _write(directory: Path, stem: str, pair: KeyPair, cert_suffix: str = ".crt") -> None:
    (directory / f"{stem}{cert_suffix}").write_bytes(pair.cert_pem)
    key_path = directory / f"{stem}.key"
    key_path.write_bytes(pair.key_pem)
    key_path.chmod(0o600)


def write_pki(directory: Path) -> None:
    """Create the cluster's PKI files once; an existing CA is kept (restarts reuse it)."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "sa.key").is_file():  # written last: a half-written PKI is redone
        return
    ca = new_ca()
    _write(directory, "ca", ca)
    _write(directory, "apiserver", new_serving_cert(ca, APISERVER_DNS_NAMES, APISERVER_IPS))
    for stem, (user, groups) in CLIENTS.items():
        _write(directory, stem, new_client_cert(ca, user, groups))
    _write(directory, "sa", new_service_account_key(), cert_suffix=".pub")
