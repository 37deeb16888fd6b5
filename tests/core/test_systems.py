"""systems.toml: connectors found by entry point, and bad files stopped with a precise message."""

import pytest

from connectors.base import ConfigError
from connectors.sql import SqlConnector
from core.systems import load_systems


def write(tmp_path, text):
    path = tmp_path / "systems.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_means_no_systems(tmp_path):
    assert len(load_systems(tmp_path / "absent.toml")) == 0


def test_demo_file_enables_the_sql_connector_through_its_entry_point(tmp_path, crm_url):
    from core.demo import demo_systems_toml

    systems = load_systems(write(tmp_path, demo_systems_toml(crm_url)))
    assert [s.name for s in systems] == ["crm"]
    assert systems.classes["sql"] is SqlConnector
    with systems.open("crm") as connector:
        assert connector.check().ok


@pytest.mark.parametrize(
    ("text", "system", "key"),
    [
        ('[systems.crm]\nlabel = "x"\n', "crm", "connector"),
        ('[systems.crm]\nconnector = "nosuch"\n', "crm", "connector"),
        ('[systems.crm]\nconnector = "sql"\nlabel = 3\n', "crm", "label"),
        ('[system.crm]\nconnector = "sql"\n', "*", "system"),
        ("[systems.crm\n", "*", "*"),
    ],
)
def test_a_bad_file_names_the_file_the_system_and_the_key(tmp_path, text, system, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_systems(path)
    assert (error.value.system, error.value.key) == (system, key)
    assert str(path) in str(error.value)


def test_unknown_connector_lists_the_installed_ones(tmp_path):
    with pytest.raises(ConfigError, match="installed: .*sql"):
        load_systems(write(tmp_path, '[systems.crm]\nconnector = "nosuch"\n'))
