"""The page where the owner of a system kept by hand confirms what they did.

Reachable only through the signed link of their task email (``core.manual_tasks``); it
works once.  Staff-facing, so in English whatever the browser asks for.
"""

from __future__ import annotations

from flask import current_app, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import IntegerField, RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from connectors.manual import STEP
from core.extensions import db, limiter
from core.jobs import confirm_pending
from core.manual_tasks import REPORTS, confirmation_message, open_task
from core.tokens import TokenError
from portal import bp
from portal.limits import bad_links

NO_PERSONAL_DATA = (
    "Your words go into the proof of deletion, which auditors read: describe what you did "
    '("shredded the customer file in cabinet B"), never the person (no name, address or '
    "number of theirs)."
)


class ManualTaskForm(FlaskForm):
    """What the owner did, in words that hold no personal data of the person."""

    report = RadioField(
        "What did you do?",
        choices=[
            SelectChoice("done", "I erased what we held about the person"),
            SelectChoice("nothing", "We hold nothing about the person"),
            SelectChoice("kept", "We keep it under a legal ground"),
        ],
        validators=[DataRequired(message="Please choose what you did.")],
    )
    details = TextAreaField(
        "What exactly? (for erased and kept)",
        description=NO_PERSONAL_DATA,
        # No Optional(): it would stop validate_details, which requires it for done and kept.
        validators=[Length(max=500)],
        filters=[lambda value: value.strip() if value else value],
    )
    count = IntegerField(
        "How many records or files? (optional)",
        validators=[Optional(), NumberRange(min=0, max=1_000_000)],
    )
    ground = SelectField("Legal ground (for kept)", choices=[], validate_choice=False)
    name = StringField(
        "Your name",
        validators=[DataRequired(message="Please give your name."), Length(max=100)],
        filters=[lambda value: value.strip() if value else value],
    )

    def validate_details(self, field) -> None:
        if self.report.data in ("done", "kept") and not field.data:
            raise ValidationError("Please say what you erased or kept.")

    def validate_ground(self, field) -> None:
        if self.report.data == "kept" and field.data not in {c.value for c in field.choices}:
            raise ValidationError("Please choose the ground under which it is kept.")


def _systems():
    return current_app.extensions["lethe.systems"]


@bp.route("/tasks/<token>", methods=["GET", "POST"])
@bad_links
@limiter.limit("30 per hour", methods=["POST"])
def manual_task(token: str):
    """Show a task kept by hand and record the owner's confirmation, once."""
    try:
        task = open_task(db.session, _systems(), token)
    except TokenError as exc:
        code = 410 if exc.reason in {"expired", "used"} else 400
        return render_template("portal/manual_task_problem.html", reason=exc.reason), code
    form = ManualTaskForm()
    form.ground.choices = [SelectChoice(g, g) for g in task.settings.grounds]
    if not task.settings.grounds:
        form.report.choices = [c for c in form.report.choices if c.value != "kept"]
    if not form.validate_on_submit():
        return render_template("portal/manual_task.html", form=form, task=task), (
            400 if form.is_submitted() else 200
        )
    report = form.report.data
    message = confirmation_message(
        task.settings, report, form.name.data, form.details.data, form.count.data, form.ground.data
    )
    counted = report == "done" and form.count.data is not None
    run_id = task.run.id
    # The job works in its own app context and session; end this one's transaction first.
    db.session.rollback()
    confirm_pending(
        run_id,
        REPORTS[report].value,
        message,
        f"owner:{task.settings.owner}",
        {STEP: form.count.data} if counted else None,
    )
    return redirect(url_for("portal.manual_task_done"))


@bp.route("/tasks/done")
def manual_task_done():
    """Thank the owner; the link they used no longer works."""
    return render_template("portal/manual_task_done.html")
