"""Protect personal data at rest: authenticated encryption and keyed lookup hashes."""

from __future__ import annotations

import hashlib
import hmac
import os
import unicodedata

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: Prefix of every ciphertext, so a future key or algorithm can be told apart.
_VERSION = b"\x01"


class DecryptionError(ValueError):
    """A ciphertext was altered or was made with another key."""


def normalise_email(email: str) -> str:
    """Return the form of an address used for lookups: NFC, trimmed, lower case."""
    return unicodedata.normalize("NFC", email).strip().lower()


def keyed_hash(key: bytes, value: str) -> str:
    """Return the HMAC-SHA256 of ``value`` as hex; it finds a subject without storing them."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def encrypt(key: bytes, plaintext: str, context: bytes = b"") -> bytes:
    """Return ``plaintext`` sealed with AES-256-GCM; ``context`` binds it to its place."""
    nonce = os.urandom(12)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), context)


def decrypt(key: bytes, sealed: bytes, context: bytes = b"") -> str:
    """Return the plaintext of ``sealed``; raise :class:`DecryptionError` if tampered."""
    if not sealed.startswith(_VERSION) or len(sealed) < 29:
        raise DecryptionError("not a Lethe ciphertext")
    nonce, body = sealed[1:13], sealed[13:]
    try:
        return AESGCM(key).decrypt(nonce, body, context).decode("utf-8")
    except InvalidTag:
        raise DecryptionError("ciphertext altered or made with another key") from None
