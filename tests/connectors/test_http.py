"""The HTTP connector against a small SaaS served on loopback by the test, and the signed
callback through which an asynchronous service confirms an erasure later."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from connectors.base import ConfigError, ConnectorError, Outcome, Subject
from connectors.http import HttpConnector
from core.demo import demo_systems_toml
from core.extensions import db
from core.jobs import fail_overdue_callbacks
from core.models import DataSubjectRequest, RunStatus, Status, SystemRun, utcnow
from core.systems import load_systems
from tests.conftest import outbox_messages
from tests.flows import approve, login, submit, verify_latest

IVAN = "иван.петров@example.ru"
ALICE = "alice@example.com"
TOKEN = "tok-S3CRET-0001"


@dataclass
class Seen:
    """One request as the service received it."""

    method: str
    uri: str  # the raw path and query, as sent on the wire
    at: float
    body: Any


class FakeSaas:
    """A SaaS API with users by email, deletion, exports and asynchronous erasure."""

    def __init__(self, auth: tuple[str, ...] = ("bearer", TOKEN)):
        self.auth = auth
        self.users: dict[str, dict[str, Any]] = {}
        self.seen: list[Seen] = []
        #: Answers given instead of the real one to the next requests of a method:
        #: (method, status, headers).
        self.script: list[tuple[str, int, dict[str, str]]] = []
        #: Ids a stale search index still lists, though deleting them answers 404.
        self.stale: set[str] = set()
        self.callback_urls: list[str] = []
        self.lock = threading.Lock()

    def add(self, email: str, name: str = "A person") -> str:
        user_id = str(len(self.users) + len(self.stale) + 101)
        self.users[user_id] = {"id": user_id, "email": email, "name": name, "plan": "pro"}
        return user_id

    def requests_to(self, method: str, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.uri.startswith(prefix)]

    def authorised(self, request: Request) -> bool:
        kind, *secret = self.auth
        if kind == "bearer":
            return request.headers.get("Authorization") == f"Bearer {secret[0]}"
        if kind == "basic":
            given = request.authorization
            return bool(given) and (given.username, given.password) == tuple(secret)
        return request.headers.get(secret[0]) == secret[1]

    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_json(silent=True)
        with self.lock:
            self.seen.append(Seen(request.method, environ["RAW_URI"], time.monotonic(), body))
            scripted = next((s for s in self.script if s[0] == request.method), None)
            if scripted is not None:
                self.script.remove(scripted)
            response = self.answer(request, body, scripted)
        return response(environ, start_response)

    def answer(self, request: Request, body: Any, scripted: Any) -> Response:
        if scripted is not None:
            _, status, headers = scripted
            return Response("{}", status, headers, mimetype="application/json")
        if not self.authorised(request):
            # Services often echo what they got: none of it may reach Lethe's messages.
            echo = {"error": "bad credentials", "got": request.headers.get("Authorization")}
            return Response(json.dumps(echo), 401, mimetype="application/json")
        parts = request.path.strip("/").split("/")  # api, users[, id[, action]]
        if request.path == "/api/health":
            return self.json({"ok": True})
        if parts[:2] != ["api", "users"]:
            return self.json({"error": "no such endpoint"}, 404)
        if len(parts) == 2 and request.method == "GET":
            email = request.args.get("email", "").lower()
            listed = [u for u in self.users.values() if u["email"].lower() == email]
            listed += [{"id": i, "email": email} for i in sorted(self.stale)]
            return self.json({"users": [{"id": u["id"], "email": u["email"]} for u in listed]})
        user = self.users.get(parts[2])
        if user is None:
            return self.json({"error": "no such user"}, 404)
        if len(parts) == 3 and request.method == "DELETE":
            del self.users[parts[2]]
            return Response(status=204)
        if parts[3:] == ["export"]:
            return self.json({"user": user})
        if parts[3:] == ["erasure"] and request.method == "POST":
            self.callback_urls.append(body["callback"])
            return self.json({"ticket": "T-1"}, 202)
        return self.json({"error": "no such endpoint"}, 404)

    @staticmethod
    def json(data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data), status, mimetype="application/json")

    def call_back(self, body: Any, url: str | None = None) -> requests.Response:
        """Report to Lethe, as the service does once the erasure is done."""
        with requests.Session() as session:
            return session.post(url or self.callback_urls[-1], json=body, timeout=30)


@contextmanager
def serving(wsgi_app: Any) -> Iterator[str]:
    """Serve a WSGI app on a free loopback port; yield its base URL."""
    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def saas() -> Iterator[tuple[FakeSaas, str]]:
    service = FakeSaas()
    with serving(service) as url:
        yield service, url


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPDESK_TOKEN", TOKEN)


def settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "base_url": f"{url}/api",
        "auth": {"type": "bearer", "token_env": "HELPDESK_TOKEN"},
        "backoff_seconds": 0.01,
        "find": {"url": "/users?email={email}", "records": "users", "id": "id"},
        "erase": {"url": "/users/{id}"},
        "export": {"url": "/users/{id}/export", "records": "user"},
        **overrides,
    }


@contextmanager
def connected(url: str, **overrides: Any) -> Iterator[HttpConnector]:
    connector = HttpConnector("helpdesk", settings(url, **overrides))
    try:
        yield connector
    finally:
        connector.close()


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"base_url": "ftp://helpdesk.example.com"}, "base_url"),
        ({"base_url": "https://me:pw@helpdesk.example.com"}, "base_url"),
        ({"auth": {"type": "bearer", "token": "abc"}}, "auth.token"),
        ({"auth": {"type": "oauth"}}, "auth.type"),
        ({"auth": {"type": "header", "value_env": "X"}}, "auth.name"),
        ({"find": {"url": "/users?phone={phone}"}}, "find.url"),
        ({"find": {"url": "users"}}, "find.url"),
        ({"erase": {"url": "/users/{id}", "method": "FETCH"}}, "erase.method"),
        ({"export": {"url": "/x/{callback_url}"}}, "export.url"),
        ({"retries": 50}, "retries"),
        ({"async": {"callback_timeout_hours": 0}}, "async.callback_timeout_hours"),
        (
            {"async": {"callback_timeout_hours": 72}, "erase": {"url": "/u", "body": {"a": 1}}},
            "erase.body",
        ),
        ({"erase": {"url": "/u?cb={callback_url}"}}, "erase"),
        ({"token": "abc"}, "token"),
    ],
)
def test_wrong_settings_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as error:
        HttpConnector("helpdesk", settings("http://127.0.0.1:9", **overrides))
    assert error.value.key == key and error.value.system == "helpdesk"


def test_a_wrong_setting_stops_loading_naming_file_system_and_key(tmp_path: Path):
    file = tmp_path / "systems.toml"
    file.write_text(
        '[systems.helpdesk]\nconnector = "http"\nbase_url = "https://h.example.com"\n'
        '[systems.helpdesk.find]\nurl = "/users?email={email}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"systems.toml: system 'helpdesk', key 'erase'"):
        load_systems(file)


# --- the verbs against the service ----------------------------------------------------


def test_find_export_erase_verify_with_a_non_ascii_address(saas):
    service, url = saas
    user_id = service.add(IVAN, "Иван Петров")
    other = service.add(ALICE)
    person = Subject(IVAN)
    with connected(url) as connector:
        plan = connector.plan(person)
        # The address went URL-encoded (UTF-8), never raw, into the query.
        assert service.seen[-1].uri == "/api/users?email=" + (
            "%D0%B8%D0%B2%D0%B0%D0%BD.%D0%BF%D0%B5%D1%82%D1%80%D0%BE%D0%B2%40example.ru"
        )
        assert [(s.table, s.action, s.rows) for s in plan.steps] == [("users", "delete", 1)]
        exported = list(connector.export(person))
        assert [(r.table, r.data["name"], r.data["plan"]) for r in exported] == [
            ("users", "Иван Петров", "pro")
        ]
        result = connector.erase(person, plan)
        assert (result.outcome, result.rows_affected) == (Outcome.COMPLETED, {"users": 1})
        assert user_id not in service.users and other in service.users
        assert connector.verify(person).clean
        deletes = len(service.requests_to("DELETE", "/api/users/"))
        again = connector.erase(person, plan)  # idempotent: nothing more, same outcome
        assert again.outcome == Outcome.COMPLETED
        assert len(service.requests_to("DELETE", "/api/users/")) == deletes
        nobody = connector.plan(Subject("nobody@example.com"))
        assert not nobody.found
        assert connector.erase(Subject("nobody@example.com"), nobody).outcome == Outcome.NOT_FOUND


def test_a_404_on_delete_counts_as_already_gone(saas):
    service, url = saas
    service.stale.add("999")  # listed by the search, already deleted
    with connected(url) as connector:
        plan = connector.plan(Subject(ALICE))
        assert plan.total_rows == 1
        result = connector.erase(Subject(ALICE), plan)
    assert result.outcome == Outcome.COMPLETED and result.rows_affected == {}
    assert [s.uri for s in service.requests_to("DELETE", "/api/")] == ["/api/users/999"]


def test_export_defaults_to_the_records_found(saas):
    service, url = saas
    service.add(ALICE)
    without_export = {k: v for k, v in settings(url).items() if k != "export"}
    connector = HttpConnector("helpdesk", without_export)
    try:
        assert [r.data for r in connector.export(Subject(ALICE))] == [{"id": "101", "email": ALICE}]
    finally:
        connector.close()


@pytest.mark.parametrize(
    ("auth", "environment", "server_expects"),
    [
        ({"type": "bearer", "token_env": "HD_TOKEN"}, {"HD_TOKEN": TOKEN}, ("bearer", TOKEN)),
        (
            {"type": "basic", "user_env": "HD_USER", "password_env": "HD_PASSWORD"},
            {"HD_USER": "lethe", "HD_PASSWORD": "pä55-wörd"},
            ("basic", "lethe", "pä55-wörd"),
        ),
        (
            {"type": "header", "name": "X-Api-Key", "value_env": "HD_KEY"},
            {"HD_KEY": "key-123456"},
            ("header", "X-Api-Key", "key-123456"),
        ),
    ],
)
def test_every_auth_type_is_accepted_by_the_service_and_a_wrong_secret_is_refused(
    auth, environment, server_expects, monkeypatch
):
    service = FakeSaas(auth=server_expects)
    service.add(ALICE)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with serving(service) as url, connected(url, auth=auth) as connector:
        assert connector.check().ok
        assert connector.plan(Subject(ALICE)).total_rows == 1
        for name in environment:
            monkeypatch.setenv(name, "wrong-" + environment[name])
        with pytest.raises(ConnectorError) as refused:
            connector.plan(Subject(ALICE))
        message = str(refused.value)
        assert "HTTP 401" in message and "credentials" in message
        assert all(name in message for name in environment)  # which variable to fix
        assert not any(v in message for v in environment.values()), message
        assert ALICE not in message and not refused.value.transient
        result = connector.check()
        assert not result.ok and "HTTP 401" in result.message


def test_a_missing_secret_names_its_variable(saas, monkeypatch):
    _, url = saas
    monkeypatch.delenv("HELPDESK_TOKEN")
    with connected(url) as connector:
        with pytest.raises(ConnectorError, match="HELPDESK_TOKEN .*is not set"):
            connector.plan(Subject(ALICE))
        assert "HELPDESK_TOKEN" in connector.check().message


def test_check_uses_the_configured_request_or_a_harmless_find(saas):
    service, url = saas
    with connected(url, check={"url": "/health"}) as connector:
        result = connector.check()
    assert result.ok and "GET /health HTTP 200" in result.message
    with connected(url) as connector:
        assert connector.check().ok
    assert service.seen[-1].uri == "/api/users?email=lethe-check%40example.invalid"


# --- retries --------------------------------------------------------------------------


def test_429_is_retried_after_the_time_the_service_asks(saas):
    service, url = saas
    service.add(ALICE)
    service.script = [("GET", 429, {"Retry-After": "1"})]
    with connected(url) as connector:
        assert connector.plan(Subject(ALICE)).total_rows == 1
    first, second = service.requests_to("GET", "/api/users")
    assert second.at - first.at >= 1.0  # waited at least what Retry-After said


def test_5xx_and_network_errors_are_retried_then_fail_transient_without_the_address(saas):
    service, url = saas
    service.add(IVAN)
    service.script = [("GET", 500, {}), ("GET", 503, {})]
    with connected(url, retries=2) as connector:
        assert connector.plan(Subject(IVAN)).total_rows == 1  # third attempt succeeds
        service.script = [("GET", 502, {})] * 3
        with pytest.raises(ConnectorError) as failed:
            connector.plan(Subject(IVAN))
    assert failed.value.transient
    assert "failed after 3 attempts: HTTP 502" in str(failed.value)
    assert "GET /users?email={email}" in str(failed.value) and IVAN not in str(failed.value)
    assert len(service.requests_to("GET", "/api/users")) == 6
    nothing_listens = "http://127.0.0.1:9"
    with connected(nothing_listens, retries=1) as c, pytest.raises(ConnectorError) as unreachable:
        c.plan(Subject(IVAN))
    assert unreachable.value.transient and "could not be reached" in str(unreachable.value)
    assert IVAN not in str(unreachable.value) and "%D0" not in str(unreachable.value)


def test_a_service_asking_for_a_long_wait_fails_at_once_for_a_later_retry(saas):
    service, url = saas
    service.script = [("GET", 503, {"Retry-After": "3600"})]
    with connected(url) as connector, pytest.raises(ConnectorError) as failed:
        connector.plan(Subject(ALICE))
    assert failed.value.transient and "asks to wait 3600 s" in str(failed.value)
    assert len(service.seen) == 1


def test_an_erase_refused_names_the_status_never_the_person_or_the_secret(saas):
    service, url = saas
    service.add(IVAN)
    with connected(url) as connector:
        plan = connector.plan(Subject(IVAN))
        service.script = [("DELETE", 403, {})]
        with pytest.raises(ConnectorError) as refused:
            connector.erase(Subject(IVAN), plan)
    message = str(refused.value)
    assert "erasing (DELETE /users/{id}) answered HTTP 403" in message
    assert IVAN not in message and TOKEN not in message and "101" not in message
    assert len(service.users) == 1  # nothing reported as erased


def test_a_redirect_is_not_followed_with_the_credentials(saas):
    service, url = saas
    elsewhere = FakeSaas(auth=("header", "X-Nobody", "-"))
    with serving(elsewhere) as other_url:
        service.script = [("GET", 302, {"Location": f"{other_url}/api/users?email=x"})]
        with connected(url) as connector, pytest.raises(ConnectorError) as moved:
            connector.plan(Subject(ALICE))
    assert "answered HTTP 302; check base_url and find.url" in str(moved.value)
    assert elsewhere.seen == []


def test_a_placeholder_lethe_cannot_fill_fails_clearly(saas):
    _, url = saas
    by_number = {"url": "/users?number={customer_id}", "records": "users"}
    with (
        connected(url, find=by_number) as connector,
        pytest.raises(ConnectorError, match=r"find uses \{customer_id\}, which Lethe does not"),
    ):
        connector.plan(Subject(ALICE))


def test_records_the_answer_lacks_are_an_error_not_nobody(saas):
    service, url = saas
    nested = {"url": "/users?email={email}", "records": "data.users"}
    with (
        connected(url, find=nested) as c,
        pytest.raises(ConnectorError, match="has no 'data.users'; check find.records"),
    ):
        c.plan(Subject(ALICE))
    wrong_path = {"url": "/people?email={email}", "records": "users"}
    with (
        connected(url, find=wrong_path) as c,
        pytest.raises(ConnectorError, match="HTTP 404; check base_url and find.url"),
    ):
        c.plan(Subject(ALICE))
    absent = {"url": "/users/by-email/{email}", "records": "users", "not_found": [404]}
    with connected(url, find=absent) as c:
        assert not c.plan(Subject(ALICE)).found


# --- asynchronous services --------------------------------------------------------------

ASYNC = {
    "erase": {
        "method": "POST",
        "url": "/users/{id}/erasure",
        "body": {"callback": "{callback_url}"},
    },
    "async": {"callback_timeout_hours": 72},
}


def test_an_asynchronous_erase_hands_over_the_callback_url_and_waits(saas):
    service, url = saas
    service.add(ALICE)
    with connected(url, **ASYNC) as connector:
        assert connector.callback_timeout == timedelta(hours=72)
        plan = connector.plan(Subject(ALICE))
        with pytest.raises(ConnectorError, match="no callback URL"):
            connector.erase(Subject(ALICE), plan)
        connector.callback_url = "https://lethe.example.com/callbacks/abc"
        result = connector.erase(Subject(ALICE), plan)
    assert result.outcome == Outcome.ACTION_REQUIRED and "72 hours" in result.message
    assert service.callback_urls == ["https://lethe.example.com/callbacks/abc"]


HELPDESK_TOML = """
[systems.helpdesk]
connector = "http"
label = "Helpdesk"
base_url = "{url}/api"
auth = {{ type = "bearer", token_env = "HELPDESK_TOKEN" }}
backoff_seconds = 0.01

