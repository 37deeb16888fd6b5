"""The DPO's decisions: refuse a request on a legal ground, or extend its deadline once.

Both are told to the person with reasons and with their right to complain (GDPR Art. 12(3)
and (4)); the grounds and reasons are closed lists, so a refusal always names one the law
knows. The staff's free-text note may mention the person: it is sealed like the address.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from flask import current_app
from flask_babel import LazyString
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from core import deadlines
from core.audit import record_event
from core.clock import pauses_of, today
from core.config import DEFAULT_SUPERVISORY_AUTHORITY
from core.lifecycle import CLOSED, transition
from core.models import DataSubjectRequest, RequestType, StaffUser, Status, utcnow
from core.operations import DomainError, received_on, seal, unseal

#: The longest note staff may write; a justification, not a file.
NOTE_MAX = 4000

_EVERY_TYPE = frozenset(RequestType)


@dataclass(frozen=True)
class Reason:
    """One entry of a closed list: the stored code, the words the person reads, its scope."""

    code: str
    label: LazyString
    #: The request types the entry may be used for.
    types: frozenset[RequestType] = _EVERY_TYPE
    #: Whether staff must explain in the note (the controller bears the burden of proof).
    needs_note: bool = False


#: Every ground on which a request may be refused.  An objection to direct marketing is
#: absolute (Art. 21(3)): only identity and Art. 12(5) apply to it.
GROUNDS: tuple[Reason, ...] = (
    Reason(
        "art17-3-a-expression",
        _l(
            "We need to keep the data to exercise the right of freedom of expression and "
            "information (GDPR Article 17(3)(a))."
        ),
        frozenset({RequestType.ERASURE}),
    ),
    Reason(
        "art17-3-b-legal-obligation",
        _l(
            "The law requires us to keep the data, or we need it for a task in the public "
            "interest or in the exercise of official authority (GDPR Article 17(3)(b))."
        ),
        frozenset({RequestType.ERASURE}),
    ),
    Reason(
        "art17-3-c-public-health",
        _l(
            "We need to keep the data for reasons of public interest in the area of public "
            "health (GDPR Article 17(3)(c))."
        ),
        frozenset({RequestType.ERASURE}),
    ),
    Reason(
        "art17-3-d-archiving-research",
        _l(
            "Erasing the data would make archiving in the public interest, scientific or "
            "historical research, or statistics impossible, or seriously impair them "
            "(GDPR Article 17(3)(d))."
        ),
        frozenset({RequestType.ERASURE}),
    ),
    Reason(
        "art17-3-e-legal-claims",
        _l(
            "We need to keep the data to establish, exercise or defend legal claims "
            "(GDPR Article 17(3)(e))."
        ),
        frozenset({RequestType.ERASURE}),
    ),
    Reason(
        "art15-4-rights-of-others",
        _l(
            "A copy of the data would adversely affect the rights and freedoms of other "
            "people (GDPR Article 15(4))."
        ),
        frozenset({RequestType.ACCESS}),
    ),
    Reason(
        "art20-4-rights-of-others",
        _l(
            "Handing over the data would adversely affect the rights and freedoms of other "
            "people (GDPR Article 20(4))."
        ),
        frozenset({RequestType.PORTABILITY}),
    ),
    Reason(
        "identity-not-verified",
        _l(
            "We could not verify that you are the person the data is about, so we cannot "
            "act on the request without risking someone else's data (GDPR Articles 11(2) "
            "and 12(2))."
        ),
    ),
    Reason(
        "art12-5-manifestly-unfounded",
        _l("The request is manifestly unfounded (GDPR Article 12(5))."),
        needs_note=True,
    ),
    Reason(
        "art12-5-excessive",
        _l(
            "The request is excessive, in particular because it repeats earlier requests "
            "(GDPR Article 12(5))."
        ),
        needs_note=True,
    ),
)

#: Why a deadline may be extended (GDPR Art. 12(3): the complexity and number of requests).
EXTENSION_REASONS: tuple[Reason, ...] = (
    Reason(
        "complexity",
        _l("Your request is complex, and answering it fully takes more time."),
    ),
    Reason(
        "number-of-requests",
        _l(
            "We have received a large number of requests, and answering yours properly "
            "takes more time."
        ),
    ),
)

_DEFAULT_AUTHORITY = _l("your data protection supervisory authority")


def grounds_for(request_type: RequestType) -> tuple[Reason, ...]:
    """Return the refusal grounds that apply to ``request_type``, in the list's order."""
    return tuple(ground for ground in GROUNDS if request_type in ground.types)


def find_ground(code: str | None) -> Reason | None:
    """Return the refusal ground with ``code``, or None."""
    return next((ground for ground in GROUNDS if ground.code == code), None)


def find_extension_reason(code: str | None) -> Reason | None:
    """Return the extension reason with ``code``, or None."""
    return next((reason for reason in EXTENSION_REASONS if reason.code == code), None)


def _clean_note(note: str | None) -> str:
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise DomainError(f"the note is too long: at most {NOTE_MAX} characters")
    return note


