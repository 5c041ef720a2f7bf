"""The `rzcp` command as an operator uses it: a real process, a real database, a real server."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

RZCP = str(Path(sys.executable).with_name("rzcp"))


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RZCP, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_help_everywhere() -> None:
    for args in ([], ["serve"], ["db"], ["db", "upgrade"], ["openapi"]):
        result = run(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout


def test_db_upgrade_on_both_databases(database_url: str, tmp_path: Path) -> None:
    result = run("db", "upgrade", env={"RZCP_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert "database at revision" in result.stdout
    again = run("db", "upgrade", env={"RZCP_DATABASE_URL": database_url})
    assert again.returncode == 0, again.stderr
    # an operator's walkthrough: an older revision did nothing, silently; an unknown one named a class
    older = run("db", "upgrade", "--revision", "0005", env={"RZCP_DATABASE_URL": database_url})
    assert older.returncode == 0 and "past 0005; it is never downgraded" in older.stderr, older.stderr
    bogus = run("db", "upgrade", "--revision", "bogus", env={"RZCP_DATABASE_URL": database_url})
    assert bogus.returncode != 0
    said = "Error: cannot upgrade to 'bogus': Can't locate revision identified by 'bogus'"
    assert bogus.stderr.strip() == said


def test_bad_configuration_is_one_line_and_non_zero(tmp_path: Path) -> None:
    result = run(
        "db",
        "upgrade",
        env={"RZCP_ENVIRONMENT": "production", "RZCP_DATABASE_URL": "sqlite+aiosqlite:///x.db"},
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "RZCP_SECRET_KEY" in result.stderr or "PostgreSQL" in result.stderr


def test_unreachable_database_is_one_line_and_non_zero() -> None:
    result = run("db", "upgrade", env={"RZCP_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"})
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("RZCP_DATABASE_URL", "mysql://somewhere/db", "PostgreSQL or SQLite"),
        ("RZCP_CONSENT_POLICY_PATH", "/nonexistent/policy.yaml", "policy"),
        ("RZCP_AUDIT_SIGNING_KEY", "notakey", "RZCP_AUDIT_SIGNING_KEY is not an Ed25519 key"),
        ("RZCP_AUDIT_SIGNING_KEY", "garbage", "RZCP_AUDIT_SIGNING_KEY is not an Ed25519 key"),
        ("RZCP_AUDIT_VERIFY_KEYS", "garbage", "RZCP_AUDIT_VERIFY_KEYS"),
    ],
)
def test_serve_with_a_setting_it_cannot_start_with_stops_at_once(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    """With several workers, each died with a traceback and uvicorn restarted them for ever: a container
    stayed up, unhealthy (an operator's trial). The start is refused before any worker, in one line."""
    env = {"RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", name: value}
    result = run("serve", "--workers", "2", "--port", str(free_port()), env=env, timeout=60)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_database_url_without_the_async_driver_is_taken(tmp_path: Path) -> None:
    """`sqlite:///...` and `postgresql://...` as other tools write them: the gateway's drivers are used."""
    result = run("db", "upgrade", env={"RZCP_DATABASE_URL": f"sqlite:///{tmp_path / 'plain.db'}"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plain.db").exists()


def test_config_file(tmp_path: Path) -> None:
    config = tmp_path / "rzcp.env"
    config.write_text(f"RZCP_DATABASE_URL=sqlite+aiosqlite:///{tmp_path / 'from-file.db'}\n")
    result = run("--config", str(config), "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-file.db").exists()


def test_an_operators_changes_at_the_command_line_are_in_the_audit_trail(tmp_path: Path) -> None:
    """As the console's calls are: who (the account and host), which change with what, how it ended. An
    export of the trail is itself recorded, before anything is written out."""
    import getpass

    from joserfc.jwk import RSAKey

    env = {
        "RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}",
        "MEMBER_TOKEN": "s3cr3t-member-token-value",
    }
    assert run("db", "upgrade", env=env).returncode == 0
    member = ("members", "add", "--ura", "12345678", "--name", "Praktijk Noord", "--type", "huisartsen")
    added = run(*member, "--endpoint", "https://n.example/fhir", "--auth-token-env", "MEMBER_TOKEN", env=env)
    assert added.returncode == 0, added.stderr
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [RSAKey.generate_key(2048, parameters={"kid": "k1"}).as_dict(private=False)]})
    )
    client = ("clients", "add", "--client-id", "ehr-noord", "--member", "12345678", "--scope", "system/*.rs")
    assert run(*client, "--jwks", str(jwks), env=env).returncode == 0
    assert run("clients", "revoke", "nobody", env=env).returncode != 0
    assert run("members", "suspend", "12345678", env=env).returncode == 0
    assert run("audit", "export", env=env).returncode == 0
    exported = run("audit", "export", env=env)
    assert exported.returncode == 0, exported.stderr
    assert "s3cr3t-member-token-value" not in exported.stdout
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    console = [e for e in events if e["type"]["code"] == "console"]

    def action(event: dict[str, Any]) -> dict[str, Any]:
        return next(x for x in event["entity"] if x["type"]["code"] == "console")

    assert [(action(e)["description"], e["outcome"]) for e in console] == [
        ("members.add", "0"),
        ("clients.add", "0"),
        ("clients.revoke", "4"),
        ("members.suspend", "0"),
        ("audit.export", "0"),
        ("audit.export", "0"),
    ]
    details = {d["type"]: d["valueString"] for d in action(console[0])["detail"]}
    assert details["ura"] == "12345678" and details["auth"] == "bearer token from $MEMBER_TOKEN"
    assert {d["type"]: d["valueString"] for d in action(console[1])["detail"]}["jwks"] == "kid k1"
    operator = f"{getpass.getuser()}@{socket.gethostname()}"
    for event in console:
        requestor = next(a for a in event["agent"] if a["requestor"])
        assert requestor["who"]["identifier"]["value"] == operator
        assert any(a["who"].get("identifier", {}).get("value") == "rzcp-cli" for a in event["agent"])
    assert (
        run("audit", "verify", env=env).returncode == 0
    )  # the chain holds with the operator's records in it
    # an export is not an archive: checking one as if it were says so in one line, not a traceback
    export = tmp_path / "export.ndjson"
    export.write_text(exported.stdout)
    mistaken = run("audit", "verify", "--archive", str(export), env=env)
    assert mistaken.returncode != 0 and "Traceback" not in mistaken.stderr
    assert mistaken.stderr.strip().splitlines() == [
        f"Error: {export} is not an archive written by `rzcp audit archive` (its first line is not the "
        "archive's header); an export (`rzcp audit export`) is checked by `rzcp audit verify` on the "
        "database it came from"
    ]


