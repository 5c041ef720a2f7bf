"""What a receiver's answer to `$process-message` says, beyond its HTTP status.

A receiver that processes a message at once answers 200 with a response message whose MessageHeader's
`response.code` is `ok`, `transient-error` ("wait and try again") or `fatal-error` ("no point in re-sending
without change"), its reasons in an OperationOutcome (R4, Messaging, ValueSet response-code); one that
refuses it at the HTTP level answers 4xx with an OperationOutcome. Either way the sender's Task should carry
the receiver's own words, or the sender's staff cannot tell what to correct. The answer is read with no
assumption about its shape: whatever a receiver sends, these functions never raise.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

#: How much of a member's reason is kept (the sender's Task, a pull's warning).
REASON_LIMIT = 300

#: Unicode categories that print nothing, or something other than they store: controls, format characters
#: (bidi overrides, zero-width ones), surrogates, private use, unassigned, line and paragraph separators.
_UNSEEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SEVERITY_ORDER = {"fatal": 0, "error": 1, "warning": 2, "information": 3}

ResponseCode = Literal["ok", "transient-error", "fatal-error"]


def response_code(reply: Any) -> ResponseCode | None:
    """The response message's code (its MessageHeader's `response.code`), when the reply is one."""
    header = _first_resource(reply, "MessageHeader")
    response = header.get("response") if header else None
    code = response.get("code") if isinstance(response, dict) else None
    return code if code in ("ok", "transient-error", "fatal-error") else None


def stated_reason(reply: Any) -> str | None:
    """A member's own words for what went wrong: the most severe readable issue of its
    OperationOutcome (the reply itself, or the one in its response message), on one line, shortened."""
    outcome = reply if _is_type(reply, "OperationOutcome") else _first_resource(reply, "OperationOutcome")
    if outcome is None:
        return None
    readable = [(_severity_rank(i), text) for i in objects(outcome.get("issue")) if (text := _issue_text(i))]
    if not readable:
        return None
    text = min(readable, key=lambda ranked: ranked[0])[1]  # the first of the most severe
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3].rstrip() + "..."


def _shown(text: str) -> str:
    """The text as it reads: compatibility forms folded (full-width digits are digits), and every
    character that prints nothing or shows otherwise than it stores made a blank, so what the sender's
    staff read is what was stored (a review: a right-to-left override made "ok" read as something else)."""
    folded = unicodedata.normalize("NFKC", text)
    return "".join(" " if unicodedata.category(c) in _UNSEEN else c for c in folded)


def _severity_rank(issue: dict[str, Any]) -> int:
    severity = issue.get("severity")
    return _SEVERITY_ORDER.get(severity, 4) if isinstance(severity, str) else 4


def _issue_text(issue: dict[str, Any]) -> str | None:
    """The issue's first text that still says something once cleaned (`_shown`), on one line: a text of
    invisible characters only is no reason (it left the Task an empty one)."""
    details = issue.get("details")
    candidates = [issue.get("diagnostics")]
    if isinstance(details, dict):
        candidates.append(details.get("text"))
        candidates += [c.get("display") for c in objects(details.get("coding"))]
    shown = (" ".join(_shown(c).split()) for c in candidates if isinstance(c, str))
    return next((text for text in shown if text), None)


def _first_resource(bundle: Any, resource_type: str) -> dict[str, Any] | None:
    if not _is_type(bundle, "Bundle"):
        return None
    for entry in objects(bundle.get("entry")):
        resource = entry.get("resource")
        if _is_type(resource, resource_type):
            return resource
    return None


def _is_type(value: Any, resource_type: str) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == resource_type


def objects(value: Any) -> list[dict[str, Any]]:
    """The JSON objects in what FHIR says is a list of them; none when it is no list. A member's answer is
    read with no assumption about its shape: the adapter never raises on what a member sends."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
