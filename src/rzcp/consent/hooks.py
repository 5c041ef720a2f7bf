"""What a Consent write must pass besides the store, and what it must note: the region's policy check and
the change counter that tells every process to recompile the patient's consents.

Who may write: the patient (their own consents only: `Consent.patient` is forced to them), or an
administrator recording a consent on the patient's documented request, which the Consent names in
`source[x]` (the signed form, the letter). Member systems never read or write consents (auth.access).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth.principal import Principal
from rzcp.auth.registry import list_members
from rzcp.consent.cache import note_consent_change
from rzcp.consent.compiled import PRIVACY_SCOPE
from rzcp.consent.policy import Policy
from rzcp.consent.repository import consent_subject, patient_reference
from rzcp.consent.service import check_and_prepare_consent
from rzcp.errors import InvalidResource


class ConsentHook:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def prepare(
        self, conn: AsyncConnection, principal: Principal, resource: dict[str, Any]
    ) -> dict[str, Any]:
        """The Consent to store, checked; raises InvalidResource naming the problem.

        Only privacy consents (scope patient-privacy) are the registry's and pass the policy; a Consent of
        another scope (an advance or treatment directive) is clinical data the engine never reads. A patient's
        own writes are always privacy consents."""
        if not principal.is_patient and not _is_privacy(resource):
            return resource
        if principal.is_patient and principal.patient_id:
            patient_ref = f"Patient/{principal.patient_id}"
        else:
            patient_ref = _patient_of(resource)
            if patient_ref is None:
                raise InvalidResource(
                    "Consent.patient must reference the patient (Patient/<id>)",
                    expression=("Consent.patient",),
                )
            if not (resource.get("sourceAttachment") or resource.get("sourceReference")):
                raise InvalidResource(
                    "an administrator records a consent on the patient's documented request: "
                    "give it in Consent.sourceAttachment or Consent.sourceReference",
                    expression=("Consent.source[x]",),
                )
        known = {member.ura for member in await list_members(conn)}
        return check_and_prepare_consent(
            resource, patient_ref=patient_ref, policy=self.policy, known_members=known
        )

    async def written(self, conn: AsyncConnection, content: str, res_id: str) -> None:
        """After a create or update, in the same transaction: the patient's consents changed.

        A Consent stays with the patient it was first written for. Moved to another patient by an update,
        it would stay in force for the first one in every process that compiled their consents (their
        change counter would not move: found by a scale-out review), and the consents that applied to
        either at a past moment could no longer be told apart. Raising here undoes the update."""
        patient_ref = _patient_of(orjson.loads(content))
        first = await consent_subject(conn, res_id)
        if patient_ref is None and first is None:
            return  # never about a patient of the registry (a directive of another scope, say)
        # Naming another patient, or none (a review unbound one so, with its scope changed), moves it.
        if first is not None and (patient_ref is None or first != patient_reference(patient_ref)):
            raise InvalidResource(
                f"Consent.patient cannot change (this consent is {first}'s): withdraw it, and record a new "
                "consent for the other patient",
                expression=("Consent.patient",),
            )
        assert patient_ref is not None  # none with a first patient was refused above
        await note_consent_change(conn, patient_ref, res_id)

    async def deleted(self, conn: AsyncConnection, previous_content: str, res_id: str) -> None:
        await self.written(conn, previous_content, res_id)


def _is_privacy(resource: dict[str, Any]) -> bool:
    codings = (resource.get("scope") or {}).get("coding") or []
    return any(isinstance(c, dict) and c.get("code") == PRIVACY_SCOPE for c in codings)


def _patient_of(resource: dict[str, Any]) -> str | None:
    reference = (resource.get("patient") or {}).get("reference")
    if isinstance(reference, str) and reference.startswith("Patient/") and len(reference) > len("Patient/"):
        return reference
    return None
