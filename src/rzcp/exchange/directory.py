"""The member directory: members as Organization with their Endpoint (mCSD-style), and the members as the
exchange calls them (`adapters.Member`).

One source of truth: the auth registry's `auth_members` row (URA, name, category, endpoint URL, adapter,
status), with the exchange's own details beside it in `exchange_endpoints` (AGB, timeout, capacity, how
the gateway authenticates to the member). The Organization (`Organization/ura-<URA>`) and Endpoint
(`Endpoint/ep-<URA>`) resources that members search at /fhir are projections of those rows, rewritten by
`project` in the transaction that changes them; nobody edits them by hand. The Endpoint never carries the
member's secret, only its kind. Plain functions over a connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from joserfc.jwk import import_key
from sqlalchemy import Row, Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth import registry
from rzcp.auth.tables import members
from rzcp.errors import BadRequest, Gone, NotFound
from rzcp.exchange.adapters import MAX_PULLS_LIMIT, AuthKind, Member, MemberAuth
from rzcp.exchange.secrets import SecretBox
from rzcp.exchange.tables import endpoints
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.store.resources import ResourceStore, utcnow

URA_SYSTEM = "http://fhir.nl/fhir/NamingSystem/ura"
AGB_SYSTEM = "http://fhir.nl/fhir/NamingSystem/agb-z"
CATEGORY_SYSTEM = "http://rzcp.nl/fhir/CodeSystem/organisation-category"
ADAPTER_EXTENSION = "https://rzcp.nl/fhir/StructureDefinition/endpoint-adapter"
AUTH_EXTENSION = "https://rzcp.nl/fhir/StructureDefinition/endpoint-auth"
PAYLOAD_SYSTEM = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"


def organization_id(ura: str) -> str:
    return f"ura-{ura}"


def endpoint_id(ura: str) -> str:
    return f"ep-{ura}"


#: A member's call deadline is within (0, MAX_TIMEOUT] seconds (adapters.Member).
MAX_TIMEOUT = 120.0


@dataclass(frozen=True)
class EndpointDetails:
    """A member's endpoint row as administrators see it: the kind of auth, never its secret."""

    agb: str | None
    timeout: float
    #: None: the gateway's setting (RZCP_MEMBER_MAX_PULLS).
    max_pulls: int | None
    auth_kind: str


@dataclass(frozen=True)
class MemberChange:
    """What an operator changes about a registered member (`rzcp members update`, PATCH
    /admin/api/members/{ura}); None keeps what is there. `agb=""` removes the AGB code, `max_pulls=0` and
    `timeout=0` give the member the gateway's settings again, `auth=MemberAuth()` stops authenticating."""

    name: str | None = None
    endpoint: str | None = None
    agb: str | None = None
    timeout: float | None = None
    max_pulls: int | None = None
    auth: MemberAuth | None = None
    #: The credentials stay also when the endpoint moves to another server (refused otherwise, below).
    keep_auth: bool = False

    def fields(self) -> list[str]:
        """The names of what changes (for the audit record: never the secrets themselves)."""
        return [name for name, value in vars(self).items() if value is not None and value is not False]

    def noted_before(self, was: Mapping[str, Any]) -> dict[str, str]:
        """What the changed fields were (`endpoint_was` ...; `Directory.current`), of the auth only its
        kind: an administrator's walkthrough found a record of a moved endpoint naming only the new one."""
        noted = {
            f"{name}_was": "" if was.get(name) is None else str(was[name])
            for name in self.fields()
            if name not in ("auth", "keep_auth")
        }
        if self.auth is not None or self.keep_auth:
            noted["auth_was"] = str(was.get("auth"))
        return noted


