"""Forms of the staff side."""

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from core.decisions import NOTE_MAX


class LoginForm(FlaskForm):
    """Sign in with an email address and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ApproveForm(FlaskForm):
    """Approve erasure along the plan that was on the screen."""

    plan_digest = HiddenField(validators=[DataRequired()])


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
