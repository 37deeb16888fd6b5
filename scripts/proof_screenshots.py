"""Render the first page of a sample proof of deletion in each language as a PNG.

    .venv/bin/python scripts/proof_screenshots.py [FOLDER]

writes ``proof-en.png``, ``proof-ru.png`` and ``proof-zh.png`` into FOLDER (default
``docs/screenshots/``) with poppler's ``pdftoppm``.  The proof is signed with a throwaway key.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.proofs import render_proof_pdf  # noqa: E402
from core.signing import load_or_create_signing_key  # noqa: E402

REFERENCE = "DSR-7K3F9Q2M"
VERIFY_URL = f"http://127.0.0.1:5000/proofs/verify?reference={REFERENCE}"


def _step(table: str, action: str, rows: int, **more: object) -> dict:
    step = {"table": table, "action": action, "rows": rows, "columns": {}, "ground": None}
    return {**step, "note": "", "via": "", **more}


SAMPLE = {
    "format": "lethe-proof/1",
    "controller": "Example Ltd",
    "reference": REFERENCE,
    "subject_hash": "3f1c9a0e5b7d2c4f8e6a1b3d5c7e9f0a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e",
    "request_type": "erasure",
    "jurisdiction": "gdpr-eu",
    "legal_basis": "GDPR Art. 17",
    "received_on": "2026-03-05",
    "due_on": "2026-04-07",
    "extended_due_on": None,
    "completed_at": "2026-03-09T10:11:12+00:00",
    "on_time": True,
    "approved_by": "dpo@example.com",
    "systems": [
        {
            "system": "crm",
            "label": "Customer accounts",
            "connector": "sql",
            "connector_version": "1",
            "outcome": "completed",
            "steps": [
                _step("support_tickets", "delete", 3),
                _step("orders", "retain", 2, ground="art17-3-b", note="invoices: 10 years"),
                _step(
                    "customers",
                    "anonymise",
                    1,
                    columns={"email": "placeholder", "full_name": "null", "city": "null"},
                ),
            ],
            "rows_affected": {"support_tickets": 3, "customers": 1},
            "verification": {"clean": True, "remaining": {"support_tickets": 0, "customers": 0}},
            "message": "",
        },
        {
            "system": "newsletter",
            "label": "Newsletter",
            "connector": "redis",
            "connector_version": "1",
            "outcome": "not_found",
            "steps": [_step("subscriber:*", "delete", 0)],
            "rows_affected": {},
            "verification": {"clean": True, "remaining": {}},
            "message": "",
        },
    ],
    "partial": False,
    "audit_checkpoint": {"position": 42, "hash": "9c2e" * 16},
    "issued_at": "2026-03-09T10:11:13+00:00",
}


def main(folder: Path) -> None:
    """Write the PNG of each language's first page and print their sizes."""
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        sys.exit("pdftoppm is not installed (Debian package poppler-utils)")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        key = load_or_create_signing_key(Path(scratch) / "sample-key.pem")
        for language in ("en", "ru", "zh"):
            pdf = Path(scratch) / f"proof-{language}.pdf"
            pdf.write_bytes(render_proof_pdf(SAMPLE, key, verify_url=VERIFY_URL, language=language))
            target = folder / f"proof-{language}"
            subprocess.run(  # noqa: S603  (our own arguments: a PDF we just wrote)
                [pdftoppm, "-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile", pdf, target],
                check=True,
            )
            png = target.with_suffix(".png")
            print(
                f"{png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}  "
                f"{png.stat().st_size // 1024} kB"
            )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
