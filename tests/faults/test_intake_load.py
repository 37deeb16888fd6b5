"""A real burst of portal submissions against gunicorn: count in == count stored == emails.

The smaller sibling of ``bench/intake_load.py`` (which sends 2,000 and prints a table): the
same code, gunicorn with 2 workers on a fresh PostgreSQL database, a loopback SMTP server.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.services import POSTGRES_URL, _host_port, require

BENCH = Path(__file__).resolve().parents[2] / "bench" / "intake_load.py"


def _bench():
    spec = importlib.util.spec_from_file_location("intake_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_burst_of_submissions_is_stored_and_mailed_exactly_once():
    require("PostgreSQL", *_host_port(POSTGRES_URL, 5432))
    report = _bench().run(requests=120, concurrency=30, workers=2)
    assert report["not_accepted"] == {}, report  # rate limits are off for the burst
    assert report["accepted"] == 120
    assert report["stored"] == report["people"] == report["emails"] == 120
    assert report["queued"] == report["sent"] == 120 and report["bodies_left"] == 0
    assert report["mailed_twice"] == 0 and report["accepted_not_mailed"] == 0
    assert report["ok"]
