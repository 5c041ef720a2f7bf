"""Members and their clients as the console shows and changes them: the same functions as `rzcp members`
and `rzcp clients` (a member through the exchange's directory, so its Organization and Endpoint follow),
shaped as the API's JSON."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.admin.access import roles_of
from rzcp.admin.health import MemberHealth
from rzcp.auth import registry
from rzcp.auth.principal import ROLES, Principal
from rzcp.auth.registry import Client, Member
from rzcp.consent.policy import Policy
from rzcp.errors import BadRequest, Forbidden
from rzcp.exchange.adapters import SMART_ALGORITHMS, AuthKind, MemberAuth
from rzcp.exchange.directory import Directory, EndpointDetails, MemberChange, checked_private_key
from rzcp.fhir.search.definitions import SearchRegistry


def member_json(member: Member, health: MemberHealth, details: EndpointDetails | None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "ura": member.ura,
        "name": member.name,
        "category": member.category,
        "endpoint": member.endpoint,
        "adapter": member.adapter,
        "status": member.status,
        "health": health.json(),
    }
    if details is not None:
        found.update(
            agb=details.agb, timeout=details.timeout, max_pulls=details.max_pulls, auth=details.auth_kind
        )
    return found


#: What PATCH /members/{ura} may change (a JSON merge patch: null gives back the gateway's default).
CHANGEABLE = frozenset({"name", "endpoint", "agb", "timeout", "max_pulls", "auth"})


#: What POST /members and POST /clients take.
REGISTERED = CHANGEABLE | {"ura", "category", "adapter"}
CLIENT_FIELDS = frozenset({"client_id", "member_ura", "scope", "role", "jwks", "jwks_url"})


def _only_known(body: dict[str, Any], known: frozenset[str], what: str) -> None:
    """A field that is not known is refused, not ignored: a mistyped capacity or timeout at registration
    was silently lost (an operator's walkthrough), as PATCH already refused."""
    unknown = sorted(set(body) - known)
    if unknown:
        shown = ", ".join(str(name)[:64] for name in unknown)
        raise BadRequest(f"unknown field(s) {shown}; {what} takes {', '.join(sorted(known))}")


def member_change(body: dict[str, Any]) -> MemberChange:
    """The change a PATCH body asks for. A field that is not known is refused, not ignored: a mistyped
    one must not look as if it was saved."""
    unknown = sorted(set(body) - CHANGEABLE)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; a member's {', '.join(sorted(CHANGEABLE))}")
    if not body:
        raise BadRequest("nothing to change")
    agb = body.get("agb")
    if "agb" in body and agb is None:
        agb = ""
    elif agb is not None and not isinstance(agb, str):
        raise BadRequest("agb is a string of 8 digits, or null to remove it")
    return MemberChange(
        name=text_field(body, "name") if "name" in body else None,
        endpoint=text_field(body, "endpoint") if "endpoint" in body else None,
        agb=agb,
        timeout=_number(body, "timeout", float),
        max_pulls=_number(body, "max_pulls", int),
        auth=_auth(body["auth"]) if "auth" in body else None,
        keep_auth=isinstance(body.get("auth"), dict) and body["auth"].get("kind") == "keep",
    )


def _number(body: dict[str, Any], name: str, kind: type[int] | type[float]) -> Any:
    """The field's number; 0 (the directory's "the gateway's default") for null; None when absent."""
    if name not in body:
        return None
    value = body[name]
    if value is None:
        return 0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise BadRequest(f"{name} is {'an integer' if kind is int else 'a number'}, or null for the default")
    if value <= 0:
        raise BadRequest(f"{name} is more than 0, or null for the default")
    return kind(value)


def _auth(value: Any) -> MemberAuth | None:
    """How the gateway authenticates to the member's server: {"kind": "none"}, {"kind": "bearer", "token"}
    or {"kind": "smart-backend", "token_url", "client_id", "private_key", "key_id"?, "algorithm"?,
    "scope"?}; {"kind": "keep"} (None) keeps the current credentials, also on an endpoint that moves."""
    if not isinstance(value, dict):
        raise BadRequest('auth is an object with a "kind": none, bearer or smart-backend')
    kind = value.get("kind")
    if kind == "keep":
        return None
    if kind == AuthKind.NONE.value:
        return MemberAuth()
    if kind == AuthKind.BEARER.value:
        return MemberAuth(AuthKind.BEARER, token=text_field(value, "token"))
    if kind == AuthKind.SMART.value:
        algorithm = text_field(value, "algorithm", required=False) or "RS384"
        if algorithm not in SMART_ALGORITHMS:
            raise BadRequest(f"algorithm is one of {', '.join(SMART_ALGORITHMS)}")
        return MemberAuth(
            AuthKind.SMART,
            token_url=text_field(value, "token_url"),
            client_id=text_field(value, "client_id"),
            private_key=checked_private_key(text_field(value, "private_key") or "", algorithm),
            key_id=text_field(value, "key_id", required=False),
            algorithm=algorithm,
            scope=text_field(value, "scope", required=False) or "system/*.rs",
        )
    raise BadRequest('auth.kind is "keep", "none", "bearer" or "smart-backend"')


def noted_change(change: MemberChange) -> dict[str, str]:
    """What the console's audit record says of a change: the new values, but of the auth only its kind."""
    noted = {
        name: str(getattr(change, name)) for name in change.fields() if name not in ("auth", "keep_auth")
    }
    if change.auth is not None:
        noted["auth"] = change.auth.kind.value
    elif change.keep_auth:
        noted["auth"] = "keep"
    return noted


def client_json(client: Client) -> dict[str, Any]:
    if client.revoked:
        status = "revoked"
    elif client.member_status != "active":
        status = "member-suspended"
    else:
        status = "active"
    kids = [key.get("kid") for key in (client.jwks or {}).get("keys", ())]
    return {
        "client_id": client.client_id,
        "member_ura": client.member_ura,
        "scope": client.scope,
        "role": client.role,
        "jwks_url": client.jwks_url,
        "kids": [kid for kid in kids if isinstance(kid, str)],
        "status": status,
    }


def text_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} is required, as a string")
    return value.strip()


