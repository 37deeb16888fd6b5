"""A bulk erasure run by a real Celery worker on a Redis of its own: every member erased.

The smaller sibling of ``bench/scaling.py`` (which runs 1, 2 and 4 workers and prints a
table): the same code, one worker, a batch of three people approved as a DPO does it.
"""

from __future__ import annotations

import shutil

import pytest

from tests.services import POSTGRES_URL, _host_port, require, services_required


def test_a_bulk_erasure_on_a_worker_erases_and_proves_every_member():
    require("PostgreSQL", *_host_port(POSTGRES_URL, 5432))
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed"
        if services_required():
            pytest.fail(f"{message}; LETHE_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    from bench import scaling

    [round_] = scaling.run(people=3, counts=(1,))

    assert round_["closed"] is not None and round_["status"] == "completed", round_
    assert round_["members"] == 3
    assert round_["not_completed"] == round_["unproven"] == round_["crm_rows_left"] == 0
    assert round_["ok"]
