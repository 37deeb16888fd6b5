"""Staff passwords, sign-in sessions, roles and the headers every response carries."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import wraps
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, Response, abort, current_app
from flask_login import current_user, login_required

from core.extensions import db, login_manager
from core.models import Role, StaffUser

_hasher = PasswordHasher()

#: No inline script or style anywhere, no framing, no third-party origin.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def hash_password(password: str) -> str:
    """Return the argon2id hash of ``password``."""
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    """Return whether ``password`` matches the stored hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def roles_required(*roles: Role) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Allow a view only to signed-in staff holding one of ``roles`` (admins hold all)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if current_user.role != Role.ADMIN and current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def credentials_stamp(user: StaffUser) -> str:
    """Return a digest of the credentials of ``user``; it changes when they change."""
    # Kept in the session cookie: a new password or a reset two-factor ends every other
    # session of the account. Keyed, so the cookie says nothing about the password hash.
    enabled = user.totp_enabled_at
    material = f"{user.password_hash}|{int(enabled.timestamp()) if enabled else ''}".encode()
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, material, hashlib.sha256).hexdigest()[:32]


def session_end_reason(
    signed_in_at: datetime | None, seen_at: datetime | None, now: datetime
) -> str | None:
    """Return why a staff session is over — "idle" or "expired" — or None while it lasts."""
    if signed_in_at is None or seen_at is None:
        return "expired"
    config = current_app.config
    if now - signed_in_at >= timedelta(hours=config["STAFF_SESSION_HOURS"]):
        return "expired"
    if now - seen_at >= timedelta(minutes=config["STAFF_IDLE_MINUTES"]):
        return "idle"
    return None


def _load_user(user_id: str) -> StaffUser | None:
    return db.session.get(StaffUser, int(user_id))


def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # Pages carry signed links in their URLs: never leak them to another site.
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def init_security(app: Flask) -> None:
    """Wire the user loader and the security headers into ``app``."""
    login_manager.user_loader(_load_user)
    login_manager.login_message = "Sign in to see this page."
    app.after_request(_headers)
    if app.config["LETHE_ENV"] == "production":
        app.after_request(_hsts)


def _hsts(response: Response) -> Response:
    response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