async def add_member(
    conn: AsyncConnection,
    directory: Directory,
    search: SearchRegistry,
    body: dict[str, Any],
    *,
    policy: Policy,
    adapters: Collection[str],
    https_only: bool,
) -> Member:
    """`rzcp members add`: the registry's row, its endpoint details, its Organization and Endpoint. The
    category is one the region's policy knows (a category or a national organisation type: consents name
    them), the adapter one that is installed."""
    _only_known(body, REGISTERED, "a member")
    ura = text_field(body, "ura")
    category = text_field(body, "category") or ""
    if not policy.knows_category(category):
        raise BadRequest(f"organisation category {category!r} is not in the region's policy")
    adapter = text_field(body, "adapter", required=False) or "fhir-rest"
    if adapter not in adapters:
        raise BadRequest(f"adapter {adapter!r} is not installed; installed: {', '.join(sorted(adapters))}")
    endpoint_fields = {k: body[k] for k in CHANGEABLE - {"name", "endpoint"} if k in body}
    extra = member_change(endpoint_fields) if endpoint_fields else MemberChange()
    await directory.add_member(
        conn,
        search,
        ura=ura or "",
        name=text_field(body, "name") or "",
        category=category,
        endpoint=text_field(body, "endpoint") or "",
        adapter=adapter,
        agb=extra.agb or None,
        call_timeout=extra.timeout or None,
        max_pulls=extra.max_pulls or None,
        auth=extra.auth,
        https_only=https_only,
    )
    found = await registry.get_member(conn, ura or "")
    assert found is not None  # just written in this transaction
    return found


def _jwks_of(body: dict[str, Any]) -> dict[str, Any] | None:
    jwks = body.get("jwks")
    if jwks is not None and not isinstance(jwks, dict):
        raise BadRequest('jwks is a JWKS object: {"keys": [...]}')
    return jwks


def noted_keys(body: dict[str, Any]) -> dict[str, str]:
    """What a console record says of the keys in a body: the jwks_url, or the kids of a JWKS."""
    noted = {"jwks_url": str(body["jwks_url"])} if "jwks_url" in body else {}
    if isinstance(body.get("jwks"), dict):
        keys = body["jwks"].get("keys")
        kids = [k.get("kid") for k in keys if isinstance(k, dict)] if isinstance(keys, list) else []
        noted["kids"] = ",".join(str(kid) for kid in kids)
    return noted


def check_may_hand_out(principal: Principal, role: str) -> None:
    """Whoever holds the keys of a client acts in its role. So an administrator registers (or re-keys) a
    client of the trail's role only when they are an auditor themselves: else an admin who may not read the
    trail could give themselves a system that does. Member clients are every admin's job; each
    registration is in the console's own audit record, with its key ids."""
    if role != "member" and role not in roles_of(principal):
        raise Forbidden(f"only someone who holds the {role} role registers or re-keys a client of that role")


async def add_client(
    conn: AsyncConnection, body: dict[str, Any], allowed_hosts: list[str], https_only: bool, by: Principal
) -> Client:
    """`rzcp clients add`: with a JWKS document or a jwks_url whose host is allow-listed."""
    _only_known(body, CLIENT_FIELDS, "a client")
    jwks = _jwks_of(body)
    role = text_field(body, "role", required=False) or "member"
    if role not in ROLES:  # before the check of who may hand it out, which would name it as a role
        raise BadRequest(f"role is {', '.join(ROLES)}")
    check_may_hand_out(by, role)
    client = await registry.add_client(
        conn,
        client_id=text_field(body, "client_id") or "",
        member_ura=text_field(body, "member_ura") or "",
        scope=text_field(body, "scope") or "",
        role=role,
        jwks=jwks,
        jwks_url=text_field(body, "jwks_url", required=False),
        allowed_hosts=allowed_hosts,
        https_only=https_only,
    )
    return client


async def replace_client_keys(
    conn: AsyncConnection,
    client_id: str,
    body: dict[str, Any],
    allowed_hosts: list[str],
    https_only: bool,
    by: Principal,
) -> Client:
    """`rzcp clients keys`: key rotation, with a JWKS document or an allow-listed jwks_url."""
    current = await registry.get_client(conn, client_id)
    if current is not None:
        check_may_hand_out(by, current.role)
    return await registry.replace_client_keys(
        conn,
        client_id,
        jwks=_jwks_of(body),
        jwks_url=text_field(body, "jwks_url", required=False),
        allowed_hosts=allowed_hosts,
        https_only=https_only,
    )


async def set_client_scope(
    conn: AsyncConnection, client_id: str, body: dict[str, Any], by: Principal
) -> Client:
    """`rzcp clients scope`: the client's registered scopes replaced; narrowing cuts its tokens at once."""
    current = await registry.get_client(conn, client_id)
    if current is not None:
        check_may_hand_out(by, current.role)
    return await registry.set_client_scope(conn, client_id, text_field(body, "scope") or "")