@dataclass(frozen=True)
class Directory:
    """What the directory needs besides a connection: the box that seals members' secrets and the
    default timeout."""

    box: SecretBox
    default_timeout: float = 5.0

    async def add_member(
        self,
        conn: AsyncConnection,
        search: SearchRegistry,
        *,
        ura: str,
        name: str,
        category: str,
        endpoint: str,
        adapter: str = "fhir-rest",
        agb: str | None = None,
        call_timeout: float | None = None,
        max_pulls: int | None = None,
        auth: MemberAuth | None = None,
        https_only: bool = True,
    ) -> Member:
        """Register a member: the registry's row, its endpoint details and their projection."""
        await registry.add_member(
            conn,
            ura=ura,
            name=name,
            category=category,
            endpoint=endpoint,
            adapter=adapter,
            https_only=https_only,
        )
        await self.set_endpoint(
            conn,
            search,
            ura,
            agb=agb,
            call_timeout=call_timeout,
            max_pulls=max_pulls,
            auth=auth,
            https_only=https_only,
        )
        return await self.member(conn, ura)

    async def update_member(
        self,
        conn: AsyncConnection,
        search: SearchRegistry,
        ura: str,
        change: MemberChange,
        *,
        https_only: bool = True,
    ) -> Member:
        """Change a registered member in place: its registry row and endpoint details, checked as at
        registration, and their projection. Every process of the gateway reads the member's rows at each
        pull and delivery, so the next one uses what changed. A secret that is not replaced stays sealed
        as it was: it is never opened to be written back."""
        before = await registry.get_member(conn, ura)
        current = (await conn.execute(select(endpoints).where(endpoints.c.ura == ura))).first()
        after = await registry.update_member(
            conn, ura, name=change.name, endpoint=change.endpoint, https_only=https_only
        )
        held = current is not None and current.auth_kind not in (None, AuthKind.NONE.value)
        if (
            held
            and before is not None
            and _origin(after.endpoint) != _origin(before.endpoint)
            and change.auth is None
            and not change.keep_auth
        ):  # the member's token or SMART client would be sent to the new server without anyone deciding so
            raise BadRequest(
                f"the endpoint moves to another server ({_origin(before.endpoint)} to "
                f"{_origin(after.endpoint)}): give the credentials for it (a new token or SMART key, or "
                "none), or keep the current ones there explicitly"
            )
        row: dict[str, Any] = {"changed_at": utcnow()}
        if change.agb is not None:
            row["agb"] = _checked_agb(change.agb or None)
        if change.timeout is not None:
            row["timeout"] = _checked_timeout(change.timeout or None) or self.default_timeout
        if change.max_pulls is not None:
            row["max_pulls"] = _checked_max_pulls(change.max_pulls or None)
        if change.auth is not None:
            row.update(self._auth_columns(change.auth, https_only=https_only))
        if current is None:  # registered before the exchange knew it: its row is made now
            row.setdefault("timeout", self.default_timeout)
            if "auth_kind" not in row:
                row.update(self._auth_columns(MemberAuth(), https_only=https_only))
            await conn.execute(endpoints.insert().values(ura=ura, **row))
        else:
            await conn.execute(endpoints.update().where(endpoints.c.ura == ura).values(**row))
        await project(conn, search, ura)
        return await self.member(conn, ura)

    async def set_endpoint(
        self,
        conn: AsyncConnection,
        search: SearchRegistry,
        ura: str,
        *,
        agb: str | None = None,
        call_timeout: float | None = None,
        max_pulls: int | None = None,
        auth: MemberAuth | None = None,
        https_only: bool = True,
    ) -> None:
        row = {
            "agb": _checked_agb(agb),
            "timeout": _checked_timeout(call_timeout) or self.default_timeout,
            "max_pulls": _checked_max_pulls(max_pulls),
            **self._auth_columns(auth or MemberAuth(), https_only=https_only),
            "changed_at": utcnow(),
        }
        exists = await conn.scalar(select(endpoints.c.ura).where(endpoints.c.ura == ura))
        if exists is None:
            await conn.execute(endpoints.insert().values(ura=ura, **row))
        else:
            await conn.execute(endpoints.update().where(endpoints.c.ura == ura).values(**row))
        await project(conn, search, ura)

    def _auth_columns(self, auth: MemberAuth, *, https_only: bool) -> dict[str, Any]:
        _check_auth(auth, https_only=https_only)
        sealed = None
        if auth.kind is not AuthKind.NONE:
            sealed = self.box.seal(orjson.dumps(_auth_fields(auth)).decode())
        return {"auth_kind": auth.kind.value, "auth_sealed": sealed}

    async def suspend_member(self, conn: AsyncConnection, search: SearchRegistry, ura: str) -> None:
        await registry.suspend_member(conn, ura)
        await project(conn, search, ura)

    async def reinstate_member(self, conn: AsyncConnection, search: SearchRegistry, ura: str) -> None:
        await registry.reinstate_member(conn, ura)
        await project(conn, search, ura)

    async def active_member(self, conn: AsyncConnection, ura: str) -> Member | None:
        """The member if it is active now: asked on every request (a suspension counts at once, in every
        process), with a statement built once, so only its execution costs."""
        row = (await conn.execute(_ACTIVE_MEMBER, {"ura": ura})).first()
        return self.from_row(row) if row is not None else None

    async def active_member_with(
        self, conn: AsyncConnection, ura: str, statement: Select[Any], **params: Any
    ) -> Row[Any] | None:
        """`active_member` asked by `with_columns(...)`'s statement: its row, whose added columns carry
        what the caller asked beside it (`from_row` makes the Member); None when the member is not active."""
        return (await conn.execute(statement, {"ura": ura, **params})).first()

    @staticmethod
    def with_columns(*columns: Any) -> Select[Any]:
        """The active member's statement with scalar columns added (built once by the caller, at import)."""
        return _ACTIVE_MEMBER.add_columns(*columns)

    async def member(self, conn: AsyncConnection, ura: str) -> Member:
        rows = await self.members(conn, [ura], active_only=False)
        if ura not in rows:
            raise NotFound(f"no member with URA {ura}")
        return rows[ura]

    async def members(
        self, conn: AsyncConnection, uras: list[str] | None = None, *, active_only: bool = True
    ) -> dict[str, Member]:
        """Members as the exchange calls them, by URA (active ones only unless told otherwise)."""
        query = select(*MEMBER_COLUMNS).select_from(members.outerjoin(endpoints))
        if uras is not None:
            query = query.where(members.c.ura.in_(uras))
        if active_only:
            query = query.where(members.c.status == "active")
        return {row.ura: self.from_row(row) for row in await conn.execute(query)}

    async def current(self, conn: AsyncConnection, ura: str) -> dict[str, Any] | None:
        """A member's changeable values as they are (`MemberChange.noted_before`), or None."""
        member = await registry.get_member(conn, ura)
        if member is None:
            return None
        found: dict[str, Any] = {"name": member.name, "endpoint": member.endpoint}
        if (details := (await self.details(conn, ura)).get(ura)) is not None:
            found |= {
                "agb": details.agb,
                "timeout": details.timeout,
                "max_pulls": details.max_pulls,
                "auth": details.auth_kind,
            }
        return found

    async def details(self, conn: AsyncConnection, ura: str | None = None) -> dict[str, EndpointDetails]:
        """What the console shows of each member's endpoint row (or of one), by URA: never the sealed
        secret."""
        query = select(endpoints.c.ura, endpoints.c.agb, endpoints.c.timeout, endpoints.c.max_pulls)
        query = query.add_columns(endpoints.c.auth_kind)
        if ura is not None:
            query = query.where(endpoints.c.ura == ura)
        return {
            row.ura: EndpointDetails(row.agb, row.timeout, row.max_pulls, row.auth_kind)
            for row in await conn.execute(query)
        }

    def from_row(self, row: Any) -> Member:
        """A Member from a row with the MEMBER_COLUMNS."""
        auth = MemberAuth()
        if row.auth_sealed:
            fields = orjson.loads(self.box.open(row.auth_sealed))
            auth = MemberAuth(kind=AuthKind(row.auth_kind), **fields)
        return Member(
            ura=row.ura,
            name=row.name,
            category=row.category,
            base_url=row.endpoint,
            adapter=row.adapter,
            timeout=row.timeout or self.default_timeout,
            auth=auth,
            max_pulls=row.max_pulls,
        )


