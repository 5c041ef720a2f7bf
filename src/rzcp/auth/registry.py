"""Members and their clients: register, list, suspend, revoke; and the per-request "is this caller still
allowed" check. Plain functions over a connection; the caller owns the transaction.

A suspended member's and a revoked client's tokens stop working at the next request in every process,
because `ensure_live` reads the database (one primary-key lookup on the request's own transaction).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from joserfc.jwk import JWKRegistry
from sqlalchemy import DateTime, bindparam, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.addresses import no_server_host
from rzcp.auth.keys import utcnow
from rzcp.auth.principal import ROLES, Principal
from rzcp.auth.scopes import ScopeError, ScopeSet
from rzcp.auth.tables import clients, ended_sessions, members
from rzcp.auth.tokens import InvalidToken
from rzcp.errors import BadRequest, Conflict, NotFound
from rzcp.fhir.search.definitions import SearchRegistry

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
_CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
CLIENT_ALGS = ("RS384", "ES384")
#: The columns' lengths (auth_members): longer is refused, never cut.
MAX_NAME = 256
MAX_URL = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Member:
    ura: str
    name: str
    category: str
    endpoint: str
    adapter: str
    status: str


@dataclass(frozen=True)
class Client:
    client_id: str
    member_ura: str
    scope: str
    role: str
    jwks: dict[str, Any] | None
    jwks_url: str | None
    revoked: bool
    member_status: str

    @property
    def active(self) -> bool:
        return not self.revoked and self.member_status == "active"


def is_ura(value: str) -> bool:
    """A URA (UZI register subscriber number): eight ASCII digits (`\\d` would take other scripts' too)."""
    return len(value) == 8 and value.isascii() and value.isdigit()


def checked_url(value: str, what: str, *, https_only: bool) -> str:
    """`https_only`: patient data and keys travel encrypted, or stay on the machine (a loopback address: a
    sidecar that holds the TLS connection). The registry's functions ask for it unless their caller says it
    runs in development (`Settings.https_only`), so a caller that forgets is refused, not let through."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError:  # `https://[::1`, `https://x.example:99999` (a review found the first a 500)
        raise BadRequest(f"{what} {value!r} is not a URL with a valid host and port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{what} {value!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:  # it would show wherever the URL does
        raise BadRequest(f"{what} holds credentials: the gateway keeps a member's secrets sealed, apart")
    if no_server_host(parts.hostname):
        raise BadRequest(
            f"{what} {value!r} is a link-local, multicast or unspecified address, not a member's server "
            "(a cloud's metadata service answers at 169.254.169.254)"
        )
    if https_only and parts.scheme == "http" and not _loopback(parts.hostname):
        raise BadRequest(
            f"{what} {value!r} is plain http: in production the gateway exchanges patient data and keys "
            "over https only (a loopback address excepted)"
        )
    return value


def in_clear(url: str) -> bool:
    """Plain http to another machine: what production refuses for a new endpoint, and what a member
    registered before that rule (or in development) may still have."""
    parts = urlsplit(url)
    return parts.scheme.lower() == "http" and not _loopback(parts.hostname or "")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


async def add_member(
    conn: AsyncConnection,
    *,
    ura: str,
    name: str,
    category: str,
    endpoint: str,
    adapter: str = "fhir-rest",
    https_only: bool = True,
) -> Member:
    if not is_ura(ura):
        raise BadRequest(f"URA {ura!r} must be 8 digits")
    _check_name(name)
    if not _CATEGORY.fullmatch(category):
        raise BadRequest(f"organisation category {category!r} is not a code")
    if not _CATEGORY.fullmatch(adapter):
        raise BadRequest(f"adapter {adapter!r} is not an adapter's name")
    endpoint = _check_endpoint(endpoint, https_only=https_only)
    if await conn.scalar(select(members.c.ura).where(members.c.ura == ura)) is not None:
        raise Conflict(f"member {ura} is already registered")
    now = utcnow()
    row = {
        "ura": ura,
        "name": name.strip(),
        "category": category,
        "endpoint": endpoint,
        "adapter": adapter,
        "status": "active",
        "created_at": now,
        "changed_at": now,
    }
    await conn.execute(members.insert().values(**row))
    return Member(ura, row["name"], category, endpoint, adapter, "active")


async def update_member(
    conn: AsyncConnection,
    ura: str,
    *,
    name: str | None = None,
    endpoint: str | None = None,
    https_only: bool = True,
) -> Member:
    """A member's name or FHIR endpoint changed (a new vendor, a move to https): checked as at
    registration. Every process calls the new endpoint from its next pull on, since each pull reads the
    member's row."""
    changes: dict[str, Any] = {}
    if name is not None:
        _check_name(name)
        changes["name"] = name.strip()
    if endpoint is not None:
        changes["endpoint"] = _check_endpoint(endpoint, https_only=https_only)
    if changes:
        result = await conn.execute(
            update(members).where(members.c.ura == ura).values(**changes, changed_at=utcnow())
        )
        if result.rowcount == 0:
            raise NotFound(f"no member with URA {ura}")
    found = await get_member(conn, ura)
    if found is None:
        raise NotFound(f"no member with URA {ura}")
    return found


def _check_name(name: str) -> None:
    if not name.strip():
        raise BadRequest("the member needs a name")
    if len(name.strip()) > MAX_NAME or _CONTROL.search(name):
        raise BadRequest(f"the member's name is at most {MAX_NAME} characters, without control characters")


def _check_endpoint(endpoint: str, *, https_only: bool) -> str:
    """The endpoint as stored: checked, its scheme and host in lower case (`HTTPS://B.example` passed the
    check and then failed at every read of the member: a review found it a 500)."""
    if len(endpoint) > MAX_URL:
        raise BadRequest(f"the endpoint is at most {MAX_URL} characters")
    checked_url(endpoint, "endpoint", https_only=https_only)
    parts = urlsplit(endpoint)
    return urlunsplit(parts._replace(scheme=parts.scheme.lower(), netloc=parts.netloc.lower()))


def _member(r: Any) -> Member:
    return Member(r.ura, r.name, r.category, r.endpoint, r.adapter, r.status)


async def list_members(conn: AsyncConnection) -> list[Member]:
    return [_member(r) for r in await conn.execute(select(members).order_by(members.c.ura))]


async def get_member(conn: AsyncConnection, ura: str) -> Member | None:
    row = (await conn.execute(select(members).where(members.c.ura == ura))).first()
    return _member(row) if row is not None else None


async def suspend_member(conn: AsyncConnection, ura: str) -> None:
    await _set_member_status(conn, ura, "suspended", suspended_at=utcnow())


async def reinstate_member(conn: AsyncConnection, ura: str) -> None:
    """Undo a suspension (say, after a security incident was cleared). The member's clients that were not
    revoked work again, with newly issued tokens: a token issued before the suspension stays refused
    (`_LIVE`), as it may be what the incident was about (a privacy officer's walkthrough found it worked
    again)."""
    await _set_member_status(conn, ura, "active")


async def _set_member_status(conn: AsyncConnection, ura: str, status: str, **values: Any) -> None:
    result = await conn.execute(
        update(members).where(members.c.ura == ura).values(status=status, changed_at=utcnow(), **values)
    )
    if result.rowcount == 0:
        raise NotFound(f"no member with URA {ura}")


#: The smallest RSA modulus accepted for RS384 (NIST SP 800-131A: 2048 bits).
MIN_RSA_BITS = 2048
MAX_JWKS_KEYS = 20


def check_jwks(document: Any) -> dict[str, Any]:
    """A JWKS of public signing keys the token endpoint can use: RSA of 2048 bits or more (RS384) or EC on
    P-384 (ES384), each with its own kid, each a valid key (an RSA key with a bad exponent or an EC point
    off the curve is refused here, not discovered at the client's first token request); private keys are
    refused."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise BadRequest('the JWKS must be a JSON object with a non-empty "keys" list')
    if len(keys) > MAX_JWKS_KEYS:
        raise BadRequest(f"a client registers at most {MAX_JWKS_KEYS} keys")
    kids: set[str] = set()
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC"):
            raise BadRequest("each key in the JWKS must be an RSA or EC key")
        if "d" in key:
            raise BadRequest("the JWKS holds a private key: register the public keys only")
        if key.get("alg") not in (None, *CLIENT_ALGS):
            raise BadRequest(f"key algorithm {key.get('alg')!r} is not one of {', '.join(CLIENT_ALGS)}")
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BadRequest("each key in the JWKS needs a kid")
        if kid in kids:
            raise BadRequest(f"kid {kid!r} is given twice: each key needs its own")
        kids.add(kid)
        if key["kty"] == "EC" and key.get("crv") != "P-384":
            raise BadRequest(f"key {kid!r}: EC keys must be on P-384 (ES384)")
        try:
            public = JWKRegistry.import_key(key).public_key
        except Exception:  # any malformed key material: joserfc and cryptography raise many kinds
            raise BadRequest(f"key {kid!r} is not a valid {key['kty']} public key") from None
        if key["kty"] == "RSA" and public.key_size < MIN_RSA_BITS:
            raise BadRequest(f"key {kid!r}: RSA keys need at least {MIN_RSA_BITS} bits")
    return {"keys": keys}


async def add_client(
    conn: AsyncConnection,
    *,
    client_id: str,
    member_ura: str,
    scope: str,
    role: str = "member",
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    allowed_hosts: list[str] | None = None,
    https_only: bool = True,
) -> Client:
    if not _CLIENT_ID.fullmatch(client_id):
        raise BadRequest(f"client id {client_id!r} may hold letters, digits and . _ : - only")
    if role not in ROLES:
        raise BadRequest(f"role {role!r} is not one of {', '.join(ROLES)}")
    jwks = _checked_keys(jwks, jwks_url, allowed_hosts, https_only)
    scopes = _checked_scope(scope)
    member = await conn.execute(select(members.c.status).where(members.c.ura == member_ura))
    if member.first() is None:
        raise NotFound(f"no member with URA {member_ura}")
    if await conn.scalar(select(clients.c.client_id).where(clients.c.client_id == client_id)) is not None:
        raise Conflict(f"client {client_id} is already registered")
    await conn.execute(
        clients.insert().values(
            client_id=client_id,
            member_ura=member_ura,
            jwks=orjson.dumps(jwks).decode() if jwks is not None else None,
            jwks_url=jwks_url,
            scope=str(scopes),
            role=role,
            revoked=False,
            created_at=utcnow(),
        )
    )
    return Client(client_id, member_ura, str(scopes), role, jwks, jwks_url, False, "active")


def _checked_scope(scope: str) -> ScopeSet:
    try:
        scopes = ScopeSet.parse(scope)
    except ScopeError as exc:
        raise BadRequest(str(exc)) from None
    if not scopes.resource or scopes.contexts() != {"system"}:
        raise BadRequest("a client's scopes must be system/... scopes")
    known = SearchRegistry.default().resource_types()
    unknown = sorted({s.resource_type for s in scopes.resource} - known - {"*"})
    if unknown:
        raise BadRequest(f"{', '.join(unknown)}: not an R4 resource type (scopes name a type or *)")
    return scopes


_CLIENT_COLUMNS = (
    clients.c.client_id,
    clients.c.member_ura,
    clients.c.scope,
    clients.c.role,
    clients.c.jwks,
    clients.c.jwks_url,
    clients.c.revoked,
    members.c.status,
)


def _client(row: Any) -> Client:
    jwks = orjson.loads(row.jwks) if row.jwks else None
    return Client(
        row.client_id, row.member_ura, row.scope, row.role, jwks, row.jwks_url, row.revoked, row.status
    )


async def get_client(conn: AsyncConnection, client_id: str) -> Client | None:
    query = select(*_CLIENT_COLUMNS).join(members).where(clients.c.client_id == client_id)
    row = (await conn.execute(query)).first()
    return _client(row) if row is not None else None


async def list_clients(conn: AsyncConnection) -> list[Client]:
    rows = await conn.execute(select(*_CLIENT_COLUMNS).join(members).order_by(clients.c.client_id))
    return [_client(r) for r in rows]


def _checked_keys(
    jwks: dict[str, Any] | None, jwks_url: str | None, allowed_hosts: list[str] | None, https_only: bool
) -> dict[str, Any] | None:
    if (jwks is None) == (jwks_url is None):
        raise BadRequest("give the client's public keys as a JWKS file or a jwks URL, one of the two")
    if jwks_url is not None:
        if len(jwks_url) > MAX_URL:
            raise BadRequest(f"the jwks URL is at most {MAX_URL} characters")
        host = urlsplit(checked_url(jwks_url, "jwks URL", https_only=https_only)).hostname
        if allowed_hosts is not None and host not in allowed_hosts:
            raise BadRequest(f"jwks host {host} is not in RZCP_JWKS_ALLOWED_HOSTS")
        return None
    return check_jwks(jwks)


async def replace_client_keys(
    conn: AsyncConnection,
    client_id: str,
    *,
    jwks: dict[str, Any] | None = None,
    jwks_url: str | None = None,
    allowed_hosts: list[str] | None = None,
    https_only: bool = True,
) -> Client:
    """Key rotation: the client's public keys replaced by a new JWKS (or a jwks URL), checked as at
    registration. The next client assertion is verified against them in every process (they are read
    from the database per token request); tokens issued before stay valid until they expire, since they
    were issued to the same client. To rotate without a gap, register a JWKS holding the old and the new
    key, switch the client to the new key, then register the new key alone."""
    checked = _checked_keys(jwks, jwks_url, allowed_hosts, https_only)
    current = await get_client(conn, client_id)
    if current is None:
        raise NotFound(f"no client with id {client_id}")
    if current.revoked:
        raise Conflict(f"client {client_id} is revoked: register a new client instead")
    await conn.execute(
        update(clients)
        .where(clients.c.client_id == client_id)
        .values(jwks=orjson.dumps(checked).decode() if checked is not None else None, jwks_url=jwks_url)
    )
    stored = await get_client(conn, client_id)
    assert stored is not None
    return stored


async def set_client_scope(conn: AsyncConnection, client_id: str, scope: str) -> Client:
    """A client's registered scopes replaced, checked as at registration. Its next token is granted from
    them; a token it holds that they no longer cover is refused from its next use, in every process
    (`ensure_live` reads the registered scopes with the client's liveness): narrowing takes effect at
    once, widening with the next token."""
    scopes = _checked_scope(scope)
    current = await get_client(conn, client_id)
    if current is None:
        raise NotFound(f"no client with id {client_id}")
    if current.revoked:
        raise Conflict(f"client {client_id} is revoked: register a new client instead")
    await conn.execute(update(clients).where(clients.c.client_id == client_id).values(scope=str(scopes)))
    stored = await get_client(conn, client_id)
    assert stored is not None
    return stored


async def revoke_client(conn: AsyncConnection, client_id: str, *, at: datetime | None = None) -> None:
    result = await conn.execute(
        update(clients)
        .where(clients.c.client_id == client_id)
        .values(revoked=True, revoked_at=at or utcnow())
    )
    if result.rowcount == 0:
        raise NotFound(f"no client with id {client_id}")


_LIVE = (
    select(clients.c.scope)
    .join(members)
    .where(
        clients.c.revoked.is_(False),
        members.c.status == "active",
        clients.c.client_id == bindparam("client_id"),
        or_(
            members.c.suspended_at.is_(None),
            members.c.suspended_at < bindparam("issued_at", type_=DateTime(timezone=False)),
        ),
    )
)


#: `ensure_live` as a column of another statement (the client's registered scopes, None when it is no
#: longer live; `still_live` reads it); bound by `live_params`. The read path adds it to its own SELECT:
#: one round trip instead of two.
LIVE_COLUMN = _LIVE.scalar_subquery().label("rzcp_live")


def live_params(principal: Principal) -> dict[str, Any]:
    """The values `_LIVE` (and `LIVE_COLUMN`) are bound with."""
    return {"client_id": principal.client_id, "issued_at": principal.issued_at}


def needs_live_check(principal: Principal) -> bool:
    return (
        principal.kind == "system"
        and principal.client_id is not None
        and principal.subject != "auth-disabled"
    )


_STATE = (
    select(clients.c.revoked, members.c.status, members.c.suspended_at)
    .join(members)
    .where(clients.c.client_id == bindparam("client_id"))
)


async def refuse_dead(conn: AsyncConnection, principal: Principal) -> InvalidToken:
    """The 401 of a token that is no longer live, saying which condition failed, so the caller knows
    whether a new token helps (an integrator's walkthrough, reinstated, was told its member was not
    active). Read only on this refusal's path: the request path's check stays one boolean column."""
    row = (await conn.execute(_STATE, {"client_id": principal.client_id})).first()
    if row is None or row.revoked:
        why = "the client was revoked"
    elif row.status != "active":
        why = "the client's organisation is suspended"
    elif (at := row.suspended_at) is not None and not (principal.issued_at and at < principal.issued_at):
        why = "the token was issued before its organisation's suspension: request a new token"
    else:
        why = "the client's registered scopes no longer cover this token: request a new token"
    return InvalidToken(why)


@lru_cache(maxsize=1024)
def _covered(granted: ScopeSet, registered: str) -> bool:
    return granted.within(ScopeSet.parse(registered, lenient=True))


def still_live(principal: Principal, registered_scope: str | None) -> bool:
    """The client is live (not revoked, its member active: `registered_scope` is None otherwise) and its
    registered scopes still cover what the token was granted."""
    return registered_scope is not None and _covered(principal.scopes, registered_scope)


_ENDED = select(ended_sessions.c.jti).where(ended_sessions.c.jti == bindparam("jti"))


async def ensure_live(conn: AsyncConnection, principal: Principal) -> None:
    """Refuse a system token whose client was revoked or whose member was suspended since it was issued,
    and a patient's or person's token whose session was ended by logout (`end_session`)."""
    if principal.kind in ("patient", "person") and principal.token_id:
        if await conn.scalar(_ENDED, {"jti": principal.token_id}) is not None:
            raise InvalidToken("this session was ended (logged out)")
        return
    if not needs_live_check(principal):
        return
    found = await conn.scalar(_LIVE, live_params(principal))  # built once: no compile cost
    if not still_live(principal, found):
        raise await refuse_dead(conn, principal)


async def end_session(conn: AsyncConnection, claims: dict[str, Any]) -> None:
    """Logout: the token's id is refused from now on, in every process, until the token would have
    expired (then the row is no longer needed, and expired rows are cleared here)."""
    now = utcnow()
    await conn.execute(delete(ended_sessions).where(ended_sessions.c.expires_at < now))
    expires = datetime.fromtimestamp(int(claims["exp"]), UTC).replace(tzinfo=None)
    make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    # a second logout of the same token (another tab, another process at the same moment) changes nothing
    ended = make(ended_sessions).values(jti=str(claims["jti"]), expires_at=expires)
    await conn.execute(ended.on_conflict_do_nothing(index_elements=[ended_sessions.c.jti]))
