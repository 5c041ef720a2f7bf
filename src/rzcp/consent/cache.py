"""Compiled consents held in memory per process, invalidated through the database.

Every Consent write bumps the patient's row in `consent_changes` in the same transaction
(`note_consent_change`). Before each decision a process reads that one row (`rules_for`): when the
version moved since it compiled the patient's consents, it reads and compiles them again. A revoked
permission therefore stops the next request in every process, at the cost of one primary-key read.

The counter is read before the consents: a write landing in between makes the process compile the
newer consents under the older version, which only costs one more recompile on the next request; the
other order could keep stale rules under a current version.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.consent.compiled import CompiledConsents, compile_consents
from rzcp.consent.repository import bump_version, change_version, current_consents, patient_reference


@dataclass
class ConsentCache:
    """One process's compiled consents: patient reference -> (counter version, compiled rules)."""

    max_patients: int = 100_000
    _entries: OrderedDict[str, tuple[int, CompiledConsents]] = field(default_factory=OrderedDict)
    compiles: int = 0
    hits: int = 0

    def get(self, patient_ref: str, version: int) -> CompiledConsents | None:
        entry = self._entries.get(patient_ref)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(patient_ref)
        return entry[1]

    def put(self, patient_ref: str, version: int, compiled: CompiledConsents) -> None:
        self._entries[patient_ref] = (version, compiled)
        self._entries.move_to_end(patient_ref)
        while len(self._entries) > self.max_patients:
            self._entries.popitem(last=False)

    def forget(self, patient_ref: str) -> None:
        self._entries.pop(patient_reference(patient_ref), None)

    def __len__(self) -> int:
        return len(self._entries)


async def note_consent_change(conn: AsyncConnection, patient_ref: str, consent_id: str | None = None) -> int:
    """Call in the transaction that writes (creates, updates, deletes) a Consent of the patient; returns
    the patient's new change version. `consent_id` keeps the Consent findable for audits after it is
    deleted."""
    return await bump_version(conn, patient_ref, consent_id)


async def rules_for(
    conn: AsyncConnection, cache: ConsentCache, patient_ref: str, version: int | None = None
) -> CompiledConsents:
    """The patient's compiled consents, current as of this transaction: one indexed read when nothing
    changed, a read and compile of the patient's Consents when something did. `version`: the counter as
    the caller just read it on `conn` (`CHANGE_VERSION_COLUMN` in its own statement), so it is not read
    twice."""
    ref = patient_reference(patient_ref)
    if version is None:
        version = await change_version(conn, ref)
    compiled = cache.get(ref, version)
    if compiled is not None:
        cache.hits += 1
        return compiled
    compiled = compile_consents(await current_consents(conn, ref))
    cache.compiles += 1
    cache.put(ref, version, compiled)
    return compiled
