"""The audit trail: AuditEvent records in a hash chain, their writer, verification, reading and export.

What the request layer uses:

    from rzcp.audit import AuditFacts, AuditWriter, build_event, facts_from_principal, signer_from_settings

    writer = AuditWriter.from_settings(settings, db)          # one per process, in the lifespan
    await writer.record(facts)                                # or: await writer.append(build_event(facts))
    await writer.aclose()                                     # at shutdown: writes what is waiting

`record`/`append` return once the record is committed and raise `AuditUnavailable` (a 503
ServiceUnavailable) when it could not be: no audit record, no response.
"""

from __future__ import annotations

from rzcp.audit.chain import ChainSigner
from rzcp.audit.events import (
    AuditFacts,
    Decision,
    Practitioner,
    Returned,
    build_event,
    facts_from_principal,
    outcome_for_status,
)
from rzcp.audit.search import AccessEntry, AuditPage, patient_access_log, search_events
from rzcp.audit.verify import VerifyResult, verify_chain
from rzcp.audit.writer import AuditUnavailable, AuditWriter, Receipt
from rzcp.settings import Settings


def signer_from_settings(settings: Settings) -> ChainSigner:
    """The checkpoint key: RZCP_AUDIT_SIGNING_KEY, or in development one derived from RZCP_SECRET_KEY."""
    if settings.audit_signing_key:
        return ChainSigner.from_config(settings.audit_signing_key, settings.audit_verify_keys)
    return ChainSigner.derived(settings.secret_key, settings.audit_verify_keys)


__all__ = [
    "AccessEntry",
    "AuditFacts",
    "AuditPage",
    "AuditUnavailable",
    "AuditWriter",
    "ChainSigner",
    "Decision",
    "Practitioner",
    "Receipt",
    "Returned",
    "VerifyResult",
    "build_event",
    "facts_from_principal",
    "outcome_for_status",
    "patient_access_log",
    "search_events",
    "signer_from_settings",
    "verify_chain",
]
