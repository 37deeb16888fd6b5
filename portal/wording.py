"""How states read to the person who asked: plain words, translated."""

from flask_babel import lazy_gettext as _l

from core.models import RunStatus, Status

#: Each state of a request as the person reads it.
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
