"""Read an uploaded CSV of addresses for a bulk erasure: checked, normalised, deduplicated.

The file is read from memory and nothing is stored here: a wrong file raises
:class:`CsvError` with a message that says what to do, and a readable one gives a
:class:`CsvReport`.  Messages never quote a cell, since a cell may be someone's address.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import email_validator

from core.crypto import normalise_email

#: The column that holds the addresses; any other column is ignored (and said so).
EMAIL_COLUMN = "email"
#: The longest address the portal accepts (RFC 5321 path limit).
EMAIL_MAX = 254
#: Invalid lines kept in the report; the count covers all of them.
INVALID_LISTED = 1000
_SAVE_AS = "Save it from your spreadsheet as “CSV UTF-8 (comma delimited)” and upload it again."


class CsvError(ValueError):
    """The file cannot be read as a list of addresses; the message says why and what to do."""


@dataclass
class CsvReport:
    """What a readable file holds: the addresses to erase, and what was left out and why."""

    #: Data lines read (blank lines are not counted).
    rows: int = 0
    #: One address per person, as typed (NFC, trimmed), in the order of the file.
    addresses: list[str] = field(default_factory=list)
    #: Lines naming a person already named higher up (compared case-insensitively).
    duplicates: int = 0
    #: (line number, problem) of lines without a valid address; the first INVALID_LISTED.
    invalid: list[tuple[int, str]] = field(default_factory=list)
    invalid_count: int = 0
    ignored_columns: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the report without the addresses, to be kept with the batch."""
        return {
            "rows": self.rows,
            "people": len(self.addresses),
            "duplicates": self.duplicates,
            "invalid": [[line, problem] for line, problem in self.invalid],
            "invalid_count": self.invalid_count,
            "ignored_columns": self.ignored_columns,
        }


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CsvError(f"The file is encoded as UTF-16, not UTF-8. {_SAVE_AS}")
    if data.startswith(b"PK\x03\x04"):
        raise CsvError(f"This is a spreadsheet workbook (.xlsx), not a CSV file. {_SAVE_AS}")
    if b"\x00" in data:
        raise CsvError("This is not a text file: it holds binary data. Upload a CSV file.")
    try:
        return data.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvError(
            f"The file is not UTF-8 text (line {line} is in another encoding). {_SAVE_AS}"
        ) from None


def _dialect(first_line: str) -> str:
    # Spreadsheets in many countries separate with semicolons; the header tells which.
    counts = {delimiter: first_line.count(delimiter) for delimiter in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _problem(cell: str) -> str | None:
    """Return why ``cell`` is not an address the portal would accept, or None."""
    if not cell:
        return "no address"
    if len(cell) > EMAIL_MAX:
        return f"longer than {EMAIL_MAX} characters"
    try:
        email_validator.validate_email(cell, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return "not a valid email address"
    return None


def read_addresses(data: bytes, *, max_bytes: int, max_rows: int) -> CsvReport:
    """Return the report of a CSV file with an ``email`` column; raise CsvError if unusable."""
    if len(data) > max_bytes:
        raise CsvError(
            f"The file is {_size(len(data))}; the limit is {_size(max_bytes)} "
            "(LETHE_BULK_MAX_BYTES). Split it into smaller files."
        )
    text = _decode(data)
    if not text.strip():
        raise CsvError("The file is empty. Its first line must name the columns, e.g. email.")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_dialect(text.split("\n", 1)[0]))
    report, seen = CsvReport(), set()
    try:
        header = [cell.strip() for cell in next(reader)]
        names = [cell.lower() for cell in header]
        if EMAIL_COLUMN not in names:
            if any("@" in cell for cell in header):
                raise CsvError(
                    "The first line holds an address, not column names. "
                    "Add a first line that says email."
                )
            raise CsvError(
                "No column is called email. The first line must name the columns, "
                f"one of them email; this file's first line names: {', '.join(header)[:200]}."
            )
        column = names.index(EMAIL_COLUMN)
        report.ignored_columns = [name for i, name in enumerate(header) if i != column and name]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            report.rows += 1
            if report.rows > max_rows:
                raise CsvError(
                    f"The file has more than {max_rows} lines of addresses "
                    "(LETHE_BULK_MAX_ROWS). Split it into smaller files."
                )
            cell = row[column].strip() if column < len(row) else ""
            problem = _problem(cell)
            if problem is not None:
                report.invalid_count += 1
                if len(report.invalid) < INVALID_LISTED:
                    report.invalid.append((reader.line_num, problem))
                continue
            key = normalise_email(cell)
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            report.addresses.append(cell)
    except csv.Error as exc:
        raise CsvError(f"Line {reader.line_num} cannot be read as CSV ({exc}).") from None
    return report


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n} bytes"
