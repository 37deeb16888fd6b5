"""Forms of the customer portal."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, Optional

from core.models import RequestType

#: What a person can ask for, with the words they read.  Erasure comes last, after the
#: lighter choices, and nothing is selected for them.
REQUEST_CHOICES = [
    SelectChoice(RequestType.ACCESS.value, _l("Send me a copy of my personal data")),
    SelectChoice(
        RequestType.PORTABILITY.value,
        _l("Give me my data in a machine-readable file, to take to another service"),
    ),
    SelectChoice(RequestType.OBJECTION.value, _l("Stop using my data for marketing")),
    SelectChoice(RequestType.ERASURE.value, _l("Erase my personal data")),
]


class RequestForm(FlaskForm):
    """Ask for something: only what identifies the person, what they want, and why if they like."""

    email = EmailField(
        _l("Your email address"),
        validators=[DataRequired(), Length(max=254), Email(check_deliverability=False)],
    )
    customer_number = StringField(
        _l("Customer number (optional)"),
        description=_l("If you have one, it helps our team find you faster."),
        validators=[Optional(), Length(max=64)],
        filters=[lambda value: value.strip() if value else value],
    )
    request_type = RadioField(
        _l("What would you like us to do?"),
        choices=REQUEST_CHOICES,
        validators=[DataRequired(message=_l("Please choose what you would like us to do."))],
    )
    reason_code = SelectField(
        _l("Why are you asking? (optional)"),
        choices=[
            SelectChoice("", _l("I would rather not say")),
            SelectChoice("no-longer-used", _l("I no longer use your service")),
            SelectChoice("too-many-messages", _l("I get too many messages from you")),
            SelectChoice("privacy-concern", _l("I am worried about my privacy")),
            SelectChoice("security-concern", _l("I think my account or data was misused")),
            SelectChoice("other", _l("Another reason")),
        ],
        validators=[Optional()],
    )
    reason = TextAreaField(
        _l("Anything you would like to tell us? (optional)"),
        validators=[Optional(), Length(max=2000)],
        filters=[lambda value: value.strip() if value else value],
    )
    #: Set by the page that explains what erasure means, once the person confirmed it.
    confirmed = HiddenField()


class ConfirmForm(FlaskForm):
    """A button: proving the address takes a deliberate click, not a link prefetch."""


class FeedbackForm(FlaskForm):
    """How it went, once the request is closed: a score and, if they like, a comment."""

    score = RadioField(
        _l("How satisfied are you with how we handled your request?"),
        choices=[
            SelectChoice("5", _l("Very satisfied")),
            SelectChoice("4", _l("Satisfied")),
            SelectChoice("3", _l("Neither satisfied nor dissatisfied")),
            SelectChoice("2", _l("Dissatisfied")),
            SelectChoice("1", _l("Very dissatisfied")),
        ],
        validators=[DataRequired(message=_l("Please choose one answer."))],
    )
    comment = TextAreaField(
        _l("Anything we could do better? (optional)"),
        validators=[Optional(), Length(max=2000)],
        filters=[lambda value: value.strip() if value else value],
    )
