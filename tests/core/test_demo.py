"""The demo CRM that `make run` loads, and the systems.toml that connects it."""

import sqlalchemy as sa

from connectors.base import Subject
from core.demo import DOCUMENTED, create_demo_crm, demo_systems_toml
from core.systems import load_systems


def test_demo_crm_holds_the_documented_people_in_three_scripts(tmp_path):
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    assert create_demo_crm(url) == 40
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = dict(conn.execute(sa.text("SELECT email, full_name FROM customers")).all())
    engine.dispose()
    assert names["alice@example.com"] == "Alice Example"
    assert names["ivan.petrov@example.ru"] == "Иван Петров"
    assert names["li.wei@example.cn"] == "李伟"
    assert create_demo_crm(url) == 40  # rebuilding starts afresh


def test_demo_systems_file_plans_every_documented_person_in_all_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    create_demo_crm(url)
    file = tmp_path / "systems.toml"
    file.write_text(demo_systems_toml(url), encoding="utf-8")
    systems = load_systems(file)
    assert systems.configs["crm"].disclosure["purposes"]  # the export package tells why
    with systems.open("crm") as connector:
        for email, _, _ in DOCUMENTED:
            plan = connector.plan(Subject(email))
            assert not plan.warnings
            assert all(step.rows > 0 for step in plan.steps), (email, plan.steps)