def decision_note(request: DataSubjectRequest) -> str:
    """Return the decrypted note of the refusal, or an empty string."""
    return unseal(request, request.decision_note_sealed)


def extension_note(request: DataSubjectRequest) -> str:
    """Return the decrypted note of the extension, or an empty string."""
    return unseal(request, request.extension_note_sealed)


def deny_request(
    session: Session,
    request: DataSubjectRequest,
    staff: StaffUser | None,
    reason: str,
    note: str,
    *,
    actor: str | None = None,
) -> None:
    """Refuse a verified request on the ground ``reason``, explained by ``note``."""
    if request.status != Status.VERIFIED:
        raise DomainError(
            f"request {request.reference} is {request.status}: only a verified request "
            "can be refused"
        )
    ground = find_ground(reason)
    if ground is None:
        raise DomainError(f"{reason!r} is not a ground for refusal")
    if request.request_type not in ground.types:
        raise DomainError(
            f"the ground {ground.code} does not apply to a request of type {request.request_type}"
        )
    note = _clean_note(note)
    if ground.needs_note and not note:
        raise DomainError(
            f"the ground {ground.code} needs a justification: the controller must be able "
            "to show why the request is manifestly unfounded or excessive"
        )
    request.decision_reason = ground.code
    request.decision_note_sealed = seal(request, note)
    request.decided_at, request.decided_by = utcnow(), staff
    # The note stays out of the audit log: it may name the person, and the log outlives them.
    actor = actor or f"staff:{staff.email}"
    transition(session, request, Status.DENIED, actor=actor, reason=ground.code)


def _clock(request: DataSubjectRequest) -> dict[str, object]:
    return {
        "country": request.holiday_country,
        "subdivision": request.holiday_subdivision,
        "pauses": pauses_of(request, today()),
    }


def can_extend_request(request: DataSubjectRequest) -> bool:
    """Return whether the deadline of ``request`` may be extended today."""
    return (
        request.status not in CLOSED
        and request.extended_at is None
        and request.extended_due_on is None
        and deadlines.can_extend(
            request.jurisdiction, received_on(request).date(), today(), **_clock(request)
        )
    )


def extension_due_on(request: DataSubjectRequest) -> date:
    """Return the due date that the extension gives (or would give) ``request``."""
    return deadlines.due_on(
        request.jurisdiction, received_on(request).date(), extended=True, **_clock(request)
    )


def extend_request(
    session: Session,
    request: DataSubjectRequest,
    staff: StaffUser | None,
    reason: str,
    note: str,
    *,
    actor: str | None = None,
) -> date:
    """Extend the deadline of ``request`` once, for ``reason``; return the new due date."""
    if request.status in CLOSED:
        raise DomainError(f"request {request.reference} is {request.status}: it is closed")
    if request.extended_at is not None or request.extended_due_on is not None:
        raise DomainError(f"the deadline of {request.reference} has already been extended once")
    found = find_extension_reason(reason)
    if found is None:
        raise DomainError(f"{reason!r} is not a reason for extending a deadline")
    note = _clean_note(note)
    if not deadlines.get_rule(request.jurisdiction).extendable:
        raise DomainError(f"the {request.jurisdiction} rule allows no extension")
    if not can_extend_request(request):
        raise DomainError(
            f"the first due date {request.due_on.isoformat()} has passed: the deadline can "
            "no longer be extended"
        )
    request.extended_due_on = extension_due_on(request)
    request.extended_at = utcnow()
    request.extension_reason = found.code
    request.extension_note_sealed = seal(request, note)
    record_event(
        session,
        actor or f"staff:{staff.email}",
        "request.extended",
        request.reference,
        reason=found.code,
        due_on=request.due_on.isoformat(),
        extended_due_on=request.extended_due_on.isoformat(),
    )
    return request.extended_due_on


def supervisory_authority() -> tuple[str | LazyString, str]:
    """Return the name and address of the authority the person may complain to."""
    config = current_app.config
    name = config["SUPERVISORY_AUTHORITY"]
    # The built-in wording is translated; a configured name is a proper name, kept as set.
    return (
        _DEFAULT_AUTHORITY if name == DEFAULT_SUPERVISORY_AUTHORITY else name,
        config["SUPERVISORY_AUTHORITY_URL"],
    )


def denial_details(request: DataSubjectRequest) -> dict[str, object]:
    """Return what the refusal email says beyond the request itself."""
    authority, authority_url = supervisory_authority()
    ground = find_ground(request.decision_reason)
    return {
        "ground": ground.label if ground else request.decision_reason,
        "note": decision_note(request),
        "authority": authority,
        "authority_url": authority_url,
    }


def extension_details(request: DataSubjectRequest) -> dict[str, object]:
    """Return what the extension email says beyond the request itself."""
    authority, authority_url = supervisory_authority()
    reason = find_extension_reason(request.extension_reason)
    return {
        "reason": reason.label if reason else request.extension_reason,
        "note": extension_note(request),
        "due": request.effective_due_on.isoformat(),
        "authority": authority,
        "authority_url": authority_url,
    }
