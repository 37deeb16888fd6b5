"""Staff accounts: sign-in with lockout, TOTP two-factor, roles and the last admin.

Every change is written to the audit chain; no event ever holds a password or a code.
"""

from __future__ import annotations

import enum
import hmac
import logging
import secrets
from datetime import UTC, datetime, timedelta

import pyotp
import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from core.audit import record_event
from core.crypto import decrypt, encrypt
from core.models import Role, StaffUser
from core.security import check_password, hash_password

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
#: Seconds a TOTP code lasts (the authenticator apps' default).
TOTP_INTERVAL = 30
#: A staff address that is not an account still costs one argon2 check, so the time the
#: answer takes does not tell which addresses have accounts.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


class StaffError(ValueError):
    """A staff-account action the rules do not allow; the message says why."""


class SignIn(enum.Enum):
    """The outcome of a sign-in step."""

    OK = "ok"
    NEED_CODE = "need_code"
    REFUSED = "refused"


def find_staff(session: Session, email: str) -> StaffUser | None:
    """Return the staff account with ``email``, or None."""
    return session.scalars(
        sa.select(StaffUser).where(StaffUser.email == email.strip().lower())
    ).first()


def get_staff(session: Session, user_id: int) -> StaffUser:
    """Return the staff account ``user_id``; raise :class:`StaffError` if there is none."""
    user = session.get(StaffUser, user_id)
    if user is None:
        raise StaffError("there is no such staff account")
    return user


def is_locked(user: StaffUser, now: datetime) -> bool:
    """Return whether too many failures lock ``user`` out at ``now``."""
    return user.locked_until is not None and user.locked_until > now


def check_password_step(
    session: Session, email: str, password: str, now: datetime
) -> tuple[SignIn, StaffUser | None]:
    """Check an address and password; count a failure towards the lockout."""
    user = find_staff(session, email)
    if user is None:
        check_password(_DUMMY_HASH, password)
        log.info("staff sign-in refused: no account with that address")
        return SignIn.REFUSED, None
    right = check_password(user.password_hash, password)
    if not user.active or is_locked(user, now):
        reason = "inactive" if not user.active else "locked"
        record_event(session, "anonymous", "staff.login_failed", staff=user.email, reason=reason)
        return SignIn.REFUSED, user
    if not right:
        _count_failure(session, user, now, "password")
        return SignIn.REFUSED, user
    if user.totp_enabled_at is not None:
        return SignIn.NEED_CODE, user
    _signed_in(session, user, now, two_factor=False)
    return SignIn.OK, user


def check_code_step(session: Session, user: StaffUser, code: str, now: datetime) -> SignIn:
    """Check the second step's TOTP code, once only; a failure counts towards the lockout."""
    if not user.active or is_locked(user, now) or user.totp_enabled_at is None:
        reason = "inactive" if not user.active else "locked" if is_locked(user, now) else "no_2fa"
        record_event(session, "anonymous", "staff.login_failed", staff=user.email, reason=reason)
        return SignIn.REFUSED
    step = matching_step(totp_secret(user), code, now)
    if step is None or not _claim_step(session, user, step, now):
        _count_failure(session, user, now, "code")
        return SignIn.REFUSED
    _signed_in(session, user, now, two_factor=True)
    return SignIn.OK


def _count_failure(session: Session, user: StaffUser, now: datetime, step: str) -> None:
    # Counted in SQL so that attempts racing each other are all counted.
    user.failed_logins = StaffUser.failed_logins + 1
    session.flush()
    session.refresh(user)
    record_event(
        session,
        "anonymous",
        "staff.login_failed",
        staff=user.email,
        step=step,
        failures=user.failed_logins,
    )
    limit = max(1, current_app.config["LOGIN_MAX_FAILURES"])
    if user.failed_logins >= limit:
        minutes = current_app.config["LOGIN_LOCKOUT_MINUTES"]
        user.locked_until = now + timedelta(minutes=minutes)
        user.failed_logins = 0  # after the lock, another run of failures locks again
        record_event(
            session, "system", "staff.locked", staff=user.email, failures=limit, minutes=minutes
        )


def _signed_in(session: Session, user: StaffUser, now: datetime, two_factor: bool) -> None:
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    record_event(session, f"staff:{user.email}", "staff.login", two_factor=two_factor)


# --- TOTP two-factor --------------------------------------------------------------------


def _context(user: StaffUser) -> bytes:
    return f"staff-totp:{user.id}".encode()


def _data_key() -> bytes:
    return bytes.fromhex(current_app.config["DATA_KEY"])


def totp_secret(user: StaffUser) -> str:
    """Return the TOTP secret of ``user`` (active or waiting for confirmation)."""
    if user.totp_secret_sealed is None:
        raise StaffError("two-factor authentication is not set up")
    return decrypt(_data_key(), user.totp_secret_sealed, _context(user))


def pending_totp_secret(session: Session, user: StaffUser) -> str:
    """Return the secret ``user`` is enrolling with, creating and sealing one if needed."""
    if user.totp_enabled_at is not None:
        raise StaffError("two-factor authentication is already on")
    if user.totp_secret_sealed is None:
        user.totp_secret_sealed = encrypt(_data_key(), pyotp.random_base32(), _context(user))
        session.flush()
    return totp_secret(user)


def provisioning_uri(user: StaffUser, secret: str) -> str:
    """Return the otpauth:// address an authenticator app reads from the QR code."""
    issuer = f"Lethe {current_app.config['CONTROLLER_NAME']}"
    return pyotp.TOTP(secret, interval=TOTP_INTERVAL).provisioning_uri(
        name=user.email, issuer_name=issuer
    )


