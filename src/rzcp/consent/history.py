"""The consents as they stood at a past moment, from the stored versions: for audits after the fact
("which consents applied when this was shared, and what would they decide?")."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from rzcp.consent.compiled import CompiledConsents, compile_consents
from rzcp.consent.engine import decide, naive_utc
from rzcp.consent.model import Decision, Request
from rzcp.consent.policy import Policy
from rzcp.store.resources import Version


def consents_at(versions: Iterable[Version], moment: datetime) -> list[dict[str, Any]]:
    """The version of each Consent that was current at `moment` (its last write at or before it), left
    out when that write was a deletion. Status is not looked at here: see `in_force_at`."""
    at = naive_utc(moment)
    current: dict[str, Version] = {}
    for version in versions:
        if version.res_type != "Consent" or version.last_updated > at:
            continue
        seen = current.get(version.res_id)
        if seen is None or (version.last_updated, version.version_id) >= (seen.last_updated, seen.version_id):
            current[version.res_id] = version
    return [orjson.loads(v.content) for v in current.values() if not v.deleted and v.content]


def in_force_at(versions: Iterable[Version], moment: datetime) -> list[dict[str, Any]]:
    """The consents that applied at `moment`: current then, active, and with a base period covering it."""
    at = naive_utc(moment)
    compiled = compile_consents(consents_at(versions, moment))
    ids = set()
    for consent in compiled.consents:
        period = consent.root.period
        if period is None or period[0] <= at <= period[1]:
            ids.add(consent.consent_id)
    return [c for c in consents_at(versions, moment) if c.get("id") in ids]


def compiled_at(versions: Iterable[Version], moment: datetime) -> CompiledConsents:
    return compile_consents(consents_at(versions, moment))


def decide_at(versions: Iterable[Version], policy: Policy, request: Request) -> Decision:
    """The decision the consents as they stood at `request.moment` give: a replay for audits."""
    return decide(compiled_at(list(versions), request.moment), policy, request)
