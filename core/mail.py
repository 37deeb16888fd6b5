"""Build emails and queue them; core/mail_queue.py sends them (SMTP, or the outbox folder)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from flask import current_app, render_template
from flask_babel import force_locale, get_locale

from core.extensions import db
from core.mail_queue import queue_message


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


def send_message(message: EmailMessage, kind: str = "message") -> None:
    """Queue ``message`` in the current transaction; it is sent once that commits.

    Nothing is sent if the transaction rolls back; a message that cannot go out yet stays
    queued and the scheduler sends it later (core/mail_queue.py).
    """
    queue_message(db.session, message, kind)


def send_mail(to: str, template: str, language: str = "en", **context: object) -> None:
    """Render one email in ``language`` and queue it, to be sent after the commit."""
    with force_locale(language):
        message = build_message(to, template, **context)
    send_message(message, template)
