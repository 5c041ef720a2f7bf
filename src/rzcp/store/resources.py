"""The versioned resource store: create, read, vread, update, delete and history over plain dicts.

Every write adds a row to `resource_versions` and never changes an old one, so history and vread see each
version as it was. Version numbers are claimed with a compare-and-set on `resources.version_id`, so two
writers racing for the same resource cannot both win, in one process or many. The caller owns the
transaction; the store only executes statements in it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Row, Select, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.errors import Gone, NotFound, PreconditionFailed
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.store.indexer import index_resource
from rzcp.store.tables import INDEX_TABLES, resource_versions, resources

#: Each index table once, in the order its rows are written.
_INDEX_TABLES = list(dict.fromkeys(INDEX_TABLES.values()))


@dataclass(frozen=True)
class Version:
    """One stored version as it goes on the wire: `content` is the JSON text, empty for a deletion."""

    res_type: str
    res_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: str
    method: str = "update"

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Naive UTC, as the tables store it; microseconds kept so versions order within one second."""
    return datetime.now(UTC).replace(tzinfo=None)


def instant(moment: datetime) -> str:
    """A FHIR instant for a naive-UTC datetime."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _stamp(resource: dict[str, Any], res_id: str, version_id: int, moment: datetime) -> str:
    """The server's own id and meta, placed first as FHIR JSON writers do; returns the wire text."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = instant(moment)
    stamped = {"resourceType": resource["resourceType"], "id": res_id, "meta": meta}
    stamped.update((k, v) for k, v in resource.items() if k not in stamped)
    return orjson.dumps(stamped).decode()


#: Built once: constructing a select() costs about as much as running it (`read` is the hottest statement).
READ_STATEMENT = select(
    resources.c.version_id, resources.c.last_updated, resources.c.deleted, resources.c.content
).where(resources.c.res_type == bindparam("res_type"), resources.c.res_id == bindparam("res_id"))

#: Awaited with the row `read` found (None when none) before it concludes anything from it.
RowCheck = Callable[[Row[Any] | None], Awaitable[None]]


