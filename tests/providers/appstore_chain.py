"""A certificate chain shaped like Apple's (root → intermediate with OID 1.2.840.113635.100.6.2.1
→ leaf with OID 1.2.840.113635.100.6.11.1), built here, and JWS ES256 signed with its leaf."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LEAF_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
INTERMEDIATE_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, ca: bool, oid: x509.ObjectIdentifier | None,
          issuer_pub: Any) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=365)).not_valid_after(now + timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False))
    if oid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x05\x00"), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Chain:
    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def build(cls, name: str = "Test", leaf_oid: bool = True) -> Chain:
        root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        root = _cert(f"{name} Root CA", root_key, f"{name} Root CA", root_key, ca=True, oid=None,
                     issuer_pub=root_key.public_key())
        mid = _cert(f"{name} WWDR", mid_key, f"{name} Root CA", root_key, ca=True, oid=INTERMEDIATE_OID,
                    issuer_pub=root_key.public_key())
        leaf = _cert(f"{name} Signing", leaf_key, f"{name} WWDR", mid_key, ca=False, oid=LEAF_OID if leaf_oid else None,
                     issuer_pub=mid_key.public_key())
        return cls(root, mid, leaf, leaf_key)

    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    def jws(self, claims: dict[str, Any]) -> str:
        x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
               for c in (self.leaf, self.intermediate, self.root)]
        return jwt.encode(claims, self.leaf_key, algorithm="ES256", headers={"x5c": x5c})

    def body(self, decoded: dict[str, Any]) -> bytes:
        """A notification body from a decoded one (`data.transactionInfo` / `renewalInfo` decoded)."""
        notification = json.loads(json.dumps(decoded))
        data = notification.get("data", {})
        if "transactionInfo" in data:
            data["signedTransactionInfo"] = self.jws(data.pop("transactionInfo"))
        if "renewalInfo" in data:
            data["signedRenewalInfo"] = self.jws(data.pop("renewalInfo"))
        return json.dumps({"signedPayload": self.jws(notification)}).encode()
