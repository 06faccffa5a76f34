"""PEM keys as configs hold them: for providers that verify or sign with RSA (PayPal's
certificates, Paddle Classic's vendor key) and for their `sample_signing_key` settings."""

from __future__ import annotations

from functools import lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["pem_bytes", "rsa_private_key"]


def pem_bytes(pem: str) -> bytes:
    """A PEM's bytes; one squeezed into one environment-variable line (`\\n` for each line
    break) is unfolded."""
    text = pem.strip()
    if "\\n" in text and "\n" not in text:
        text = text.replace("\\n", "\n")
    return text.encode()


@lru_cache(maxsize=16)
def rsa_private_key(pem: str, scheme: str) -> rsa.RSAPrivateKey:
    """An unencrypted PEM RSA private key; raises `ValueError` saying what it is not (`scheme`
    names what the key is for in that message: "PayPal signs SHA256withRSA")."""
    try:
        key = serialization.load_pem_private_key(pem_bytes(pem), password=None)
    except TypeError:
        raise ValueError("is an encrypted private key: give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("is not a PEM private key (-----BEGIN PRIVATE KEY-----)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"is not an RSA private key ({scheme})")
    return key
