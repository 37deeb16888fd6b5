"""Steps of the walking path that several tests take through the test client."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.conftest import DPO_EMAIL, DPO_PASSWORD, csrf_token, link_in, outbox_messages


def path_of(url: str) -> str:
    """Return the path of an absolute URL, for the test client."""
    return urlsplit(url).path


def submit(client: FlaskClient, email: str, request_type: str = "erasure", **fields: str) -> None:
    """Submit the portal form for a request of ``email`` (erasure confirmed)."""
    page = client.get("/")
    response = client.post(
        "/",
        data={
            "email": email,
            "request_type": request_type,
            "confirmed": "yes",
            "csrf_token": csrf_token(page.text),
            **fields,
        },
    )
    assert response.status_code == 302, response.text
    assert response.headers["Location"].endswith("/submitted")


def verify_latest(app: Flask, client: FlaskClient) -> str:
    """Open the newest verification link, confirm it, and return the status page path."""
    link = path_of(link_in(outbox_messages(app)[-1], "/verify/"))
    page = client.get(link)
    assert page.status_code == 200
    response = client.post(link, data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 302
    return path_of(response.headers["Location"])


def login(client: FlaskClient, email: str = DPO_EMAIL, password: str = DPO_PASSWORD) -> None:
    """Sign in to the staff side."""
    page = client.get("/admin/login")
    response = client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_token(page.text)},
    )
    assert response.status_code == 302, response.text


def plan_digest_in(page_text: str) -> str:
    """Return the digest of the plan a staff request page shows."""
    return re.search(r'name="plan_digest" type="hidden" value="([0-9a-f]+)"', page_text)[1]


def approve(staff: FlaskClient, reference: str, **retained: str) -> TestResponse:
    """As signed-in staff, approve ``reference`` along the plan its page shows.

    ``retained`` keeps systems out of an erasure: ``crm="art17-3-b-legal-obligation"``.
    """
    page = staff.get(f"/admin/requests/{reference}")
    return staff.post(
        f"/admin/requests/{reference}/approve",
        data={
            "csrf_token": csrf_token(page.text),
            "plan_digest": plan_digest_in(page.text),
            "confirm_reference": reference,
            **{f"retain-{system}": ground for system, ground in retained.items()},
        },
    )
