"""Forms of the staff side."""

from flask_wtf import FlaskForm
from wtforms import DateField, EmailField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, Length, Optional

from core.decisions import NOTE_MAX
from core.holds import NOTE_MAX as HOLD_NOTE_MAX
from core.intake import IDENTITY_METHODS, STAFF_CHANNELS
from core.models import RequestType


class ApproveForm(FlaskForm):
    """Approve along the plan that was on the screen; erasure asks for the reference."""

    plan_digest = HiddenField(validators=[DataRequired()])
    confirm_reference = StringField(
        "Type the request's reference to confirm", validators=[Length(max=32)]
    )


class ConfirmForm(FlaskForm):
    """A button that changes something: only the CSRF token."""


class HoldForm(FlaskForm):
    """Place a legal hold on a person, a system, or a person in one system."""

    email = EmailField(
        "The person's email address",
        description="Leave empty to hold a whole system.",
        validators=[Optional(), Email(message="This is not an email address."), Length(max=254)],
    )
    system = SelectField("System", description="Leave on “every system” to hold all of them.")
    ground = SelectField("Legal ground", validators=[DataRequired(message="Choose the ground.")])
    reason = TextAreaField(
        "Why the data must be kept",
        description="E.g. the invoice or case number; shown to staff only, stored encrypted.",
        validators=[DataRequired(message="Say why."), Length(max=HOLD_NOTE_MAX)],
        render_kw={"rows": 3, "cols": 60},
    )


class RequestHoldForm(HoldForm):
    """Place a hold on the person of the request on screen: their address is known."""

    email = None


class IntakeForm(FlaskForm):
    """Record a request that reached us by phone, letter, email or in person."""

    email = EmailField(
        "The person's email address",
        description="They are sent a link to confirm it unless you record how you checked "
        "who they are.",
        validators=[
            DataRequired(message="An email address is needed to reach the person."),
            Email(message="This is not an email address."),
            Length(max=254),
        ],
    )
    request_type = SelectField(
        "What they ask for", choices={kind.value: kind.value for kind in RequestType}
    )
    channel = SelectField(
        "How it reached us",
        choices={c.value: c.value.replace("_", " ") for c in STAFF_CHANNELS},
    )
    received_on = DateField(
        "Date it reached us",
        description="The legal clock starts on this day, not on the day you type it in.",
        validators=[DataRequired(message="Give the date it reached us (YYYY-MM-DD).")],
    )
    language = SelectField(
        "Language for emails", choices={"en": "English", "ru": "Russian", "zh": "Chinese"}
    )
    country = StringField(
        "Country where the person lives (optional)",
        description="ISO code such as DE, GB, US-CA, RU or CN; it picks the legal clock.",
        validators=[Optional(), Length(max=8)],
    )
    customer_number = StringField(
        "Customer number (optional)", validators=[Optional(), Length(max=64)]
    )
    reason = TextAreaField(
        "What the person said (optional)",
        validators=[Optional(), Length(max=2000)],
        render_kw={"rows": 3, "cols": 60},
    )
    identity_method = SelectField(
        "Identity",
        choices={
            "": "not checked: email them a link to confirm",
            **{code: f"checked: {words}" for code, words in IDENTITY_METHODS.items()},
        },
        validate_choice=True,
    )
    identity_note = TextAreaField(
        "What you checked (required when identity was checked)",
        validators=[Optional(), Length(max=2000)],
        render_kw={"rows": 2, "cols": 60},
    )


class DenyForm(FlaskForm):
    """Refuse a request on a legal ground; the DPO types the reference to confirm."""

    # The choices depend on the request's type: the view sets them.
    reason = SelectField(
        "Legal ground", validators=[DataRequired(message="Choose the legal ground.")]
    )
    note = TextAreaField(
        "Justification sent to the person (required for “manifestly unfounded” and “excessive”)",
        validators=[Length(max=NOTE_MAX)],
        render_kw={"rows": 6, "cols": 60},
    )
    confirm_reference = StringField(
        "Type the request's reference to confirm",
        validators=[DataRequired(message="Type the reference to confirm."), Length(max=32)],
    )


class ExtendForm(FlaskForm):
    """Extend a request's deadline once, for a reason the person is told."""

    reason = SelectField("Reason", validators=[DataRequired(message="Choose a reason.")])
    note = TextAreaField(
        "Note sent to the person (optional)",
        validators=[Length(max=NOTE_MAX)],
        render_kw={"rows": 4, "cols": 60},
    )
