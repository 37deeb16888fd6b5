"""Signed links for the subject: bound to one request and one purpose, and expiring."""

from __future__ import annotations

import hmac

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class TokenError(ValueError):
    """A link that is tampered, expired, already used or meant for something else."""

    def __init__(self, reason: str, reference: str | None = None):
        super().__init__(reason)
        #: ``invalid``, ``expired`` or ``used``: the page a person sees depends on it.
        self.reason = reason
        #: The request the link belonged to, when the signature itself was sound.
        self.reference = reference


def _serializer(secret: str, purpose: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=f"lethe.{purpose}")


def make_token(secret: str, purpose: str, reference: str, nonce: str | None = None) -> str:
    """Return a signed token for ``purpose`` on the request ``reference``."""
    return _serializer(secret, purpose).dumps({"r": reference, "n": nonce})


def read_token(
    secret: str, purpose: str, token: str, max_age_seconds: int
) -> tuple[str, str | None]:
    """Return ``(reference, nonce)`` from a token; raise :class:`TokenError` if unusable."""
    serializer = _serializer(secret, purpose)
    try:
        payload = serializer.loads(token, max_age=max_age_seconds)
    except SignatureExpired as exc:
        # The signature was sound, so the request it names can be offered a fresh link.
        payload = serializer.load_payload(exc.payload) if exc.payload is not None else {}
        reference = payload.get("r") if isinstance(payload, dict) else None
        raise TokenError("expired", reference) from None
    except BadSignature:
        raise TokenError("invalid") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("r"), str):
        raise TokenError("invalid")
    return payload["r"], payload.get("n")


def nonce_matches(expected: str | None, given: str | None) -> bool:
    """Return whether a link's nonce is the outstanding one, in constant time."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
