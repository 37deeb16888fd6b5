"""Compressed bombs sent to the two uploads (bulk-erasure CSV, proof PDF) are never unpacked.

Neither upload accepts an archive: a ZIP is refused by its first bytes.  A PDF is parsed,
and its streams are compressed by design, so a PDF whose streams inflate to hundreds of
megabytes must be answered with bounded memory (pypdf stops inflating at 75 MB a stream).
"""

from __future__ import annotations

import functools
import io
import tracemalloc
import zipfile
import zlib

from tests.admin.test_bulk import stored
from tests.admin.test_bulk import upload as upload_csv
from tests.flows import login
from tests.portal.test_proof_check import upload as upload_pdf
from tests.portal.test_proof_check import words

INFLATED = 256 * 1024 * 1024  # what each bomb would take in memory once unpacked


def _deflated_zeros(size: int) -> bytes:
    """Return ``size`` zero bytes deflated, without ever holding them all."""
    packer, chunk, out = zlib.compressobj(9), bytes(1024 * 1024), []
    for _ in range(size // len(chunk)):
        out.append(packer.compress(chunk))
    out.append(packer.flush())
    return b"".join(out)


@functools.cache
def _zip_bomb() -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("list.csv", "w", force_zip64=True) as member,
    ):
        chunk = bytes(1024 * 1024)
        for _ in range(INFLATED // len(chunk)):
            member.write(chunk)
    return out.getvalue()


def _pdf_bomb() -> bytes:
    """Return a PDF whose one stream, its page and its proof.json, inflates to 400 MB."""
    stream = _deflated_zeros(400 * 1024 * 1024)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names "
        b"[(proof.json) 4 0 R (signature.json) 4 0 R] >> >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R >>",
        b"<< /Type /Filespec /F (proof.json) /EF << /F 5 0 R >> >>",
        b"<< /Type /EmbeddedFile /Filter /FlateDecode /Length %d >>\nstream\n" % len(stream)
        + stream
        + b"\nendstream",
    ]
    out, offsets = io.BytesIO(b"%PDF-1.7\n"), []
    out.seek(0, io.SEEK_END)
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer << /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def test_a_zip_bomb_is_refused_by_the_bulk_upload_unopened(app, client):
    bomb = _zip_bomb()
    # Under 500 kB on the wire (the test client spools larger bodies to a file), 256 MB inside.
    assert len(bomb) < 500 * 1024
    login(client)
    tracemalloc.start()
    try:
        response = upload_csv(client, bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 400
    assert "not a CSV file" in response.text
    assert peak < 64 * 1024 * 1024
    assert stored(app) == (0, 0)


def test_a_zip_bomb_is_refused_by_the_proof_check_unopened(app):
    response = upload_pdf(app, _zip_bomb(), name="proof.pdf")
    assert response.status_code == 400
    assert "This file is not a PDF" in words(response.text)


def test_a_pdf_whose_streams_inflate_to_hundreds_of_megabytes_is_checked_in_bounded_memory(app):
    bomb = _pdf_bomb()
    assert len(bomb) < 500 * 1024  # the test client spools larger bodies to a file
    tracemalloc.start()
    try:
        response = upload_pdf(app, bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    assert "not authentic" in words(response.text).lower() or "cannot be read" in words(
        response.text
    )
    # pypdf inflates at most 75 MB of a stream: the peak stays far below the 400 MB inside.
    assert peak < 200 * 1024 * 1024, f"{peak // 2**20} MB held while checking a PDF bomb"
