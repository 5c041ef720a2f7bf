"""`rzcp audit ...`: verify the trail, export it, archive what is past retention, make a signing key.

Every failure is one line on stderr and a non-zero exit; `verify` exits 1 naming the first bad record."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from rzcp.audit.moments import region_moment
from rzcp.audit.tables import audit_events
from rzcp.errors import one_line
from rzcp.settings import Settings
from rzcp.store.db import Database

T = TypeVar("T")


def _settings(obj: Any) -> Settings:
    return obj.settings() if obj is not None else Settings()


def _signer(settings: Settings) -> Any:
    """The trail's keys from the settings; a malformed one is one line naming it, not a traceback."""
    from rzcp.audit import signer_from_settings

    try:
        return signer_from_settings(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """`work` on the gateway's database, which must hold the trail: pointed elsewhere (no
    RZCP_DATABASE_URL in this shell, say), the command says so instead of creating an empty SQLite file
    and failing on a missing table (a privacy officer's walkthrough)."""
    url = make_url(settings.database_url)
    shown = url.render_as_string(hide_password=True)
    file = url.database if url.get_backend_name() == "sqlite" and url.database != ":memory:" else None
    if file and not Path(file).exists():
        raise click.ClickException(f"no database at {file}: set RZCP_DATABASE_URL to the gateway's database")

    async def run() -> T:
        database = Database(settings.database_url)
        try:
            # The trail's table, not the schema's version: a copy kept as evidence, a release behind or
            # ahead, is verified as it is (and never migrated to be read).
            async with database.read() as conn:
                found = await conn.run_sync(lambda c: inspect(c).has_table(audit_events.name))
            if not found:
                raise click.ClickException(
                    f"{shown} holds no audit trail: set RZCP_DATABASE_URL to the gateway's database"
                )
            return await work(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(run())
    except click.ClickException:
        raise
    except Exception as exc:  # one line for the operator, not a traceback
        raise click.ClickException(one_line(exc)) from None


def _moment(value: str, name: str) -> datetime:
    try:
        return region_moment(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@click.group()
def audit() -> None:
    """The audit trail: verify, export, archive."""


@audit.command()
@click.option(
    "--archive",
    "archive_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify an archive file written by `rzcp audit archive` instead of the database.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Processes that walk the chain side by side, this one included "
    "[default: one per CPU on a trail of 200,000 records or more, else 1].",
)
@click.pass_obj
def verify(obj: Any, archive_file: Path | None, workers: int | None) -> None:
    """Walk the hash chain and its signed checkpoints; exit 1 naming the first bad record."""
    from rzcp.audit.verify import ArchiveFormatError, verify_archive, verify_chain

    settings = _settings(obj)
    if archive_file is not None:
        try:
            result = verify_archive(archive_file)
        except ArchiveFormatError as exc:
            raise click.ClickException(str(exc)) from None
    else:
        from rzcp.admin.verify_runs import record_run

        signer = _signer(settings)
        started = time.perf_counter()
        result = _with_db(settings, lambda db: verify_chain(db, signer, workers=workers))
        seconds = time.perf_counter() - started
        try:  # the console shows the last run, whoever ran it; the verdict stands without the record
            _with_db(settings, lambda db: record_run(db, result, seconds=seconds, by="cli"))
        except click.ClickException as exc:
            click.echo(f"warning: the run could not be recorded ({exc.message})", err=True)
    if not result.ok:
        click.echo(result.line(), err=True)
        sys.exit(1)
    click.echo(result.line())


@audit.command()
@click.option(
    "--since",
    help=(
        "Only records recorded at or after this ISO date (the region's day) or date-time (the region's "
        "time without an offset), as the console reads it."
    ),
)
@click.option("--format", "fmt", type=click.Choice(["ndjson", "csv"]), default="ndjson", show_default=True)
@click.pass_obj
def export(obj: Any, since: str | None, fmt: str) -> None:
    """Write the audit records to stdout: NDJSON (one AuditEvent a line) or CSV (the searched columns)."""
    from rzcp.audit.archive import export_records
    from rzcp.audit.operator import record_operator_action

    settings = _settings(obj)
    moment = _moment(since, "--since") if since else None
    out = sys.stdout.buffer

    async def work(db: Database) -> None:
        # Reading the trail is an access too: recorded first, and without a record nothing is written.
        await record_operator_action(
            settings, db, "audit.export", {"since": since, "format": fmt}, status=200
        )
        async for part in export_records(db, since=moment, fmt=fmt):
            out.write(part)
        out.flush()

    _with_db(settings, work)


@audit.command()
@click.option(
    "--before",
    required=True,
    help="Archive records recorded before this date (ISO: the start of the region's day) or date-time.",
)
@click.option("--to", "to", required=True, type=click.Path(dir_okay=False, path_type=Path), help="New file.")
@click.pass_obj
def archive(obj: Any, before: str, to: Path) -> None:
    """Move records older than the retention period to an NDJSON file, keeping the chain verifiable.

    Runs as the database role that owns the tables (the application's role may not delete)."""
    from rzcp.audit.archive import archive_before
    from rzcp.audit.operator import record_operator_action

    settings = _settings(obj)
    moment = _moment(before, "--before")
    signer = _signer(settings)
    result = _with_db(
        settings,
        lambda db: archive_before(
            db, signer, before=moment, to=to, retention_days=settings.audit_retention_days
        ),
    )
    if result.records:
        params = {"before": before, "to": str(to), "records": str(result.records)}
        try:
            _with_db(
                settings, lambda db: record_operator_action(settings, db, "audit.archive", params, status=200)
            )
        except click.ClickException as exc:
            click.echo(
                f"warning: the archive is written, but not recorded in the trail ({exc.message})", err=True
            )
    if not result.records:
        click.echo("nothing to archive")
        return
    click.echo(
        f"archived {result.records} records (seq {result.from_seq}..{result.to_seq}) to {result.path} "
        f"sha256 {result.sha256}"
    )


@audit.command()
def keygen() -> None:
    """Print a new Ed25519 checkpoint key: the secret for RZCP_AUDIT_SIGNING_KEY and its public key."""
    from rzcp.audit.chain import ChainSigner

    seed, public = ChainSigner.generate()
    click.echo(f"RZCP_AUDIT_SIGNING_KEY={seed}")
    click.echo(f"# public key (for RZCP_AUDIT_VERIFY_KEYS after a rotation, and outside verifiers): {public}")
