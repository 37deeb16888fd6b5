"""bandit finds no high-severity problem in the code we ship (as `make lint` checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bandit_reports_no_high_severity_finding():
    result = subprocess.run(  # noqa: S603 - a fixed command line, no input from outside
        [sys.executable, "-m", "bandit", "-q", "-r", "core", "portal", "admin", "connectors"]
        + ["-lll", "-f", "txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
