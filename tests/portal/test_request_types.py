"""What a person can ask for besides erasure, what they may add, and what they may say after."""

import re

import sqlalchemy as sa

from core.extensions import db
from core.models import DataSubjectRequest, RunStatus, Status
from core.operations import unseal
from core.systems import load_systems
from tests.conftest import csrf_token, outbox_messages
from tests.flows import submit, verify_latest


def only_request(app) -> DataSubjectRequest:
    return db.session.scalars(sa.select(DataSubjectRequest)).one()


def test_the_form_offers_every_kind_of_request_and_asks_only_what_identifies(client):
    page = client.get("/")
    offered = re.findall(r'name="request_type"[^>]*value="(\w+)"', page.text)
    assert offered == ["access", "portability", "objection", "erasure"]
    assert "checked" not in page.text  # nothing is chosen for the person
    fields = set(re.findall(r'<(?:input|textarea)[^>]*name="(\w+)"', page.text))
    assert fields == {"csrf_token", "email", "customer_number", "request_type", "reason"}


def test_a_request_without_a_choice_is_explained_and_not_stored(app, client):
    page = client.get("/")
    response = client.post(
        "/", data={"email": "alice@example.com", "csrf_token": csrf_token(page.text)}
    )
    assert response.status_code == 200
    assert "Please choose what you would like us to do." in response.text
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(DataSubjectRequest)) == 0


def test_erasure_confirmation_offers_to_only_stop_marketing_without_pushing_it(client):
    page = client.get("/")
    response = client.post(
        "/",
        data={
            "email": "alice@example.com",
            "request_type": "erasure",
            "customer_number": "C-1001",
            "reason": "I moved abroad",
            "csrf_token": csrf_token(page.text),
        },
    )
    forms = re.findall(r"<form.*?</form>", response.text, re.S)
    assert len(forms) == 2
    erase, objection = forms
    assert 'name="request_type" value="erasure"' in erase and "Yes, erase my data" in erase
    assert 'name="request_type" value="objection"' in objection
    assert "Only stop marketing" in objection
    for form in forms:  # what the person typed is carried by either choice
        assert 'value="C-1001"' in form and 'value="I moved abroad"' in form
    # Erasure stays the first, primary button; the lighter choice comes second.
    assert response.text.index("Yes, erase my data") < response.text.index("Only stop marketing")


def test_customer_number_and_reason_are_kept_encrypted(app, client):
    submit(client, "alice@example.com", "access", customer_number="C-77123", reason="Мой отзыв")
    with app.app_context():
        request = only_request(app)
        assert b"C-77123" not in request.customer_number_sealed
        assert "Мой отзыв".encode() not in request.reason_sealed
        assert unseal(request, request.customer_number_sealed) == "C-77123"
        assert unseal(request, request.reason_sealed) == "Мой отзыв"


def test_asking_for_something_else_while_erasure_is_open_is_a_new_request(app, client):
    submit(client, "alice@example.com", "erasure")
    submit(client, "alice@example.com", "access")
    submit(client, "alice@example.com", "access")  # the same thing again joins
    with app.app_context():
        kinds = sorted(db.session.scalars(sa.select(DataSubjectRequest.request_type)))
    assert kinds == ["access", "erasure"]


def test_objection_to_marketing_is_carried_out_once_the_address_is_proven(app, client, crm_url):
    submit(client, "alice@example.com", "objection")
    status = verify_latest(app, client)
    with app.app_context():
        request = only_request(app)
        assert request.status == Status.COMPLETED
        assert request.approved_by is None  # absolute right: no one weighs it
        assert [run.status for run in request.runs] == [RunStatus.COMPLETED]
    engine = sa.create_engine(crm_url)
    with engine.connect() as conn:
        opted_in = conn.execute(
            sa.text("SELECT email, marketing_opt_in FROM customers WHERE marketing_opt_in")
        ).all()
        kept = conn.execute(
            sa.text(
                "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id "
                "WHERE c.email = 'alice@example.com'"
            )
        ).scalar_one()
    engine.dispose()
    assert "alice@example.com" not in {email for email, _ in opted_in}
    assert opted_in  # other customers keep their choice
    assert kept >= 2  # nothing was erased
    message = outbox_messages(app)[-1]
    assert "no longer use your data for marketing" in message["Subject"]
    page = client.get(status)
    assert "Done — we no longer use your data for marketing" in page.text
    assert "Marketing stopped" in page.text


