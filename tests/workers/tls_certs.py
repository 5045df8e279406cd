"""A throwaway PKI for the lanes' TLS tests (tests/workers/test_lane_server.py), made with
`cryptography` in a temp folder: what a cluster with Ray's TLS on gives each node (a CA, and a
certificate for the node's address that serves as both server and client certificate).

`make_pki` returns TLSFiles by role:
- node:      Ray's CA and a certificate naming 127.0.0.1 (and localhost), as Ray's TLS docs make one;
- rogue:     a certificate another CA signed (it trusts Ray's CA, so only the worker's check can refuse it);
- elsewhere: Ray's CA, but a certificate naming 127.0.0.9 only (the driver dials 127.0.0.1).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from workers.lane_transport import TLSFiles


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(subject: str, key, issuer: tuple[x509.Name, object] | None, ips: list[str]) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if issuer is None:  # a CA, self-signed
        builder = builder.issuer_name(_name(subject)).add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                                                    critical=True)
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
        return builder.sign(key, hashes.SHA256())
    names = [x509.DNSName("localhost"), *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]
    builder = (builder.issuer_name(issuer[0]).add_extension(x509.SubjectAlternativeName(names), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    return builder.sign(issuer[1], hashes.SHA256())


def _write(folder: Path, stem: str, cert: x509.Certificate, key=None) -> Path:
    (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (folder / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
    return folder / f"{stem}.crt"


def make_pki(folder: Path) -> dict[str, TLSFiles]:
    ca_key, rogue_ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _issue("ray-ca", ca_key, None, [])
    rogue_ca = _issue("rogue-ca", rogue_ca_key, None, [])
    ca_path = _write(folder, "ca", ca)
    files = {}
    for role, issuer, ips in (("node", (ca.subject, ca_key), ["127.0.0.1"]),
                              ("rogue", (rogue_ca.subject, rogue_ca_key), ["127.0.0.1"]),
                              ("elsewhere", (ca.subject, ca_key), ["127.0.0.9"])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert_path = _write(folder, role, _issue(role, key, issuer, ips), key)
        files[role] = TLSFiles(str(cert_path), str(folder / f"{role}.key"), str(ca_path))
    return files
