"""The staff side: sign in, the queue by legal deadline, review and approve, proofs."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

from admin import views  # noqa: E402,F401  (registers the routes on bp)
