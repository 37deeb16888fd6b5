"""What an admin checks: the connected systems, reached now, and the settings in force."""

from __future__ import annotations

from flask import current_app, render_template

from admin import bp
from core.models import Role
from core.security import roles_required
from core.systems import check_systems

#: Settings shown to admins: everything that shapes behaviour, never a secret.
SHOWN_SETTINGS = (
    "LETHE_ENV",
    "CONTROLLER_NAME",
    "BASE_URL",
    "JURISDICTION",
    "HOLIDAY_COUNTRY",
    "HOLIDAY_SUBDIVISION",
    "TIMEZONE",
    "ALLOW_PAUSE",
    "COOLING_OFF_MINUTES",
    "VERIFY_LINK_DAYS",
    "EXPORT_LINK_DAYS",
    "EXPORT_MAX_DOWNLOADS",
    "SUPERVISORY_AUTHORITY",
    "SUPERVISORY_AUTHORITY_URL",
    "LOGIN_MAX_FAILURES",
    "LOGIN_LOCKOUT_MINUTES",
    "TOTP_REQUIRED_FOR_ADMIN",
    "STAFF_IDLE_MINUTES",
    "STAFF_SESSION_HOURS",
    "REMINDER_HOUR",
    "BULK_MAX_BYTES",
    "BULK_MAX_ROWS",
    "SYSTEMS_FILE",
)


@bp.route("/systems")
@roles_required(Role.ADMIN)
def systems_page():
    """Reach every connected system now and show whether it is ready, and the settings."""
    systems = current_app.extensions["lethe.systems"]
    config = current_app.config
    settings = [(name, config.get(name)) for name in SHOWN_SETTINGS if name in config]
    countries = sorted(config["JURISDICTION_BY_COUNTRY"].items())
    return render_template(
        "admin/systems.html",
        checks=check_systems(systems),
        systems=systems,
        settings=settings,
        countries=countries,
    )
