"""What an audit record was, for people: its kind (pull, push, read ...), whether it was a denial, which
members the exchange called for it and which of them failed. Read from the AuditEvent alone, so the
console's lists and the charts' counts agree with each other and with the trail."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from rzcp.audit.events import CONSOLE, EMERGENCY_PURPOSE, ENTITY_TYPE, RESOURCE_TYPES, RZCP, first_code

#: "source 01234567 failed; source 07654321 timeout" (a pull); "retry to 01234567, attempt 2: ..." (a push).
_PULL_FAILURE = re.compile(r"source (\S+) (?:failed|timeout)")
_DELIVERY_FAILURE = re.compile(r"^(?:retry|failed) to (\d{8})\b")

PUSH_OPERATION = "process-message"
DELIVERY_OPERATION = "process-message-delivery"
_OUTCOMES = {"0": "success", "4": "denied", "8": "failed", "12": "failed"}


@dataclass(frozen=True)
class Classified:
    #: pull | push | delivery | console | token | read | search | write | operation
    kind: str
    #: success | denied | failed
    outcome: str
    #: Refused: a 4xx answer, or a pull that every consent decision denied.
    denied: bool
    emergency: bool
    #: Members the exchange asked (consent permitted) and those of them that failed or timed out.
    called: tuple[str, ...]
    failed: tuple[str, ...]
    #: Short text for a list: resource types and the names of the query's parameters (never their
    #: values: a query may carry a BSN).
    what: str
    #: How many resources the answer carried (a pull, a search, a read): 0 when nothing was shared.
    returned: int = 0


def outcome_word(code: str) -> str:
    return _OUTCOMES.get(code, "failed")


def classify(event: Mapping[str, Any], *, describe: bool = True) -> Classified:
    """`describe`: fill `what` (the charts' counting leaves it out: it costs a third of the time)."""
    subtypes = event.get("subtype") or ()
    interaction = subtypes[0].get("code") if subtypes else None
    kind_code = first_code(event.get("type"))
    operation = console = None
    decisions: list[bool] = []
    called: dict[str, None] = {}
    types: dict[str, None] = {}
    params: list[str] = []
    returned = 0
    for entity in event.get("entity") or ():
        etype = entity.get("type") or {}
        details = [(d.get("type"), d.get("valueString")) for d in entity.get("detail") or ()]
        role = first_code(entity.get("role"))
        if etype.get("system") == RZCP and etype.get("code") == "consent-decision":
            permit = ("decision", "permit") in details
            decisions.append(permit)
            source = next((v for k, v in details if k == "source"), None)
            if permit and source:
                called[source] = None
        elif etype.get("system") == RZCP and etype.get("code") == CONSOLE:
            console = entity.get("description")
        elif etype.get("system") == ENTITY_TYPE and role in ("4", "24"):
            types.update((v, None) for k, v in details if k == "resourceType" and v)
            if role == "4" and entity.get("description"):
                operation = entity["description"]
            if describe and role == "24" and entity.get("query"):
                params.extend(_param_names(entity["query"]))
        elif etype.get("system") == RESOURCE_TYPES and entity.get("description") == "returned":
            types[etype.get("code")] = None
            count = next((v for k, v in details if k == "count"), None)
            returned += int(count) if count and count.isdigit() else 0
    outcome = event.get("outcome", "0")
    desc = event.get("outcomeDesc") or ""
    if kind_code == CONSOLE:
        kind = "console"
    elif operation == PUSH_OPERATION:
        kind = "push"
    elif operation == DELIVERY_OPERATION:
        kind = "delivery"
    elif decisions:
        kind = "pull"
    elif operation == "token":
        kind = "token"
    elif interaction and interaction.startswith("search"):
        kind = "search"
    elif event.get("action") in ("C", "U", "D"):
        kind = "write"
    elif event.get("action") == "R":
        kind = "read"
    else:
        kind = "operation"
    failed = list(dict.fromkeys(_PULL_FAILURE.findall(desc)))
    if kind == "delivery" and (match := _DELIVERY_FAILURE.match(desc)):
        failed.append(match.group(1))
    purposes = event.get("purposeOfEvent") or ()
    what = console or ", ".join(t for t in types if t)
    if params:
        what += (": " if what else "") + ", ".join(dict.fromkeys(params))
    if operation and kind not in ("console",):
        what = f"${operation}" + (f" {what}" if what else "")
    return Classified(
        kind=kind,
        outcome=outcome_word(outcome),
        denied=outcome == "4" or (kind in ("pull", "push") and bool(decisions) and not any(decisions)),
        emergency=bool(purposes) and first_code(purposes[0]) == EMERGENCY_PURPOSE,
        called=tuple(called),
        failed=tuple(failed),
        what=what[:300],
        returned=returned,
    )


def _param_names(query: str) -> list[str]:
    try:
        text = base64.b64decode(query).decode("utf-8", "replace")
    except ValueError:
        return []
    return [name for name, _ in parse_qsl(text, keep_blank_values=True)]
