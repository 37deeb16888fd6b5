"""The domain's tables: requests, identities, staff, per-system runs, audit events, proofs."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.extensions import db


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator):
    """Store aware datetimes as UTC on every dialect and give them back aware."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC one is required")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class RequestType(enum.StrEnum):
    """What the subject asked for."""

    #: Art. 17: erase my personal data.
    ERASURE = "erasure"
    #: Art. 15: a copy of my personal data and how it is used.
    ACCESS = "access"
    #: Art. 20: my data in a machine-readable form, to take elsewhere.
    PORTABILITY = "portability"
    #: Art. 21(2)-(3): stop using my data for direct marketing.
    OBJECTION = "objection"

    @property
    def exports(self) -> bool:
        """Return whether the request is answered with an export package."""
        return self in (RequestType.ACCESS, RequestType.PORTABILITY)


class Status(enum.StrEnum):
    """Where a request is in its life; moves only through ``core.lifecycle``."""

    SUBMITTED = "submitted"
    VERIFIED = "verified"
    APPROVED = "approved"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    FAILED = "failed"
    EXPIRED = "expired"
    DENIED = "denied"
    CANCELLED = "cancelled"


class RunStatus(enum.StrEnum):
    """Where one system's run is; the outcomes match ``connectors.base.Outcome``."""

    PLANNED = "planned"
    RUNNING = "running"
    COMPLETED = "completed"
    NOT_FOUND = "not_found"
    RETAINED = "retained"
    ACTION_REQUIRED = "action_required"
    FAILED = "failed"


class Channel(enum.StrEnum):
    """How a request reached us; staff record the real received date for the others."""

    PORTAL = "portal"
    EMAIL = "email"
    PHONE = "phone"
    LETTER = "letter"
    IN_PERSON = "in_person"
    API = "api"
    #: Part of a bulk erasure of a customer group the controller decided on.
    BULK = "bulk"


class Role(enum.StrEnum):
    """What a staff member may do."""

    ADMIN = "admin"
    DPO = "dpo"
    OPERATOR = "operator"
    AUDITOR = "auditor"


def _enum(kind: type[enum.StrEnum]) -> sa.Enum:
    # Stored as plain strings with a CHECK-free VARCHAR so adding a member needs no
    # table rebuild on SQLite; the application validates values through the enum.
    return sa.Enum(
        kind,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


class SubjectIdentity(db.Model):
    """A person who asked us something, known by a keyed hash; their email is encrypted."""

    __tablename__ = "subject_identity"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(sa.String(64), unique=True, index=True)
    email_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DataSubjectRequest(db.Model):
    """One request by one person, with its legal clock stored, not recomputed."""

    __tablename__ = "data_subject_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(sa.String(16), unique=True, index=True)
    request_type: Mapped[RequestType] = mapped_column(_enum(RequestType))
    status: Mapped[Status] = mapped_column(_enum(Status), index=True)
    identity_id: Mapped[int] = mapped_column(sa.ForeignKey("subject_identity.id"))
    language: Mapped[str] = mapped_column(sa.String(8), default="en")
    jurisdiction: Mapped[str] = mapped_column(sa.String(16))
    holiday_country: Mapped[str | None] = mapped_column(sa.String(8))
    holiday_subdivision: Mapped[str | None] = mapped_column(sa.String(8))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_on: Mapped[date] = mapped_column(sa.Date, index=True)
    extended_due_on: Mapped[date | None] = mapped_column(sa.Date)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Single-use nonce of the outstanding email-verification link (None once used).
    verify_nonce: Mapped[str | None] = mapped_column(sa.String(32))
    verify_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))
    cooling_off_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: What the person typed, sealed like the address: an optional customer number and
    #: an optional reason in their own words.
    customer_number_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    reason_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    #: Optional feedback once the request is closed: a score from 1 to 5 and a comment.
    feedback_score: Mapped[int | None] = mapped_column()
    feedback_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: A refusal: the ground's code (``core.decisions``), the DPO's note sealed like the
    #: address (staff notes may mention the person), who decided and when.
    decision_reason: Mapped[str | None] = mapped_column(sa.String(40))
    decision_note_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))
    #: The one extension of the deadline: when, why, and a sealed note.
    extended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extension_reason: Mapped[str | None] = mapped_column(sa.String(40))
    extension_note_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    #: How the request reached us, and the staff member who recorded it if not the portal.
    channel: Mapped[Channel] = mapped_column(_enum(Channel), default=Channel.PORTAL)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))
    #: How identity was established when not by the emailed link (a code of
    #: ``core.intake``), with staff's sealed note of what they checked.
    identity_method: Mapped[str | None] = mapped_column(sa.String(32))
    identity_note_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    #: Where the person lives (ISO 3166 code, e.g. ``DE``, ``US-CA``), which can choose
    #: the jurisdiction; None when not known.
    subject_country: Mapped[str | None] = mapped_column(sa.String(8))
    #: Why the person asked, from the portal's optional list (a code); free text is sealed.
    reason_code: Mapped[str | None] = mapped_column(sa.String(32))
    #: The bulk erasure this request belongs to, if any.
    batch_id: Mapped[int | None] = mapped_column(sa.ForeignKey("erasure_batch.id"), index=True)
    #: Staff paused the request: no system starts (or starts again) until they resume it.
    runs_paused: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    #: When its retention ended and its personal data was purged (``core.retention``).
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    identity: Mapped[SubjectIdentity] = relationship()
    approved_by: Mapped[StaffUser | None] = relationship(foreign_keys=[approved_by_id])
    decided_by: Mapped[StaffUser | None] = relationship(foreign_keys=[decided_by_id])
    created_by: Mapped[StaffUser | None] = relationship(foreign_keys=[created_by_id])
    batch: Mapped[ErasureBatch | None] = relationship(back_populates="requests")
    pauses: Mapped[list[RequestPause]] = relationship(
        back_populates="request", order_by="RequestPause.id", cascade="all, delete-orphan"
    )
    runs: Mapped[list[SystemRun]] = relationship(
        back_populates="request", order_by="SystemRun.system", cascade="all, delete-orphan"
    )
    proofs: Mapped[list[Proof]] = relationship(back_populates="request", order_by="Proof.id")
    exports: Mapped[list[ExportPackage]] = relationship(
        back_populates="request", order_by="ExportPackage.id"
    )

    @property
    def effective_due_on(self) -> date:
        """Return the date that binds now: the extended one if the deadline was extended."""
        return self.extended_due_on or self.due_on


