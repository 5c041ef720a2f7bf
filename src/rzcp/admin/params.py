"""The refusal of a parameter an endpoint of the console's audit API does not know.

Found by a user trial: `GET /admin/api/audit/events?pateint=Patient/...` (a typo of `patient`) answered
200 with the whole trail, as if that were the selection asked for, and the export handed it over the same
way. A filter that is not applied widens an audit search unnoticed, so every filtering endpoint refuses a
name it does not know with a 400 that names it, as `/fhir/AuditEvent` does in lenient handling too
(README, "The audit trail"). Each endpoint's names live beside the code that reads them
(rzcp.admin.audit_views, rzcp.admin.stats).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from rzcp.errors import BadRequest

#: How much of an unknown name the answer repeats (a body's key can be of any length).
_SHOWN = 64


def known_only(names: Iterable[str], known: Collection[str], endpoint: str) -> None:
    """Raise a 400 naming every parameter of `names` that `endpoint` (its name in the message: "the audit
    search") does not take, with the ones it does: the caller sees which filter was mistyped, and nothing
    is answered that the filters as given did not select."""
    unknown = sorted({name for name in names if name not in known})
    if not unknown:
        return
    shown = ", ".join(repr(name if len(name) <= _SHOWN else f"{name[:_SHOWN]}...") for name in unknown)
    noun = "parameter" if len(unknown) == 1 else "parameters"
    raise BadRequest(
        f"{endpoint} does not know the {noun} {shown}; it takes {', '.join(sorted(known))}",
        code="not-supported",
    )