class ResourceStore:
    def __init__(self, conn: AsyncConnection, registry: SearchRegistry) -> None:
        self.conn = conn
        self.registry = registry

    async def create(self, resource: dict[str, Any], *, res_id: str | None = None) -> Version:
        """Store a new resource under a server-assigned id (`res_id` only for trusted loaders)."""
        res_type = resource["resourceType"]
        res_id = res_id or new_id()
        moment = utcnow()
        content = _stamp(resource, res_id, 1, moment)
        pk = (
            await self.conn.execute(
                insert(resources)
                .values(
                    res_type=res_type,
                    res_id=res_id,
                    version_id=1,
                    last_updated=moment,
                    deleted=False,
                    content=content,
                )
                .returning(resources.c.pk)
            )
        ).scalar_one()
        await self._add_version(pk, res_type, 1, moment, "create", content)
        await self._reindex(pk, res_type, orjson.loads(content), fresh=True)
        return Version(res_type, res_id, 1, moment, False, content, "create")

    async def read(
        self,
        res_type: str,
        res_id: str,
        *,
        statement: Select[Any] = READ_STATEMENT,
        params: dict[str, Any] | None = None,
        check: RowCheck | None = None,
    ) -> Version:
        """`statement`: READ_STATEMENT with more columns (and their `params`) that `check` looks at first,
        so a check the request needs anyway costs no round trip of its own (fhir.deps.read_checked)."""
        row = (
            await self.conn.execute(statement, {"res_type": res_type, "res_id": res_id, **(params or {})})
        ).first()
        if check is not None:
            await check(row)
        if row is None:
            raise NotFound(f"{res_type}/{res_id} is not known")
        version = Version(res_type, res_id, row.version_id, row.last_updated, row.deleted, row.content)
        if version.deleted:
            raise Gone(f"{res_type}/{res_id} was deleted", headers={"ETag": version.etag})
        return version

    async def vread(self, res_type: str, res_id: str, version_id: int) -> Version:
        row = (
            await self.conn.execute(
                select(
                    resource_versions.c.last_updated,
                    resource_versions.c.deleted,
                    resource_versions.c.content,
                    resource_versions.c.method,
                )
                .join(resources, resources.c.pk == resource_versions.c.res_pk)
                .where(
                    resources.c.res_type == res_type,
                    resources.c.res_id == res_id,
                    resource_versions.c.version_id == version_id,
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"{res_type}/{res_id} has no version {version_id}")
        version = Version(
            res_type, res_id, version_id, row.last_updated, row.deleted, row.content, row.method
        )
        if version.deleted:
            raise Gone(
                f"version {version_id} of {res_type}/{res_id} is a deletion", headers={"ETag": version.etag}
            )
        return version

    async def update(
        self, resource: dict[str, Any], *, if_match: int | None = None, allow_create: bool = False
    ) -> tuple[Version, bool]:
        """Write a new version; returns it and whether the resource was created by this call.

        With `if_match`, the write succeeds only if that is still the current version (412 otherwise);
        without it, the write goes on top of whatever version is current when it lands.
        """
        res_type, res_id = resource["resourceType"], resource["id"]
        while True:
            current = (
                await self.conn.execute(
                    select(resources.c.pk, resources.c.version_id).where(
                        resources.c.res_type == res_type, resources.c.res_id == res_id
                    )
                )
            ).first()
            if current is None:
                if if_match is not None:
                    raise PreconditionFailed(
                        f"{res_type}/{res_id} does not exist, so version {if_match} is not current"
                    )
                if not allow_create:
                    raise NotFound(
                        f"{res_type}/{res_id} is not known; ids are assigned by the server: use POST"
                    )
                return await self.create(resource, res_id=res_id), True
            if if_match is not None and current.version_id != if_match:
                raise PreconditionFailed(
                    f"version {if_match} of {res_type}/{res_id} is not the current one ({current.version_id})"
                )
            version = await self._write_version(current.pk, res_type, res_id, current.version_id, resource)
            if version is not None:
                return version, False
            if if_match is not None:
                raise PreconditionFailed(f"{res_type}/{res_id} was changed by another request; read it again")

    async def delete(self, res_type: str, res_id: str) -> Version | None:
        """Mark the resource deleted as a new version; None when it already was."""
        while True:
            current = (
                await self.conn.execute(
                    select(resources.c.pk, resources.c.version_id, resources.c.deleted).where(
                        resources.c.res_type == res_type, resources.c.res_id == res_id
                    )
                )
            ).first()
            if current is None:
                raise NotFound(f"{res_type}/{res_id} is not known")
            if current.deleted:
                return None
            version = await self._write_version(current.pk, res_type, res_id, current.version_id, None)
            if version is not None:
                return version

    async def history(
        self,
        res_type: str | None,
        res_id: str | None,
        *,
        since: datetime | None,
        at_or_before: datetime | None,
        count: int,
        offset: int,
    ) -> tuple[list[Version], bool]:
        """Versions newest first, for one resource, one type, or (both None) the whole system."""
        query = select(
            resources.c.res_type,
            resources.c.res_id,
            resource_versions.c.version_id,
            resource_versions.c.last_updated,
            resource_versions.c.deleted,
            resource_versions.c.content,
            resource_versions.c.method,
        ).join(resources, resources.c.pk == resource_versions.c.res_pk)
        if res_type is not None:
            query = query.where(resource_versions.c.res_type == res_type)
        if res_id is not None:
            exists = (
                await self.conn.execute(
                    select(func.count())
                    .select_from(resources)
                    .where(resources.c.res_type == res_type, resources.c.res_id == res_id)
                )
            ).scalar_one()
            if not exists:
                raise NotFound(f"{res_type}/{res_id} is not known")
            query = query.where(resources.c.res_id == res_id)
        if since is not None:
            query = query.where(resource_versions.c.last_updated >= since)
        if at_or_before is not None:
            query = query.where(resource_versions.c.last_updated <= at_or_before)
        query = (
            query.order_by(resource_versions.c.last_updated.desc(), resource_versions.c.pk.desc())
            .limit(count + 1)
            .offset(offset)
        )
        rows = (await self.conn.execute(query)).all()
        versions = [
            Version(r.res_type, r.res_id, r.version_id, r.last_updated, r.deleted, r.content, r.method)
            for r in rows[:count]
        ]
        return versions, len(rows) > count

    async def _write_version(
        self, pk: int, res_type: str, res_id: str, previous: int, resource: dict[str, Any] | None
    ) -> Version | None:
        """Compare-and-set the next version; None when another writer got there first."""
        moment = utcnow()
        version_id = previous + 1
        deleted = resource is None
        content = "" if resource is None else _stamp(resource, res_id, version_id, moment)
        claimed = await self.conn.execute(
            update(resources)
            .where(resources.c.pk == pk, resources.c.version_id == previous)
            .values(version_id=version_id, last_updated=moment, deleted=deleted, content=content)
        )
        if claimed.rowcount != 1:
            return None
        method = "delete" if deleted else "update"
        await self._add_version(pk, res_type, version_id, moment, method, content)
        await self._reindex(pk, res_type, None if resource is None else orjson.loads(content))
        return Version(res_type, res_id, version_id, moment, deleted, content, method)

    async def _add_version(
        self, pk: int, res_type: str, version_id: int, moment: datetime, method: str, content: str
    ) -> None:
        await self.conn.execute(
            insert(resource_versions).values(
                res_pk=pk,
                res_type=res_type,
                version_id=version_id,
                last_updated=moment,
                method=method,
                deleted=method == "delete",
                content=content,
            )
        )

    async def _reindex(
        self, pk: int, res_type: str, resource: dict[str, Any] | None, *, fresh: bool = False
    ) -> None:
        """Replace the index rows of a resource with those of its new version (none once deleted)."""
        rows = index_resource(resource, self.registry) if resource is not None else {}
        for table in _INDEX_TABLES:
            if not fresh:
                await self.conn.execute(delete(table).where(table.c.res_pk == pk))
            table_rows: Sequence[dict[str, Any]] = rows.get(table.name, [])
            if table_rows:
                await self.conn.execute(insert(table), [{**row, "res_pk": pk} for row in table_rows])
