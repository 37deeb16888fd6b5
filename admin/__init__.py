"""The staff side: sign in, the queue by legal deadline, review and approve, proofs."""

from flask import Blueprint

bp = Blueprint("admin", __name__)

# Each module registers its routes on bp.
from admin import (  # noqa: E402,F401
    accounts,
    audit,
    bulk,
    dashboard,
    holds,
    intake,
    queue,
    runs,
    setup,
    users,
    views,
)