[systems.helpdesk.find]
url = "/users?email={{email}}"
records = "users"

[systems.helpdesk.erase]
method = "POST"
url = "/users/{{id}}/erasure"
body = {{ callback = "{{callback_url}}" }}

[systems.helpdesk.async]
callback_timeout_hours = 72
"""


@pytest.fixture
def lethe(app, saas, crm_url, tmp_path):
    """The app, served on loopback, with the demo CRM and an asynchronous helpdesk."""
    service, saas_url = saas
    service.add(ALICE, "Alice Example")
    file = tmp_path / "with-helpdesk.toml"
    file.write_text(demo_systems_toml(crm_url) + HELPDESK_TOML.format(url=saas_url), "utf-8")
    app.extensions["lethe.systems"] = load_systems(file)
    with serving(app) as base_url:
        app.config["BASE_URL"] = base_url
        yield app


def only_request() -> DataSubjectRequest:
    db.session.expire_all()
    return db.session.scalars(sa.select(DataSubjectRequest)).one()


def helpdesk_run() -> SystemRun:
    return next(run for run in only_request().runs if run.system == "helpdesk")


def erase_alice(app, client) -> str:
    """Walk Alice's erasure to approval; return its reference."""
    submit(client, ALICE)
    verify_latest(app, client)
    staff = app.test_client()
    login(staff)
    with app.app_context():
        reference = only_request().reference
    assert approve(staff, reference).status_code == 302
    return reference


