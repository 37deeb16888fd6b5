"""Forms of bulk erasure: a list to upload or a segment to pick, and the one approval."""

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, DateField, HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

_NAME_HINT = (
    "Say why, e.g. “Accounts closed in 2023”. It is printed on the signed summary, "
    "so write no address in it."
)


class CsvBatchForm(FlaskForm):
    """Upload a CSV file of addresses."""

    name = StringField(
        "Name of the batch",
        description=_NAME_HINT,
        validators=[DataRequired(message="Give the batch a name."), Length(max=128)],
    )
    file = FileField(
        "CSV file",
        validators=[FileRequired(message="Choose the file to upload.")],
    )
    skip_invalid = BooleanField("Leave out the lines without a valid address")


class SegmentBatchForm(FlaskForm):
    """Pick a group of people that a connected system can list."""

    name = StringField(
        "Name of the batch",
        description=_NAME_HINT,
        validators=[DataRequired(message="Give the batch a name."), Length(max=128)],
    )
    # The choices are the configured segments: the view sets them.
    segment = SelectField("Group", validators=[DataRequired(message="Choose a group.")])
    before = DateField(
        "Before",
        description="The people whose date (e.g. last sign-in) is before this day.",
        validators=[Optional()],
    )


class ApproveBatchForm(FlaskForm):
    """Approve the batch as reviewed; the DPO types its reference to confirm."""

    digest = HiddenField(validators=[DataRequired()])
    confirm_reference = StringField(
        "Type the batch's reference to confirm",
        validators=[DataRequired(message="Type the reference to confirm."), Length(max=32)],
    )


class BatchActionForm(FlaskForm):
    """A button acting on a batch (discard a draft, resume a stopped start)."""
