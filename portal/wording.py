"""How requests read to the person who asked: plain words, translated, per kind of request."""

from flask_babel import lazy_gettext as _l

from core.models import DataSubjectRequest, RequestType, RunStatus, Status

#: Each kind of request as the person reads it on their status page.
TYPE_WORDS = {
    RequestType.ERASURE: _l("Erase my personal data"),
    RequestType.ACCESS: _l("A copy of my personal data"),
    RequestType.PORTABILITY: _l("My data in a machine-readable file"),
    RequestType.OBJECTION: _l("Stop using my data for marketing"),
}

#: Each state of a request as the person reads it; erasure's words are the default.
STATE_WORDS = {
    Status.SUBMITTED: _l("Waiting for you to confirm your email address"),
    Status.VERIFIED: _l("Received — our privacy team is reviewing it"),
    Status.APPROVED: _l("Approved — erasure starts when the cooling-off period ends"),
    Status.RUNNING: _l("In progress — your data is being erased"),
    Status.COMPLETED: _l("Done — your data has been erased"),
    Status.PARTIALLY_COMPLETED: _l("Partly done — some systems still need attention"),
    Status.FAILED: _l("Delayed — we hit a problem and are working on it"),
    Status.EXPIRED: _l("Expired — the email address was never confirmed"),
    Status.DENIED: _l("Refused — see the email we sent you for the reasons"),
    Status.CANCELLED: _l("Cancelled — nothing was erased"),
}
_EXPORT_STATES = {
    Status.APPROVED: _l("Approved — we are gathering your data"),
    Status.RUNNING: _l("In progress — we are gathering your data"),
    Status.COMPLETED: _l("Done — your data is ready to download"),
    Status.CANCELLED: _l("Cancelled"),
}
_OBJECTION_STATES = {
    Status.APPROVED: _l("Accepted — we are updating our systems"),
    Status.RUNNING: _l("In progress — we are updating our systems"),
    Status.COMPLETED: _l("Done — we no longer use your data for marketing"),
    Status.CANCELLED: _l("Cancelled"),
}

#: Each system's progress as the person reads it.
RUN_WORDS = {
    RunStatus.PLANNED: _l("Waiting to start"),
    RunStatus.RUNNING: _l("In progress"),
    RunStatus.COMPLETED: _l("Erased"),
    RunStatus.NOT_FOUND: _l("Nothing held about you"),
    RunStatus.RETAINED: _l("Kept where the law requires it"),
    RunStatus.ACTION_REQUIRED: _l("Waiting for a person to act"),
    RunStatus.FAILED: _l("Delayed — we are on it"),
}
_EXPORT_RUNS = {RunStatus.COMPLETED: _l("Included in your copy")}
_OBJECTION_RUNS = {
    RunStatus.COMPLETED: _l("Marketing stopped"),
    RunStatus.NOT_FOUND: _l("Not used for marketing"),
}


def state_words(request: DataSubjectRequest) -> str:
    """Return the state of ``request`` in plain words for its kind."""
    status, kind = Status(request.status), RequestType(request.request_type)
    special = (
        _EXPORT_STATES
        if kind.exports
        else _OBJECTION_STATES
        if kind == RequestType.OBJECTION
        else {}
    )
    return special.get(status, STATE_WORDS[status])


def run_words(kind: RequestType) -> dict[RunStatus, str]:
    """Return each system's progress in plain words for requests of ``kind``."""
    special = (
        _EXPORT_RUNS if kind.exports else _OBJECTION_RUNS if kind == RequestType.OBJECTION else {}
    )
    return {**RUN_WORDS, **special}
