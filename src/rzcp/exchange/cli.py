"""The exchange's commands: `rzcp members add`, `update`, `suspend` and `reinstate` through the member
directory (so the registry row, its endpoint details and the Organization/Endpoint resources change
together), and `rzcp demo`."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from rzcp.auth import cli as auth_cli
from rzcp.auth import registry
from rzcp.consent.policy import PolicyError, load_policy
from rzcp.errors import BadRequest
from rzcp.exchange.adapters import MAX_PULLS_LIMIT, SMART_ALGORITHMS, AuthKind, MemberAuth, discover
from rzcp.exchange.directory import Directory, MemberChange, checked_private_key
from rzcp.exchange.secrets import member_secret_box
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.settings import Settings


def _directory(settings: Settings) -> Directory:
    return Directory(member_secret_box(settings.secret_key), settings.member_timeout)


def _endpoint_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The member's endpoint details (how the gateway authenticates to its server, its capacity, timeout and
    AGB): the same options for `add` and `update`."""
    options = [
        click.option(
            "--auth-token-env",
            help="Name of an environment variable holding a static bearer token the member's server wants.",
        ),
        click.option("--smart-token-url", help="SMART Backend Services: the member's own token endpoint."),
        click.option("--smart-client-id", help="SMART: the region's client id at the member's server."),
        click.option(
            "--smart-key-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="SMART: the private key (PEM or JWK JSON) that signs the region's client assertions.",
        ),
        click.option("--smart-key-id", help="SMART: the key's kid, as the member registered it."),
        click.option("--smart-alg", type=click.Choice(SMART_ALGORITHMS), default="RS384", show_default=True),
        click.option(
            "--smart-scope", default="system/*.rs", show_default=True, help="SMART: the scopes asked for."
        ),
        click.option(
            "--max-pulls",
            type=click.IntRange(0, MAX_PULLS_LIMIT),
            help="Pulls one gateway process has under way at the member at a time (its server's capacity; "
            "default RZCP_MEMBER_MAX_PULLS; 0 in `update`: back to that default).",
        ),
        click.option(
            "--timeout",
            "call_timeout",
            type=float,
            help="Seconds the gateway waits for the member (0 in `update`: back to RZCP_MEMBER_TIMEOUT).",
        ),
        click.option("--agb", help="The organisation's AGB code (8 digits; '' in `update` removes it)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _auth_of(options: dict[str, Any]) -> MemberAuth | None:
    """The auth the options give, or None when they give none."""
    token_env = options["auth_token_env"]
    smart = (options["smart_token_url"], options["smart_client_id"], options["smart_key_file"])
    if token_env and any(smart):
        raise click.UsageError("give a bearer token (--auth-token-env) or SMART Backend Services, not both")
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise click.ClickException(f"environment variable {token_env} is not set")
        return MemberAuth(AuthKind.BEARER, token=token)
    if any(smart):
        token_url, client_id, key_file = smart
        if not (token_url and client_id and key_file):
            raise click.UsageError(
                "SMART Backend Services needs --smart-token-url, --smart-client-id and --smart-key-file"
            )
        return MemberAuth(
            AuthKind.SMART,
            token_url=token_url,
            client_id=client_id,
            private_key=_private_key(key_file, options["smart_alg"]),
            key_id=options["smart_key_id"],
            algorithm=options["smart_alg"],
            scope=options["smart_scope"],
        )
    return None


@click.command("add")
@click.option("--ura", required=True, help="The organisation's URA number (8 digits).")
@click.option("--name", required=True)
@click.option("--type", "category", required=True, help="Organisation category code.")
@click.option("--endpoint", required=True, help="The member's FHIR base URL.")
@click.option("--adapter", default="fhir-rest", show_default=True)
@_endpoint_options
@click.pass_context
def members_add(
    ctx: click.Context, ura: str, name: str, category: str, endpoint: str, adapter: str, **options: Any
) -> None:
    """Register a member organisation: its registry row, its endpoint, its Organization and Endpoint; and
    how the gateway authenticates to the member's server (none, a static bearer token, or SMART Backend
    Services: --smart-token-url, --smart-client-id and --smart-key-file together)."""
    auth = _auth_of(options) or MemberAuth()
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
            agb=options["agb"],
            call_timeout=options["call_timeout"],
            max_pulls=options["max_pulls"],
            auth=auth,
            https_only=settings.https_only,
        )

    params = {
        "ura": ura,
        "name": name,
        "category": category,
        "endpoint": endpoint,
        "adapter": adapter,
        **_noted(options, auth),
    }
    member = auth_cli._in_transaction(settings, work, write=True, action="members.add", params=params)
    click.echo(f"member {member.ura} ({member.name}) registered, endpoint {member.base_url}")


@click.command("update")
@click.argument("ura")
@click.option("--name", help="The organisation's new name.")
@click.option("--endpoint", help="The member's new FHIR base URL.")
@_endpoint_options
@click.option("--no-auth", is_flag=True, help="Stop authenticating to the member's server.")
@click.option(
    "--keep-auth",
    is_flag=True,
    help="Keep the credentials when --endpoint moves to another server (else such a move needs new ones).",
)
@click.pass_context
def members_update(
    ctx: click.Context,
    ura: str,
    name: str | None,
    endpoint: str | None,
    no_auth: bool,
    keep_auth: bool,
    **options: Any,
) -> None:
    """Change a registered member: its name, FHIR endpoint, AGB code, timeout, capacity, or how the gateway
    authenticates to its server (a new bearer token or SMART key replaces the old one, which is never
    shown). What is not given stays as it is. Every gateway process uses the change from its next call."""
    auth = _auth_of(options)
    if sum((no_auth, keep_auth, auth is not None)) > 1:
        raise click.UsageError("give one of --no-auth, --keep-auth and a new way to authenticate")
    change = MemberChange(
        name=name,
        endpoint=endpoint,
        agb=options["agb"],
        timeout=options["call_timeout"],
        max_pulls=options["max_pulls"],
        auth=MemberAuth() if no_auth else auth,
        keep_auth=keep_auth,
    )
    if not change.fields():
        raise click.UsageError("nothing to change: give at least one option (see --help)")
    settings = auth_cli._settings(ctx)

    params: dict[str, str | None] = {"ura": ura, "name": name, "endpoint": endpoint, **_noted(options, auth)}
    if no_auth or keep_auth:
        params["auth"] = "none" if no_auth else "keep"

    async def work(conn: AsyncConnection) -> Any:
        directory = _directory(settings)
        if (was := await directory.current(conn, ura)) is not None:  # the record says what it was, too
            params.update(change.noted_before(was))
        return await directory.update_member(
            conn, SearchRegistry.default(), ura, change, https_only=settings.https_only
        )

    member = auth_cli._in_transaction(settings, work, write=True, action="members.update", params=params)
    click.echo(f"member {member.ura} ({member.name}) changed: {', '.join(change.fields())}")


@click.command("list")
@click.pass_context
def members_list(ctx: click.Context) -> None:
    """List the members: URA, status, category, name, endpoint; then the endpoint's AGB, timeout (s),
    pulls at a time (`default`: RZCP_MEMBER_MAX_PULLS) and how the gateway authenticates (its kind only)."""
    settings = auth_cli._settings(ctx)
    directory = _directory(settings)

    async def work(conn: AsyncConnection) -> Any:
        return await registry.list_members(conn), await directory.details(conn)

    found, details = auth_cli._in_transaction(settings, work, write=False)
    for m in found:
        row = [m.ura, m.status, m.category, m.name, m.endpoint]
        if (d := details.get(m.ura)) is not None:
            row += [d.agb or "-", f"{d.timeout:g}", str(d.max_pulls or "default"), d.auth_kind]
        click.echo("\t".join(row))
    if not found:  # an empty list from a database the operator did not mean (RZCP_DATABASE_URL not set)
        shown = make_url(settings.database_url).render_as_string(hide_password=True)
        click.echo(f"no members registered in {shown}", err=True)


def _noted(options: dict[str, Any], auth: MemberAuth | None) -> dict[str, str | None]:
    """The endpoint options for the audit record: never a token or a key."""
    timeout, max_pulls = options["call_timeout"], options["max_pulls"]
    return {
        "agb": options["agb"],
        "timeout": None if timeout is None else str(timeout),
        "max_pulls": None if max_pulls is None else str(max_pulls),
        "auth": _auth_note(options["auth_token_env"], auth),
    }


def _private_key(path: Path, algorithm: str) -> str:
    """The key file's text, once it is known to be a private key of the algorithm's type: a key that
    cannot sign would only show at the member's first call."""
    try:
        return checked_private_key(path.read_text(encoding="utf-8"), algorithm)
    except BadRequest as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _auth_note(token_env: str | None, auth: MemberAuth | None) -> str | None:
    """How the gateway authenticates to the member, for the audit record (never a secret)."""
    if token_env:
        return f"bearer token from ${token_env}"
    if auth is not None and auth.kind is AuthKind.SMART:
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
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(1, 65530),
    help="The gateway's port; the four members take the next four.",
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
    except (RuntimeError, OSError, PolicyError) as exc:
        raise click.ClickException(str(exc)) from None


def register(main: click.Group) -> None:
    auth_cli.members.add_command(members_add, "add")
    auth_cli.members.add_command(members_list, "list")
    auth_cli.members.add_command(members_update, "update")
    auth_cli.members.add_command(members_suspend, "suspend")
    auth_cli.members.add_command(members_reinstate, "reinstate")
    main.add_command(demo)
