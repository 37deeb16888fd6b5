"""Lethe's domain and the application factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, has_request_context, request, session
from flask_babel import get_locale

from core.config import load_config
from core.extensions import babel, csrf, db, limiter, login_manager, migrate
from core.logs import configure_logging, redact_routes

ROOT = Path(__file__).resolve().parent.parent
#: The portal's languages, each named in itself.
LANGUAGES = {"en": "English", "ru": "Русский", "zh": "中文"}


def select_locale() -> str | None:
    """Return the language the person chose, else the best match for their browser."""
    if not has_request_context():  # jobs and the CLI choose the language explicitly
        return None
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or "en"


def remember_language() -> None:
    """Keep a language picked with ``?lang=`` for the rest of the visit."""
    if request.args.get("lang") in LANGUAGES:
        session["lang"] = request.args["lang"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Lethe web app: configuration, extensions, systems, jobs, blueprints."""
    app = Flask(
        __name__,
        instance_path=str(ROOT / "instance"),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config.from_mapping(load_config(Path(app.instance_path)))
    if test_config:
        app.config.from_mapping(test_config)
    app.instance_path = str(app.config["INSTANCE"])
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    configure_logging()

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    csrf.init_app(app)
    babel.init_app(
        app,
        locale_selector=select_locale,
        default_translation_directories=str(ROOT / "translations"),
    )
    login_manager.init_app(app)
    limiter.init_app(app)
    app.jinja_env.globals.update(get_locale=get_locale, languages=list(LANGUAGES.items()))
    app.before_request(remember_language)

    from core import models  # noqa: F401  (registers the tables with the metadata)
    from core.jobs import init_celery
    from core.security import init_security
    from core.signing import load_or_create_signing_key, load_signing_key
    from core.systems import load_systems
    from core.unavailable import init_unavailable

    app.extensions["lethe.systems"] = load_systems(app.config["SYSTEMS_FILE"])
    key_file = Path(app.config["SIGNING_KEY_FILE"])
    app.extensions["lethe.signing_key"] = (
        load_signing_key(key_file)
        if app.config["LETHE_ENV"] == "production"
        else load_or_create_signing_key(key_file)
    )
    init_celery(app)
    init_security(app)
    init_unavailable(app)  # a database outage: 503 and "try again", not a traceback

    from admin import bp as admin_bp
    from admin.api import init_api
    from portal import bp as portal_bp

    app.register_blueprint(portal_bp)
    app.register_blueprint(admin_bp, url_prefix="/admin")
    init_api(app)  # /api/v1 and its OpenAPI document
    redact_routes(app.url_map)  # now that every route is known
    return app
