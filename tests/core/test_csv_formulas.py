"""Every CSV we hand out defuses cells a spreadsheet would run as formulas (= + - @ tab CR).

The yearly report and the export package have their own tests (test_metrics,
test_export_package); here the audit log download and the act of destruction.
"""

from __future__ import annotations

import csv
import io

from core.audit import record_event
from core.destruction_act import act_csv
from core.extensions import db
from core.models import Role
from tests.admin.test_dashboard import sign_in_as

STARTS = ("=", "+", "-", "@", "\t", "\r")


def _live_cells(text: str) -> list[str]:
    """Return the cells of CSV ``text`` that a spreadsheet would read as a formula."""
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return [cell for row in rows[1:] for cell in row if cell.startswith(STARTS)]


def test_the_audit_log_download_defuses_every_formula_start(app, client):
    with app.app_context():
        for start in STARTS:
            record_event(db.session, f"{start}cmd|' /C calc'!A0", f"{start}act", f"{start}ref")
        db.session.commit()
    sign_in_as(app, client, Role.AUDITOR)
    response = client.get("/admin/audit/log.csv")
    assert response.status_code == 200
    assert _live_cells(response.text) == []
    assert response.text.count("'=cmd") == 1 and response.text.count("'\tcmd") == 1


def test_the_act_of_destruction_csv_defuses_every_formula_start():
    for start in STARTS:
        step = {"table": f"{start}t", "data": f"{start}d", "method": f"{start}m", "rows": -3}
        system = {
            "label": f"{start}l",
            "system": f"{start}s",
            "finished_at": None,
            "performed_by": f"{start}p",
            "steps": [step],
        }
        entry = {
            "reference": f"{start}r",
            "subject_hash": f"{start}h",
            "reason": f"{start}why",
            "legal_basis": f"{start}basis",
            "destroyed_at": f"{start}when",
            "approved_by": f"{start}who",
            "systems": [system],
        }
        text = act_csv({"number": f"{start}1", "entries": [entry]})
        assert _live_cells(text) == ["-3"]  # a number we wrote, not text from anyone
