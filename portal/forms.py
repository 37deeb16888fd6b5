"""Forms of the customer portal."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, RadioField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length

from core.models import RequestType


class RequestForm(FlaskForm):
    """Ask for something: the address that identifies the person and what they want."""

    email = EmailField(
        _l("Your email address"),
        validators=[DataRequired(), Length(max=254), Email(check_deliverability=False)],
    )
    request_type = RadioField(
        _l("What would you like us to do?"),
        choices=[SelectChoice(RequestType.ERASURE.value, _l("Erase my personal data"))],
        default=RequestType.ERASURE.value,
        validators=[DataRequired()],
    )
    #: Set by the page that explains what erasure means, once the person confirmed it.
    confirmed = HiddenField()


class ConfirmForm(FlaskForm):
    """A button: proving the address takes a deliberate click, not a link prefetch."""
