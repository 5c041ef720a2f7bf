"""`rzcp members ...` and `rzcp clients ...`: the registry from the command line (see the contract).
Each command is one transaction; a failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth import registry
from rzcp.auth.principal import ROLES
from rzcp.errors import RzcpError, one_line
from rzcp.settings import Settings
from rzcp.store.db import Database

T = TypeVar("T")


def _in_transaction(
    settings: Settings,
    work: Callable[[AsyncConnection], Awaitable[T]],
    *,
    write: bool,
    action: str | None = None,
    params: Mapping[str, str | None] | None = None,
) -> T:
    """Run `work` in one transaction. With `action` (the console's name for the same change), the change,
    or its refusal, is recorded in the audit trail as the operator's (rzcp.audit.operator)."""
    from rzcp.audit.operator import record_operator_action
    from rzcp.audit.writer import AuditUnavailable
    from rzcp.store.migrate import upgrade

    if action is not None:
        # the record's signer first: a change it could not record is not made (an operator's walkthrough
        # registered an admin client with a malformed key, unrecorded, and was told the command failed)
        from rzcp.audit import signer_from_settings

        try:
            signer_from_settings(settings)
        except ValueError as exc:
            raise click.ClickException(f"{exc}; nothing was changed") from None

    async def run() -> T:
        database = Database(settings.database_url)
        try:
            migrate = settings.auto_migrate if settings.auto_migrate is not None else database.is_sqlite
            if migrate:
                await upgrade(database)
            try:
                async with database.write() if write else database.read() as conn:
                    result = await work(conn)
            except RzcpError as exc:
                if action is not None:
                    await record_operator_action(
                        settings, database, action, params or {}, status=exc.status, outcome_desc=exc.message
                    )
                raise
            if action is not None:
                try:
                    await record_operator_action(settings, database, action, params or {}, status=200)
                except AuditUnavailable:
                    raise click.ClickException(
                        "the change was made, but the audit trail could not record it: "
                        "check the database and record it by hand"
                    ) from None
            return result
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except click.ClickException:
        raise
    except RzcpError as exc:
        raise click.ClickException(exc.message) from None
    except Exception as exc:  # one line, not a traceback
        raise click.ClickException(one_line(exc)) from None


def _settings(ctx: click.Context) -> Settings:
    return ctx.find_root().obj.settings()


@click.group()
def members() -> None:
    """Member organisations of the region."""


@click.group()
def clients() -> None:
    """Member systems' OAuth clients (SMART Backend Services)."""


@clients.command("add")
@click.option("--client-id", required=True)
@click.option("--member", "member_ura", required=True, help="URA of the member that owns the system.")
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--jwks-url", help="Where the client publishes its keys (host must be allow-listed).")
@click.option("--scope", required=True, help='Space-separated system scopes, e.g. "system/Patient.rs".')
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
@click.pass_context
def clients_add(
    ctx: click.Context,
    client_id: str,
    member_ura: str,
    jwks_file: Path | None,
    jwks_url: str | None,
    scope: str,
    role: str,
) -> None:
    """Register a client with its public keys (--jwks FILE or --jwks-url URL)."""
    if (jwks_file is None) == (jwks_url is None):
        raise click.UsageError("give exactly one of --jwks FILE and --jwks-url URL")
    jwks = _jwks_from(jwks_file) if jwks_file is not None else None
    settings = _settings(ctx)

    async def work(conn: AsyncConnection) -> Any:
        return await registry.add_client(
            conn,
            client_id=client_id,
            member_ura=member_ura,
            scope=scope,
            role=role,
            jwks=jwks,
            jwks_url=jwks_url,
            allowed_hosts=settings.jwks_allowed_hosts,
            https_only=settings.https_only,
        )

    params = {
        "client_id": client_id,
        "member": member_ura,
        "scope": scope,
        "role": role,
        "jwks_url": jwks_url,
    }
    if jwks_file is not None:
        params["jwks"] = _kids(jwks)
    client = _in_transaction(settings, work, write=True, action="clients.add", params=params)
    click.echo(f"client {client.client_id} registered for member {client.member_ura}: {client.scope}")


@clients.command("list")
@click.pass_context
def clients_list(ctx: click.Context) -> None:
    """List the clients: id, state, member, role, scopes."""
    for c in _in_transaction(_settings(ctx), registry.list_clients, write=False):
        state = "revoked" if c.revoked else ("member-suspended" if c.member_status != "active" else "active")
        click.echo(f"{c.client_id}\t{state}\t{c.member_ura}\t{c.role}\t{c.scope}")


@clients.command("revoke")
@click.argument("client_id")
@click.pass_context
def clients_revoke(ctx: click.Context, client_id: str) -> None:
    """Revoke a client: its tokens stop working at their next request."""

    async def work(conn: AsyncConnection) -> None:
        await registry.revoke_client(conn, client_id)

    _in_transaction(
        _settings(ctx), work, write=True, action="clients.revoke", params={"client_id": client_id}
    )
    click.echo(f"client {client_id} revoked")


@clients.command("keys")
@click.argument("client_id")
@click.option("--jwks", "jwks_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--jwks-url", help="Where the client publishes its keys (host must be allow-listed).")
@click.pass_context
def clients_keys(ctx: click.Context, client_id: str, jwks_file: Path | None, jwks_url: str | None) -> None:
    """Replace a client's public keys (key rotation): --jwks FILE or --jwks-url URL."""
    if (jwks_file is None) == (jwks_url is None):
        raise click.UsageError("give exactly one of --jwks FILE and --jwks-url URL")
    jwks = _jwks_from(jwks_file) if jwks_file is not None else None
    settings = _settings(ctx)

    async def work(conn: AsyncConnection) -> Any:
        return await registry.replace_client_keys(
            conn,
            client_id,
            jwks=jwks,
            jwks_url=jwks_url,
            allowed_hosts=settings.jwks_allowed_hosts,
            https_only=settings.https_only,
        )

    params = {"client_id": client_id, "jwks_url": jwks_url}
    if jwks_file is not None:
        params["jwks"] = _kids(jwks)
    client = _in_transaction(settings, work, write=True, action="clients.keys", params=params)
    where = client.jwks_url or ", ".join(str(k.get("kid")) for k in (client.jwks or {}).get("keys", []))
    click.echo(f"client {client.client_id}: keys replaced ({where})")


@clients.command("scope")
@click.argument("client_id")
@click.option("--scope", required=True, help='Space-separated system scopes, e.g. "system/*.rs".')
@click.pass_context
def clients_scope(ctx: click.Context, client_id: str, scope: str) -> None:
    """Replace a client's scopes: a token they no longer cover is refused from its next use."""

    async def work(conn: AsyncConnection) -> Any:
        return await registry.set_client_scope(conn, client_id, scope)

    params = {"client_id": client_id, "scope": scope}
    client = _in_transaction(_settings(ctx), work, write=True, action="clients.scope", params=params)
    click.echo(f"client {client.client_id}: scope {client.scope}")


def _kids(jwks: Any) -> str:
    """The key ids of a JWKS given as a file, for the record (the keys are public, but long)."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    return (
        "kid " + ", ".join(str(k.get("kid")) for k in keys if isinstance(k, dict)) if keys else "keys given"
    )


def _jwks_from(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        raise click.ClickException(f"{path} is not JSON") from None


@click.group()
def keys() -> None:
    """The gateway's own token-signing keys."""


@keys.command("rotate")
@click.pass_context
def keys_rotate(ctx: click.Context) -> None:
    """Start signing with a new key; the old one stays published until its tokens have expired."""
    from rzcp.auth.keys import KeyRing

    settings = _settings(ctx)

    async def work(_conn: AsyncConnection) -> str:
        ring = KeyRing(Database(settings.database_url), settings.secret_key, settings.access_token_seconds)
        try:
            return await ring.rotate()
        finally:
            await ring.db.dispose()

    kid = _in_transaction(settings, work, write=False, action="keys.rotate")
    click.echo(f"now signing with key {kid}")


def register(main: click.Group) -> None:
    main.add_command(members)
    main.add_command(clients)
    main.add_command(keys)
