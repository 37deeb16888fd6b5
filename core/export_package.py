"""Build the export package that answers access and portability requests (Art. 15, 20).

The package is one ZIP, sealed with :class:`core.sealed_files.SealedWriter`, holding:

- ``json/<system>/<table>.json`` and ``csv/<system>/<table>.csv``: each table twice, the
  same records in a format for other services and one for spreadsheet programs;
- ``manifest.json``: the summary for programs, and ``index.html``: the same for people
  (``summary.pdf``: that page as a PDF).

A ZIP entry must be written whole before the next begins, and a connector may come back
to a table after another, so records first stream into sealed spool files (a new segment
whenever the table changes).  Once a system's records are all read, each table is copied
from its segments into its JSON and CSV entries, and the segments are deleted.  Memory
holds a chunk, a record and a table's column names, never a table's records; the spools
are sealed with a key that lives only in memory, so no plaintext reaches the disk.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime as dt
import io
import json
import re
import shutil
import tempfile
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import render_template
from flask_babel import force_locale, format_datetime

from connectors.base import Record
from core.sealed_files import SealedWriter, open_sealed

FORMAT = "lethe-export/1"
#: The Art. 15(1) information a system may state, in the order the summary shows it.
INFO_KEYS = ("purposes", "categories", "recipients", "retention", "source")
#: A spreadsheet reads a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: File names Windows refuses, whatever their extension.
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"{d}{n}" for d in ("COM", "LPT") for n in range(10))}
_BATCH = 64 * 1024


def _safe_name(name: str) -> str:
    """Return ``name`` fit to be one path component: no separators, no dot-only names."""
    cleaned = re.sub(r"(?:[^\w.-]|\.{2,})+", "_", name)[:80].strip(".") or "_"
    return "_" + cleaned if cleaned.split(".")[0].upper() in _RESERVED else cleaned


def _claim(name: str, taken: set[str]) -> str:
    """Return ``name``, numbered if needed to differ (ignoring case) from every taken name."""
    candidate, number = name, 1
    while candidate.casefold() in taken:
        number += 1
        candidate = f"{name}-{number}"
    taken.add(candidate.casefold())
    return candidate


def _information(info: Mapping[str, Any]) -> dict[str, list[str] | None]:
    """Return the Art. 15 information as lists of text, ``None`` where it is not stated."""
    unknown = sorted(set(info) - set(INFO_KEYS))
    if unknown:
        raise ValueError(f"unknown information {unknown}; use {', '.join(INFO_KEYS)}")
    result: dict[str, list[str] | None] = {}
    for key in INFO_KEYS:
        value = info.get(key) or None
        if isinstance(value, str):
            value = [value]
        if value is not None and not all(isinstance(item, str) for item in value):
            raise ValueError(f"information {key!r} must be text or a list of texts")
        result[key] = list(value) if value else None
    return result


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    # The value itself is personal data: only its type may appear in the message.
    raise TypeError(f"cannot export a value of type {type(value).__name__}")


def _cell(value: Any) -> str:
    """Return ``value`` as a CSV cell that a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        return str(value)  # a number written by us, never a formula
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


@dataclass
class _Table:
    """One table being spooled: its records may arrive in several runs (segments)."""

    name: str
    slug: str
    records: int = 0
    columns: dict[str, None] = field(default_factory=dict)
    segments: list[Path] = field(default_factory=list)
    spooled: int = 0


@dataclass
class _System:
    label: str
    slug: str
    information: dict[str, list[str] | None]
    complete: bool = True
    #: table -> records written, in the order the tables first came.
    tables: dict[str, int] = field(default_factory=dict)
    #: table -> {"json": path, "csv": path} inside the ZIP.
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "complete": self.complete,
            "tables": self.tables,
            "files": self.files,
            "failures": self.failures,
            "information": self.information,
        }


