"""The OpenAPI document: valid OpenAPI 3, generated from every /api/v1 route, and
schemathesis, driving the API in-process from it with a DPO key, finds no server error."""

from __future__ import annotations

import itertools
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from core.api_keys import create_api_key
from core.extensions import db
from core.models import Role
from tests.admin.test_api import intake


def test_openapi_document_is_valid_and_public(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_openapi_document_lists_every_api_route(app, client):
    document = client.get("/api/v1/openapi.json").get_json()
    methods = {"get", "put", "post", "delete", "patch"}
    documented = {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint.startswith("api-docs."):
            continue
        # Werkzeug's <int:proof_id> is OpenAPI's {proof_id}.
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served, "no /api/v1 routes at all"
    assert served - documented == set(), "routes missing from /api/v1/openapi.json"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in methods:
                continue
            assert operation.get("summary") or operation.get("description"), (method, path)
            assert "401" in operation["responses"], f"{method} {path} does not say 401"


@pytest.fixture
def dpo_key(app, client) -> str:
    with app.app_context():
        _, token = create_api_key(db.session, "schemathesis", Role.DPO, "test")
        db.session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    # Something to find: a request waiting for a decision.
    assert client.post("/api/v1/requests", json=intake(), headers=headers).status_code == 201
    return token


def test_schemathesis_finds_no_server_error(app, dpo_key):
    app.config["API_AUTH_RATE_LIMIT"] = "100000 per minute"
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    headers = {"Authorization": f"Bearer {dpo_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    statuses: list[int] = []
    # Data that fits the document, then data that does not: neither may cause a 5xx.
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case):
            response = case.call_and_validate(headers=headers, checks=[not_a_server_error])
            statuses.append(response.status_code)

        call()
    # It got past validation and authentication, not only bounced off them.
    assert {200, 201, 404, 422} <= set(statuses), sorted(set(statuses))