def test_feedback_is_taken_once_after_the_request_is_over(app, client):
    submit(client, "alice@example.com", "objection")
    status = verify_latest(app, client)
    page = client.get(status)
    assert "How did we do?" in page.text
    bad = client.post(f"{status}/feedback", data={"csrf_token": csrf_token(page.text)})
    assert bad.status_code == 400 and "Please choose one answer." in bad.text
    client.post(
        f"{status}/feedback",
        data={"csrf_token": csrf_token(page.text), "score": "4", "comment": "Quick, thanks"},
    )
    with app.app_context():
        request = only_request(app)
        assert request.feedback_score == 4
        assert b"Quick" not in request.feedback_sealed
        assert unseal(request, request.feedback_sealed) == "Quick, thanks"
    again = client.get(status)
    assert "How did we do?" not in again.text
    client.post(f"{status}/feedback", data={"csrf_token": csrf_token(page.text), "score": "1"})
    with app.app_context():
        assert only_request(app).feedback_score == 4  # the first answer stands


def test_no_feedback_form_while_the_request_is_open(app, client):
    submit(client, "alice@example.com", "erasure")
    status = verify_latest(app, client)
    page = client.get(status)
    assert "How did we do?" not in page.text
    response = client.post(
        f"{status}/feedback", data={"csrf_token": csrf_token(page.text), "score": "5"}
    )
    assert response.status_code == 302
    with app.app_context():
        assert only_request(app).feedback_score is None


def test_a_system_with_no_marketing_use_says_so_and_changes_nothing(app, client, crm_url, tmp_path):
    settings = (tmp_path / "instance" / "systems.toml").read_text(encoding="utf-8")
    start = settings.index("[systems.crm.marketing]")
    end = settings.index("[", start + 1)
    file = tmp_path / "no-marketing.toml"
    file.write_text(settings[:start] + settings[end:], encoding="utf-8")
    app.extensions["lethe.systems"] = load_systems(file)
    submit(client, "alice@example.com", "objection")
    status = verify_latest(app, client)
    with app.app_context():
        request = only_request(app)
        assert request.status == Status.COMPLETED
        assert [run.status for run in request.runs] == [RunStatus.NOT_FOUND]
    engine = sa.create_engine(crm_url)
    with engine.connect() as conn:
        opted_in = conn.execute(
            sa.text("SELECT marketing_opt_in FROM customers WHERE email = 'alice@example.com'")
        ).scalar_one()
    engine.dispose()
    assert opted_in  # the system was not configured for marketing: nothing was touched
    assert "Not used for marketing" in client.get(status).text


def test_the_person_may_say_why_from_a_short_list_and_the_dpo_sees_it(app, client):
    page = client.get("/")
    assert '<select id="reason_code" name="reason_code"' in page.text
    confirm = client.post(
        "/",
        data={
            "email": "alice@example.com",
            "request_type": "erasure",
            "reason_code": "too-many-messages",
            "csrf_token": csrf_token(page.text),
        },
    )
    assert 'name="reason_code" value="too-many-messages"' in confirm.text  # carried along
    odd = client.post(
        "/",
        data={
            "email": "carol@example.com",
            "request_type": "access",
            "reason_code": "<script>",
            "csrf_token": csrf_token(page.text),
        },
    )
    assert odd.status_code == 200 and "Not a valid choice" in odd.text  # asked again
    submit(client, "alice@example.com", "erasure", reason_code="too-many-messages")
    submit(client, "bob@example.com", "access")
    with app.app_context():
        codes = dict(
            db.session.execute(
                sa.select(DataSubjectRequest.request_type, DataSubjectRequest.reason_code)
            ).all()
        )
    assert codes == {"erasure": "too-many-messages", "access": None}