class PackageWriter:
    """Write a sealed export package to ``path``; use it as a context manager.

    Leaving the ``with`` block normally calls :meth:`finish`; leaving it through an
    exception calls :meth:`discard`, so no partial package is left behind.
    """

    def __init__(
        self,
        path: Path,
        key: bytes,
        context: bytes,
        *,
        reference: str,
        language: str,
        generated_at: dt.datetime,
        controller: str,
    ):
        if generated_at.tzinfo is None:
            raise ValueError("generated_at must be an aware datetime")
        self.path = Path(path)
        self.reference, self.language, self.controller = reference, language, controller
        self.generated_at = generated_at.astimezone(dt.UTC)
        #: The manifest's content, once :meth:`finish` has run.
        self.summary: dict[str, Any] | None = None
        self._systems: dict[str, _System] = {}
        self._folders: set[str] = set()
        self._spool_key = AESGCM.generate_key(bit_length=256)
        self._spool_dir = Path(tempfile.mkdtemp(prefix=".lethe-spool-", dir=self.path.parent))
        try:
            self._sealed = SealedWriter(self.path, key, context)
        except BaseException:
            shutil.rmtree(self._spool_dir, ignore_errors=True)
            raise
        self._zip = zipfile.ZipFile(self._sealed, "w", zipfile.ZIP_DEFLATED)
        self._open = True

    def __enter__(self) -> PackageWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None:
            self.discard()
        elif self._open:
            self.finish()

    def __del__(self) -> None:
        # A package dropped unfinished is abandoned, spools included, never committed.
        if getattr(self, "_open", False):
            self.discard()

    def add_system(
        self, name: str, label: str, info: Mapping[str, Any], records: Iterable[Record]
    ) -> dict[str, int]:
        """Write every record of one system into the package; return the count per table.

        A table may come back after other tables: its records still end up in one JSON
        and one CSV file.  ``info`` holds the Art. 15 information (keys in
        :data:`INFO_KEYS`, each text or a list of texts); another key raises ValueError
        before any record is read, as does a ``name`` already in the package.

        If iterating ``records`` raises, or a record cannot be written (a key that is not
        text, a value JSON cannot hold), the records read until then are still written,
        the system is marked incomplete and the exception propagates.  The caller catches
        it and records why with :meth:`note_failure`.
        """
        self._check_open()
        if name in self._systems:
            raise ValueError(f"system {name!r} is already in the package")
        system = self._register(name, label, info)
        tables: dict[str, _Table] = {}
        try:
            self._spool(records, tables)
        except Exception:
            system.complete = False
            self._write_tables(system, tables.values())
            raise
        self._write_tables(system, tables.values())
        return {table.name: table.records for table in tables.values()}

    def note_failure(
        self, name: str, label: str, message: str, *, info: Mapping[str, Any] | None = None
    ) -> None:
        """Record that system ``name`` could not be exported, in full or at all, and why.

        Call it after :meth:`add_system` raised for ``name`` (what was read stays in the
        package) or in its place when the system could not be reached.  Each call adds a
        message.  The person reads ``message``: it must hold no personal data.
        """
        self._check_open()
        system = self._systems.get(name) or self._register(name, label, info or {})
        system.complete = False
        system.failures.append(message)

    def finish(self) -> dict[str, Any]:
        """Write ``manifest.json`` and ``index.html``, seal the package, return the summary.

        The summary names systems, tables, counts and failure messages, never a person's
        data.  Call it inside an app context: ``index.html`` is a Flask template.
        """
        if self.summary is not None:
            return self.summary
        self._check_open()
        summary = {
            "format": FORMAT,
            "reference": self.reference,
            "generated_at": self.generated_at.isoformat(),
            "controller": self.controller,
            "language": self.language,
            "complete": all(system.complete for system in self._systems.values()),
            "systems": {name: system.to_dict() for name, system in self._systems.items()},
        }
        try:
            manifest = json.dumps(summary, ensure_ascii=False, indent=2) + "\n"
            with force_locale(self.language):
                page = render_template(
                    "export/summary.html",
                    package=summary,
                    generated_on=format_datetime(self.generated_at, "long"),
                )
            with self._entry("manifest.json") as out:
                out.write(manifest.encode("utf-8"))
            with self._entry("index.html") as out:
                out.write(page.encode("utf-8"))
            # The same page as a PDF, for people who keep or print documents rather than
            # web pages; it is drawn from the page alone, fetching nothing.  WeasyPrint
            # and its fonts load only now, once every record is written.
            from core.pdf import draw_pdf

            pdf = draw_pdf(page)
            with self._entry("summary.pdf") as out:
                out.write(pdf)
            self._zip.close()
            self._sealed.close()
        except BaseException:
            self.discard()
            raise
        self._open = False
        shutil.rmtree(self._spool_dir, ignore_errors=True)
        self.summary = summary
        return summary

    def discard(self) -> None:
        """Abandon the package: delete the partial file and every spool."""
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(Exception):
            self._zip.close()  # releases the ZIP; what it writes is deleted just below
        self._sealed.discard()
        shutil.rmtree(self._spool_dir, ignore_errors=True)

    def _check_open(self) -> None:
        if not self._open:
            raise ValueError("the package is already finished or discarded")

    def _register(self, name: str, label: str, info: Mapping[str, Any]) -> _System:
        information = _information(info)  # checked before a folder name is taken
        system = _System(label, _claim(_safe_name(name), self._folders), information)
        self._systems[name] = system
        return system

    def _spool(self, records: Iterable[Record], tables: dict[str, _Table]) -> None:
        """Copy ``records`` into sealed spools, a new segment whenever the table changes."""
        slugs: set[str] = set()
        current: tuple[_Table, SealedWriter] | None = None
        try:
            for record in records:
                if not all(isinstance(key, str) for key in record.data):
                    raise TypeError(f"a record of {record.table!r} has a key that is not text")
                line = json.dumps(record.data, ensure_ascii=False, default=_json_default)
                if current is None or record.table != current[0].name:
                    if current is not None:
                        self._close_segment(*current)
                        current = None
                    table = tables.get(record.table)
                    if table is None:
                        table = _Table(record.table, _claim(_safe_name(record.table), slugs))
                        tables[record.table] = table
                    current = (table, self._open_segment(table))
                table, spool = current
                spool.write(line.encode("utf-8") + b"\n")
                table.columns.update(dict.fromkeys(record.data))
                table.records += 1
        finally:
            if current is not None:
                self._close_segment(*current)  # keep what was read, even on error

    def _open_segment(self, table: _Table) -> SealedWriter:
        path = self._spool_dir / f"{uuid.uuid4().hex}.spool"
        spool = SealedWriter(path, self._spool_key, path.name.encode())
        table.segments.append(path)
        return spool

    def _close_segment(self, table: _Table, spool: SealedWriter) -> None:
        spool.close()
        table.spooled += spool.size

    def _lines(self, table: _Table) -> Iterator[bytes]:
        """Yield the spooled records of ``table`` as JSON lines, in the order they came."""
        for segment in table.segments:
            pending = bytearray()
            for chunk in open_sealed(segment, self._spool_key, segment.name.encode()):
                pending += chunk
                start = 0
                while (end := pending.find(b"\n", start)) != -1:
                    yield bytes(pending[start:end])
                    start = end + 1
                del pending[:start]

    def _write_tables(self, system: _System, tables: Iterable[_Table]) -> None:
        for table in tables:
            json_name = f"json/{system.slug}/{table.slug}.json"
            csv_name = f"csv/{system.slug}/{table.slug}.csv"
            try:
                self._write_json(json_name, table)
                self._write_csv(csv_name, table)
            finally:
                for segment in table.segments:
                    segment.unlink(missing_ok=True)
            system.tables[table.name] = table.records
            system.files[table.name] = {"json": json_name, "csv": csv_name}

    def _write_json(self, name: str, table: _Table) -> None:
        with io.BufferedWriter(self._entry(name, table.spooled + 2 * table.records), _BATCH) as out:
            separator = b"[\n"
            for line in self._lines(table):
                out.write(separator)
                out.write(line)
                separator = b",\n"
            out.write(b"[]\n" if separator == b"[\n" else b"\n]\n")

    def _write_csv(self, name: str, table: _Table) -> None:
        columns = list(table.columns)
        # Quoting can double a value, and a sparse table repeats a comma per absent cell.
        estimate = 2 * table.spooled + table.records * (len(columns) + 2)
        with io.TextIOWrapper(self._entry(name, estimate), encoding="utf-8-sig", newline="") as out:
            writer = csv.writer(out)
            writer.writerow([_cell(column) for column in columns])
            for line in self._lines(table):
                row = json.loads(line)
                writer.writerow([_cell(row.get(column)) for column in columns])

    def _entry(self, name: str, estimate: int = 0) -> io.BufferedIOBase:
        """Open a new ZIP entry for writing, dated when the package was generated."""
        info = zipfile.ZipInfo(name, date_time=self.generated_at.timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        # The size is unknown until the end: ZIP64 must be chosen now if it may be needed.
        large = estimate * 1.05 > zipfile.ZIP64_LIMIT
        return self._zip.open(info, "w", force_zip64=large)
