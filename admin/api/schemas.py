"""What the API reads and writes, as marshmallow schemas: they validate and document it."""

from __future__ import annotations

import email_validator
from marshmallow import Schema, ValidationError, fields, validate

from core import LANGUAGES
from core.decisions import EXTENSION_REASONS, GROUNDS, NOTE_MAX
from core.intake import IDENTITY_METHODS, STAFF_CHANNELS
from core.models import RequestType, RunStatus, Status


def _email(value: str) -> None:
    try:
        email_validator.validate_email(value, check_deliverability=False)
    except email_validator.EmailNotValidError:
        raise ValidationError("This is not an email address.") from None


def _choice(values) -> validate.OneOf:
    return validate.OneOf([str(value) for value in values])


class ErrorSchema(Schema):
    """Every error: what is wrong, and per field of the input what is wrong with it."""

    error = fields.String(required=True)
    fields_ = fields.Dict(keys=fields.String(), required=True, data_key="fields")


class SubmitSchema(Schema):
    """A request that reached the controller by another channel."""

    email = fields.String(
        required=True, validate=[validate.Length(max=254), _email], metadata={"format": "email"}
    )
    type = fields.String(required=True, validate=_choice(RequestType))
    channel = fields.String(required=True, validate=_choice(STAFF_CHANNELS))
    received_on = fields.Date(
        required=True, metadata={"description": "The day it reached you: the clock starts then."}
    )
    language = fields.String(load_default="en", validate=_choice(LANGUAGES))
    country = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$"),
        metadata={"description": "ISO 3166 code where the person lives: DE, GB, US-CA…"},
    )
    customer_number = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=64)
    )
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))
    identity_method = fields.String(
        load_default=None,
        allow_none=True,
        validate=_choice(IDENTITY_METHODS),
        metadata={"description": "How identity was checked; leave out to email a link."},
    )
    identity_note = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=NOTE_MAX)
    )


class ListArgsSchema(Schema):
    """Filters of the request list, as on the staff queue."""

    state = fields.String(validate=_choice(Status))
    type = fields.String(validate=_choice(RequestType))
    overdue = fields.Boolean(load_default=False)
    open = fields.Boolean(load_default=False)
    due_within = fields.Integer(validate=validate.Range(min=0, max=3660))
    q = fields.String(
        validate=validate.Length(max=254),
        metadata={"description": "A reference, or an email address (found by its keyed hash)."},
    )
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class ClockSchema(Schema):
    received_on = fields.Date()
    due_on = fields.Date(metadata={"description": "The date that binds now."})
    first_due_on = fields.Date()
    extended = fields.Boolean()
    days_left = fields.Integer()
    overdue = fields.Boolean()
    paused_since = fields.Date(allow_none=True)
    paused_days = fields.Integer()


class RunSchema(Schema):
    system = fields.String()
    label = fields.String()
    connector = fields.String()
    state = fields.String(validate=_choice(RunStatus))
    attempts = fields.Integer()
    rows_before = fields.Integer()
    rows_affected = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True)
    remaining = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True)
    message = fields.String()
    retained_ground = fields.String(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class ProofSchema(Schema):
    id = fields.Integer()
    reference = fields.String()
    issued_at = fields.DateTime()
    key_id = fields.String()
    fingerprint = fields.String()
    pdf_sha256 = fields.String()
    url = fields.String(metadata={"description": "Where to download the signed PDF."})


class PlanSchema(Schema):
    digest = fields.String(metadata={"description": "Send it back to approve this plan."})
    systems = fields.Dict(keys=fields.String(), values=fields.Dict())
    held = fields.Dict(keys=fields.String(), values=fields.String())
    problem = fields.String(allow_none=True)


class RequestSummarySchema(Schema):
    reference = fields.String()
    type = fields.String()
    state = fields.String(validate=_choice(Status))
    channel = fields.String()
    jurisdiction = fields.String()
    received_at = fields.DateTime()
    due_on = fields.Date()
    overdue = fields.Boolean()


class RequestSchema(RequestSummarySchema):
    """A request as the staff page shows it, without the person's address or free text."""

    language = fields.String()
    subject_country = fields.String(allow_none=True)
    identity_method = fields.String(allow_none=True)
    verified_at = fields.DateTime(allow_none=True)
    approved_at = fields.DateTime(allow_none=True)
    cooling_off_until = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)
    decision_reason = fields.String(allow_none=True)
    extension_reason = fields.String(allow_none=True)
    runs_paused = fields.Boolean()
    clock = fields.Nested(ClockSchema)
    runs = fields.List(fields.Nested(RunSchema))
    proofs = fields.List(fields.Nested(ProofSchema))
    plan = fields.Nested(
        PlanSchema,
        allow_none=True,
        metadata={
            "description": "Each system's dry run; only while the request awaits a decision."
        },
    )


class RequestPageSchema(Schema):
    requests = fields.List(fields.Nested(RequestSummarySchema))
    page = fields.Integer()
    per_page = fields.Integer()
    has_more = fields.Boolean()


class SubmittedSchema(Schema):
    created = fields.Boolean(metadata={"description": "False: an open request was joined."})
    email_sent = fields.Boolean(
        allow_none=True, metadata={"description": "Whether the confirmation link went out."}
    )
    request = fields.Nested(RequestSchema)


class ApproveSchema(Schema):
    plan_digest = fields.String(required=True, validate=validate.Length(equal=64))
    confirm_reference = fields.String(
        load_default="",
        validate=validate.Length(max=32),
        metadata={"description": "The request's reference: needed for an erasure."},
    )
    retain = fields.Dict(
        keys=fields.String(validate=validate.Length(max=64)),
        values=fields.String(validate=validate.Length(max=40)),
        load_default=dict,
        metadata={
            "description": "Systems kept out of the erasure, each with an Art. 17(3) ground."
        },
    )


class DenySchema(Schema):
    reason = fields.String(required=True, validate=_choice(g.code for g in GROUNDS))
    note = fields.String(load_default="", validate=validate.Length(max=NOTE_MAX))
    confirm_reference = fields.String(required=True, validate=validate.Length(max=32))


class ExtendSchema(Schema):
    reason = fields.String(required=True, validate=_choice(r.code for r in EXTENSION_REASONS))
    note = fields.String(load_default="", validate=validate.Length(max=NOTE_MAX))


class DecidedSchema(Schema):
    request = fields.Nested(RequestSchema)
    email_sent = fields.Boolean(
        allow_none=True, metadata={"description": "Whether the person was emailed the decision."}
    )


class ProofArgsSchema(Schema):
    from_ = fields.Date(data_key="from", metadata={"description": "First day, inclusive."})
    to = fields.Date(metadata={"description": "Last day, inclusive."})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class ProofPageSchema(Schema):
    proofs = fields.List(fields.Nested(ProofSchema))
    page = fields.Integer()
    per_page = fields.Integer()
    has_more = fields.Boolean()
