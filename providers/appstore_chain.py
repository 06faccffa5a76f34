"""Throwaway certificate chains shaped like Apple's, and App Store JWS signed with them.

Apple signs App Store Server Notifications with a leaf (OID 1.2.840.113635.100.6.11.1) issued by
its WWDR intermediate (OID 1.2.840.113635.100.6.2.1) under Apple Root CA - G3. `Chain.build`
makes a fresh root → intermediate → leaf of that shape with `cryptography`, so that
`hooktrack providers appstore --test-secrets` can offer a source whose `root_certificates` is the
fresh root and whose `sample_signing_key` (`Chain.signing_pem`: the leaf's private key, then the
leaf and intermediate certificates) signs the built-in samples. The tests use the same chains.

Nothing here verifies a webhook: that is Apple's `SignedDataVerifier` against the source's
`root_certificates` (providers/appstore.py). `signing_chain` only asks the same library, at
startup, whether a `sample_signing_key` could sign anything those roots accept.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from appstoreserverlibrary.models.Environment import Environment
from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier, VerificationException
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["INTERMEDIATE_OID", "LEAF_OID", "Chain", "signing_chain"]

LEAF_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.11.1")
INTERMEDIATE_OID = x509.ObjectIdentifier("1.2.840.113635.100.6.2.1")

_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----", re.DOTALL)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey, *,
          ca: bool, oid: x509.ObjectIdentifier | None, valid: tuple[datetime, datetime]) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(valid[0]).not_valid_after(valid[1])
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if oid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, b"\x05\x00"), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _der64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@dataclass(frozen=True)
class Chain:
    """A root, its intermediate, the leaf and the leaf's private key: signs App Store JWS."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def build(cls, name: str = "Test", *, leaf_oid: bool = True, days_back: int = 365,
              days_ahead: int = 365) -> Chain:
        """A fresh P-256 chain named `name`, valid from `days_back` days ago to `days_ahead` days
        from now; `leaf_oid=False` leaves Apple's OID off the leaf (one the library refuses)."""
        now = datetime.now(UTC)
        valid = (now - timedelta(days=days_back), now + timedelta(days=days_ahead))
        root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        root = _cert(f"{name} Root CA", root_key, f"{name} Root CA", root_key, ca=True, oid=None, valid=valid)
        mid = _cert(f"{name} WWDR", mid_key, f"{name} Root CA", root_key, ca=True, oid=INTERMEDIATE_OID, valid=valid)
        leaf = _cert(f"{name} Signing", leaf_key, f"{name} WWDR", mid_key, ca=False,
                     oid=LEAF_OID if leaf_oid else None, valid=valid)
        return cls(root, mid, leaf, leaf_key)

    @classmethod
    def from_signing_pem(cls, pem: str, roots: Sequence[bytes]) -> Chain:
        """The chain of a `sample_signing_key` (a PEM private key, then the leaf and the
        intermediate certificate) under the one of `roots` (DER) that issued its intermediate.

        Raises `ValueError` saying what is wrong: not a P-256 key and two certificates, a key
        that is not the leaf's, a leaf not issued by the intermediate, no root that issued it.
        """
        blocks = [m.group(0) for m in _BLOCK.finditer(pem)]
        keys = [b for b in blocks if "PRIVATE KEY-----" in b.splitlines()[0]]
        certs = [b for b in blocks if b.startswith("-----BEGIN CERTIFICATE-----")]
        if len(keys) != 1 or len(certs) != 2 or len(blocks) != 3:
            raise ValueError("not a PEM private key followed by two certificates (the leaf, then the intermediate)")
        try:
            key = serialization.load_pem_private_key(keys[0].encode(), password=None)
            leaf, mid = (x509.load_pem_x509_certificate(c.encode()) for c in certs)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"unreadable PEM ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the private key is not an EC P-256 key (App Store JWS are ES256)")
        if leaf.public_key() != key.public_key():
            raise ValueError("the private key is not the first certificate's (the leaf's)")
        if not _issued(leaf, mid):
            raise ValueError("the first certificate (the leaf) was not issued by the second (the intermediate)")
        for der in roots:
            root = x509.load_der_x509_certificate(der)
            if _issued(mid, root):
                return cls(root, mid, leaf, key)
        raise ValueError("its intermediate was not issued by any of root_certificates, "
                         "so every notification it signs would be refused")

    def root_pem(self) -> str:
        """The root certificate as PEM (a `root_certificates` entry)."""
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    def signing_pem(self) -> str:
        """The `sample_signing_key` setting: the leaf's private key (PKCS#8 PEM), then the leaf
        and intermediate certificates."""
        key = self.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode()
        certs = (c.public_bytes(serialization.Encoding.PEM).decode() for c in (self.leaf, self.intermediate))
        return key + "".join(certs)

    def jws(self, claims: dict[str, Any]) -> str:
        """`claims` as an ES256 JWS signed by the leaf, `x5c` = leaf, intermediate, root (as Apple's)."""
        x5c = [_der64(c) for c in (self.leaf, self.intermediate, self.root)]
        return jwt.encode(claims, self.leaf_key, algorithm="ES256", headers={"x5c": x5c})

    def body(self, decoded: dict[str, Any]) -> bytes:
        """A notification body `{"signedPayload": JWS}` from a decoded notification: its
        `data.transactionInfo` / `data.renewalInfo` become `signedTransactionInfo` /
        `signedRenewalInfo`, JWS signed by the same leaf."""
        notification = json.loads(json.dumps(decoded))
        data = notification.get("data", {})
        if "transactionInfo" in data:
            data["signedTransactionInfo"] = self.jws(data.pop("transactionInfo"))
        if "renewalInfo" in data:
            data["signedRenewalInfo"] = self.jws(data.pop("renewalInfo"))
        return json.dumps({"signedPayload": self.jws(notification)}).encode()


def signing_chain(pem: str, roots: Sequence[bytes]) -> Chain:
    """The chain of a `sample_signing_key` (`Chain.from_signing_pem`), refused unless Apple's
    library accepts a JWS it signs now under `roots` (DER): Apple's OIDs on the leaf and the
    intermediate, every certificate valid now, a chain the library (X509_STRICT) builds to a
    root. Raises `ValueError` saying why, since every sample it signed would be refused."""
    chain = Chain.from_signing_pem(pem, roots)
    probe = chain.jws({"bundleId": "hooktrack.probe", "environment": "Sandbox",
                       "signedDate": int(datetime.now(UTC).timestamp() * 1000)})
    verifier = SignedDataVerifier(list(roots), False, Environment.SANDBOX, "hooktrack.probe")
    try:
        verifier.verify_and_decode_signed_transaction(probe)
    except VerificationException as exc:
        raise ValueError(f"Apple's library refuses its chain under root_certificates ({exc.status.name}; it needs "
                         "Apple's OIDs on the leaf and intermediate and certificates valid now), so every "
                         "sample it signs would be refused") from None
    return chain


def _issued(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
