"""Signed links never reach the logs."""

import logging
import threading
import urllib.error
import urllib.request

from werkzeug.serving import make_server

from core.logs import configure_logging, is_token_argument, redact_routes

TOKEN = "eyJyIjoiRFNSLTEifQ.Zx-Y_zSECRET"


def test_the_web_servers_request_log_redacts_link_tokens(app, caplog):
    configure_logging()
    redact_routes(app.url_map)
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        logging.getLogger("werkzeug").info(
            '%s - "%s" %s', "127.0.0.1", f"GET /verify/{TOKEN} HTTP/1.1", "200"
        )
        logging.getLogger("werkzeug").info("GET /status/abc.def-ghi/cancel HTTP/1.1")
        logging.getLogger("werkzeug").info("GET /status?token=abc.def-ghi&lang=ru HTTP/1.1")
    text = caplog.text
    assert TOKEN not in text and "abc.def-ghi" not in text
    assert "/verify/[redacted]" in text and "/status/[redacted]/cancel" in text
    assert "?token=[redacted]&lang=ru" in text


def _example_url(rule) -> str:
    values = {}
    for name in rule.arguments:
        converter = type(rule._converters[name]).__name__
        values[name] = TOKEN if is_token_argument(name) else (1 if "Integer" in converter else "x")
    return rule.build(values, append_unknown=False)[1]


def test_every_route_with_a_token_keeps_it_out_of_the_request_log(app, caplog):
    rules = [r for r in app.url_map.iter_rules() if any(map(is_token_argument, r.arguments))]
    endpoints = {rule.endpoint for rule in rules}
    # The routes this test was written for; a new one is covered by the same walk.
    assert {
        "portal.verify",
        "portal.status",
        "portal.download",
        "portal.manual_task",
        "portal.recipient_ack",
        "portal.callback",
    } <= endpoints, endpoints
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            for rule in rules:
                method = "GET" if "GET" in rule.methods else "POST"
                url = f"http://127.0.0.1:{server.port}{_example_url(rule)}"
                request = urllib.request.Request(
                    url, method=method, data=b"" if method == "POST" else None
                )
                try:
                    urllib.request.urlopen(request, timeout=10).close()
                except urllib.error.HTTPError as exc:
                    exc.close()
    finally:
        server.shutdown()
        thread.join()
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    for rule in rules:
        path = _example_url(rule).replace(TOKEN, "[redacted]")
        assert any(path in line for line in lines), (rule.rule, lines)
    assert not [line for line in caplog.text.splitlines() if TOKEN in line]
