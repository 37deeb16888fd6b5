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

from core.demo import SAMPLE_REFERENCE, sample_proof_content  # noqa: E402
from core.proofs import render_proof_pdf  # noqa: E402
from core.signing import load_or_create_signing_key  # noqa: E402

VERIFY_URL = f"http://127.0.0.1:5000/proofs/verify?reference={SAMPLE_REFERENCE}"


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
            pdf.write_bytes(
                render_proof_pdf(
                    sample_proof_content(), key, verify_url=VERIFY_URL, language=language
                )
            )
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
