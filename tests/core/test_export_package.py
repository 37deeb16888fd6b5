"""The export package: a sealed ZIP of everything held about a person, readable with its key."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import tracemalloc
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath

import pytest
from pypdf import PdfReader

from connectors.base import ConnectorError, Record, Subject
from core.crypto import DecryptionError
from core.demo import DOCUMENTED
from core.export_package import PackageWriter
from core.sealed_files import CHUNK_SIZE, MAGIC, SealedReader, SealedWriter, open_sealed

CONTEXT = b"export:R-2025-0042"
GENERATED_AT = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
HEADER = len(MAGIC) + 8


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Run on SQLite only: the package never touches Lethe's own database."""
    return f"sqlite:///{tmp_path / 'lethe.sqlite'}"


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    return folder


# --- helpers -------------------------------------------------------------------------------


def unseal(path: Path, key: bytes, context: bytes = CONTEXT) -> bytes:
    return b"".join(open_sealed(path, key, context))


def chunk_spans(blob: bytes) -> list[tuple[int, int]]:
    """Return (start, end) of every stored chunk, length prefix included."""
    spans, position = [], HEADER
    while position < len(blob):
        (length,) = struct.unpack(">I", blob[position : position + 4])
        spans.append((position, position + 4 + length))
        position += 4 + length
    return spans


def new_package(path: Path, key: bytes, language: str = "en") -> PackageWriter:
    return PackageWriter(
        path,
        key,
        CONTEXT,
        reference="R-2025-0042",
        language=language,
        generated_at=GENERATED_AT,
        controller="Example Shop Ltd",
    )


def open_package(path: Path, key: bytes) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(SealedReader(path, key, CONTEXT).read()))
    assert archive.testzip() is None
    return archive


def read_json(archive: zipfile.ZipFile, name: str) -> list:
    return json.loads(archive.read(name).decode("utf-8"))


def read_csv(archive: zipfile.ZipFile, name: str) -> list[list[str]]:
    raw = archive.read(name)
    assert raw.startswith(b"\xef\xbb\xbf"), "spreadsheet programs need the BOM"
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


class Page(HTMLParser):
    """The parts of index.html a reader relies on: links, table rows, text, resources."""

    def __init__(self, html: str):
        super().__init__()
        self.links: list[str] = []
        self.rows: list[list[str]] = []
        self.resources: list[str] = []
        self.text: list[str] = []
        self.lang = None
        self._cell: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs.get("lang")
        if tag == "a" and not attrs["href"].startswith("#"):
            self.links.append(attrs["href"])
        if tag in ("script", "link", "img", "iframe") or "src" in attrs:
            self.resources.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


# --- the sealed file format ----------------------------------------------------------------


def test_a_sealed_file_gives_back_exactly_what_was_written(tmp_path, key):
    data = os.urandom(3 * CHUNK_SIZE + 100)
    with SealedWriter(tmp_path / "f", key, CONTEXT) as writer:
        for start in range(0, len(data), 10_000):  # writes that straddle chunk boundaries
            writer.write(data[start : start + 10_000])
        assert writer.tell() == len(data)
    assert writer.size == len(data)
    assert os.listdir(tmp_path) == ["f"]
    assert unseal(tmp_path / "f", key) == data
    assert SealedReader(tmp_path / "f", key, CONTEXT).read() == data


def test_an_empty_sealed_file_still_ends_with_a_final_chunk(tmp_path, key):
    with SealedWriter(tmp_path / "f", key, CONTEXT):
        pass
    assert unseal(tmp_path / "f", key) == b""
    (tmp_path / "f").write_bytes(MAGIC + os.urandom(8))
    with pytest.raises(DecryptionError, match="cut short"):
        unseal(tmp_path / "f", key)


def test_a_sealed_file_holds_no_plaintext(tmp_path, key):
    secret = "Иван Петров 李伟 ivan.petrov@example.ru ".encode()
    with SealedWriter(tmp_path / "f", key, CONTEXT) as writer:
        writer.write(secret * 5000)
    on_disk = (tmp_path / "f").read_bytes()
    assert "Петров".encode() not in on_disk
    assert b"ivan.petrov" not in on_disk


