"""The JSON API under /api/v1: the staff side's actions for other systems, with API keys.

A call authenticates with ``Authorization: Bearer <key>`` only, never a cookie, so the
blueprint is exempt from CSRF.  A key holds one staff role and may do what that role may
do on the staff pages.  flask-smorest builds the OpenAPI 3 document from the views and
their marshmallow schemas and serves it at /api/v1/openapi.json.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, current_app, g, jsonify, request
from flask_smorest import Api, Blueprint
from werkzeug.exceptions import HTTPException, default_exceptions

from admin.api.schemas import ErrorSchema
from core.api_keys import ApiKey, find_key_for
from core.extensions import csrf, db, limiter
from core.models import Role, utcnow

PREFIX = "/api/v1"
#: Failed authentications an address may make per minute before it is refused (429).
AUTH_FAILURES_PER_MINUTE = "20 per minute"

bp = Blueprint("api", __name__, description="Requests, decisions and proofs, for integration.")


class LetheApi(Api):
    """flask-smorest's Api, with Lethe's error body and without app-wide error handlers."""

    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None

    def _register_error_handlers(self) -> None:
        # The portal and the staff side keep their HTML error pages: the blueprint below
        # answers JSON for its own routes only.
        pass


def api_error(status: int, message: str, fields: dict[str, Any] | None = None) -> HTTPException:
    """Return an HTTP error whose JSON body is ``{"error": message, "fields": fields}``."""
    error = default_exceptions[status](message)
    error.data = {"message": message, "errors": fields or {}}
    return error


def _error_body(error: HTTPException):
    data = getattr(error, "data", None) or {}
    fields: dict[str, Any] = {}
    for found in (data.get("messages") or {}).values():  # webargs: per location
        if isinstance(found, dict):
            fields.update(found)
        else:  # about the body as a whole (not JSON, not an object)
            fields.setdefault("_body", []).extend(found)
    fields.update(data.get("errors") or {})
    if data.get("messages"):
        message = "the request is not valid: see fields"
    else:
        message = data.get("message") or error.description or error.name
    response = jsonify(error=message, fields=fields)
    response.status_code = error.code or 500
    if error.code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="lethe"'
    return response


def _failed_authentication(response) -> bool:
    return response.status_code == 401


def _authenticate() -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    key = find_key_for(db.session, token.strip()) if scheme.lower() == "bearer" else None
    if key is None:
        # The same answer for a missing, malformed, unknown, wrong or revoked key.
        raise api_error(401, "a valid API key is needed: Authorization: Bearer <key>")
    key.last_used_at = utcnow()
    return key


def key_required(*roles: Role) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Allow a view only to an API key holding one of ``roles`` (admin keys hold all)."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            key = _authenticate()
            if key.role != Role.ADMIN and key.role not in roles:
                raise api_error(403, f"a {key.role} key may not do this")
            g.api_key = key
            return view(*args, **kwargs)

        wrapped = bp.alt_response(401, schema=ErrorSchema, description="No valid API key.")(wrapped)
        wrapped = bp.alt_response(429, description="Too many failed authentications.")(wrapped)
        return bp.alt_response(403, schema=ErrorSchema, description="The key's role may not.")(
            wrapped
        )

    return decorator


# The blueprint is built once per process and registered on every app: its handlers,
# its CSRF exemption and its rate limit are set here, not in init_api.
for _code in (400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500):
    bp.register_error_handler(_code, _error_body)
csrf.exempt(bp)
limiter.limit(
    lambda: current_app.config.get("API_AUTH_RATE_LIMIT", AUTH_FAILURES_PER_MINUTE),
    deduct_when=_failed_authentication,
)(bp)


def current_key() -> ApiKey:
    """Return the API key of the current call."""
    return g.api_key


def init_api(app: Flask) -> None:
    """Register the API blueprint and its OpenAPI document on ``app``."""
    from admin.api import proofs, requests  # noqa: F401  (register their routes on bp)

    app.config.setdefault("API_TITLE", "Lethe")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", PREFIX)
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    api = LetheApi(
        app,
        spec_kwargs={
            "security": [{"bearerAuth": []}],
            "info": {"description": "Data-subject requests for integration. See the README."},
        },
    )
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "A Lethe API key."}
    )
    api.register_blueprint(bp, url_prefix=PREFIX)
    app.extensions["lethe.api"] = api