class StaffUser(UserMixin, db.Model):
    """A member of staff who signs in to the admin side."""

    __tablename__ = "staff_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[Role] = mapped_column(_enum(Role))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Sign-in failures in a row, and until when the account is locked after too many.
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: TOTP two-factor: the secret sealed with the data key; active once confirmed.
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    totp_enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_active(self) -> bool:  # flask-login refuses sessions of deactivated staff
        return self.active


class SystemRun(db.Model):
    """The erasure of one request in one system: its plan, attempts, counts and receipt."""

    __tablename__ = "system_run"
    __table_args__ = (sa.UniqueConstraint("request_id", "system"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("data_subject_request.id"), index=True)
    system: Mapped[str] = mapped_column(sa.String(64))
    label: Mapped[str] = mapped_column(sa.String(128))
    connector: Mapped[str] = mapped_column(sa.String(64))
    connector_version: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.PLANNED)
    attempts: Mapped[int] = mapped_column(default=0)
    plan: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    rows_before: Mapped[int] = mapped_column(default=0)
    rows_affected: Mapped[dict[str, int] | None] = mapped_column(sa.JSON)
    remaining: Mapped[dict[str, int] | None] = mapped_column(sa.JSON)
    message: Mapped[str] = mapped_column(sa.Text, default="")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the run was last put on the queue (or is due, after a backoff): a planned run
    #: of a running request still waiting long after this lost its task.
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    #: The last sign of life from the worker running it; the watchdog goes by this.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set when the DPO kept this system out of the erasure (partial approval) or a legal
    #: hold did: the Art. 17(3) ground, and the hold if one applied.
    retained_ground: Mapped[str | None] = mapped_column(sa.String(40))
    hold_id: Mapped[int | None] = mapped_column(sa.ForeignKey("legal_hold.id"))

    request: Mapped[DataSubjectRequest] = relationship(back_populates="runs")
    hold: Mapped[LegalHold | None] = relationship()


class AuditEvent(db.Model):
    """One link of the audit hash chain; holds no personal data."""

    __tablename__ = "audit_event"

    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(128))
    action: Mapped[str] = mapped_column(sa.String(64))
    reference: Mapped[str | None] = mapped_column(sa.String(16), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64), unique=True)


class Proof(db.Model):
    """A signed PDF proof of deletion, kept with the digest of its exact bytes."""

    __tablename__ = "proof"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("data_subject_request.id"), index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    key_id: Mapped[str] = mapped_column(sa.String(32))
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    pdf_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    pdf: Mapped[bytes] = mapped_column(sa.LargeBinary)

    request: Mapped[DataSubjectRequest] = relationship(back_populates="proofs")


