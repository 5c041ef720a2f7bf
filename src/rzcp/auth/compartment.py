"""A patient token reaches only its own patient's compartment: their Patient resource and the resources
whose `patient` search parameter points at it (Consent, AuditEvent, ...). Enforced with the search index,
so reads, searches (a forced criterion), `_include`/`_revinclude` (filtered) and writes (checked inside the
write's transaction, rolled back when the result lies outside) all apply the same rule.

What lies outside answers as if it did not exist (404, or absent from a Bundle): the existence of another
patient's data is itself private.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.errors import Forbidden, NotFound
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.fhir.search.parser import MAX_OR_VALUES, parse_search
from rzcp.store.search_sql import execute_search


def compartment_param(registry: SearchRegistry, res_type: str) -> str | None:
    """The search parameter that ties `res_type` to a patient, or None when it is no patient data."""
    if res_type == "Patient":
        return "_id"
    param = registry.params_for(res_type).get("patient")
    return "patient" if param is not None and param.supported else None


@dataclass(frozen=True)
class PatientCompartment:
    patient_id: str
    registry: SearchRegistry

    def criteria(self, res_type: str) -> list[tuple[str, str]]:
        """The search criteria that confine a search on `res_type` to this patient."""
        param = compartment_param(self.registry, res_type)
        if param is None:
            return [("_id", "-")]  # matches nothing: not patient data
        return [("_id", self.patient_id)] if param == "_id" else [(param, f"Patient/{self.patient_id}")]

    async def members(self, conn: AsyncConnection, res_type: str, ids: Iterable[str]) -> set[str]:
        """Which of `ids` (of `res_type`) are in the compartment."""
        wanted = sorted(set(ids))
        found: set[str] = set()
        if compartment_param(self.registry, res_type) is None:
            return found
        for start in range(0, len(wanted), MAX_OR_VALUES):
            chunk = wanted[start : start + MAX_OR_VALUES]
            pairs = [("_id", ",".join(chunk)), *self.criteria(res_type), ("_total", "none")]
            query = parse_search(
                res_type, pairs, self.registry, strict=True, default_count=len(chunk), max_count=len(chunk)
            )
            result = await execute_search(conn, query, offset=0)
            found.update(r.res_id for r in result.matches)
        return found

    async def check(self, conn: AsyncConnection, res_type: str, res_id: str) -> None:
        """404, as for a resource that does not exist, unless the resource is this patient's."""
        if res_id not in await self.members(conn, res_type, [res_id]):
            raise NotFound(f"{res_type}/{res_id} is not known")

    async def visible(self, conn: AsyncConnection, rows: Sequence[Any]) -> list[Any]:
        """The rows (with res_type and res_id) that are this patient's, in their order."""
        by_type: dict[str, set[str]] = {}
        for row in rows:
            by_type.setdefault(row.res_type, set()).add(row.res_id)
        allowed = {t: await self.members(conn, t, ids) for t, ids in by_type.items()}
        return [row for row in rows if row.res_id in allowed[row.res_type]]

    async def check_written(self, conn: AsyncConnection, res_type: str, res_id: str) -> None:
        """After a write in the caller's transaction: refuse (and so roll back) what left the compartment."""
        if res_id not in await self.members(conn, res_type, [res_id]):
            raise Forbidden(f"a patient may write only their own {res_type} resources")