def test_an_error_inside_the_with_block_leaves_no_file(tmp_path, key):
    with pytest.raises(RuntimeError), SealedWriter(tmp_path / "f", key, CONTEXT) as writer:
        writer.write(os.urandom(2 * CHUNK_SIZE))
        raise RuntimeError("connector died")
    assert os.listdir(tmp_path) == []


def test_an_abandoned_writer_is_not_committed(tmp_path, key):
    writer = SealedWriter(tmp_path / "f", key, CONTEXT)
    writer.write(b"half a package")
    del writer
    assert os.listdir(tmp_path) == []


def _flip_in_middle_chunk(blob: bytes) -> bytes:
    start, end = chunk_spans(blob)[1]
    middle = (start + end) // 2
    return blob[:middle] + bytes([blob[middle] ^ 1]) + blob[middle + 1 :]


def _drop_last_chunk(blob: bytes) -> bytes:
    return blob[: chunk_spans(blob)[-1][0]]


def _swap_chunks(blob: bytes) -> bytes:
    (a0, a1), (b0, b1) = chunk_spans(blob)[:2]
    return blob[:a0] + blob[b0:b1] + blob[a0:a1] + blob[b1:]


TAMPERING = {
    "flipped byte": _flip_in_middle_chunk,
    "flipped nonce prefix": lambda b: b[: HEADER - 1] + bytes([b[HEADER - 1] ^ 1]) + b[HEADER:],
    "last chunk dropped": _drop_last_chunk,
    "cut mid-chunk": lambda b: b[:-7],
    "chunks swapped": _swap_chunks,
    "garbage appended": lambda b: b + b"\x00\x00\x00\x10" + bytes(16),
    "one byte appended": lambda b: b + b"\x00",
    "not sealed at all": lambda b: b"PK\x03\x04" + b[4:],
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=TAMPERING.keys())
def test_a_sealed_file_refuses_any_tampering(tmp_path, key, tamper):
    path = tmp_path / "f"
    with SealedWriter(path, key, CONTEXT) as writer:
        writer.write(os.urandom(3 * CHUNK_SIZE + 100))
    path.write_bytes(tamper(path.read_bytes()))
    with pytest.raises(DecryptionError):
        unseal(path, key)


@pytest.mark.parametrize(
    ("other_key", "other_context"), [(True, False), (False, True)], ids=["key", "context"]
)
def test_a_sealed_file_opens_only_with_its_key_and_context(tmp_path, key, other_key, other_context):
    with SealedWriter(tmp_path / "f", key, CONTEXT) as writer:
        writer.write(b"personal data")
    with pytest.raises(DecryptionError, match="key or context"):
        unseal(
            tmp_path / "f",
            os.urandom(32) if other_key else key,
            b"export:R-2025-0043" if other_context else CONTEXT,
        )


# --- the package -----------------------------------------------------------------------------

CUSTOMERS = [
    {"id": 1, "email": "ivan.petrov@example.ru", "full_name": "Иван Петров", "city": "Москва"},
    {"id": 2, "email": "li.wei@example.cn", "full_name": "李伟", "city": "北京", "vip": True},
    {"id": 3, "email": "alice@example.com", "full_name": "Alice Example", "city": None},
]
ORDERS = [
    {"id": 10, "customer_id": 1, "total_cents": 1250, "tags": ["gift", "подарок"]},
    {"id": 11, "customer_id": 2, "total_cents": -300, "shipping_address": "上海 1号"},
]
INFO = {
    "purposes": ["Running your account", "Delivering orders"],
    "categories": "Contact details, order history",
    "retention": "Invoices: 10 years (tax law)",
}


