"""Requests from other channels: staff record what a person asked by phone, letter or email.

The clock starts on the day the request really reached us, not when it was typed in.  The
person still proves their address through the emailed link, unless staff record how they
checked who the person is; that record (method and note) stays with the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy.orm import Session

from core.clock import today
from core.lifecycle import transition
from core.models import Channel, DataSubjectRequest, RequestType, StaffUser, Status, utcnow
from core.operations import DomainError, seal, submit_request

#: The channels staff record requests from (the portal and bulk erasure have their own ways).
STAFF_CHANNELS = (Channel.EMAIL, Channel.PHONE, Channel.LETTER, Channel.IN_PERSON)

#: How staff may have established who the person is, instead of the emailed link.
IDENTITY_METHODS = {
    "account": "the person wrote from, or signed in to, their customer account",
    "callback": "we called back the phone number on file",
    "document": "we checked an identity document",
    "postal": "a letter from the postal address on file",
    "in-person": "met in person and identified",
}


@dataclass
class Intake:
    """What staff type about a request that came by another channel."""

    email: str
    request_type: RequestType
    channel: Channel
    received_on: date
    language: str = "en"
    country: str | None = None
    customer_number: str | None = None
    reason: str | None = None
    identity_method: str | None = None
    identity_note: str | None = None


def jurisdiction_for(country: str | None) -> str:
    """Return the deadline rule for a person living in ``country`` (else the default)."""
    config = current_app.config
    if not country:
        return config["JURISDICTION"]
    country = country.strip().upper()
    by_country = config["JURISDICTION_BY_COUNTRY"]
    # "US-CA" is found as itself; "DE-BY" falls back to "DE".
    return (
        by_country.get(country) or by_country.get(country.split("-")[0]) or (config["JURISDICTION"])
    )


def _received_at(day: date) -> datetime:
    """Return the moment of receipt: now if today, else the start of that day locally."""
    if day == today():
        return utcnow()
    zone = ZoneInfo(current_app.config["TIMEZONE"])
    return datetime.combine(day, time(0, 0), tzinfo=zone).astimezone(ZoneInfo("UTC"))


def record_request(
    session: Session, staff: StaffUser | None, intake: Intake, *, actor: str | None = None
) -> tuple[DataSubjectRequest, bool]:
    """Record a request from another channel; return it and whether it is new.

    An open request of the same person for the same thing is joined, as on the portal.
    ``actor`` names who did it in the audit log when not ``staff`` (an API key).
    """
    actor = actor or f"staff:{staff.email}"
    if intake.channel not in STAFF_CHANNELS:
        raise DomainError(f"{intake.channel} is not a channel staff record requests from")
    if intake.received_on > today():
        raise DomainError("the date of receipt cannot be in the future")
    method = intake.identity_method or None
    if method is not None and method not in IDENTITY_METHODS:
        raise DomainError(f"{method!r} is not a way of checking identity Lethe knows")
    if method is not None and not (intake.identity_note or "").strip():
        raise DomainError("say what you checked, so that the check can be shown later")
    country = (intake.country or "").strip().upper() or None
    request, created = submit_request(
        session,
        intake.email,
        intake.request_type,
        intake.language,
        customer_number=intake.customer_number,
        reason=intake.reason,
        received_at=_received_at(intake.received_on),
        jurisdiction=jurisdiction_for(country),
        channel=intake.channel,
        created_by=staff,
        subject_country=country,
        actor=actor,
    )
    if created and method is not None:
        request.identity_method = method
        request.identity_note_sealed = seal(request, intake.identity_note.strip())
        request.verify_nonce = None
        request.verified_at = utcnow()
        transition(session, request, Status.VERIFIED, actor=actor, method=method)
    return request, created
