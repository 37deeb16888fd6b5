"""Answer access and portability requests: one encrypted export package per request.

The worker gathers every system's records into a ZIP (``core.export_package``) that is
encrypted as it is written, so no plaintext copy of the person's data ever touches the
disk.  The person downloads it through a signed link, a limited number of times, until it
expires; then the file is purged and the link offers to build a new one.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import Session

from connectors.base import ConnectorError
from core.audit import record_event
from core.execution import close_if_finished, finish_run, mark_running
from core.export_package import PackageWriter
from core.models import DataSubjectRequest, ExportPackage, RunStatus, Status, utcnow
from core.operations import DomainError, subject_of
from core.retries import RetryPolicy, schedule_retry
from core.sealed_files import open_sealed
from core.systems import Systems

log = logging.getLogger(__name__)


def _key() -> bytes:
    return bytes.fromhex(current_app.config["DATA_KEY"])


def _context(package: ExportPackage) -> bytes:
    return f"lethe-export:{package.filename}".encode()


def package_path(package: ExportPackage) -> Path:
    """Return where the encrypted file of ``package`` lives."""
    return Path(current_app.config["EXPORT_DIR"]) / package.filename


class ExportRetry(Exception):
    """A system failed for a passing reason: the package is dropped and built again later."""

    def __init__(self, delay: int) -> None:
        super().__init__(f"export retried in {delay} s")
        self.delay = delay


def build_export(
    session: Session,
    systems: Systems,
    request: DataSubjectRequest,
    *,
    track_runs: bool = True,
    retry: RetryPolicy | None = None,
) -> ExportPackage:
    """Export the subject from every system of the request into a new package.

    With ``track_runs`` each system's run is marked running before its connector is asked
    and finished after, so a system that fails is visible on its own while the others are
    packaged.  A renewed package (``track_runs=False``) leaves the runs as they were; its
    summary says which systems, if any, it lacks.

    With a ``retry`` policy, a system that fails for a passing reason while attempts are
    left plans its run again and raises ``ExportRetry``: the unfinished file is deleted,
    and the whole package is built again after the delay, so the person never gets a
    package that lacks a system only because of a timeout.
    """
    config = current_app.config
    now = utcnow()
    # The package joins the request (and the session) only once its file is whole.
    package = ExportPackage(
        filename=f"{secrets.token_hex(16)}.zip.sealed",
        created_at=now,
        expires_at=now + timedelta(days=config["EXPORT_LINK_DAYS"]),
        max_downloads=config["EXPORT_MAX_DOWNLOADS"],
        summary={},
    )
    folder = Path(config["EXPORT_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    subject = subject_of(request)
    with PackageWriter(
        package_path(package),
        _key(),
        _context(package),
        reference=request.reference,
        language=request.language,
        generated_at=now,
        controller=config["CONTROLLER_NAME"],
    ) as writer:
        for run in request.runs:
            if track_runs:
                mark_running(session, run)
                session.commit()
            system = systems.configs.get(run.system)
            if system is None:
                message = (
                    f"system {run.system!r} is no longer in systems.toml; restore it and retry"
                )
                writer.note_failure(run.system, run.label, message)
                if track_runs:
                    finish_run(session, run, RunStatus.FAILED, message)
                continue
            try:
                with systems.open(run.system) as connector:
                    counts = writer.add_system(
                        run.system, run.label, system.disclosure, connector.export(subject)
                    )
            except ConnectorError as exc:
                if track_runs and retry is not None and exc.transient:
                    delay = schedule_retry(session, run, str(exc), retry)
                    if delay is not None:
                        raise ExportRetry(delay) from exc
                    writer.note_failure(run.system, run.label, run.message)
                    continue
                writer.note_failure(run.system, run.label, str(exc))
                if track_runs:
                    finish_run(session, run, RunStatus.FAILED, str(exc))
                continue
            if track_runs:
                run.rows_affected = counts
                found = RunStatus.COMPLETED if sum(counts.values()) else RunStatus.NOT_FOUND
                finish_run(session, run, found, "")
        summary = writer.finish()
    package.summary = summary
    package.size = package_path(package).stat().st_size
    package.request = request
    session.add(package)
    record_event(
        session,
        "worker",
        "export.created",
        request.reference,
        records={name: sum(s.get("tables", {}).values()) for name, s in summary["systems"].items()},
        expires_at=package.expires_at.isoformat(),
    )
    return package


def answer_export(
    session: Session,
    systems: Systems,
    request: DataSubjectRequest,
    retry: RetryPolicy | None = None,
) -> ExportPackage:
    """Build the package of a running access or portability request and close the request."""
    package = build_export(session, systems, request, retry=retry)
    close_if_finished(session, request)
    return package


def current_package(request: DataSubjectRequest) -> ExportPackage | None:
    """Return the newest package of the request that can still be downloaded, if any."""
    now = utcnow()
    for package in reversed(request.exports):
        if package.purged_at is None and package.expires_at > now:
            return package if package.downloads < package.max_downloads else None
    return None


def download_problem(package: ExportPackage | None) -> str | None:
    """Return why ``package`` cannot be downloaded (``expired``, ``used``), or None."""
    if package is None or package.purged_at is not None or package.expires_at <= utcnow():
        return "expired"
    if package.downloads >= package.max_downloads:
        return "used"
    return None


def open_download(session: Session, package: ExportPackage) -> Iterator[bytes]:
    """Count one download of ``package`` and return its decrypted bytes, streamed."""
    problem = download_problem(package)
    if problem:
        raise DomainError(f"the export package can no longer be downloaded ({problem})")
    package.downloads += 1
    record_event(
        session,
        "subject",
        "export.downloaded",
        package.request.reference,
        download=package.downloads,
        of=package.max_downloads,
    )
    return open_sealed(package_path(package), _key(), _context(package))


def check_renewable(request: DataSubjectRequest) -> None:
    """Raise unless the request answered with a package that expired or was used up."""
    if not request.request_type.exports or request.status not in (
        Status.COMPLETED,
        Status.PARTIALLY_COMPLETED,
    ):
        raise DomainError(f"{request.reference} has no export to renew")
    if current_package(request) is not None:
        raise DomainError(f"{request.reference} still has a package to download")


def purge_expired_exports(session: Session) -> int:
    """Delete the files of expired or used-up packages, keeping their PII-free summary.

    Return how many files were purged.
    """
    stale = session.scalars(
        sa.select(ExportPackage).where(
            ExportPackage.purged_at.is_(None),
            sa.or_(
                ExportPackage.expires_at <= utcnow(),
                ExportPackage.downloads >= ExportPackage.max_downloads,
            ),
        )
    ).all()
    for package in stale:
        purge_package(session, package)
    return len(stale)


def purge_package(session: Session, package: ExportPackage) -> None:
    """Delete the file of ``package``, keeping its PII-free summary."""
    package_path(package).unlink(missing_ok=True)
    package.purged_at = utcnow()
    record_event(session, "scheduler", "export.purged", package.request.reference)