def test_the_package_round_trips_every_record_as_json_and_csv(app, out, key):
    records = [Record("customers", row) for row in CUSTOMERS] + [
        Record("orders", row) for row in ORDERS
    ]
    with app.app_context(), new_package(out / "package.zip", key) as package:
        counts = package.add_system("crm", "Customer accounts", INFO, iter(records))
    assert counts == {"customers": 3, "orders": 2}
    assert os.listdir(out) == ["package.zip"]  # no spool, no .part left behind

    archive = open_package(out / "package.zip", key)
    assert read_json(archive, "json/crm/customers.json") == CUSTOMERS
    assert read_json(archive, "json/crm/orders.json") == ORDERS
    assert "Иван Петров" in archive.read("json/crm/customers.json").decode("utf-8")
    header, *rows = read_csv(archive, "csv/crm/customers.csv")
    assert header == ["id", "email", "full_name", "city", "vip"]  # union, first-seen order
    assert rows == [
        ["1", "ivan.petrov@example.ru", "Иван Петров", "Москва", ""],
        ["2", "li.wei@example.cn", "李伟", "北京", "true"],
        ["3", "alice@example.com", "Alice Example", "", ""],
    ]
    header, *rows = read_csv(archive, "csv/crm/orders.csv")
    assert rows[0][header.index("tags")] == '["gift", "подарок"]'
    assert rows[1][header.index("total_cents")] == "-300"  # a number, not a formula

    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["format"] == "lethe-export/1"
    assert manifest["complete"] is True
    assert manifest["systems"]["crm"]["tables"] == {"customers": 3, "orders": 2}
    assert manifest["systems"]["crm"]["files"]["orders"] == {
        "json": "json/crm/orders.json",
        "csv": "csv/crm/orders.csv",
    }
    # The summary travels outside the package too: it must name no one.
    for row in CUSTOMERS:
        assert row["email"] not in json.dumps(manifest, ensure_ascii=False)
        assert row["full_name"] not in archive.read("index.html").decode("utf-8")


def test_no_plaintext_reaches_the_disk_while_or_after_exporting(app, tmp_path, out, key):
    marker = "Жанна-Zeta-7f3c-王"

    def files_holding_the_marker() -> list[Path]:
        needle = marker.encode("utf-8")
        return [p for p in tmp_path.rglob("*") if p.is_file() and needle in p.read_bytes()]

    seen_while_exporting: list[Path] = []

    def records() -> Iterator[Record]:
        for n in range(5000):  # several chunks: the spools are on disk by now
            yield Record("notes", {"id": n, "text": f"{marker} note {n}"})
        seen_while_exporting.extend(files_holding_the_marker())

    with app.app_context(), new_package(out / "package.zip", key) as package:
        package.add_system("crm", "Customer accounts", {}, records())
    assert seen_while_exporting == []
    assert files_holding_the_marker() == []
    archive = open_package(out / "package.zip", key)
    assert read_json(archive, "json/crm/notes.json")[4999]["text"] == f"{marker} note 4999"


def test_csv_cells_cannot_run_as_spreadsheet_formulas(app, out, key):
    dangerous = ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    records = [Record("notes", {"id": n, "=cmd": text}) for n, text in enumerate(dangerous)]
    records.append(Record("notes", {"id": 99, "=cmd": "a = b, fine", "score": -5}))
    with app.app_context(), new_package(out / "package.zip", key) as package:
        package.add_system("crm", "Customer accounts", {}, records)
    archive = open_package(out / "package.zip", key)
    header, *rows = read_csv(archive, "csv/crm/notes.csv")
    assert header == ["id", "'=cmd", "score"]
    assert [row[1] for row in rows] == ["'" + text for text in dangerous] + ["a = b, fine"]
    assert rows[-1][2] == "-5"
    # JSON is for programs: it keeps the values as they are.
    assert [r["=cmd"] for r in read_json(archive, "json/crm/notes.json")][:6] == dangerous


