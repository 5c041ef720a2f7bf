"""The patient behind a login: the region's Patient for their BSN, from the patient locator (made when no
member announced the BSN yet). Its id, never the BSN, is what patient tokens carry; the BSN itself is kept
only as the locator keeps it, hashed for look-up and encrypted for display."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.exchange.locator import Locator
from rzcp.exchange.secrets import BsnProtector
from rzcp.fhir.search.definitions import SearchRegistry


async def patient_for_bsn(
    conn: AsyncConnection, registry: SearchRegistry, bsn: str, *, bsn_secret: str
) -> str:
    """The regional Patient id of this BSN."""
    return await Locator(BsnProtector(bsn_secret)).regional_patient(conn, registry, bsn)
