"""The built-in HTTP connector: a REST service (SaaS or internal) reached by templated requests.

The person is found by a ``find`` request whose JSON answer lists their records; each is
erased by an ``erase`` request (per record id, or once for the person).  A 404 or 410 on
erasure means the record is already gone, so erasing twice changes nothing more.  Requests
are retried on 429, 5xx and network errors with exponential backoff and jitter, honouring
``Retry-After``.  Messages name the request as configured, never its values: no address,
no secret.

An asynchronous service (``[async]``) accepts the erasure and confirms it later: erase
sends it the signed callback URL that core put in :attr:`Connector.callback_url` and the
run waits (``action_required``) until the service calls back or the timeout passes.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from connectors.base import (
    Action,
    CheckResult,
    Connector,
    ConnectorError,
    EraseResult,
    Outcome,
    Plan,
    Record,
    Subject,
    TablePlan,
    VerifyResult,
)
from connectors.http_settings import PLACEHOLDER, RequestSpec, Settings, parse_settings

#: A person no service holds, found by ``check`` when no check request is configured.
CHECK_SUBJECT = Subject("lethe-check@example.invalid", "lethe-check", "0" * 64)
#: The longest wait between attempts, whatever the backoff or the service asks.
MAX_BACKOFF_SECONDS = 30.0
#: A service asking to wait longer than this fails the attempt (transient): retry later.
MAX_RETRY_AFTER_SECONDS = 60.0
GONE = (404, 410)


def resolve(body: Any, path: str) -> Any:
    """Return the value at a JSON path like ``data.users`` or ``items.0.id``; raise LookupError."""
    value = body
    for part in path.split(".") if path else ():
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise LookupError(part)
    return value


def _succeeded(response: requests.Response) -> bool:
    """Return whether the answer is a success; a redirect is not followed, so it is not."""
    return 200 <= response.status_code < 300


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpConnector(Connector):
    """Find, export, erase and verify a person in a service with a JSON HTTP API."""

    name = "http"
    version = "1"

    def __init__(self, system: str, settings: Mapping[str, Any]):
        super().__init__(system, settings)
        self.config: Settings = parse_settings(system, settings)
        self.callback_timeout = self.config.callback_timeout
        self._session: requests.Session | None = None
        find = self.config.find
        #: What the plan calls the found records: the last part of their JSON path.
        self.kind = find.records.rsplit(".", 1)[-1] or "records"

    @property
    def session(self) -> requests.Session:
        """Return the HTTP session, created on first use."""
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def close(self) -> None:
        """Close the HTTP session's connections."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- sending ----------------------------------------------------------------------------

    def _secret(self, key: str) -> str:
        variable = self.config.auth.env[key]
        value = os.environ.get(variable)
        if not value:
            raise ConnectorError(
                f"{self.system}: the environment variable {variable} (auth.{key}) is not set; "
                "set it where the web app and the workers run"
            )
        return value

    def _credentials(self) -> tuple[dict[str, str], tuple[bytes, bytes] | None]:
        auth = self.config.auth
        if auth is None:
            return {}, None
        if auth.type == "bearer":
            return {"Authorization": f"Bearer {self._secret('token_env')}"}, None
        if auth.type == "basic":
            # UTF-8, as RFC 7617 asks (requests would encode text as Latin-1).
            user, password = self._secret("user_env"), self._secret("password_env")
            return {}, (user.encode(), password.encode())
        return {auth.header: self._secret("value_env")}, None

    def _values(self, subject: Subject, **extra: str | None) -> dict[str, str | None]:
        return {
            "email": subject.email,
            "email_hash": subject.email_hash,
            "customer_id": subject.customer_id,
            **extra,
        }

    def _fill(self, spec: RequestSpec, template: str, values: Mapping[str, Any], encode: bool):
        def value(match: Any) -> str:
            found = values.get(match[1])
            if found is None:
                raise ConnectorError(
                    f"{self.system}: {spec.key} uses {{{match[1]}}}, which Lethe does not know "
                    "for this request; use {email} instead"
                )
            return quote(str(found), safe="") if encode else str(found)

        return PLACEHOLDER.sub(value, template)

    def _body(self, spec: RequestSpec, template: Any, values: Mapping[str, Any]) -> Any:
        if isinstance(template, str):
            return self._fill(spec, template, values, encode=False)
        if isinstance(template, dict):
            return {k: self._body(spec, v, values) for k, v in template.items()}
        if isinstance(template, list):
            return [self._body(spec, v, values) for v in template]
        return template

    def _send(self, spec: RequestSpec, values: Mapping[str, Any], doing: str) -> requests.Response:
        """Send one request, retrying what is worth retrying; return the final answer."""
        headers, auth = self._credentials()
        url = self.config.base_url + self._fill(spec, spec.url, values, encode=True)
        body = None if spec.body is None else self._body(spec, spec.body, values)
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            wait = None
            try:
                response = self.session.request(
                    spec.method,
                    url,
                    json=body,
                    headers={**self.config.headers, **headers},
                    auth=auth,
                    timeout=self.config.timeout_seconds,
                    # A redirect elsewhere would carry the credentials along: never follow.
                    allow_redirects=False,
                )
            except requests.Timeout:
                problem = f"no answer within {self.config.timeout_seconds:g} s"
            except requests.RequestException as exc:
                # The exception's text holds the URL, hence the address: name its kind only.
                problem = f"the service could not be reached ({type(exc).__name__})"
            else:
                status = response.status_code
                if status != 429 and status < 500:
                    return response
                problem, wait = f"HTTP {status}", _retry_after(response)
                response.close()
                if wait is not None and wait > MAX_RETRY_AFTER_SECONDS:
                    raise ConnectorError(
                        f"{self.system}: {doing} ({spec.describe()}) answered HTTP {status} and "
                        f"asks to wait {wait:.0f} s; Lethe tries again later",
                        transient=True,
                    )
            if attempt < attempts:
                time.sleep(wait if wait is not None else self._backoff(attempt))
        host = urlsplit(self.config.base_url).netloc
        raise ConnectorError(
            f"{self.system}: {doing} ({spec.describe()}) failed after {attempts} attempts: "
            f"{problem}; check that {host} is up, then retry",
            transient=True,
        )

    def _backoff(self, attempt: int) -> float:
        ceiling = min(MAX_BACKOFF_SECONDS, self.config.backoff_seconds * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311  (jitter, not a secret)

    def _failure(self, response: requests.Response, spec: RequestSpec, doing: str):
        status = response.status_code
        if status in (401, 403):
            names = ", ".join(self.config.auth.env.values()) if self.config.auth else "none set"
            hint = f"the service refused Lethe's credentials; check {names} and their permissions"
        elif status in GONE or 300 <= status < 400:
            hint = f"check base_url and {spec.key}.url"
        else:
            hint = "the service's own logs say why"
        return ConnectorError(
            f"{self.system}: {doing} ({spec.describe()}) answered HTTP {status}; {hint}"
        )

    def _json(self, response: requests.Response, spec: RequestSpec, doing: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ConnectorError(
                f"{self.system}: {doing} ({spec.describe()}) did not answer with JSON"
            ) from None

    # -- finding --------------------------------------------------------------------------

    def _find(self, subject: Subject) -> list[Any]:
        spec = self.config.find
        response = self._send(spec, self._values(subject), "finding the person")
        if response.status_code in spec.not_found:
            return []
        if not _succeeded(response):
            raise self._failure(response, spec, "finding the person")
        body = self._json(response, spec, "finding the person")
        try:
            found = resolve(body, spec.records)
        except LookupError:
            raise ConnectorError(
                f"{self.system}: the answer to {spec.describe()} has no {spec.records!r}; "
                "check find.records"
            ) from None
        if isinstance(found, dict):
            return [found]
        if not isinstance(found, list):
            raise ConnectorError(
                f"{self.system}: {spec.records or 'the answer'} of {spec.describe()} is not a "
                "list of records; check find.records"
            )
        return found

    def _ids(self, records: list[Any]) -> list[str]:
        ids = []
        for record in records:
            try:
                value = resolve(record, self.config.find.id)
            except LookupError:
                value = None
            if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                raise ConnectorError(
                    f"{self.system}: a record found has no usable {self.config.find.id!r}; "
                    "check find.id"
                )
            ids.append(str(value))
        return ids

    # -- the verbs ------------------------------------------------------------------------

    def check(self) -> CheckResult:
        """Send the check request (or find a person nobody holds); report the answer."""
        try:
            spec = self.config.check or self.config.find
            if self.config.check is None:
                self._find(CHECK_SUBJECT)
                status = "as configured"
            else:
                response = self._send(spec, {}, "checking the service")
                if not _succeeded(response):
                    raise self._failure(response, spec, "checking the service")
                status = f"HTTP {response.status_code}"
        except ConnectorError as exc:
            return CheckResult(False, str(exc))
        return CheckResult(True, f"{self.config.base_url} answered {spec.describe()} {status}")

    def plan(self, subject: Subject) -> Plan:
        """Find the person's records; erasure will delete them."""
        count = len(self._find(subject))
        note = ""
        if self.callback_timeout is not None:
            hours = self.callback_timeout.total_seconds() / 3600
            note = f"the service erases later and confirms by callback within {hours:g} hours"
        step = TablePlan(
            table=self.kind,
            action=Action.DELETE,
            rows=count,
            via=self.config.find.describe(),
            note=note,
        )
        return Plan(system=self.system, connector=self.name, steps=[step])

    def export(self, subject: Subject) -> Iterator[Record]:
        """Yield the person's records, fetched in full when an export request is configured."""
        records = self._find(subject)
        spec = self.config.export
        if spec is None:
            for record in records:
                yield Record(self.kind, record if isinstance(record, dict) else {"value": record})
            return
        if not records:
            return
        targets = (
            [self._values(subject, id=i) for i in self._ids(records)]
            if spec.uses("id")
            else [self._values(subject)]
        )
        for values in targets:
            response = self._send(spec, values, "exporting the person's records")
            if response.status_code in GONE:
                continue  # erased since it was found
            if not _succeeded(response):
                raise self._failure(response, spec, "exporting the person's records")
            try:
                found = resolve(self._json(response, spec, "exporting"), spec.records)
            except LookupError:
                raise ConnectorError(
                    f"{self.system}: the answer to {spec.describe()} has no {spec.records!r}; "
                    "check export.records"
                ) from None
            for record in found if isinstance(found, list) else [found]:
                yield Record(self.kind, record if isinstance(record, dict) else {"value": record})

    def erase(self, subject: Subject, plan: Plan) -> EraseResult:
        """Send the erase request for every record found (or once); 404 means already gone."""
        step = next((s for s in plan.steps if s.table == self.kind), None)
        if step is None:
            raise ConnectorError(
                f"{self.system}: the approved plan has no step for {self.kind}; review the plan"
            )
        if step.action == Action.RETAIN:
            return EraseResult(Outcome.RETAINED, message=f"kept under {step.ground}")
        if step.action != Action.DELETE:
            raise ConnectorError(f"{self.system}: the http connector can only delete records")
        asynchronous = self.callback_timeout is not None
        if asynchronous and not self.callback_url:
            raise ConnectorError(
                f"{self.system}: no callback URL was given for this erasure; an asynchronous "
                "system is erased by Lethe's worker, which provides one"
            )
        spec = self.config.erase
        records = self._find(subject)
        values = self._values(subject, callback_url=self.callback_url)
        if spec.uses("id"):
            targets = [{**values, "id": record_id} for record_id in self._ids(records)]
        else:
            targets = [values] if records else []
        sent = 0
        for target in targets:
            response = self._send(spec, target, "erasing")
            if response.status_code in GONE:
                continue  # already gone: erasing twice changes nothing more
            if not _succeeded(response):
                error = self._failure(response, spec, "erasing")
                if sent and not asynchronous:
                    error.args = (f"{error} ({sent} of {len(targets)} erased before it)",)
                raise error
            sent += 1
        if asynchronous and sent:
            hours = self.callback_timeout.total_seconds() / 3600
            return EraseResult(
                Outcome.ACTION_REQUIRED,
                message=f"{self.system} accepted the erasure and confirms it by callback "
                f"within {hours:g} hours",
            )
        outcome = Outcome.COMPLETED if plan.found or sent else Outcome.NOT_FOUND
        return EraseResult(outcome, {self.kind: sent} if sent else {})

    def verify(self, subject: Subject) -> VerifyResult:
        """Find the person again and return how many records remain."""
        return VerifyResult(remaining={self.kind: len(self._find(subject))})