def test_a_change_the_trail_could_not_record_is_not_made(tmp_path: Path) -> None:
    """An operator's walkthrough: with a malformed audit signing key, `members update`, `members suspend`
    and `clients add --role admin` were saved, unrecorded, while the command said it had failed."""
    env = {"RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"}
    assert run("db", "upgrade", env=env).returncode == 0
    member = ("members", "add", "--ura", "12345678", "--name", "Praktijk Noord", "--type", "huisartsen")
    assert run(*member, "--endpoint", "https://n.example/fhir", env=env).returncode == 0
    bad = {**env, "RZCP_AUDIT_SIGNING_KEY": "garbage"}
    for change in (
        ("members", "update", "12345678", "--name", "Renamed"),
        ("members", "suspend", "12345678"),
        ("keys", "rotate"),
    ):
        refused = run(*change, env=bad)
        assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
        assert refused.stderr.strip().endswith("nothing was changed"), refused.stderr
    listed = run("members", "list", env=env).stdout
    assert "Praktijk Noord" in listed and "Renamed" not in listed and "\tactive\t" in listed
    events = [json.loads(line) for line in run("audit", "export", env=env).stdout.splitlines()]
    actions = [x["description"] for e in events for x in e["entity"] if x["type"]["code"] == "console"]
    assert actions == ["members.add", "audit.export"]
    # verifying with a malformed public key: one line naming the setting
    verified = run("audit", "verify", env={**env, "RZCP_AUDIT_VERIFY_KEYS": "garbage"})
    assert verified.returncode != 0 and "Traceback" not in verified.stderr
    assert "RZCP_AUDIT_VERIFY_KEYS" in verified.stderr and len(verified.stderr.strip().splitlines()) == 1


