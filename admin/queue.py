"""The queue: every request by legal deadline, with filters, search and counts."""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template, request

from admin import bp
from core.clock import today
from core.deadlines import RULES
from core.extensions import db
from core.lifecycle import CLOSED
from core.metrics import count_overdue
from core.models import Channel, DataSubjectRequest, RequestType, Role, Status
from core.queue import QueueFilter, queue_query, state_counts
from core.security import roles_required


@bp.route("/")
@roles_required(Role.DPO, Role.OPERATOR, Role.AUDITOR)
def queue():
    """List requests by legal deadline, the nearest first, as the filters ask."""
    wanted = QueueFilter.from_args(request.args)
    now = today()
    requests = db.session.scalars(queue_query(wanted, now)).all()
    feedback = db.session.execute(
        sa.select(
            sa.func.count(DataSubjectRequest.feedback_score),
            sa.func.avg(DataSubjectRequest.feedback_score),
        )
    ).one()
    return render_template(
        "admin/queue.html",
        requests=requests,
        wanted=wanted,
        counts=state_counts(db.session),
        overdue=count_overdue(db.session, now),
        closed=CLOSED,
        today=now,
        feedback=feedback,
        states=list(Status),
        types=list(RequestType),
        channels=list(Channel),
        jurisdictions=sorted(RULES),
    )
