"""The deployment's Ed25519 key that signs proofs of deletion."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SigningKeyError(RuntimeError):
    """The signing key file is missing or unusable; the message names the file."""


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Return the short, stable identifier of a public key (16 hex characters)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """A private signing key with its public half and identifier."""

    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        """Return the public key that verifies this key's signatures."""
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        """Return the identifier printed on proofs signed with this key."""
        return key_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """Return the Ed25519 signature of ``data``."""
        return self.private_key.sign(data)

    def public_pem(self) -> str:
        """Return the public key as PEM, for publication."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")


def load_signing_key(path: Path) -> SigningKey:
    """Read a PEM Ed25519 private key; raise :class:`SigningKeyError` if unusable."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningKeyError(f"signing key file {path} does not exist") from None
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"signing key file {path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key file {path} holds a key that is not Ed25519")
    return SigningKey(key)


def load_or_create_signing_key(path: Path) -> SigningKey:
    """Return the key in ``path``, creating it (readable by the owner only) if absent."""
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    return load_signing_key(path)


def load_public_key_pem(text: str) -> Ed25519PublicKey:
    """Return the Ed25519 public key in PEM ``text``."""
    key = serialization.load_pem_public_key(text.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def verify_signature(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """Return whether ``signature`` is ``public_key``'s signature of ``data``."""
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
