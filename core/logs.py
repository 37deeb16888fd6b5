"""Logging that never carries a credential: tokens in URLs are redacted.

Which parts of a URL are secret is read from the app's own URL rules, not from a list of
prefixes: every rule argument named ``token`` or ``*_token`` is a credential (the subject's
verify and status links, export downloads, manual tasks, recipient acknowledgements, HTTP
connector callbacks, and whatever route is added next under the same convention), and so is
any query parameter whose name contains ``token``.
"""

from __future__ import annotations

import logging
import re

from werkzeug.routing import Map, Rule

REDACTED = "[redacted]"
_SEGMENT = r"[^/?#\s\"']+"
_ARGUMENT = re.compile(r"<(?:[a-zA-Z_][\w]*(?:\([^)]*\))?:)?([a-zA-Z_]\w*)>")
_TOKEN_QUERY = re.compile(r"([?&][\w.\-]*token[\w.\-]*=)[^&#\s\"']+", re.IGNORECASE)


def is_token_argument(name: str) -> bool:
    """Tell whether a URL rule argument carries a credential, by its name."""
    return name == "token" or name.endswith("_token")


def token_pattern(rule: Rule) -> re.Pattern[str] | None:
    """Return a pattern matching the rule's URLs, its token arguments as named groups."""
    if not any(is_token_argument(name) for name in rule.arguments):
        return None
    parts, end = [], 0
    for match in _ARGUMENT.finditer(rule.rule):
        parts.append(re.escape(rule.rule[end : match.start()]))
        secret = is_token_argument(match.group(1))
        parts.append(f"(?P<secret{len(parts)}>{_SEGMENT})" if secret else _SEGMENT)
        end = match.end()
    parts.append(re.escape(rule.rule[end:]))
    return re.compile("".join(parts))


class RedactTokens(logging.Filter):
    """Replace every token in a log line's URLs by ``[redacted]``."""

    def __init__(self) -> None:
        super().__init__()
        self.patterns: dict[str, re.Pattern[str]] = {}

    def learn(self, url_map: Map) -> None:
        """Redact the token arguments of every rule in ``url_map`` from now on."""
        for rule in url_map.iter_rules():
            pattern = token_pattern(rule)
            if pattern is not None:
                self.patterns.setdefault(pattern.pattern, pattern)

    def redact(self, text: str) -> str:
        """Return ``text`` with the tokens it carries replaced."""
        for pattern in self.patterns.values():
            text = pattern.sub(_blank_secrets, text)
        return _TOKEN_QUERY.sub(rf"\1{REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = self.redact(str(record.msg))
        return True


def _blank_secrets(match: re.Match[str]) -> str:
    text, start = [], match.start()
    for name, value in match.groupdict().items():
        if value is not None:
            text.append(match.string[start : match.start(name)] + REDACTED)
            start = match.end(name)
    text.append(match.string[start : match.end()])
    return "".join(text)


class DropResultRows(logging.Filter):
    """Drop SQLAlchemy's DEBUG lines that print result rows: they hold people's data."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.DEBUG and str(record.msg).startswith("Row "))


#: The one redacting filter of the process, on the root handlers and werkzeug's logger.
REDACTOR = RedactTokens()


def redact_routes(url_map: Map) -> None:
    """Redact the tokens of ``url_map``'s routes (call once its blueprints are registered)."""
    REDACTOR.learn(url_map)


def configure_logging() -> None:
    """Log to stderr at INFO, with signed links redacted and chatty libraries quietened."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for holder in [*logging.getLogger().handlers, logging.getLogger("werkzeug")]:
        if REDACTOR not in holder.filters:
            holder.addFilter(REDACTOR)
    # Statement parameters are hidden by the engines (hide_parameters); rows are dropped here.
    rows = logging.getLogger("sqlalchemy.engine.Engine")
    if not any(isinstance(f, DropResultRows) for f in rows.filters):
        rows.addFilter(DropResultRows())
    for noisy in ("fontTools", "weasyprint", "weasyprint.progress"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
