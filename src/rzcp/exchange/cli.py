"""The exchange's commands: `rzcp members add`, `suspend` and `reinstate` through the member directory (so the
registry row, its endpoint details and the Organization/Endpoint resources change together), and
`rzcp demo`."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
import orjson
from joserfc.jwk import import_key
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth import cli as auth_cli
from rzcp.consent.policy import load_policy
from rzcp.exchange.adapters import SMART_ALGORITHMS, AuthKind, MemberAuth, discover
from rzcp.exchange.directory import Directory
from rzcp.exchange.secrets import member_secret_box
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.settings import Settings


def _directory(settings: Settings) -> Directory:
    return Directory(member_secret_box(settings.secret_key), settings.member_timeout)


@click.command("add")
@click.option("--ura", required=True, help="The organisation's URA number (8 digits).")
@click.option("--name", required=True)
@click.option("--type", "category", required=True, help="Organisation category code.")
@click.option("--endpoint", required=True, help="The member's FHIR base URL.")
@click.option("--adapter", default="fhir-rest", show_default=True)
@click.option("--agb", help="The organisation's AGB code (8 digits).")
@click.option("--timeout", "call_timeout", type=float, help="Seconds the gateway waits for the member.")
@click.option(
    "--auth-token-env",
    help="Name of an environment variable holding a static bearer token the member's server requires.",
)
@click.option("--smart-token-url", help="SMART Backend Services: the member's own token endpoint.")
@click.option("--smart-client-id", help="SMART: the region's client id at the member's server.")
@click.option(
    "--smart-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="SMART: the private key (PEM or JWK JSON) that signs the region's client assertions.",
)
@click.option("--smart-key-id", help="SMART: the key's kid, as the member registered it.")
@click.option("--smart-alg", type=click.Choice(SMART_ALGORITHMS), default="RS384", show_default=True)
@click.option("--smart-scope", default="system/*.rs", show_default=True, help="SMART: the scopes asked for.")
@click.pass_context
def members_add(
    ctx: click.Context,
    ura: str,
    name: str,
    category: str,
    endpoint: str,
    adapter: str,
    agb: str | None,
    call_timeout: float | None,
    auth_token_env: str | None,
    smart_token_url: str | None,
    smart_client_id: str | None,
    smart_key_file: Path | None,
    smart_key_id: str | None,
    smart_alg: str,
    smart_scope: str,
) -> None:
    """Register a member organisation: its registry row, its endpoint, its Organization and Endpoint; and
    how the gateway authenticates to the member's server (none, a static bearer token, or SMART Backend
    Services: --smart-token-url, --smart-client-id and --smart-key-file together)."""
    auth = MemberAuth()
    smart = (smart_token_url, smart_client_id, smart_key_file)
    if auth_token_env and any(smart):
        raise click.UsageError("give a bearer token (--auth-token-env) or SMART Backend Services, not both")
    if auth_token_env:
        token = os.environ.get(auth_token_env)
        if not token:
            raise click.ClickException(f"environment variable {auth_token_env} is not set")
        auth = MemberAuth(AuthKind.BEARER, token=token)
    elif any(smart):
        if not all(smart):
            raise click.UsageError(
                "SMART Backend Services needs --smart-token-url, --smart-client-id and --smart-key-file"
            )
        assert smart_token_url and smart_client_id and smart_key_file  # for the type checker: all(smart)
        auth = MemberAuth(
            AuthKind.SMART,
            token_url=smart_token_url,
            client_id=smart_client_id,
            private_key=_private_key(smart_key_file, smart_alg),
            key_id=smart_key_id,
            algorithm=smart_alg,
            scope=smart_scope,
        )
    settings = auth_cli._settings(ctx)
    policy = load_policy(settings.consent_policy_path)
    if not policy.knows_category(category):
        known = ", ".join(sorted(policy.organisation_categories))
        raise click.ClickException(
            f"organisation category {category!r} is not in the region's policy ({known})"
        )
    if adapter not in discover():
        raise click.ClickException(f"adapter {adapter!r} is not installed ({', '.join(sorted(discover()))})")

    async def work(conn: AsyncConnection) -> Any:
        return await _directory(settings).add_member(
            conn,
            SearchRegistry.default(),
            ura=ura,
            name=name,
            category=category,
            endpoint=endpoint,
            adapter=adapter,
            agb=agb,
            call_timeout=call_timeout,
            auth=auth,
            https_only=settings.https_only,
        )

    params = {
        "ura": ura,
        "name": name,
        "category": category,
        "endpoint": endpoint,
        "adapter": adapter,
        "agb": agb,
        "timeout": None if call_timeout is None else str(call_timeout),
        "auth": _auth_note(auth_token_env, auth),  # never the token or the key
    }
    member = auth_cli._in_transaction(settings, work, write=True, action="members.add", params=params)
    click.echo(f"member {member.ura} ({member.name}) registered, endpoint {member.base_url}")


def _private_key(path: Path, algorithm: str) -> str:
    """The key file's text, once it is known to be a private key of the algorithm's type: a key that
    cannot sign would only show at the member's first call."""
    text = path.read_text(encoding="utf-8")
    kind = "RSA" if algorithm.startswith("RS") else "EC"
    try:
        key = import_key(orjson.loads(text) if text.lstrip().startswith("{") else text, kind)
    except Exception:
        raise click.ClickException(f"{path}: not a PEM or JWK {kind} key for {algorithm}") from None
    if not key.is_private:
        raise click.ClickException(f"{path}: a public key; the gateway signs with the private one")
    return text


def _auth_note(token_env: str | None, auth: MemberAuth) -> str | None:
    """How the gateway authenticates to the member, for the audit record (never a secret)."""
    if token_env:
        return f"bearer token from ${token_env}"
    if auth.kind is AuthKind.SMART:
        return f"SMART Backend Services as {auth.client_id} at {auth.token_url} ({auth.algorithm})"
    return None


def _status_command(
    name: str,
    change: Callable[[Directory, AsyncConnection, SearchRegistry, str], Awaitable[None]],
    help_text: str,
) -> click.Command:
    """`members suspend` and `members reinstate`: the registry row and the member's Organization and
    Endpoint change together, through the directory."""

    @click.command(name, help=help_text)
    @click.argument("ura")
    @click.pass_context
    def command(ctx: click.Context, ura: str) -> None:
        settings = auth_cli._settings(ctx)

        async def work(conn: AsyncConnection) -> None:
            await change(_directory(settings), conn, SearchRegistry.default(), ura)

        auth_cli._in_transaction(settings, work, write=True, action=f"members.{name}", params={"ura": ura})
        click.echo(f"member {ura} {name.removesuffix('e')}ed")

    return command


members_suspend = _status_command(
    "suspend",
    Directory.suspend_member,
    "Suspend a member: its clients' tokens stop working at their next request, its Endpoint too.",
)
members_reinstate = _status_command(
    "reinstate",
    Directory.reinstate_member,
    "Reinstate a suspended member: its clients that were not revoked may get tokens again.",
)


@click.command("demo")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(1, 65530), help="The gateway's port."
)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo keeps its databases and keys (default: a new temporary folder).",
)
def demo(port: int, folder: Path | None) -> None:
    """Run a small region: the gateway and four simulated members, with patients, consents and clients."""
    from rzcp.exchange.demo import run_demo

    try:
        run_demo(port, folder)
    except (RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def register(main: click.Group) -> None:
    auth_cli.members.add_command(members_add, "add")
    auth_cli.members.add_command(members_suspend, "suspend")
    auth_cli.members.add_command(members_reinstate, "reinstate")
    main.add_command(demo)