def test_the_audit_commands_say_when_they_are_not_pointed_at_the_gateways_database(tmp_path: Path) -> None:
    """A shell without RZCP_DATABASE_URL: no empty database is made, and the one line says what to set."""
    missing = tmp_path / "nowhere.db"
    env = {"RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{missing}"}
    for command in (("audit", "verify"), ("audit", "export")):
        result = run(*command, env=env)
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [
            f"Error: no database at {missing}: set RZCP_DATABASE_URL to the gateway's database"
        ]
    assert not missing.exists()
    empty = tmp_path / "other.db"
    sqlite3.connect(empty).close()  # a database of something else
    result = run("audit", "verify", env={"RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{empty}"})
    assert result.returncode != 0
    assert "holds no audit trail: set RZCP_DATABASE_URL to the gateway's database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@dataclass
class Serving:
    process: subprocess.Popen[bytes]
    base: str

    def stop(self) -> str:
        """Stop the server; what it wrote to stdout and stderr."""
        self.process.terminate()
        return self.process.communicate(timeout=15)[0].decode()


def start_serving(database: Path) -> Serving:
    """`rzcp serve` on a SQLite file, once its /readyz says ready."""
    port = free_port()
    env = {**os.environ, "RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    process = subprocess.Popen(
        [RZCP, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    serving = Serving(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{serving.base}/readyz", timeout=1).status_code == 200:
                return serving
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"rzcp serve exited: {serving.stop()}")
        time.sleep(0.2)
    pytest.fail(f"rzcp serve did not become ready within 30 s: {serving.stop()}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    serving = start_serving(tmp_path / "serve.db")
    try:
        yield serving.base
    finally:
        serving.stop()


def test_serve_answers_fhir_on_a_fresh_sqlite_database(served: str) -> None:
    metadata = httpx.get(f"{served}/fhir/metadata", timeout=10)
    assert metadata.status_code == 200
    assert metadata.json()["fhirVersion"] == "4.0.1"
    assert httpx.get(f"{served}/healthz", timeout=5).json() == {"status": "ok"}


def test_serve_logs_each_line_stamped_and_the_audit_checkpoints(tmp_path: Path) -> None:
    """An operator's walkthrough: the gateway's own log lines had no time or level, and its INFO lines,
    the audit checkpoints the README tells operators to keep beside their backups, were not written."""
    serving = start_serving(tmp_path / "logs.db")
    try:
        assert httpx.get(f"{serving.base}/fhir/Organization", timeout=10).status_code == 401  # recorded
    finally:
        output = serving.stop()
    stamped = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and all(stamped.match(line) for line in lines), output
    assert any(" INFO rzcp.audit: audit checkpoint seq=" in line for line in lines), output


def _requests_counted(base: str, route: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    prefix = f'rzcp_http_requests_total{{method="GET",route="{route}",status="200"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_with_several_workers_every_scrape_counts_the_requests_of_all(tmp_path: Path) -> None:
    """A scrape reaches one worker: with counts per worker, the dashboard showed a share of the traffic
    that changed with each scrape. The workers' shared metrics folder is removed when the server stops."""
    port = free_port()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {
        **os.environ,
        "RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'workers.db'}",
        "TMPDIR": str(scratch),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [RZCP, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("rzcp serve --workers 2 did not become ready")
        time.sleep(2)  # the second worker: ready answers as soon as one is
        for _ in range(40):  # a connection each: the workers take turns accepting them
            assert httpx.get(f"{base}/fhir/metadata", timeout=10).status_code == 200
        assert [_requests_counted(base, "/fhir/metadata") for _ in range(6)] == [40.0] * 6
        assert list(scratch.glob("rzcp-metrics-*"))
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not list(scratch.glob("rzcp-metrics-*"))


def test_an_operator_registers_a_member_whose_server_asks_for_smart_backend_services(tmp_path: Path) -> None:
    """The region's client at the member's own authorization server: its token endpoint, client id and
    private key, checked at registration (a key that cannot sign would only show at the first pull), kept
    sealed, and named in the audit record without the key."""
    import asyncio
    import sqlite3

    from joserfc.jwk import RSAKey

    from rzcp.exchange.adapters import AuthKind
    from rzcp.exchange.directory import Directory
    from rzcp.exchange.secrets import member_secret_box
    from rzcp.settings import Settings
    from rzcp.store.db import Database

    database = tmp_path / "smart.db"
    env = {"RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{database}", "MEMBER_TOKEN": "t0k3n"}
    assert run("db", "upgrade", env=env).returncode == 0
    key = RSAKey.generate_key(2048, parameters={"kid": "region-1"}, private=True)
    private, public = tmp_path / "region.pem", tmp_path / "region.pub.pem"
    private.write_bytes(key.as_pem(private=True))
    public.write_bytes(key.as_pem(private=False))
    add = ("members", "add", "--ura", "23456789", "--name", "Ziekenhuis Zuid", "--type", "ziekenhuizen-labs")
    add += ("--endpoint", "https://zz.example/fhir")
    smart = ("--smart-token-url", "https://zz.example/auth/token", "--smart-client-id", "rzcp-region")
    for bad, why in (
        (smart, "needs --smart-token-url, --smart-client-id and --smart-key-file"),
        ((*smart, "--smart-key-file", str(public)), "a public key"),
        ((*smart, "--smart-key-file", str(private), "--smart-alg", "ES384"), "not a PEM or JWK EC key"),
        ((*smart, "--smart-key-file", str(private), "--auth-token-env", "MEMBER_TOKEN"), "not both"),
    ):
        refused = run(*add, *bad, env=env)
        assert refused.returncode != 0 and why in refused.stderr, refused.stderr
    added = run(*add, *smart, "--smart-key-file", str(private), "--smart-key-id", "region-1", env=env)
    assert added.returncode == 0, added.stderr

    async def stored() -> Any:
        db = Database(env["RZCP_DATABASE_URL"])
        try:
            async with db.read() as conn:
                return await Directory(member_secret_box(Settings().secret_key)).member(conn, "23456789")
        finally:
            await db.dispose()

    auth = asyncio.run(stored()).auth
    assert auth.kind is AuthKind.SMART
    assert (auth.token_url, auth.client_id, auth.key_id) == (
        "https://zz.example/auth/token",
        "rzcp-region",
        "region-1",
    )
    assert (auth.algorithm, auth.scope, auth.private_key) == ("RS384", "system/*.rs", private.read_text())
    with sqlite3.connect(database) as raw:
        dumped = "\n".join(raw.iterdump())
    assert "PRIVATE KEY" not in dumped  # sealed in the endpoint row, and never in the audit record
    assert "SMART Backend Services as rzcp-region at https://zz.example/auth/token" in dumped


def test_an_operator_changes_a_registered_members_endpoint_and_credentials(tmp_path: Path) -> None:
    """`rzcp members update`: a vendor move (new URL, new bearer token), the member's capacity and
    timeout; what is not given stays; refusals are one line and change nothing; the audit record names
    what changed, never the token."""
    import asyncio
    import sqlite3

    from rzcp.exchange.adapters import AuthKind
    from rzcp.exchange.directory import Directory
    from rzcp.exchange.secrets import member_secret_box
    from rzcp.settings import Settings
    from rzcp.store.db import Database

    database = tmp_path / "update.db"
    env = {
        "RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "OLD_TOKEN": "k-old-token-1",
        "NEW_TOKEN": "k-new-token-2",
    }
    assert run("db", "upgrade", env=env).returncode == 0
    add = ("members", "add", "--ura", "34567890", "--name", "Apotheek West", "--type", "apotheken")
    added = run(*add, "--endpoint", "https://old.example/fhir", "--auth-token-env", "OLD_TOKEN", env=env)
    assert added.returncode == 0, added.stderr

    async def stored() -> Any:
        db = Database(env["RZCP_DATABASE_URL"])
        try:
            async with db.read() as conn:
                return await Directory(member_secret_box(Settings().secret_key)).member(conn, "34567890")
        finally:
            await db.dispose()

    update = ("members", "update", "34567890")
    for bad, why in (
        ((), "nothing to change"),
        (("--max-pulls", "0", "--endpoint", "ftp://x.example/fhir"), "not an http(s) URL"),
        (("--timeout", "500"), "at most 120 seconds"),
        (("--no-auth", "--auth-token-env", "NEW_TOKEN"), "give one of"),
        (("--no-auth", "--keep-auth"), "give one of"),
        # found by review: the member's token would have gone to the new server unasked
        (("--endpoint", "https://elsewhere.example/fhir"), "moves to another server"),
        (("--auth-token-env", "MISSING_TOKEN"), "MISSING_TOKEN is not set"),
    ):
        refused = run(*update, *bad, env=env)
        assert refused.returncode != 0 and why in refused.stderr, (bad, refused.stderr)
        assert "Traceback" not in refused.stderr and refused.stderr.strip().splitlines()[-1].startswith(
            "Error:"
        )
    assert run("members", "update", "99999999", "--name", "Nobody", env=env).returncode != 0
    unchanged = asyncio.run(stored())
    assert (unchanged.base_url, unchanged.auth.token, unchanged.max_pulls) == (
        "https://old.example/fhir",
        "k-old-token-1",
        None,
    )
    moved = run(
        *update,
        *("--endpoint", "https://new.example/fhir", "--auth-token-env", "NEW_TOKEN"),
        *("--max-pulls", "3", "--timeout", "9"),
        env=env,
    )
    assert moved.returncode == 0, moved.stderr
    assert "changed: endpoint, timeout, max_pulls, auth" in moved.stdout
    member = asyncio.run(stored())
    assert (member.name, member.base_url, member.timeout, member.max_pulls) == (
        "Apotheek West",
        "https://new.example/fhir",
        9.0,
        3,
    )
    assert (member.auth.kind, member.auth.token) == (AuthKind.BEARER, "k-new-token-2")
    [listed] = run("members", "list", env=env).stdout.splitlines()  # what was set, never the token
    assert listed.split("\t") == [
        *("34567890", "active", "apotheken", "Apotheek West", "https://new.example/fhir"),
        *("-", "9", "3", "bearer"),
    ]
    kept = run(*update, "--endpoint", "https://new.example/r4", "--keep-auth", env=env)  # the same server
    assert kept.returncode == 0, kept.stderr
    moved_kept = run(*update, "--endpoint", "https://newer.example/fhir", "--keep-auth", env=env)
    assert moved_kept.returncode == 0, moved_kept.stderr
    assert asyncio.run(stored()).auth.token == "k-new-token-2"
    renamed = run(*update, "--name", "Apotheek West-Brabant", "--max-pulls", "0", env=env)
    assert renamed.returncode == 0, renamed.stderr
    member = asyncio.run(stored())
    assert (member.name, member.max_pulls, member.auth.token) == (
        "Apotheek West-Brabant",
        None,
        "k-new-token-2",
    )
    assert run(*update, "--no-auth", env=env).returncode == 0
    assert asyncio.run(stored()).auth.kind is AuthKind.NONE
    with sqlite3.connect(database) as raw:
        dumped = "\n".join(raw.iterdump())
        [(endpoint,)] = raw.execute(
            "SELECT content FROM resources WHERE res_type = 'Endpoint' AND res_id = 'ep-34567890'"
        ).fetchall()
    assert "k-new-token-2" not in dumped and "k-old-token-1" not in dumped  # sealed, and not in the trail
    assert "bearer token from $NEW_TOKEN" in dumped and "members.update" in dumped
    # and what each changed field was, as the console's record says it (an administrator's walkthrough)
    assert '"type":"endpoint_was","valueString":"https://old.example/fhir"' in dumped
    assert orjson.loads(endpoint)["address"] == "https://newer.example/fhir"  # the directory members read


def test_members_and_clients_as_an_operator_registers_them(tmp_path: Path) -> None:
    """The contract's `rzcp members` and `rzcp clients`: what is refused says why in one line."""
    from joserfc.jwk import RSAKey

    env = {"RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'ops.db'}"}
    assert run("db", "upgrade", env=env).returncode == 0
    add = (
        "members",
        "add",
        "--ura",
        "12345678",
        "--name",
        "Praktijk Noord",
        "--endpoint",
        "https://n.example/fhir",
    )
    empty = run("members", "list", env=env)  # which database it looked in, should it be the wrong one
    assert empty.returncode == 0 and empty.stdout == ""
    assert f"no members registered in {env['RZCP_DATABASE_URL']}" in empty.stderr, empty.stderr
    added = run(*add, "--type", "huisartsen", env=env)
    assert added.returncode == 0, added.stderr
    for bad, why in (
        (("--type", "nope"), "policy"),
        (("--type", "Z3", "--adapter", "nope"), "not installed"),
    ):
        refused = run(*add[:3], "87654321", *add[4:], *bad, env=env)
        assert refused.returncode != 0
        assert len(refused.stderr.strip().splitlines()) == 1 and why in refused.stderr, refused.stderr
    listed = run("members", "list", env=env)
    assert "12345678" in listed.stdout and "87654321" not in listed.stdout

    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [RSAKey.generate_key(2048, parameters={"kid": "k1"}).as_dict(private=False)]})
    )
    client = ("clients", "add", "--client-id", "ehr-noord", "--member", "12345678", "--scope", "system/*.rs")
    assert run(*client, "--jwks", str(jwks), env=env).returncode == 0
    weak = tmp_path / "weak.json"
    weak.write_text(
        json.dumps({"keys": [RSAKey.generate_key(1024, parameters={"kid": "w"}).as_dict(private=False)]})
    )
    refused = run(*client[:3], "ehr-weak", *client[4:], "--jwks", str(weak), env=env)
    assert refused.returncode != 0 and "2048" in refused.stderr
    assert "ehr-noord" in run("clients", "list", env=env).stdout
    # key rotation: checked as at registration; a refused set leaves the registered one
    rotated = tmp_path / "rotated.json"
    rotated.write_text(
        json.dumps({"keys": [RSAKey.generate_key(2048, parameters={"kid": "k2"}).as_dict(private=False)]})
    )
    refused = run("clients", "keys", "ehr-noord", "--jwks", str(weak), env=env)
    assert refused.returncode != 0 and "2048" in refused.stderr
    replaced = run("clients", "keys", "ehr-noord", "--jwks", str(rotated), env=env)
    assert replaced.returncode == 0 and "k2" in replaced.stdout, replaced.stderr
    assert run("clients", "keys", "nobody", "--jwks", str(rotated), env=env).returncode != 0
    narrowed = run("clients", "scope", "ehr-noord", "--scope", "system/Organization.rs", env=env)
    assert narrowed.returncode == 0 and "system/Organization.rs" in narrowed.stdout, narrowed.stderr
    refused = run("clients", "scope", "ehr-noord", "--scope", "patient/*.rs", env=env)
    assert refused.returncode != 0 and "system/" in refused.stderr
    assert "system/Organization.rs" in run("clients", "list", env=env).stdout
    assert run("clients", "revoke", "ehr-noord", env=env).returncode == 0
    refused = run("clients", "keys", "ehr-noord", "--jwks", str(rotated), env=env)
    assert refused.returncode != 0 and "revoked" in refused.stderr
    assert run("members", "suspend", "12345678", env=env).returncode == 0
    assert "\tsuspended\t" in run("members", "list", env=env).stdout
    assert run("members", "reinstate", "12345678", env=env).returncode == 0
    assert "\tactive\t" in run("members", "list", env=env).stdout
    assert run("members", "reinstate", "00000000", env=env).returncode != 0


def test_a_served_gateway_keeps_its_start_up_objects_out_of_garbage_collection(tmp_path: Path) -> None:
    """What `rzcp serve` runs in each worker: the app built, then what it holds frozen and the young
    collection's threshold raised (bench/README.md, "Garbage collection": a quarter of a pull's CPU
    went to collections before). In a process of its own: freezing is process-wide."""
    code = (
        "import gc; from rzcp.app import app_from_environment; app_from_environment(); "
        "print(gc.get_freeze_count(), *gc.get_threshold())"
    )
    env = {**os.environ, "RZCP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gc.db'}"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    frozen, *thresholds = map(int, result.stdout.split())
    assert frozen > 50_000  # the search parameters, the policy, the models
    assert thresholds[0] >= 10_000