def test_a_table_that_comes_back_after_another_is_not_lost(app, out, key):
    records = [
        Record("customers", {"id": 1}),
        Record("orders", {"id": 10}),
        Record("customers", {"id": 2, "note": "late"}),
        Record("orders", {"id": 11}),
        Record("customers", {"id": 3}),
    ]
    with app.app_context(), new_package(out / "package.zip", key) as package:
        counts = package.add_system("crm", "Customer accounts", {}, records)
    assert counts == {"customers": 3, "orders": 2}
    archive = open_package(out / "package.zip", key)
    assert read_json(archive, "json/crm/customers.json") == [
        {"id": 1},
        {"id": 2, "note": "late"},
        {"id": 3},
    ]
    assert read_csv(archive, "csv/crm/customers.csv") == [
        ["id", "note"],
        ["1", ""],
        ["2", "late"],
        ["3", ""],
    ]
    assert read_json(archive, "json/crm/orders.json") == [{"id": 10}, {"id": 11}]


def test_a_failing_system_is_reported_incomplete_and_the_others_are_intact(app, out, key):
    def crashing() -> Iterator[Record]:
        yield Record("customers", {"id": 1, "full_name": "Иван Петров"})
        yield Record("customers", {"id": 2, "full_name": "李伟"})
        raise ConnectorError("the CRM stopped answering; try again later", transient=True)

    with app.app_context(), new_package(out / "package.zip", key) as package:
        with pytest.raises(ConnectorError) as raised:
            package.add_system("crm", "Customer accounts", INFO, crashing())
        package.note_failure("crm", "Customer accounts", str(raised.value))
        package.add_system("shop", "Web shop", {}, [Record("orders", {"id": 10})])
        package.note_failure("mail", "Newsletter", "the newsletter service refused our login")
        summary = package.finish()

    archive = open_package(out / "package.zip", key)
    assert json.loads(archive.read("manifest.json")) == summary
    assert summary["complete"] is False
    crm, shop, mail = (summary["systems"][name] for name in ("crm", "shop", "mail"))
    assert crm["complete"] is False
    assert crm["failures"] == ["the CRM stopped answering; try again later"]
    assert crm["tables"] == {"customers": 2}
    assert len(read_json(archive, "json/crm/customers.json")) == 2  # what was read is kept
    assert shop["complete"] is True
    assert read_json(archive, "json/shop/orders.json") == [{"id": 10}]
    assert mail == {
        "label": "Newsletter",
        "complete": False,
        "tables": {},
        "files": {},
        "failures": ["the newsletter service refused our login"],
        "information": dict.fromkeys(
            ["purposes", "categories", "recipients", "retention", "source"]
        ),
    }

    page = Page(archive.read("index.html").decode("utf-8"))
    assert "This package is incomplete" in page.plain
    assert page.plain.index("This package is incomplete") < page.plain.index("Web shop")
    assert "the CRM stopped answering" in page.plain
    assert "Nothing could be exported from this system" in page.plain


def test_the_summary_states_the_art_15_information_or_that_it_is_missing(app, out, key):
    with app.app_context(), new_package(out / "package.zip", key) as package:
        package.add_system("crm", "Customer accounts", INFO, [Record("customers", {"id": 1})])
    page = Page(open_package(out / "package.zip", key).read("index.html").decode("utf-8"))
    assert "This package is complete" in page.plain
    assert "Running your account" in page.plain and "Delivering orders" in page.plain
    assert "Invoices: 10 years (tax law)" in page.plain
    assert page.plain.count("Not stated") == 2  # recipients and source


def test_an_unknown_information_key_is_refused(app, out, key):
    with (
        app.app_context(),
        new_package(out / "package.zip", key) as package,
        pytest.raises(ValueError, match="purpose"),
    ):
        package.add_system("crm", "Customer accounts", {"purpose": "typo"}, [])


def test_names_from_systems_cannot_escape_their_folder(app, out, key):
    tables = ["../../etc/passwd", "a/b", "a_b", "A_B", "CON", "..", "Заказы"]
    records = [Record(table, {"n": n}) for n, table in enumerate(tables)]
    with app.app_context(), new_package(out / "package.zip", key) as package:
        package.add_system("../../up", "Odd system", {}, records)
        summary = package.finish()
    archive = open_package(out / "package.zip", key)
    names = archive.namelist()
    assert len(names) == len(set(name.casefold() for name in names))
    for name in names:
        parts = PurePosixPath(name).parts
        assert not name.startswith("/") and "\\" not in name
        assert ".." not in parts and len(parts) in (1, 3), name
    files = summary["systems"]["../../up"]["files"]
    assert list(files) == tables
    for n, table in enumerate(tables):
        assert read_json(archive, files[table]["json"]) == [{"n": n}]
        assert read_csv(archive, files[table]["csv"]) == [["n"], [str(n)]]
    assert "json/_up/Заказы.json" in names


