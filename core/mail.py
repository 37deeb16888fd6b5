"""Send email over SMTP, or write it to ``instance/outbox/`` when no SMTP host is set."""

from __future__ import annotations

import logging
import smtplib
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from flask import current_app, render_template
from flask_babel import force_locale, get_locale

log = logging.getLogger(__name__)


def build_message(to: str, template: str, **context: object) -> EmailMessage:
    """Return a multipart text+HTML message from ``templates/email/<template>.txt``.

    The text is the single source: the HTML part shows its paragraphs, and a paragraph
    that is a bare link becomes a button labelled from ``link_labels``.
    """
    subject = render_template(f"email/{template}.subject.txt", **context).strip()
    text = render_template(f"email/{template}.txt", **context)
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    html = render_template(
        "email/_layout.html",
        subject=subject,
        paragraphs=paragraphs,
        language=str(get_locale() or "en"),
        link_labels=context.get("link_labels", {}),
    )
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="lethe.local")
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def send_message(message: EmailMessage) -> None:
    """Deliver ``message`` over SMTP, or drop it in the outbox folder in development."""
    config = current_app.config
    if config["SMTP_HOST"]:
        with smtplib.SMTP(config["SMTP_HOST"], config["SMTP_PORT"], timeout=30) as smtp:
            if config["SMTP_STARTTLS"]:
                smtp.starttls()
            if config["SMTP_USER"]:
                smtp.login(config["SMTP_USER"], config["SMTP_PASSWORD"] or "")
            smtp.send_message(message)
    else:
        outbox = config["OUTBOX"]
        outbox.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        (outbox / f"{stamp}-{uuid.uuid4().hex[:8]}.eml").write_bytes(bytes(message))


def send_mail(to: str, template: str, language: str = "en", **context: object) -> None:
    """Render one email in ``language`` and deliver it."""
    with force_locale(language):
        message = build_message(to, template, **context)
    send_message(message)
    # The recipient is personal data: the log names only the kind of message.
    log.info("sent the %s email", template)
