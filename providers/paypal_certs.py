"""PayPal's certificates and keys: reading PEM settings, checking a signature, making a throwaway.

PayPal signs `SHA256withRSA` (PKCS#1 v1.5 over SHA-256), so every certificate and key here is RSA.
PEM values may arrive squeezed into one environment-variable line (`\\n` for each newline).
Used by `providers.paypal` for `pinned_certificates`, `sample_signing_key` and `test_source()`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from adapter.pem import pem_bytes, rsa_private_key

__all__ = ["load_certificate", "load_private_key", "rsa_key", "self_signed", "sign", "signed_by"]


@lru_cache(maxsize=32)
def load_certificate(pem: str) -> x509.Certificate:
    """A PEM certificate with an RSA key; raises `ValueError` saying what it is not."""
    try:
        cert = x509.load_pem_x509_certificate(pem_bytes(pem))
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    rsa_key(cert)
    return cert


def rsa_key(cert: x509.Certificate) -> rsa.RSAPublicKey:
    """The certificate's RSA public key; raises `ValueError` for any other kind of key."""
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("is not an RSA certificate (PayPal signs SHA256withRSA)")
    return key


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """An unencrypted PEM RSA private key; raises `ValueError` saying what it is not."""
    return rsa_private_key(pem, "PayPal signs SHA256withRSA")


def signed_by(cert: x509.Certificate, signature: bytes, message: bytes) -> bool:
    """Whether `signature` is the certificate key's SHA256withRSA signature of `message`."""
    try:
        rsa_key(cert).verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def sign(key_pem: str, message: bytes) -> bytes:
    """The SHA256withRSA signature of `message` with the PEM private key `key_pem`."""
    return load_private_key(key_pem).sign(message, padding.PKCS1v15(), hashes.SHA256())


def self_signed(common_name: str, days: int) -> tuple[str, str]:
    """A fresh RSA-2048 key and a self-signed certificate of it valid from an hour ago for `days`:
    (certificate PEM, unencrypted PKCS#8 key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=days)).sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
