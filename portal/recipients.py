"""The page where a processor or recipient acknowledges that they erased the person too.

Reachable only through the signed link of the notification (``core.recipients``); it works
once.  Meant for another organisation's staff, so in English whatever the browser asks for.
"""

from __future__ import annotations

from flask import redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from core.extensions import db, limiter
from core.recipients import acknowledge, open_acknowledgement
from core.tokens import TokenError
from portal import bp
from portal.limits import bad_links


class AcknowledgeForm(FlaskForm):
    """Who, at the recipient, confirms the erasure."""

    name = StringField(
        "Your name",
        validators=[DataRequired(message="Please give your name."), Length(max=100)],
        filters=[lambda value: value.strip() if value else value],
    )


@bp.route("/recipients/<token>", methods=["GET", "POST"])
@bad_links
@limiter.limit("30 per hour", methods=["POST"])
def recipient_ack(token: str):
    """Show what a recipient was asked to erase and record their acknowledgement, once."""
    try:
        notification = open_acknowledgement(db.session, token)
    except TokenError as exc:
        code = 410 if exc.reason in {"expired", "used"} else 400
        return render_template("portal/recipient_ack_problem.html", reason=exc.reason), code
    form = AcknowledgeForm()
    if not form.validate_on_submit():
        run = next(r for r in notification.request.runs if r.system == notification.system)
        page = render_template(
            "portal/recipient_ack.html", form=form, notification=notification, run=run
        )
        return page, 400 if form.is_submitted() else 200
    acknowledge(db.session, notification, f"{form.name.data} ({notification.recipient})")
    db.session.commit()
    return redirect(url_for("portal.recipient_ack_done"))


@bp.route("/recipients/done")
def recipient_ack_done():
    """Thank the recipient; the link they used no longer works."""
    return render_template("portal/recipient_ack_done.html")