def test_an_asynchronous_system_confirms_by_signed_callback(lethe, client, saas):
    service, _ = saas
    reference = erase_alice(lethe, client)
    with lethe.app_context():
        run = helpdesk_run()
        assert run.status == RunStatus.ACTION_REQUIRED
        assert only_request().status == Status.PARTIALLY_COMPLETED
        proofs = len(only_request().proofs)
    [callback_url] = service.callback_urls
    assert callback_url.startswith(lethe.config["BASE_URL"] + "/callbacks/")

    tampered = callback_url[:-3] + ("AAA" if not callback_url.endswith("AAA") else "BBB")
    assert service.call_back({"status": "done"}, tampered).status_code == 403
    wrong = service.call_back({"status": "maybe"})
    assert wrong.status_code == 400 and wrong.json()["error"] == "bad_body"
    with lethe.app_context():
        assert helpdesk_run().status == RunStatus.ACTION_REQUIRED

    answer = service.call_back({"status": "done", "counts": {"users": 1}})
    assert answer.status_code == 202, answer.text
    with lethe.app_context():
        request, run = only_request(), helpdesk_run()
        assert request.status == Status.COMPLETED
        assert run.status == RunStatus.COMPLETED and run.rows_affected == {"users": 1}
        assert run.message == "Helpdesk confirmed the erasure by callback"
        assert len(request.proofs) == proofs + 1  # the proof now covers the helpdesk too
    replay = service.call_back({"status": "failed"})
    assert replay.status_code == 409 and replay.json()["error"] == "not_waiting"
    with lethe.app_context():
        assert helpdesk_run().status == RunStatus.COMPLETED
    # Ten calls an hour per URL: a caller hammering it is slowed down.
    answers = [service.call_back({"status": "done"}).status_code for _ in range(8)]
    assert answers == [409] * 7 + [429]
    subjects = [m["Subject"] for m in outbox_messages(lethe)]
    assert f"Your privacy request {reference} is complete" in subjects


def test_a_late_callback_is_refused_and_the_hourly_job_fails_the_run(lethe, client, saas):
    service, _ = saas
    erase_alice(lethe, client)
    with lethe.app_context():
        assert fail_overdue_callbacks() == 0  # still within its 72 hours
        run = helpdesk_run()
        run.finished_at = utcnow() - timedelta(hours=73)
        db.session.commit()
    late = service.call_back({"status": "done"})
    assert late.status_code == 410 and late.json()["error"] == "expired"
    with lethe.app_context():
        assert helpdesk_run().status == RunStatus.ACTION_REQUIRED
        assert fail_overdue_callbacks() == 1
        run = helpdesk_run()
        assert run.status == RunStatus.FAILED
        assert "did not confirm the erasure within 72 hours" in run.message
        assert "retry this system" in run.message
        assert only_request().status == Status.PARTIALLY_COMPLETED  # the CRM is erased
        assert fail_overdue_callbacks() == 0
