"""A certificate whose CA runs an OCSP responder (``openssl ocsp``), for the stapling test:
Pebble's certificates, like Let's Encrypt's now, name no responder, so NGINX staples nothing
for them."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from bench.stack import free_port, stop


@dataclass
class OcspCertificate:
    """``chain`` (the certificate, then its CA's) and ``key`` for NGINX; ``ca`` for clients."""

    chain: Path
    key: Path
    ca: Path


@contextmanager
def certificate_with_ocsp(folder: Path) -> Iterator[OcspCertificate]:
    """A certificate for 127.0.0.1 from a CA of its own whose OCSP responder, running meanwhile
    on a loopback port the certificate names, answers that it is good (the CA signs)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test OCSP CA")])
    ca = _signed(x509.CertificateBuilder().subject_name(ca_name).public_key(ca_key.public_key())
                 .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True), ca_name, ca_key)
    leaf = _signed(x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                   .public_key(key.public_key())
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                       AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(f"http://127.0.0.1:{port}"))]),
                       critical=False), ca_name, ca_key)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "ca.key").write_bytes(ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (folder / "chain.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (folder / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    expiry = leaf.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
    (folder / "index.txt").write_text(f"V\t{expiry}\t\t{leaf.serial_number:X}\tunknown\t/CN=127.0.0.1\n")
    responder = subprocess.Popen(["openssl", "ocsp", "-index", str(folder / "index.txt"), "-port", str(port),
                                  "-rsigner", str(folder / "ca.pem"), "-rkey", str(folder / "ca.key"),
                                  "-CA", str(folder / "ca.pem"), "-ignore_err"],
                                 stdout=(folder / "ocsp.log").open("wb"), stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    try:
        yield OcspCertificate(folder / "chain.pem", folder / "key.pem", folder / "ca.pem")
    finally:
        stop(responder)


def _signed(builder: x509.CertificateBuilder, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (builder.issuer_name(issuer).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256()))