MEMBER_COLUMNS = (
    members.c.ura,
    members.c.name,
    members.c.category,
    members.c.endpoint,
    members.c.adapter,
    members.c.status,
    endpoints.c.agb,
    endpoints.c.timeout,
    endpoints.c.max_pulls,
    endpoints.c.auth_kind,
    endpoints.c.auth_sealed,
)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _checked_agb(agb: str | None) -> str | None:
    if agb is not None and not ((agb.isascii() and agb.isdigit()) and len(agb) == 8):
        raise BadRequest(f"AGB code {agb!r} must be 8 digits")
    return agb


def _checked_timeout(timeout: float | None) -> float | None:
    """Refused here, not at the member's next pull: a stored timeout out of bounds would fail every pull."""
    if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
        raise BadRequest(f"the member's timeout is more than 0 and at most {MAX_TIMEOUT:.0f} seconds")
    return timeout


def _checked_max_pulls(max_pulls: int | None) -> int | None:
    if max_pulls is not None and not 1 <= max_pulls <= MAX_PULLS_LIMIT:
        raise BadRequest(f"a member takes 1 to {MAX_PULLS_LIMIT} pulls at a time")
    return max_pulls


def checked_private_key(text: str, algorithm: str) -> str:
    """The key (PEM or JWK JSON), once it is known to be a private key of the algorithm's type: a key that
    cannot sign would only show at the member's first call."""
    kind = "RSA" if algorithm.startswith("RS") else "EC"
    try:
        key = import_key(orjson.loads(text) if text.lstrip().startswith("{") else text, kind)
    except Exception:
        raise BadRequest(f"not a PEM or JWK {kind} key for {algorithm}") from None
    if not key.is_private:
        raise BadRequest("a public key; the gateway signs with the private one")
    return text


