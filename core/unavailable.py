"""A database that cannot be reached: a clear "try again" page with 503, never a traceback.

Every write of a page is one transaction, so a database lost in the middle leaves nothing
half-written: the person sends the form again once it is back.
"""

from __future__ import annotations

import contextlib
import logging

import sqlalchemy as sa
from flask import Flask, jsonify, render_template, request

from core.extensions import db

log = logging.getLogger(__name__)

#: What ``Retry-After`` tells browsers and clients, in seconds.
RETRY_AFTER_SECONDS = 120


def database_unreachable(error: sa.exc.DBAPIError):
    """Answer 503 with a page (or JSON under ``/api/``) asking to try again shortly."""
    outage = isinstance(error, sa.exc.OperationalError | sa.exc.InterfaceError)
    if not (outage or getattr(error, "connection_invalidated", False)):
        raise error  # a bug or a constraint, not an outage: the usual 500
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        db.session.rollback()  # the connection may be gone already; the pool replaces it
    # The statement and its parameters may hold personal data: name the failure only.
    log.error(
        "the database could not be reached (%s) on %s %s",
        type(getattr(error, "orig", None) or error).__name__,
        request.method,
        request.url_rule.rule if request.url_rule else "?",
    )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.path.startswith("/api/"):
        body = {"code": 503, "status": "Service Unavailable", "message": "try again shortly"}
        return jsonify(body), 503, headers
    return render_template("portal/unavailable.html"), 503, headers


def init_unavailable(app: Flask) -> None:
    """Answer database outages on every page with :func:`database_unreachable`."""
    for error in (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DBAPIError):
        app.register_error_handler(error, database_unreachable)
