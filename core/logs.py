"""Logging that never carries the subject's links: tokens in URLs are redacted."""

from __future__ import annotations

import logging
import re

_TOKEN_PATH = re.compile(r"/(verify|status)/[A-Za-z0-9_.\-]+")


class RedactTokens(logging.Filter):
    """Replace the token of a signed link in a log line by ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = _TOKEN_PATH.sub(r"/\1/[redacted]", str(record.msg))
        return True


class DropResultRows(logging.Filter):
    """Drop SQLAlchemy's DEBUG lines that print result rows: they hold people's data."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.DEBUG and str(record.msg).startswith("Row "))


def configure_logging() -> None:
    """Log to stderr at INFO, with signed links redacted and chatty libraries quietened."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact = RedactTokens()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactTokens) for f in handler.filters):
            handler.addFilter(redact)
    logging.getLogger("werkzeug").addFilter(redact)
    # Statement parameters are hidden by the engines (hide_parameters); rows are dropped here.
    rows = logging.getLogger("sqlalchemy.engine.Engine")
    if not any(isinstance(f, DropResultRows) for f in rows.filters):
        rows.addFilter(DropResultRows())
    for noisy in ("fontTools", "weasyprint", "weasyprint.progress"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
