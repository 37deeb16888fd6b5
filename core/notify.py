"""Emails to the subject at each step, in the language of their request."""

from __future__ import annotations

from flask import current_app
from flask_babel import lazy_gettext as _

from core.exports import current_package
from core.links import export_link, status_link, verify_link
from core.mail import send_mail
from core.models import DataSubjectRequest, utcnow
from core.operations import subject_email


def notify_subject(request: DataSubjectRequest, template: str, **context: object) -> None:
    """Send ``templates/email/<template>`` to the subject of ``request``."""
    link = status_link(request)
    labels = {link: _("See my request")}
    if "link" in context:
        labels[str(context["link"])] = _("Confirm my request")
    if "download_link" in context:
        labels[str(context["download_link"])] = _("Download my data")
    send_mail(
        subject_email(request),
        template,
        request.language,
        dsr=request,
        status_link=link,
        link_labels=labels,
        **context,
    )


def send_verification(request: DataSubjectRequest, *, reminder: bool = False) -> None:
    """Send (or remind of) the link that proves the subject owns the address."""
    notify_subject(
        request,
        "reminder" if reminder else "verify",
        link=verify_link(request),
        days=current_app.config["VERIFY_LINK_DAYS"],
    )
    if reminder:
        request.reminder_sent_at = utcnow()
    else:
        request.verify_sent_at = utcnow()


def send_export_ready(request: DataSubjectRequest) -> None:
    """Tell the person their export package is ready, with its download link."""
    package = current_package(request)
    if package is None:
        return
    notify_subject(
        request,
        "export_ready",
        download_link=export_link(package),
        package=package,
        incomplete=not package.summary.get("complete", True),
    )
