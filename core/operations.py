"""Domain actions on requests.  Each takes a session and leaves the commit to its caller."""

from __future__ import annotations

import hashlib
import json
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from connectors.base import Action, Plan, Subject
from core import deadlines
from core.audit import record_event
from core.crypto import decrypt, encrypt, keyed_hash, normalise_email
from core.lifecycle import CLOSED, transition
from core.models import (
    Channel,
    DataSubjectRequest,
    LegalHold,
    RequestType,
    RunStatus,
    StaffUser,
    Status,
    SubjectIdentity,
    SystemRun,
    utcnow,
)
from core.systems import Systems

#: Why a person may say they ask, from the portal's optional list (dashboard counts them).
SUBJECT_REASONS = (
    "no-longer-used",
    "too-many-messages",
    "privacy-concern",
    "security-concern",
    "other",
)

#: Crockford's base32 without I, L, O, U: references read aloud over the phone.
_REFERENCE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class DomainError(ValueError):
    """An action that the request's state or the configuration does not allow."""


def _key(name: str) -> bytes:
    return bytes.fromhex(current_app.config[name])


def hash_email(email: str) -> str:
    """Return the keyed hash that finds a subject by address."""
    return keyed_hash(_key("HASH_KEY"), normalise_email(email))


def new_reference() -> str:
    """Return a fresh random reference such as ``DSR-7K3F9Q2M``."""
    return "DSR-" + "".join(secrets.choice(_REFERENCE_ALPHABET) for _ in range(8))


def find_request(session: Session, reference: str) -> DataSubjectRequest | None:
    """Return the request with ``reference``, or None."""
    return session.scalars(
        sa.select(DataSubjectRequest).where(DataSubjectRequest.reference == reference)
    ).first()


def subject_email(request: DataSubjectRequest) -> str:
    """Return the decrypted address of the request's subject."""
    identity = request.identity
    if identity.email_sealed is None:
        raise DomainError(f"the personal data of {request.reference} has been purged")
    return decrypt(_key("DATA_KEY"), identity.email_sealed, identity.email_hash.encode())


def subject_of(request: DataSubjectRequest) -> Subject:
    """Return the subject as the connectors see them."""
    return Subject(email=subject_email(request), email_hash=request.identity.email_hash)


def received_on(request: DataSubjectRequest) -> datetime:
    """Return the moment of receipt in the controller's time zone."""
    return request.received_at.astimezone(ZoneInfo(current_app.config["TIMEZONE"]))


def find_open_request(
    session: Session, identity: SubjectIdentity, request_type: RequestType
) -> DataSubjectRequest | None:
    """Return the person's open request of this type, if they have one."""
    return session.scalars(
        sa.select(DataSubjectRequest)
        .where(
            DataSubjectRequest.identity_id == identity.id,
            DataSubjectRequest.request_type == request_type,
            DataSubjectRequest.status.not_in(CLOSED),
        )
        .order_by(DataSubjectRequest.received_at)
    ).first()


def seal(request: DataSubjectRequest, text: str | None) -> bytes | None:
    """Return ``text`` (typed by the person or about them) encrypted for this request."""
    if not text:
        return None
    return encrypt(_key("DATA_KEY"), text, request.reference.encode())


def unseal(request: DataSubjectRequest, sealed: bytes | None) -> str:
    """Return the text sealed with :func:`seal`, or an empty string."""
    if sealed is None:
        return ""
    return decrypt(_key("DATA_KEY"), sealed, request.reference.encode())


def seal_identity_email(identity: SubjectIdentity, email: str) -> None:
    """Keep the person's address, encrypted, on their identity."""
    # Kept as typed (a mailbox may care about case); the lookup hash is normalised.
    typed = unicodedata.normalize("NFC", email).strip()
    identity.email_sealed = encrypt(_key("DATA_KEY"), typed, identity.email_hash.encode())


