"""Staff passwords, sign-in sessions, roles and the headers every response carries."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, Response, abort
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
    app.after_request(_headers)
    if app.config["LETHE_ENV"] == "production":
        app.after_request(_hsts)


def _hsts(response: Response) -> Response:
    response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response
