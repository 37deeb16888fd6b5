"""The customer portal: ask, prove the address, follow the request."""

from flask import Blueprint

bp = Blueprint("portal", __name__)

from portal import (  # noqa: E402,F401  (registers the routes on bp)
    callbacks,
    proof_check,
    recipients,
    tasks,
    views,
)
