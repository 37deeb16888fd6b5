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


def test_the_country_map_adds_to_the_built_in_one_and_names_a_bad_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_JURISDICTION_BY_COUNTRY", "ch=gdpr-eu, GB=gdpr-eu")
    rules = load_config(tmp_path)["JURISDICTION_BY_COUNTRY"]
    assert rules["CH"] == "gdpr-eu" and rules["GB"] == "gdpr-eu"  # added, and overridden
    assert rules["US-CA"] == "ccpa" and rules["DE"] == "gdpr-eu"  # the built-in ones stay
    for bad, named in (("CH", "COUNTRY=rule"), ("CH=gdpr", "unknown deadline rule 'gdpr'")):
        monkeypatch.setenv("LETHE_JURISDICTION_BY_COUNTRY", bad)
        with pytest.raises(ConfigurationError, match=named):
            load_config(tmp_path)


def test_an_unknown_default_jurisdiction_and_a_bad_flag_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_JURISDICTION", "gdpr")
    with pytest.raises(ConfigurationError, match="LETHE_JURISDICTION: unknown deadline rule"):
        load_config(tmp_path)
    monkeypatch.delenv("LETHE_JURISDICTION")
    monkeypatch.setenv("LETHE_ALLOW_PAUSE", "yes")
    with pytest.raises(ConfigurationError, match="LETHE_ALLOW_PAUSE must be 0 or 1"):
        load_config(tmp_path)