def _check_auth(auth: MemberAuth, *, https_only: bool) -> None:
    """The member's token endpoint: the region's signed assertion and the member's token travel there."""
    if auth.token_url is not None:
        registry.checked_url(auth.token_url, "the member's token endpoint", https_only=https_only)


def _auth_fields(auth: MemberAuth) -> dict[str, Any]:
    fields = {
        "token": auth.token,
        "token_url": auth.token_url,
        "client_id": auth.client_id,
        "private_key": auth.private_key,
        "key_id": auth.key_id,
        "algorithm": auth.algorithm,
        "scope": auth.scope,
    }
    return {k: v for k, v in fields.items() if v is not None}


def organization_resource(row: Any) -> dict[str, Any]:
    identifiers = [{"system": URA_SYSTEM, "value": row.ura}]
    if row.agb:
        identifiers.append({"system": AGB_SYSTEM, "value": row.agb})
    return {
        "resourceType": "Organization",
        "id": organization_id(row.ura),
        "identifier": identifiers,
        "active": row.status == "active",
        "type": [{"coding": [{"system": CATEGORY_SYSTEM, "code": row.category}]}],
        "name": row.name,
        "endpoint": [{"reference": f"Endpoint/{endpoint_id(row.ura)}"}],
    }


def endpoint_resource(row: Any) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "id": endpoint_id(row.ura),
        "extension": [
            {"url": ADAPTER_EXTENSION, "valueCode": row.adapter},
            {"url": AUTH_EXTENSION, "valueCode": row.auth_kind or "none"},
        ],
        "status": "active" if row.status == "active" else "suspended",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "hl7-fhir-rest",
        },
        "name": f"FHIR endpoint of {row.name}",
        "managingOrganization": {"reference": f"Organization/{organization_id(row.ura)}"},
        "payloadType": [{"coding": [{"system": PAYLOAD_SYSTEM, "code": "any"}]}],
        "payloadMimeType": ["application/fhir+json"],
        "address": row.endpoint,
    }


async def project(conn: AsyncConnection, search: SearchRegistry, ura: str) -> None:
    """Rewrite the member's Organization and Endpoint from its rows (when they changed)."""
    row = (
        await conn.execute(
            select(*MEMBER_COLUMNS).select_from(members.outerjoin(endpoints)).where(members.c.ura == ura)
        )
    ).first()
    if row is None:
        raise NotFound(f"no member with URA {ura}")
    store = ResourceStore(conn, search)
    for resource in (organization_resource(row), endpoint_resource(row)):
        try:
            current = await store.read(resource["resourceType"], resource["id"])
        except (NotFound, Gone):
            await store.update(resource, allow_create=True)
            continue
        stored = orjson.loads(current.content)
        stored.pop("meta", None)
        if stored != resource:
            await store.update(resource)


_ACTIVE_MEMBER = (
    select(*MEMBER_COLUMNS)
    .select_from(members.outerjoin(endpoints))
    .where(members.c.ura == bindparam("ura"), members.c.status == "active")
)
