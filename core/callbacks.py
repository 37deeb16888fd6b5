"""Systems that confirm an erasure later by calling Lethe back at a signed URL.

The URL (``core.links.callback_link``) carries a token bound to one run and one attempt of
it, so a callback can confirm only the erasure it was given for, once, while the run
waits and before the system's ``callback_timeout`` is over.  Runs that wait longer are
failed by the hourly job ``core.jobs.fail_overdue_callbacks``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from core.models import RunStatus, SystemRun, utcnow
from core.systems import Systems
from core.tokens import TokenError, read_token

PURPOSE = "callback"
#: What the system may say in the body's ``status``, and the outcome it confirms.
OUTCOMES = {"done": RunStatus.COMPLETED, "failed": RunStatus.FAILED}
#: The longest reason a system may give for a failure (it is shown to staff).
MAX_REASON = 300


class CallbackError(ValueError):
    """A callback refused; ``code`` is the HTTP status to answer, ``error`` a short word."""

    def __init__(self, code: int, error: str, message: str):
        super().__init__(message)
        self.code, self.error = code, error


def callback_nonce(run: SystemRun) -> str:
    """Return what binds a callback token to ``run`` and its current attempt."""
    return f"{run.id}.{run.attempts}"


def callback_timeout(systems: Systems, system: str) -> dt.timedelta | None:
    """Return how long ``system`` may take to call back; None if it does not call back."""
    if system not in systems.configs:
        return None
    with systems.open(system) as connector:
        return connector.callback_timeout


def waiting_run(session: Session, systems: Systems, secret: str, token: str) -> SystemRun:
    """Return the run a callback token names, still waiting for it; raise CallbackError."""
    try:
        # The signature first; how old it may be depends on the system it names.
        reference, nonce = read_token(secret, PURPOSE, token, 10 * 366 * 86400)
    except TokenError:
        raise CallbackError(403, "invalid", "this callback URL is not valid") from None
    run_id, _, attempt = (nonce or "").partition(".")
    run = session.get(SystemRun, int(run_id)) if run_id.isdigit() else None
    if run is None or run.request.reference != reference:
        raise CallbackError(403, "invalid", "this callback URL is not valid")
    if run.status != RunStatus.ACTION_REQUIRED or str(run.attempts) != attempt:
        raise CallbackError(409, "not_waiting", "this erasure is not waiting for a callback")
    timeout = callback_timeout(systems, run.system)
    if timeout is None:
        raise CallbackError(409, "not_waiting", "this system does not confirm by callback")
    try:
        read_token(secret, PURPOSE, token, int(timeout.total_seconds()))
    except TokenError:
        raise CallbackError(410, "expired", "the time to confirm this erasure is over") from None
    if run.finished_at is None or utcnow() > run.finished_at + timeout:
        raise CallbackError(410, "expired", "the time to confirm this erasure is over")
    return run


def read_outcome(run: SystemRun, body: Any) -> tuple[RunStatus, str, dict[str, int] | None]:
    """Return the outcome, message and counts a callback body gives; raise CallbackError."""
    if not isinstance(body, Mapping) or body.get("status") not in OUTCOMES:
        raise CallbackError(
            400, "bad_body", 'send JSON with "status": "done" or "failed" (and optional "counts")'
        )
    counts = body.get("counts")
    if counts is None:
        # The service confirms the erasure it was asked for: the records of the plan.
        counts = {step["table"]: step["rows"] for step in run.plan["steps"] if step["rows"]}
    if not isinstance(counts, Mapping) or not all(
        isinstance(k, str) and type(v) is int and v >= 0 for k, v in counts.items()
    ):
        raise CallbackError(400, "bad_body", '"counts" must map record kinds to whole numbers')
    status = OUTCOMES[body["status"]]
    if status == RunStatus.COMPLETED:
        return status, f"{run.label} confirmed the erasure by callback", dict(counts)
    reason = body.get("reason")
    said = (
        ": " + " ".join(reason.split())[:MAX_REASON] if isinstance(reason, str) and reason else ""
    )
    message = f"{run.label} reported by callback that the erasure failed{said}; retry this system"
    return status, message, None


def overdue_runs(session: Session, systems: Systems) -> list[tuple[int, str]]:
    """Return ``(run id, message)`` of every run that waited past its system's callback timeout."""
    now, timeouts, overdue = utcnow(), {}, []
    waiting = session.scalars(
        sa.select(SystemRun).where(SystemRun.status == RunStatus.ACTION_REQUIRED)
    )
    for run in waiting:
        if run.system not in timeouts:
            timeouts[run.system] = callback_timeout(systems, run.system)
        timeout = timeouts[run.system]
        if timeout is None or run.finished_at is None or now <= run.finished_at + timeout:
            continue
        hours = timeout.total_seconds() / 3600
        overdue.append(
            (
                run.id,
                f"{run.label} did not confirm the erasure within {hours:g} hours; check there "
                "whether the person's records are gone, then retry this system",
            )
        )
    return overdue