def submit_request(
    session: Session,
    email: str,
    request_type: RequestType,
    language: str = "en",
    *,
    customer_number: str | None = None,
    reason: str | None = None,
    reason_code: str | None = None,
    received_at: datetime | None = None,
    jurisdiction: str | None = None,
    channel: Channel = Channel.PORTAL,
    created_by: StaffUser | None = None,
    subject_country: str | None = None,
    actor: str | None = None,
) -> tuple[DataSubjectRequest, bool]:
    """Record a request, or join the person's open one; return it and whether it is new.

    The legal clock of a new request starts now, before anyone reads it — or, for one
    that staff record from another channel, when it really reached us (``received_at``).
    The customer number helps staff find the person; it is never used to find data without
    them, since anyone could type someone else's.
    """
    config = current_app.config
    actor = actor or (f"staff:{created_by.email}" if created_by else "subject")
    email_hash = hash_email(email)
    identity = session.scalars(
        sa.select(SubjectIdentity).where(SubjectIdentity.email_hash == email_hash)
    ).first()
    if identity is None:
        identity = SubjectIdentity(email_hash=email_hash)
        session.add(identity)
    elif (existing := find_open_request(session, identity, request_type)) is not None:
        record_event(session, actor, "request.joined", existing.reference, channel=str(channel))
        return existing, False
    if identity.email_sealed is None:
        seal_identity_email(identity, email)
    now = utcnow()
    request = DataSubjectRequest(
        reference=new_reference(),
        request_type=request_type,
        status=Status.SUBMITTED,
        identity=identity,
        language=language,
        jurisdiction=jurisdiction or config["JURISDICTION"],
        holiday_country=config["HOLIDAY_COUNTRY"],
        holiday_subdivision=config["HOLIDAY_SUBDIVISION"],
        received_at=received_at or now,
        verify_nonce=secrets.token_hex(16),
        status_changed_at=now,
        channel=channel,
        created_by=created_by,
        subject_country=subject_country,
        reason_code=reason_code if reason_code in SUBJECT_REASONS else None,
    )
    request.customer_number_sealed = seal(request, customer_number)
    request.reason_sealed = seal(request, reason)
    request.due_on = deadlines.due_on(
        request.jurisdiction,
        received_on(request).date(),
        country=request.holiday_country,
        subdivision=request.holiday_subdivision,
    )
    session.add(request)
    session.flush()
    record_event(
        session,
        actor,
        "request.submitted",
        request.reference,
        type=str(request_type),
        channel=str(channel),
        jurisdiction=request.jurisdiction,
        received_at=request.received_at.isoformat(),
        due_on=request.due_on.isoformat(),
    )
    return request, True


def verify_email(session: Session, request: DataSubjectRequest) -> None:
    """Mark the subject's address as proven; the link that did it cannot be used again."""
    request.verify_nonce = None
    request.verified_at = utcnow()
    transition(session, request, Status.VERIFIED, actor="subject")


def can_cancel(request: DataSubjectRequest) -> bool:
    """Return whether the subject may still stop the request: not once erasure may start."""
    if request.status in (Status.SUBMITTED, Status.VERIFIED):
        return True
    return (
        request.status == Status.APPROVED
        and request.cooling_off_until is not None
        and utcnow() < request.cooling_off_until
    )


def cancel_request(session: Session, request: DataSubjectRequest, actor: str = "subject") -> None:
    """Stop the request for good; refused once the cooling-off period is over."""
    if not can_cancel(request):
        raise DomainError(f"request {request.reference} can no longer be cancelled")
    request.verify_nonce = None
    transition(session, request, Status.CANCELLED, actor=actor)


def expire_unverified(session: Session) -> list[DataSubjectRequest]:
    """Expire requests whose address was not confirmed while the link was valid."""
    limit = utcnow() - timedelta(days=current_app.config["VERIFY_LINK_DAYS"])
    stale = list(
        session.scalars(
            sa.select(DataSubjectRequest).where(
                DataSubjectRequest.status == Status.SUBMITTED,
                # A request staff record late (a letter) gets its full week from the email.
                sa.func.coalesce(DataSubjectRequest.verify_sent_at, DataSubjectRequest.received_at)
                < limit,
            )
        )
    )
    for request in stale:
        request.verify_nonce = None
        transition(session, request, Status.EXPIRED, actor="scheduler")
    return stale


def due_for_reminder(session: Session) -> list[DataSubjectRequest]:
    """Return unconfirmed requests whose link went out a day ago without a reminder yet."""
    limit = utcnow() - timedelta(hours=24)
    return list(
        session.scalars(
            sa.select(DataSubjectRequest).where(
                DataSubjectRequest.status == Status.SUBMITTED,
                DataSubjectRequest.verify_sent_at < limit,
                DataSubjectRequest.reminder_sent_at.is_(None),
            )
        )
    )


def plan_digest(plans: dict[str, Plan]) -> str:
    """Return a digest of the plans, so an approval is tied to the plan that was shown."""
    body = json.dumps(
        {name: plan.to_dict() for name, plan in sorted(plans.items())}, sort_keys=True, default=str
    )
    return hashlib.sha256(body.encode()).hexdigest()


def preview_plans(systems: Systems, request: DataSubjectRequest) -> dict[str, Plan]:
    """Return every system's dry run for the request; raise if any system cannot plan."""
    subject = subject_of(request)
    plans = {}
    for system in systems:
        with systems.open(system.name) as connector:
            plans[system.name] = connector.plan(subject)
    return plans


