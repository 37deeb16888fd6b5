"""Find the real services the suite talks to, and skip or fail clearly when one is absent.

With ``LETHE_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets) a missing service fails the test
instead of skipping it, so a green CI run never hides an untested database.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

POSTGRES_URL = os.environ.get(
    "LETHE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MARIADB_URL = os.environ.get("LETHE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("LETHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def services_required() -> bool:
    """Return whether a missing service must fail the run rather than skip."""
    return os.environ.get("LETHE_REQUIRE_SERVICES") == "1"


def require(name: str, host: str, port: int) -> None:
    """Skip (or fail, when services are required) unless ``host:port`` accepts connections."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
    if services_required():
        pytest.fail(f"{message}; LETHE_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(message)


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parsed = sa.engine.make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or default_port


@contextmanager
def fresh_database(kind: str, template: str | None = None) -> Iterator[str]:
    """Create an empty PostgreSQL or MariaDB database for one test and drop it afterwards.

    With ``template`` (PostgreSQL only), the new database is a copy of that one.
    """
    if kind == "postgresql":
        admin_url, port, label = POSTGRES_URL, 5432, "PostgreSQL"
    elif kind == "mariadb":
        admin_url, port, label = MARIADB_URL, 3306, "MariaDB"
    else:
        raise ValueError(kind)
    require(label, *_host_port(admin_url, port))
    name = f"lethe_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            copy = f" TEMPLATE {template}" if template else ""
            conn.exec_driver_sql(f"CREATE DATABASE {name}{copy}")
        url = sa.engine.make_url(admin_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def require_redis() -> str:
    """Return the Redis URL for tests, skipping (or failing) when Redis is down."""
    parsed = urlsplit(REDIS_URL)
    require("Redis", parsed.hostname or "127.0.0.1", parsed.port or 6379)
    return REDIS_URL
