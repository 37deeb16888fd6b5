"""Proof of deletion: how long rendering and signing one PDF takes, in each language.

The content is a typical erasure across three systems; the key is a fresh Ed25519 key.
Each language is rendered once untimed (fonts and templates load), then --runs times.
Besides the wall time, the CPU time this process spent is given: on a busy machine the
wall time also counts the time other processes held the CPU.

    .venv/bin/python -m bench.proof_pdf --runs 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import common
from core.demo import sample_proof_content
from core.proofs import render_proof_pdf, verify_proof_pdf
from core.signing import load_or_create_signing_key

LANGUAGES = ("en", "ru", "zh")


def sample_content() -> dict:
    """Return the content of a proof: the demo's sample, with a third system added."""
    content = sample_proof_content()
    crm = content["systems"][0]
    content["systems"].append({**crm, "system": "shop", "label": "Web shop"})
    return content


def run(args: argparse.Namespace) -> list[dict]:
    """Time the proofs; return the result rows."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        key = load_or_create_signing_key(Path(folder) / "signing.pem")
        content = sample_content()
        for language in LANGUAGES:
            pdf = render_proof_pdf(
                content, key, verify_url="https://lethe.example/verify", language=language
            )
            verify_proof_pdf(pdf, {key.key_id: key.public_key})
            times, cpu_times = [], []
            for _ in range(args.runs):
                cpu_start = time.process_time()
                times.append(
                    common.timed(
                        lambda lang=language: render_proof_pdf(
                            content, key, verify_url="https://lethe.example/verify", language=lang
                        )
                    )
                )
                cpu_times.append(time.process_time() - cpu_start)
            ms, cpu_ms = common.median(times) * 1000, common.median(cpu_times) * 1000
            print(
                f"proof {language}: median {ms:.0f} ms ({cpu_ms:.0f} ms of CPU),"
                f" {len(pdf):,} bytes",
                flush=True,
            )
            rows.append(
                {
                    "benchmark": f"proof PDF ({language})",
                    "database": "—",
                    "measure": f"{ms:.0f} ms per proof ({cpu_ms:.0f} ms of CPU),"
                    f" {60_000 / ms:.0f} proofs per minute on one core; {len(pdf) // 1024} KiB",
                    "value": f"{ms:.0f} ms",
                    "target": "< 300 ms",
                    "met": ms < 300,
                    "runs": f"median of {args.runs} runs",
                }
            )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this benchmark's options to ``parser``."""
    parser.add_argument("--runs", type=int, default=20, help="proofs rendered per language")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, run, print the result rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    for row in run(parser.parse_args(argv)):
        print(row)


if __name__ == "__main__":
    main()
