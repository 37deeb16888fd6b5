"""Portal pages are small and need no JavaScript: every page, with what it loads, < 100 kB."""

import re

from tests.conftest import csrf_token, link_in, outbox_messages
from tests.flows import path_of, submit, verify_latest

LIMIT = 100 * 1024


def weight(client, page) -> int:
    """Return the bytes of a page plus every stylesheet, script and image it loads."""
    total = len(page.data)
    for url in re.findall(r'<(?:link|script|img)[^>]+(?:href|src)="([^"]+)"', page.text):
        response = client.get(url)
        total += len(response.data)
        response.close()
    return total


def test_every_portal_page_is_small_and_works_without_javascript(app, client):
    pages = {"form": client.get("/")}
    form = pages["form"]
    pages["confirm erasure"] = client.post(
        "/",
        data={
            "email": "alice@example.com",
            "request_type": "erasure",
            "csrf_token": csrf_token(form.text),
        },
    )
    submit(client, "alice@example.com")
    pages["check your inbox"] = client.get("/submitted")
    verify = path_of(link_in(outbox_messages(app)[-1], "/verify/"))
    pages["confirm the address"] = client.get(verify)
    status = verify_latest(app, client)
    pages["status"] = client.get(status)
    pages["used link"] = client.get(verify)
    pages["tampered link"] = client.get("/status/not-a-token")
    pages["download link problem"] = client.get("/export/not-a-token")
    for name, page in pages.items():
        assert page.status_code in (200, 400, 410), name
        assert "<script" not in page.text, f"{name} needs JavaScript"
        assert weight(client, page) < LIMIT, f"{name} weighs {weight(client, page)} bytes"
