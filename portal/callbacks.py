"""The callback a remote system POSTs to once it has carried out an erasure it accepted.

Machine to machine: no session, no CSRF token; the signed URL is the credential.  Every
answer is JSON; anything refused changes nothing.
"""

from __future__ import annotations

import hashlib

from flask import current_app, jsonify
from flask import request as flask_request

from core.callbacks import CallbackError, read_outcome, waiting_run
from core.extensions import csrf, db, limiter
from core.jobs import confirm_pending
from portal import bp


def _token_key() -> str:
    return "callback:" + hashlib.sha256(flask_request.path.encode()).hexdigest()


@bp.route("/callbacks/<token>", methods=["POST"])
@limiter.limit("10 per hour", key_func=_token_key)
@limiter.limit("300 per hour")
def callback(token: str):
    """Record what a system confirms about the erasure its signed URL names."""
    try:
        run = waiting_run(
            db.session,
            current_app.extensions["lethe.systems"],
            current_app.config["SECRET_KEY"],
            token,
        )
        status, message, counts = read_outcome(run, flask_request.get_json(silent=True))
    except CallbackError as exc:
        return jsonify(error=exc.error, message=str(exc)), exc.code
    run_id, system = run.id, run.system
    db.session.rollback()  # only read: the job records the outcome in its own transaction
    confirm_pending.delay(
        run_id, str(status), message, actor=f"callback:{system}", rows_affected=counts
    )
    return jsonify(status="accepted"), 202


csrf.exempt(callback)