class ExportPackage(db.Model):
    """An export package (access, portability): an encrypted ZIP file, downloaded by link."""

    __tablename__ = "export_package"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("data_subject_request.id"), index=True)
    #: File name under the export folder; the file is encrypted, its name says nothing.
    filename: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    size: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Records per system and table, and the systems that could not be exported.
    summary: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    downloads: Mapped[int] = mapped_column(default=0)
    max_downloads: Mapped[int] = mapped_column()
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    request: Mapped[DataSubjectRequest] = relationship(back_populates="exports")


class RequestPause(db.Model):
    """An interval during which the legal clock stood still (waiting for identity proof)."""

    __tablename__ = "request_pause"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("data_subject_request.id"), index=True)
    started_on: Mapped[date] = mapped_column(sa.Date)
    #: None while the clock is still paused.
    ended_on: Mapped[date | None] = mapped_column(sa.Date)
    reason: Mapped[str] = mapped_column(sa.String(40))
    started_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))
    ended_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))

    request: Mapped[DataSubjectRequest] = relationship(back_populates="pauses")


class LegalHold(db.Model):
    """A reason to keep data despite erasure (unpaid invoice, litigation) until released.

    On a subject (``identity_id``), a system (``system``) or a subject in one system; while
    active, the plan of every matching system says "retain" with the hold's ground.
    """

    __tablename__ = "legal_hold"

    id: Mapped[int] = mapped_column(primary_key=True)
    identity_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("subject_identity.id"), index=True
    )
    system: Mapped[str | None] = mapped_column(sa.String(64))
    #: An Art. 17(3) ground code (``core.decisions``).
    ground: Mapped[str] = mapped_column(sa.String(40))
    #: Staff's words about the hold; may name the person, so sealed.
    reason_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))

    identity: Mapped[SubjectIdentity | None] = relationship()
    created_by: Mapped[StaffUser | None] = relationship(foreign_keys=[created_by_id])
    released_by: Mapped[StaffUser | None] = relationship(foreign_keys=[released_by_id])


class ErasureBatch(db.Model):
    """A bulk erasure of a customer group: one request per person, approved once."""

    __tablename__ = "erasure_batch"

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(sa.String(16), unique=True, index=True)
    name: Mapped[str] = mapped_column(sa.String(128))
    #: ``csv`` (an uploaded list) or ``segment`` (a group a connector can list).
    source: Mapped[str] = mapped_column(sa.String(16))
    segment: Mapped[str | None] = mapped_column(sa.String(128))
    status: Mapped[str] = mapped_column(sa.String(16), default="draft")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("staff_user.id"))
    total: Mapped[int] = mapped_column(default=0)
    #: Counts and outcomes, free of personal data.
    summary: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    #: The signed batch summary PDF, once the batch has finished.
    summary_pdf: Mapped[bytes | None] = mapped_column(sa.LargeBinary)

    requests: Mapped[list[DataSubjectRequest]] = relationship(back_populates="batch")
    created_by: Mapped[StaffUser | None] = relationship(foreign_keys=[created_by_id])
    approved_by: Mapped[StaffUser | None] = relationship(foreign_keys=[approved_by_id])


class JobMark(db.Model):
    """That a daily job ran on a day, so a restarted scheduler does not run it twice."""

    __tablename__ = "job_mark"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    run_on: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecipientNotification(db.Model):
    """That a recipient of a system was told of an erasure there (GDPR Art. 19), and answered.

    Holds the recipient's configured name, never the subject's data: the address travels
    only in the message itself.
    """

    __tablename__ = "recipient_notification"
    __table_args__ = (sa.UniqueConstraint("request_id", "system", "recipient"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("data_subject_request.id"), index=True)
    system: Mapped[str] = mapped_column(sa.String(64))
    #: The recipient's ``name`` in ``systems.toml``.
    recipient: Mapped[str] = mapped_column(sa.String(128))
    #: ``email`` or ``webhook``.
    channel: Mapped[str] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When a delivery succeeded; None while it is still being tried, or after it gave up.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The name typed on the acknowledgement page, or ``webhook response``.
    acknowledged_by: Mapped[str | None] = mapped_column(sa.Text)

    request: Mapped[DataSubjectRequest] = relationship(
        backref=sa.orm.backref(
            "recipient_notifications", order_by="RecipientNotification.id", viewonly=True
        )
    )


class SigningKeyRecord(db.Model):
    """The public half of a key that signs, or signed, proofs."""

    __tablename__ = "signing_key"

    key_id: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    public_key_pem: Mapped[str] = mapped_column(sa.Text)
    #: When the key began signing; None if that is not known.
    since_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When ``lethe keys rotate`` replaced it; None while it is current.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
