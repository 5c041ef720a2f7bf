"""The `rzcp` command. Every failure is one line on stderr and a non-zero exit; `--help` everywhere."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
import orjson
from pydantic import ValidationError

from rzcp.audit.cli import audit as audit_group
from rzcp.auth import cli as auth_cli
from rzcp.errors import one_line
from rzcp.exchange import cli as exchange_cli
from rzcp.logs import log_config
from rzcp.membersim.cli import member_sim
from rzcp.settings import Settings, load_settings

CONFIG_ENV = "RZCP_CONFIG_FILE"


class _Context:
    def __init__(self, config: Path | None) -> None:
        self.config = config

    def settings(self) -> Settings:
        try:
            return load_settings(self.config)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
            raise click.ClickException(f"invalid configuration ({where}): {first.get('msg')}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A KEY=value settings file.",
)
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """RZCP, the regional FHIR gateway."""
    ctx.obj = _Context(config)
    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.pass_obj
def serve(obj: _Context, host: str, port: int, workers: int) -> None:
    """Run the gateway."""
    import uvicorn

    settings = obj.settings()
    if workers > 1 and settings.database_url.startswith("sqlite"):
        click.echo(
            "note: several workers on SQLite share one file; PostgreSQL is the production database", err=True
        )
    _check_startable(settings, workers)
    metrics_dir = _shared_metrics_dir() if workers > 1 else None
    try:
        uvicorn.run(
            "rzcp.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.log_level.lower(),
            log_config=log_config(settings.log_level),
            access_log=False,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _shared_metrics_dir() -> str | None:
    """A folder the workers keep their metrics in (prometheus_client's multiprocess mode), so that a
    scrape, which reaches one worker, counts the requests of all of them. Made for this run and removed
    after it: files left by an earlier run would add its counts to this one's. None when the operator
    named a folder (PROMETHEUS_MULTIPROC_DIR): theirs to keep, and to empty between runs."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    try:
        path = tempfile.mkdtemp(prefix="rzcp-metrics-")
    except OSError as exc:  # a read-only file system: the gateway still runs, its metrics per worker
        click.echo(f"note: no folder for the workers' shared metrics ({exc.strerror}); set TMPDIR", err=True)
        return None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # the workers, spawned next, inherit it
    return path


def _check_startable(settings: Settings, workers: int) -> None:
    """Build the app once before any worker: a setting it cannot start with (a database URL of another
    driver, an unreadable policy, a malformed audit key) is one line and exit 1. Left to the workers, each
    died with a traceback and uvicorn's supervisor restarted them for ever (an operator's trial with
    `--workers 2`, the Dockerfile's setting). With several workers the build runs in a spawned process,
    so the supervisor does not keep the whole gateway imported beside them."""
    drivers = ("sqlite+aiosqlite://", "postgresql+asyncpg://")  # what rzcp.store.urls makes of the rest
    if not settings.database_url.startswith(drivers):
        scheme, sep, _ = settings.database_url.partition("://")  # never the rest: it may hold a password
        raise click.ClickException(
            "RZCP_DATABASE_URL must be a PostgreSQL or SQLite URL (postgresql://... or sqlite:///...)"
            + (f", not {scheme}://" if sep else "")
        )
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            problem = pool.submit(_build_problem, settings).result()
    else:
        problem = _build_problem(settings)
    if problem is not None:
        raise click.ClickException(f"the gateway cannot start: {problem}")


def _build_problem(settings: Settings) -> str | None:
    """Why the app cannot be built with these settings (None: it can); a string, which any process can
    hand back."""
    import asyncio

    from rzcp.app import create_app

    try:
        app = create_app(settings)
    except Exception as exc:  # whatever stops the app from being built stops the start
        return str(exc)
    asyncio.run(app.state.runtime.aclose())
    return None


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@click.pass_obj
def db_upgrade(obj: _Context, revision: str) -> None:
    """Apply the Alembic migrations to the configured database."""
    from rzcp.store.db import Database
    from rzcp.store.migrate import current_revision, upgrade

    settings = obj.settings()

    from alembic.util import CommandError

    async def run() -> str | None:
        database = Database(settings.database_url)
        try:
            await upgrade(database, revision)
            return await current_revision(database)
        except CommandError as exc:  # an unknown revision: Alembic's words, without its class name
            raise click.ClickException(f"cannot upgrade to {revision!r}: {exc}") from None
        finally:
            await database.dispose()

    current = _run(run())
    if revision not in ("head", current):
        # Alembic leaves a database ahead of the revision asked for as it is: migrations only go up
        click.echo(f"note: the database is at {current}, past {revision}; it is never downgraded", err=True)
    click.echo(f"database at revision {current}")


@main.command()
@click.pass_obj
def openapi(obj: _Context) -> None:
    """Print the OpenAPI document (openapi/openapi.json is this output)."""
    from rzcp.app import create_app

    document = create_app(obj.settings()).openapi()
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except click.ClickException:
        raise
    except Exception as exc:  # one line, not a traceback: the operator needs the cause, not our stack
        raise click.ClickException(one_line(exc)) from None


auth_cli.register(main)
exchange_cli.register(main)  # members add/suspend through the directory, and `rzcp demo`
main.add_command(audit_group)
main.add_command(member_sim)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