def test_an_error_while_building_leaves_nothing_behind(app, out, key):
    with pytest.raises(RuntimeError), app.app_context(), new_package(out / "p.zip", key) as pkg:
        pkg.add_system("crm", "Customer accounts", {}, [Record("t", {"x": "y" * 100_000})] * 5)
        raise RuntimeError("the job was cancelled")
    assert os.listdir(out) == []


def test_memory_stays_bounded_however_many_records(app, out, key):
    def records() -> Iterator[Record]:
        for n in range(200_000):
            yield Record(
                "events",
                {"id": n, "at": f"2024-01-01T00:00:{n % 60:02d}", "what": f"Просмотр 页面 {n}"},
            )

    with app.app_context():
        tracemalloc.start()
        try:
            with new_package(out / "package.zip", key) as package:
                counts = package.add_system("crm", "Customer accounts", {}, records())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert counts == {"events": 200_000}
    assert peak < 30 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    # The records alone would take far more than that as Python objects.
    archive = open_package(out / "package.zip", key)
    with archive.open("csv/crm/events.csv") as handle:
        assert sum(1 for _ in handle) == 200_001


# --- end to end, from the demo CRM ----------------------------------------------------------


@pytest.mark.parametrize(
    ("person", "language", "script"),
    [(0, "en", None), (1, "ru", "[А-Яа-яЁё]"), (2, "zh", "[\u4e00-\u9fff]")],
    ids=["en", "ru", "zh"],
)
def test_a_person_exported_from_the_demo_crm_gets_a_readable_package(
    app, out, key, person, language, script
):
    email, full_name, city = DOCUMENTED[person]
    systems = app.extensions["lethe.systems"]
    label = systems.configs["crm"].label
    with (
        app.app_context(),
        new_package(out / "package.zip", key, language) as package,
        systems.open("crm") as connector,
    ):
        expected = {step.table: step.rows for step in connector.plan(Subject(email)).steps}
        counts = package.add_system("crm", label, {}, connector.export(Subject(email)))
    assert counts == expected
    assert set(counts) == {"customers", "orders", "support_tickets"}

    archive = open_package(out / "package.zip", key)
    [customer] = read_json(archive, "json/crm/customers.json")
    assert (customer["email"], customer["full_name"], customer["city"]) == (email, full_name, city)
    header, row = read_csv(archive, "csv/crm/customers.csv")
    cells = dict(zip(header, row, strict=True))
    assert (cells["email"], cells["full_name"], cells["city"]) == (email, full_name, city)
    assert cells["phone"] == "'" + customer["phone"]  # "+353 …" would be a formula

    html = archive.read("index.html").decode("utf-8")
    page = Page(html)
    assert page.lang == language
    assert page.resources == [] and "http" not in html  # opens offline, runs nothing
    assert label in page.plain
    table_rows = {row[0]: row[1] for row in page.rows[1:]}
    assert table_rows == {table: str(count) for table, count in counts.items()}
    assert sorted(page.links) == sorted(
        name for name in archive.namelist() if name.startswith(("csv/", "json/"))
    )
    assert full_name not in html and email not in html
    if script:
        assert re.search(script, page.plain), "the page is not in the person's language"
    else:
        assert "What we hold about you" in page.plain
    # The same summary as a PDF, in the person's language, with the same counts.
    pdf = PdfReader(io.BytesIO(archive.read("summary.pdf")))
    text = " ".join(sheet.extract_text() for sheet in pdf.pages)
    assert label in text
    for table, count in counts.items():
        assert re.search(rf"{table}\s*{count}", text), f"{table} {count} missing from the PDF"
    if script:
        assert re.search(script, text), "the PDF is not in the person's language"
    assert full_name not in text and email not in text
