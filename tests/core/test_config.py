"""Configuration from LETHE_* variables, and the refusal to run production on dev secrets."""

import pytest

from core.config import ConfigurationError, load_config


def test_development_defaults_are_embedded_and_secrets_persist(tmp_path, monkeypatch):
    for name in ("ENV", "DATABASE_URL", "SECRET_KEY", "DATA_KEY", "HASH_KEY"):
        monkeypatch.delenv(f"LETHE_{name}", raising=False)
    first = load_config(tmp_path)
    assert first["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert first["BROKER_URL"].startswith("sqla+sqlite:///")
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
    assert load_config(tmp_path)["SECRET_KEY"] == first["SECRET_KEY"]


def test_production_refuses_to_start_without_its_own_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_ENV", "production")
    for name in ("SECRET_KEY", "DATA_KEY", "HASH_KEY"):
        monkeypatch.delenv(f"LETHE_{name}", raising=False)
    with pytest.raises(ConfigurationError, match="LETHE_SECRET_KEY"):
        load_config(tmp_path)
    assert not (tmp_path / "secrets.json").exists()


def test_a_malformed_key_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("LETHE_ENV", raising=False)
    monkeypatch.setenv("LETHE_DATA_KEY", "not hex")
    with pytest.raises(ConfigurationError, match="LETHE_DATA_KEY"):
        load_config(tmp_path)


def test_a_bad_number_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_SMTP_PORT", "twenty-five")
    with pytest.raises(ConfigurationError, match="LETHE_SMTP_PORT"):
        load_config(tmp_path)


def test_an_unknown_time_zone_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_TIMEZONE", "Mars/Olympus_Mons")
    with pytest.raises(ConfigurationError, match="LETHE_TIMEZONE"):
        load_config(tmp_path)
