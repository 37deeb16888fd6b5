"""Legal holds and partial approval: systems whose data is kept, under a named ground.

A hold (unpaid invoice, litigation) lies on a person, on a whole system, or on a person in
one system.  While it is active, the erasure plan of every system it covers becomes
"retain" with the hold's ground, at review, at approval and again when the run starts —
a hold placed during the cooling-off period still stops the erasure.  The DPO may also keep
a system out of one approval under an Art. 17(3) ground (partial approval).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from connectors.base import Plan
from core.audit import record_event
from core.crypto import decrypt, encrypt
from core.decisions import find_ground, grounds_for
from core.models import (
    DataSubjectRequest,
    LegalHold,
    RequestType,
    StaffUser,
    SubjectIdentity,
    utcnow,
)
from core.operations import (
    DomainError,
    hash_email,
    preview_plans,
    retain_plan,
    seal_identity_email,
)
from core.systems import Systems

NOTE_MAX = 2000


def retention_grounds() -> list[str]:
    """Return the codes of the Art. 17(3) grounds that justify keeping data despite erasure."""
    return [g.code for g in grounds_for(RequestType.ERASURE) if g.code.startswith("art17-3-")]


def _check_ground(ground: str) -> None:
    if ground not in retention_grounds():
        raise DomainError(
            f"{ground!r} is not a ground for keeping data; use one of "
            + ", ".join(retention_grounds())
        )


def _key() -> bytes:
    return bytes.fromhex(current_app.config["DATA_KEY"])


def _context(hold: LegalHold) -> bytes:
    return f"lethe-hold:{hold.id}".encode()


def hold_reason(hold: LegalHold) -> str:
    """Return the staff's decrypted words about the hold."""
    if hold.reason_sealed is None:
        return ""
    return decrypt(_key(), hold.reason_sealed, _context(hold))


def place_hold(
    session: Session,
    staff: StaffUser,
    *,
    ground: str,
    reason: str,
    email: str | None = None,
    system: str | None = None,
    known_systems: Iterable[str] = (),
) -> LegalHold:
    """Place a hold on a person (by address), a system, or a person in one system."""
    email = (email or "").strip() or None
    system = (system or "").strip() or None
    if email is None and system is None:
        raise DomainError("a hold needs a person's email address, a system, or both")
    if system is not None and system not in set(known_systems):
        raise DomainError(f"there is no system called {system!r} in systems.toml")
    _check_ground(ground)
    reason = (reason or "").strip()
    if not reason:
        raise DomainError("say why the data must be kept (e.g. the case or invoice number)")
    if len(reason) > NOTE_MAX:
        raise DomainError(f"the reason is too long: at most {NOTE_MAX} characters")
    identity = None
    if email is not None:
        identity = _identity_for(session, email)
    hold = LegalHold(
        identity=identity,
        system=system,
        ground=ground,
        created_at=utcnow(),
        created_by_id=staff.id,
    )
    session.add(hold)
    session.flush()  # the id binds the sealed reason to this hold
    hold.reason_sealed = encrypt(_key(), reason, _context(hold))
    record_event(
        session,
        f"staff:{staff.email}",
        "hold.placed",
        None,
        hold=hold.id,
        ground=ground,
        scope=hold_scope(hold),
        system=system,
    )
    return hold


def _identity_for(session: Session, email: str) -> SubjectIdentity:
    email_hash = hash_email(email)
    identity = session.scalars(
        sa.select(SubjectIdentity).where(SubjectIdentity.email_hash == email_hash)
    ).first()
    if identity is None:
        # A hold may come before any request (litigation): the person is known from now on.
        identity = SubjectIdentity(email_hash=email_hash)
        session.add(identity)
    if identity.email_sealed is None:
        seal_identity_email(identity, email)
    return identity


def release_hold(session: Session, hold: LegalHold, staff: StaffUser) -> None:
    """Release an active hold: from now on erasure may reach what it covered."""
    if hold.released_at is not None:
        raise DomainError(f"hold #{hold.id} was already released")
    hold.released_at, hold.released_by_id = utcnow(), staff.id
    record_event(session, f"staff:{staff.email}", "hold.released", None, hold=hold.id)


def hold_scope(hold: LegalHold) -> str:
    """Return what the hold covers: ``subject``, ``system`` or ``subject-in-system``."""
    if hold.identity_id is not None or hold.identity is not None:
        return "subject-in-system" if hold.system else "subject"
    return "system"


def active_holds(session: Session, identity_id: int | None = None) -> list[LegalHold]:
    """Return the active holds, or those that cover the person ``identity_id``."""
    query = sa.select(LegalHold).where(LegalHold.released_at.is_(None))
    if identity_id is not None:
        query = query.where(
            sa.or_(LegalHold.identity_id == identity_id, LegalHold.identity_id.is_(None))
        )
    return list(session.scalars(query.order_by(LegalHold.id)))


def hold_on(holds: Iterable[LegalHold], system: str) -> LegalHold | None:
    """Return the first of ``holds`` that covers ``system``, if any."""
    return next((hold for hold in holds if hold.system in (None, system)), None)


def hold_note(hold: LegalHold) -> str:
    """Return how a plan names the hold, without its (possibly personal) reason."""
    return f"legal hold #{hold.id}"


def plans_under_holds(
    session: Session, request: DataSubjectRequest, plans: Mapping[str, Plan]
) -> tuple[dict[str, Plan], dict[str, LegalHold]]:
    """Return the erasure plans with held systems set to retain, and the holds per system."""
    holds = active_holds(session, request.identity_id)
    result, held = {}, {}
    for name, plan in plans.items():
        hold = hold_on(holds, name)
        if hold is None:
            result[name] = plan
        else:
            result[name] = retain_plan(plan, hold.ground, hold_note(hold))
            held[name] = hold
    return result, held


def review_plans(
    session: Session, systems: Systems, request: DataSubjectRequest
) -> tuple[dict[str, Plan], dict[str, LegalHold]]:
    """Return what approval would do in each system, holds applied, and the holds."""
    plans = preview_plans(systems, request)
    if request.request_type != RequestType.ERASURE:
        return plans, {}  # a hold keeps data; it never withholds a copy of it
    return plans_under_holds(session, request, plans)


def check_retained(retained: Mapping[str, str], systems: Iterable[str]) -> None:
    """Refuse a partial approval that names an unknown system or ground."""
    known = set(systems)
    for system, ground in retained.items():
        if system not in known:
            raise DomainError(f"there is no system called {system!r} to retain")
        _check_ground(ground)
    if known and set(retained) == known:
        raise DomainError(
            "every system would be retained: refuse the request on that ground instead"
        )


def ground_label(code: str | None) -> str:
    """Return the English label of a ground code, for staff pages."""
    ground = find_ground(code)
    return str(ground.label) if ground else (code or "")
