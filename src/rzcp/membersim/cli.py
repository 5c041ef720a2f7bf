"""`rzcp member-sim`: run one simulated member organisation's FHIR server, loaded with data."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click


@click.command("member-sim")
@click.option("--name", required=True, help="The organisation's name.")
@click.option("--ura", required=True, help="The organisation's URA number.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", required=True, type=click.IntRange(1, 65535))
@click.option(
    "--database", "database_url", required=True, help="Its own database URL (sqlite+aiosqlite:///...)."
)
@click.option(
    "--load",
    "load",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Synthea transaction Bundles, nl-core examples, or folders of them (repeatable).",
)
@click.option(
    "--bsn-map",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON {source patient id: BSN} (a Synthea entry's fullUrl UUID, an nl-core file's id); others "
    "keep a valid BSN of their own or get a test BSN. An id that names no loaded patient is refused.",
)
@click.option("--id-prefix", default="", help="Put before every loaded id, so members hold different ids.")
@click.option("--types", default="", help="Only these resource types (comma-separated; Patients always).")
@click.option("--token", envvar="RZCP_MEMBER_TOKEN", help="A static bearer token its API requires.")
def member_sim(
    name: str,
    ura: str,
    host: str,
    port: int,
    database_url: str,
    load: tuple[Path, ...],
    bsn_map: Path | None,
    id_prefix: str,
    types: str,
    token: str | None,
) -> None:
    """Run a member organisation's own FHIR server (every R4 type) on its own database and port."""
    import uvicorn

    from rzcp.membersim.loader import load_member_data, read_bsn_map
    from rzcp.membersim.server import create_member_app

    if load:
        try:
            mapping = read_bsn_map(bsn_map) if bsn_map else None
            wanted = [t.strip() for t in types.split(",") if t.strip()] or None
            report = asyncio.run(
                load_member_data(database_url, load, id_prefix=id_prefix, types=wanted, bsn_map=mapping)
            )
        except (ValueError, OSError) as exc:
            raise click.ClickException(f"cannot load member data: {exc}") from None
        click.echo(
            f"{name} ({ura}): {report.created} resources loaded, {report.kept} already there; "
            f"{len(report.patients)} patients",
            err=True,
        )
        for patient_id, bsn in sorted(report.patients.items()):
            click.echo(f"  Patient/{patient_id}  BSN {bsn}", err=True)
    app = create_member_app(name=name, ura=ura, database_url=database_url, token=token)
    click.echo(f"{name} ({ura}) serves FHIR at http://{host}:{port}/fhir", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
