"""Signed links: bound to one purpose and one request, expiring, compared in constant time,
and guessing them is rate limited on every page that takes one."""

from __future__ import annotations

import hmac
import secrets
import time

import pytest
import sqlalchemy as sa
from itsdangerous import TimestampSigner

from core.demo import demo_systems_toml
from core.extensions import db
from core.models import DataSubjectRequest, ExportPackage, Status
from core.systems import load_systems
from core.tokens import make_token
from tests.conftest import link_in, outbox_messages
from tests.flows import path_of, submit
from tests.portal.test_exports import ask_for_a_copy
from tests.portal.test_manual_tasks import ARCHIVE

#: Every page a signed link opens, by the purpose its token is signed for.
ROUTES = {
    "verify": ("GET", "/verify/{}"),
    "status": ("GET", "/status/{}"),
    "export": ("GET", "/export/{}"),
    "manual": ("GET", "/tasks/{}"),
    "recipient": ("GET", "/recipients/{}"),
    "callback": ("POST", "/callbacks/{}"),
}


def _open(client, purpose: str, token: str, **environ):
    method, path = ROUTES[purpose]
    return client.open(path.format(token), method=method, json={"status": "done"}, **environ)


def _tokens(app, reference: str, package_id: int) -> dict[str, str]:
    """Return a token of every purpose for ``reference``, each with a plausible nonce."""
    secret = app.config["SECRET_KEY"]
    with app.app_context():
        request = db.session.scalars(
            sa.select(DataSubjectRequest).where(DataSubjectRequest.reference == reference)
        ).one()
        run = f"{request.runs[0].id}.{request.runs[0].attempts}"
    nonces = {"verify": "x", "export": str(package_id), "manual": run, "recipient": "1"}
    nonces["callback"] = run
    return {p: make_token(secret, p, reference, nonces.get(p)) for p in ROUTES}


def _two_copies(app, client) -> list[tuple[str, int]]:
    ask_for_a_copy(app, client, email="alice@example.com")
    ask_for_a_copy(app, client, email="bob@example.com")
    with app.app_context():
        rows = db.session.execute(
            sa.select(DataSubjectRequest.reference, ExportPackage.id)
            .join(ExportPackage)
            .order_by(DataSubjectRequest.id)
        ).all()
    return [tuple(row) for row in rows]


def test_a_token_opens_only_the_page_of_its_purpose(app, client):
    (reference, package_id), _ = _two_copies(app, client)
    tokens = _tokens(app, reference, package_id)
    assert _open(client, "status", tokens["status"]).status_code == 200
    assert _open(client, "export", tokens["export"]).status_code == 200
    for page in ROUTES:
        for purpose, token in tokens.items():
            if purpose != page:
                response = _open(client, page, token)
                assert response.status_code in {400, 403}, (purpose, page)


def test_a_download_token_is_bound_to_its_request(app, client):
    (alice, alice_package), (bob, bob_package) = _two_copies(app, client)
    secret = app.config["SECRET_KEY"]
    # Alice's signed reference with Bob's package id: the package is not hers.
    crossed = make_token(secret, "export", alice, str(bob_package))
    assert client.get(f"/export/{crossed}").status_code == 400
    with app.app_context():
        assert db.session.get(ExportPackage, bob_package).downloads == 0
    own = make_token(secret, "export", bob, str(bob_package))
    assert client.get(f"/export/{own}").status_code == 200


def _signed_long_ago(monkeypatch, days: int, *args: str) -> str:
    with monkeypatch.context() as patch:
        patch.setattr(
            TimestampSigner, "get_timestamp", lambda self: int(time.time()) - days * 86400
        )
        return make_token(*args)


def test_expired_links_change_nothing(app, client, monkeypatch):
    submit(client, "alice@example.com")
    with app.app_context():
        request = db.session.scalars(sa.select(DataSubjectRequest)).one()
        reference, nonce = request.reference, request.verify_nonce
    secret, days = app.config["SECRET_KEY"], app.config["VERIFY_LINK_DAYS"]
    verify = _signed_long_ago(monkeypatch, days + 1, secret, "verify", reference, nonce)
    page = client.get(f"/verify/{verify}")
    assert page.status_code == 410
    fresh = _signed_long_ago(monkeypatch, days - 1, secret, "verify", reference, nonce)
    assert client.get(f"/verify/{fresh}").status_code == 200  # the same link, still in time
    status = _signed_long_ago(monkeypatch, 401, secret, "status", reference)
    assert client.get(f"/status/{status}").status_code == 410
    with app.app_context():
        assert db.session.scalars(sa.select(DataSubjectRequest.status)).one() == Status.SUBMITTED


def test_every_link_is_checked_in_constant_time(app, client, monkeypatch, tmp_path, crm_url):
    (reference, package_id), _ = _two_copies(app, client)
    # With a system kept by hand, so that task links are read at all.
    file = tmp_path / "with-archive.toml"
    file.write_text(demo_systems_toml(crm_url) + ARCHIVE, encoding="utf-8")
    app.extensions["lethe.systems"] = load_systems(file)
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for purpose, token in _tokens(app, reference, package_id).items():
        before = len(calls)
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        # A client without cookies: no session signature to check but the link's.
        assert _open(app.test_client(), purpose, forged).status_code in {400, 403}
        assert len(calls) > before, f"the {purpose} link was not compared with compare_digest"


def test_guessing_links_is_rate_limited_on_every_page_that_takes_one(app, client):
    environ = {"environ_base": {"REMOTE_ADDR": "198.51.100.7"}}
    purposes = [p for p in ROUTES if p != "callback"]
    for attempt in range(30):
        guess = secrets.token_urlsafe(40)
        assert _open(client, purposes[attempt % len(purposes)], guess, **environ).status_code in {
            400,
            410,
        }
    for purpose in purposes:
        blocked = _open(client, purpose, secrets.token_urlsafe(40), **environ)
        assert blocked.status_code == 429, purpose
    # Another address is not held back by these guesses.
    assert client.get(f"/status/{secrets.token_urlsafe(40)}").status_code == 400


def test_a_working_link_is_never_rate_limited(app, client):
    submit(client, "alice@example.com")
    path = path_of(link_in(outbox_messages(app)[-1], "/verify/"))
    assert all(client.get(path).status_code == 200 for _ in range(40))


@pytest.mark.parametrize("distinct", [False, True])
def test_callback_guesses_are_rate_limited(app, client, distinct):
    token = secrets.token_urlsafe(40)
    limit = 300 if distinct else 10
    for _ in range(limit):
        guess = secrets.token_urlsafe(40) if distinct else token
        assert client.post(f"/callbacks/{guess}", json={"status": "done"}).status_code == 403
    guess = secrets.token_urlsafe(40) if distinct else token
    assert client.post(f"/callbacks/{guess}", json={"status": "done"}).status_code == 429
