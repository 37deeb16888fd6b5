"""Absolute links for emails and PDFs, built from ``LETHE_BASE_URL`` (no request needed)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app

from core.callbacks import PURPOSE as CALLBACK_PURPOSE
from core.callbacks import callback_nonce
from core.models import DataSubjectRequest, ExportPackage, SystemRun
from core.tokens import make_token

#: The status link is the subject's key to their request; it lives as long as the request.
STATUS_LINK_DAYS = 400


def external_url(endpoint: str, **values: object) -> str:
    """Return the absolute URL of ``endpoint`` under the configured base URL."""
    base = urlsplit(current_app.config["BASE_URL"])
    adapter = current_app.url_map.bind(
        base.netloc, script_name=base.path or "/", url_scheme=base.scheme
    )
    return adapter.build(endpoint, values, force_external=True)


def verify_link(request: DataSubjectRequest) -> str:
    """Return the single-use link that proves the subject owns the address."""
    token = make_token(
        current_app.config["SECRET_KEY"], "verify", request.reference, request.verify_nonce
    )
    return external_url("portal.verify", token=token)


def status_token(request: DataSubjectRequest) -> str:
    """Return the signed token of the request's status page."""
    return make_token(current_app.config["SECRET_KEY"], "status", request.reference)


def status_link(request: DataSubjectRequest) -> str:
    """Return the link to the request's status page."""
    return external_url("portal.status", token=status_token(request))


def download_token(package: ExportPackage) -> str:
    """Return the signed token that downloads ``package``."""
    return make_token(
        current_app.config["SECRET_KEY"], "export", package.request.reference, str(package.id)
    )


def export_link(package: ExportPackage) -> str:
    """Return the link that downloads ``package``; it stops working when the package expires."""
    return external_url("portal.download", token=download_token(package))


def callback_link(run: SystemRun) -> str:
    """Return the URL a system calls back at to confirm this attempt of ``run``'s erasure."""
    secret = current_app.config["SECRET_KEY"]
    token = make_token(secret, CALLBACK_PURPOSE, run.request.reference, callback_nonce(run))
    return external_url("portal.callback", token=token)
