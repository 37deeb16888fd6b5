"""Signed links never reach the logs."""

import logging

from core.logs import configure_logging


def test_the_web_servers_request_log_redacts_link_tokens(caplog):
    configure_logging()
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        logging.getLogger("werkzeug").info(
            '%s - "%s" %s', "127.0.0.1", "GET /verify/eyJyIjoiRFNSLTEifQ.Zx-Y_z HTTP/1.1", "200"
        )
        logging.getLogger("werkzeug").info("GET /status/abc.def-ghi HTTP/1.1")
    text = caplog.text
    assert "eyJyIjoiRFNSLTEifQ" not in text and "abc.def-ghi" not in text
    assert "/verify/[redacted]" in text and "/status/[redacted]" in text