def matching_step(secret: str, code: str, now: datetime) -> int | None:
    """Return the time step whose code is ``code``: the current one or the one before."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_INTERVAL)
    current = totp.timecode(now)
    # The step before covers a code typed just as it changed (RFC 6238 section 5.2); a
    # step ahead is not accepted, so stamping the use with ``now`` always covers it.
    for step in (current, current - 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _step_start(step: int) -> datetime:
    return datetime.fromtimestamp(step * TOTP_INTERVAL, UTC)


def _claim_step(session: Session, user: StaffUser, step: int, now: datetime) -> bool:
    # A code is used once: the sign-in that uses it stamps last_login_at inside or after
    # its step, and enrolment stamps totp_enabled_at; a code from a step at or before
    # either stamp is refused. One conditional UPDATE, so two racing uses cannot both win.
    start = _step_start(step)
    claimed = session.execute(
        sa.update(StaffUser)
        .where(
            StaffUser.id == user.id,
            sa.or_(StaffUser.last_login_at.is_(None), StaffUser.last_login_at < start),
            sa.or_(StaffUser.totp_enabled_at.is_(None), StaffUser.totp_enabled_at < start),
        )
        .values(last_login_at=now)
        .execution_options(synchronize_session=False)
    )
    return claimed.rowcount == 1


def confirm_totp(session: Session, user: StaffUser, code: str, now: datetime) -> bool:
    """Turn two-factor on if ``code`` matches the pending secret."""
    if matching_step(pending_totp_secret(session, user), code, now) is None:
        return False
    user.totp_enabled_at = now
    record_event(session, f"staff:{user.email}", "staff.totp_enabled", staff=user.email)
    return True


def disable_totp(session: Session, user: StaffUser, code: str, now: datetime) -> bool:
    """Turn two-factor off if ``code`` is a current one; admins cannot when it is required."""
    if user.role == Role.ADMIN and current_app.config["TOTP_REQUIRED_FOR_ADMIN"]:
        raise StaffError("administrators must keep two-factor authentication on")
    if user.totp_enabled_at is None or matching_step(totp_secret(user), code, now) is None:
        return False
    user.totp_secret_sealed = None
    user.totp_enabled_at = None
    record_event(session, f"staff:{user.email}", "staff.totp_disabled", staff=user.email)
    return True


# --- Passwords and accounts ---------------------------------------------------------------


def check_new_password(password: str) -> None:
    """Raise :class:`StaffError` unless ``password`` is long enough."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def change_password(session: Session, user: StaffUser, current: str, new: str) -> None:
    """Replace the password of ``user``, who proves they know the current one."""
    if not check_password(user.password_hash, current):
        raise StaffError("the current password is not right")
    check_new_password(new)
    user.password_hash = hash_password(new)
    record_event(session, f"staff:{user.email}", "staff.password_changed", staff=user.email)


def create_staff(
    session: Session, actor: str, email: str, role: Role, password: str | None = None
) -> tuple[StaffUser, str | None]:
    """Create an account; return it and the generated password (None if one was given)."""
    email = email.strip().lower()
    if find_staff(session, email):
        raise StaffError(f"a staff account for {email} already exists")
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(15)
    check_new_password(password)
    user = StaffUser(email=email, password_hash=hash_password(password), role=role, active=True)
    session.add(user)
    session.flush()
    record_event(
        session, actor, "staff.created", role=role.value, staff=email, generated=bool(generated)
    )
    return user, generated


def _keep_an_admin(session: Session, user: StaffUser) -> None:
    # Lock the active admins' rows, always in the same order, so that two admins demoting
    # each other at once queue instead of both succeeding.
    admins = session.scalars(
        sa.select(StaffUser.id)
        .where(StaffUser.role == Role.ADMIN, StaffUser.active.is_(True))
        .order_by(StaffUser.id)
        .with_for_update()
    ).all()
    if user.role == Role.ADMIN and user.active and not set(admins) - {user.id}:
        raise StaffError(f"{user.email} is the last active administrator")


def change_role(session: Session, actor: str, user: StaffUser, role: Role) -> None:
    """Give ``user`` another role; the last active admin keeps theirs."""
    if role == user.role:
        return
    if role != Role.ADMIN:
        _keep_an_admin(session, user)
    record_event(
        session, actor, "staff.role_changed", staff=user.email, old=user.role.value, new=role.value
    )
    user.role = role


def set_active(session: Session, actor: str, user: StaffUser, active: bool) -> None:
    """Deactivate or reactivate ``user``; the last active admin stays active."""
    if active == user.active:
        return
    if not active:
        _keep_an_admin(session, user)
    user.active = active
    record_event(
        session, actor, "staff.reactivated" if active else "staff.deactivated", staff=user.email
    )


def unlock_staff(session: Session, actor: str, user: StaffUser) -> None:
    """Lift a lockout and forget the failures counted so far."""
    user.locked_until = None
    user.failed_logins = 0
    record_event(session, actor, "staff.unlocked", staff=user.email)


def reset_totp(session: Session, actor: str, user: StaffUser) -> None:
    """Remove the two-factor secret of ``user`` (lost phone); they enrol again."""
    user.totp_secret_sealed = None
    user.totp_enabled_at = None
    record_event(session, actor, "staff.totp_reset", staff=user.email)
