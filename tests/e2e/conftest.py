"""What the browser tests share: Debian's Chromium, a live server, an accessibility check."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.services import services_required

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[object]:
    """Launch headless Chromium, or skip (fail under LETHE_REQUIRE_SERVICES=1) without it."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        message = "Chromium is not installed (apt-get install chromium)"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The browser checks pages, not databases: SQLite alone keeps this test quick."""
    return f"sqlite:///{tmp_path / 'lethe.sqlite'}"


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """Serve the test app over HTTP on loopback."""
    app.config["COOLING_OFF_MINUTES"] = 60
    server = make_server("127.0.0.1", 0, app, threaded=True)
    app.config["BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app.config["BASE_URL"]
    server.shutdown()


def check_page(page, name: str, language: str, tmp_path: Path, prefix: str = "portal") -> None:
    """Fail on serious or critical axe-core findings; keep a screenshot of the page."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    serious = [
        (v["id"], v["help"], [n["target"] for n in v["nodes"]])
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, f"{name} [{language}]: {serious}"
    folder = ROOT / "docs" / "screenshots" if os.environ.get("LETHE_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{prefix}-{name}-{language}.png"), full_page=True)