def retain_plan(plan: Plan, ground: str, note: str) -> Plan:
    """Return ``plan`` with every step turned into "retain" under ``ground``."""
    steps = [
        replace(step, action=Action.RETAIN, columns={}, ground=ground, note=note)
        for step in plan.steps
    ]
    return replace(plan, steps=steps)


def approve_request(
    session: Session,
    request: DataSubjectRequest,
    staff: StaffUser | None,
    systems: Systems,
    plans: dict[str, Plan],
    *,
    retained: Mapping[str, str] | None = None,
    held: Mapping[str, LegalHold] | None = None,
    actor: str | None = None,
) -> None:
    """Approve erasure along ``plans``; it starts when the cooling-off period ends.

    ``retained`` keeps systems out of this erasure under an Art. 17(3) ground (partial
    approval); ``held`` names the systems a legal hold keeps (their plans already retain).
    """
    if not len(systems):
        raise DomainError("no systems are configured: there is nothing to erase from")
    if set(plans) != {system.name for system in systems}:
        raise DomainError("the plan does not cover every configured system")
    retained, held = dict(retained or {}), dict(held or {})
    for system in systems:
        plan, ground, hold = plans[system.name], None, held.get(system.name)
        if hold is not None:
            ground = hold.ground
        elif system.name in retained:
            ground = retained[system.name]
            plan = retain_plan(plan, ground, "kept by the DPO's decision")
        cls = systems.classes[system.connector]
        session.add(
            SystemRun(
                request=request,
                system=system.name,
                label=system.label,
                connector=system.connector,
                connector_version=cls.version,
                plan=plan.to_dict(),
                rows_before=plan.total_rows,
                status=RunStatus.PLANNED,
                retained_ground=ground,
                hold=hold,
            )
        )
    now = utcnow()
    request.approved_at, request.approved_by = now, staff
    # Only erasure cannot be undone, so only erasure waits for the person to change their mind.
    cooling_off = (
        current_app.config["COOLING_OFF_MINUTES"]
        if request.request_type == RequestType.ERASURE
        else 0
    )
    request.cooling_off_until = now + timedelta(minutes=cooling_off)
    transition(
        session,
        request,
        Status.APPROVED,
        actor=actor or f"staff:{staff.email}",
        plan=plan_digest(plans),
        cooling_off_until=request.cooling_off_until.isoformat(),
        retained={**retained, **{name: hold.ground for name, hold in held.items()}},
    )


def accept_objection(session: Session, request: DataSubjectRequest, systems: Systems) -> None:
    """Approve an objection to direct marketing as soon as the address is proven.

    The right is absolute (GDPR Art. 21(3)): there is nothing for staff to weigh, so the
    request goes straight to the systems, without a cooling-off period.
    """
    if request.request_type != RequestType.OBJECTION:
        raise DomainError(f"{request.reference} is not an objection to direct marketing")
    for system in systems:
        session.add(
            SystemRun(
                request=request,
                system=system.name,
                label=system.label,
                connector=system.connector,
                connector_version=systems.classes[system.connector].version,
                plan={"system": system.name, "connector": system.connector, "steps": []},
                status=RunStatus.PLANNED,
            )
        )
    request.approved_at = request.cooling_off_until = utcnow()
    transition(session, request, Status.APPROVED, actor="policy:art21-3")


def start_erasure(session: Session, request: DataSubjectRequest) -> list[SystemRun]:
    """Move an approved request whose cooling-off (if any) has ended to running; return its runs."""
    transition(session, request, Status.RUNNING, actor="scheduler")
    now = utcnow()
    for run in request.runs:
        run.queued_at = now
    return list(request.runs)


def due_for_start(session: Session) -> list[DataSubjectRequest]:
    """Return approved requests whose cooling-off period is over."""
    return list(
        session.scalars(
            sa.select(DataSubjectRequest)
            .where(
                DataSubjectRequest.status == Status.APPROVED,
                DataSubjectRequest.cooling_off_until <= utcnow(),
            )
            .order_by(DataSubjectRequest.due_on)
        )
    )


def can_give_feedback(request: DataSubjectRequest) -> bool:
    """Return whether the person may still tell us how it went: once, when it is over."""
    over = request.status in CLOSED and request.status != Status.EXPIRED
    return over and request.feedback_at is None


def record_feedback(
    session: Session, request: DataSubjectRequest, score: int, comment: str | None
) -> None:
    """Keep the person's optional feedback on a closed request, once."""
    if not can_give_feedback(request):
        raise DomainError(f"{request.reference} takes no feedback now")
    if not 1 <= score <= 5:
        raise DomainError("a score is between 1 and 5")
    request.feedback_score, request.feedback_at = score, utcnow()
    request.feedback_sealed = seal(request, comment)
    record_event(session, "subject", "feedback.given", request.reference, score=score)
