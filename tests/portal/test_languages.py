"""English, Russian and Chinese: picked from the browser, switchable, followed by emails."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tests.conftest import outbox_messages
from tests.flows import submit

ROOT = Path(__file__).resolve().parents[2]


def catalog(language: str):
    with open(ROOT / "translations" / language / "LC_MESSAGES" / "messages.po", "rb") as handle:
        return read_po(handle)


def test_the_template_is_up_to_date_with_the_code(tmp_path):
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "-k",
            "lazy_gettext",
            "--no-location",
            "--omit-header",
            "-o",
            str(fresh),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with open(fresh, "rb") as handle:
        in_code = {m.id for m in read_po(handle) if m.id}
    for language in ("ru", "zh"):
        translated = {m.id for m in catalog(language) if m.id and m.string and not m.fuzzy}
        missing = in_code - translated
        assert not missing, f"{language} lacks translations (run `make messages`): {missing}"


@pytest.mark.parametrize("language", ["ru", "zh"])
def test_translations_keep_every_placeholder(language):
    placeholder = re.compile(r"%\(\w+\)[sd]")
    for message in catalog(language):
        if not message.id:
            continue
        if isinstance(message.id, tuple):  # plural: every form keeps the plural's names
            expected = sorted(placeholder.findall(message.id[1]))
            forms = message.string
        else:
            expected, forms = sorted(placeholder.findall(message.id)), (message.string,)
        for form in forms:
            found = sorted(placeholder.findall(form))
            # A language may leave the count out of a form that can only mean one (ru "раз").
            assert found == expected or found == [p for p in expected if p != "%(num)d"], message.id


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ru-RU,ru;q=0.9", "Ваш адрес электронной почты"),
        ("zh-CN,zh;q=0.9", "您的电子邮件地址"),
        ("de-DE,de;q=0.9", "Your email address"),
    ],
)
def test_the_form_speaks_the_browsers_language(client, header, expected):
    page = client.get("/", headers={"Accept-Language": header})
    assert expected in page.text
    assert f'lang="{header[:2] if header[:2] in ("ru", "zh") else "en"}"' in page.text


def test_a_chosen_language_sticks_for_the_visit(client):
    assert "中文" in client.get("/").text
    assert "您的电子邮件地址" in client.get("/?lang=zh").text
    assert "您的电子邮件地址" in client.get("/", headers={"Accept-Language": "ru"}).text


def test_emails_follow_the_language_of_the_request(app, client):
    client.get("/?lang=ru")
    submit(client, "ivan.petrov@example.ru")
    message = outbox_messages(app)[-1]
    assert message["Subject"].startswith("Подтвердите запрос DSR-")
    body = message.get_body(("plain",)).get_content()
    assert "Чтобы подтвердить" in body
    assert 'lang="ru"' in message.get_body(("html",)).get_content()
