"""What authentication costs a read: the same read by id with a real SMART bearer token and without.

    python bench/bench_auth.py [--db sqlite|postgresql|both] [--seconds N] [--rounds N] [--connections N]

For each database this starts two gateways under uvicorn on the same scratch database (one worker each,
the options of run_store.py): one with authentication on, one with `RZCP_AUTH_ENABLED=false`. It
registers a member and a member system with a fresh RS384 key through the `rzcp members add` and
`rzcp clients add` commands, gets one access token from the token endpoint with a signed client assertion
(SMART Backend Services, as a member system does), and stores the first Synthea patient. `wrk` then reads
`GET /fhir/Patient/<id>` from both, interleaved (without, with, without, with ...), sending exactly the same
request to both: the member's context headers and `Authorization: Bearer <token>` (which the gateway
without authentication ignores). Reported are the medians and, as the ratio, the median of the per-round
with/without ratios; the aim is **a read with a token at >= 0.90 of the read without**.

Per request the token path verifies the JWT (its claims cached once verified) and checks in the database
that the client and its member are still active. To show that check still holds, the run ends by revoking
the client (`rzcp clients revoke`) and asking once more: the answer must be a 401.

Everything it starts is stopped at the end, also on Ctrl-C. Exit codes as run_store.py: 0 done, 1 an error,
2 a missing tool (wrk, psql).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Server  # the sibling modules, found through the line above
from run_store import (
    CONTEXT_HEADERS,
    DATA_DIR,
    FHIR_JSON,
    Interleaved,
    common_parser,
    parse,
    print_settings,
    run_databases,
    scratch_gateways,
    start_uvicorn,
    wrk,
)

AUTH_AIM = 0.90
ALG = "RS384"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "system/*.rs"
MEMBER_URA = "90000001"
CLIENT_ID = "bench-ehr"


def rzcp(env: dict[str, str], *args: str) -> None:
    """One `rzcp` command against the bench database (how an operator registers a member system)."""
    done = subprocess.run(
        [sys.executable, "-m", "rzcp.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rzcp {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")


def register(env: dict[str, str], workdir: Path) -> RSAKey:
    """A member and one system of it with a fresh key pair; returns the private key."""
    key = RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:12]}, private=True)
    jwks = workdir / "bench-ehr.jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    rzcp(env, "members", "add", "--ura", MEMBER_URA, "--name", "Bench member", "--type", "Z3",
         "--endpoint", "https://bench-member.example/fhir")  # fmt: skip
    rzcp(env, "clients", "add", "--client-id", CLIENT_ID, "--member", MEMBER_URA, "--jwks", str(jwks),
         "--scope", SCOPE, "--role", "member")  # fmt: skip
    return key


def fetch_token(server: Server, key: RSAKey) -> str:
    token_url = f"{server.base}/auth/token"
    now = int(time.time())
    assertion = jwt.encode(
        {"alg": ALG, "kid": key.kid, "typ": "JWT"},
        {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": token_url, "exp": now + 240, "jti": uuid.uuid4().hex},
        key,
        algorithms=[ALG],
    )
    form = {
        "grant_type": "client_credentials",
        "scope": SCOPE,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    response = httpx.post(token_url, data=form, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"the token endpoint refused: {response.status_code} {response.text[:300]}")
    return response.json()["access_token"]


def store_patient(server: Server) -> str:
    """The first Synthea patient, stored through the gateway without authentication; returns its id."""
    bundle = json.loads(sorted((DATA_DIR / "synthea").glob("*.json"))[0].read_text())
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    response = httpx.post(
        f"{server.base}/fhir/Patient",
        json=patient,
        headers={**CONTEXT_HEADERS, "Content-Type": FHIR_JSON},
        timeout=30,
    )
    if response.status_code != 201:
        raise RuntimeError(f"the Patient was refused: {response.status_code} {response.text[:300]}")
    return response.json()["id"]


def check(off: Server, on: Server, path: str, headers: dict[str, str]) -> int:
    """Both answer the read with the same bytes; without the token the authenticated one says 401."""
    answers = [
        httpx.get(s.base + path, headers={**CONTEXT_HEADERS, **headers}, timeout=30) for s in (off, on)
    ]
    for server, answer in zip((off, on), answers, strict=True):
        if answer.status_code != 200:
            raise RuntimeError(f"{server.name} answered {answer.status_code}: {answer.text[:300]}")
    if answers[0].content != answers[1].content:
        raise RuntimeError("the two gateways answered the read with different bytes")
    refused = httpx.get(on.base + path, headers=CONTEXT_HEADERS, timeout=30)
    if refused.status_code != 401:
        raise RuntimeError(f"without a token the gateway answered {refused.status_code}, not 401")
    return len(answers[0].content)


def measure(
    off: Server, on: Server, path: str, headers: dict[str, str], args: argparse.Namespace
) -> Interleaved:
    figures = Interleaved()
    for server in (off, on):  # warm both, results discarded
        wrk(server.base + path, connections=args.connections, seconds=1, headers=headers)
    for rnd in range(args.rounds):
        a = wrk(off.base + path, connections=args.connections, seconds=args.seconds, headers=headers)
        b = wrk(on.base + path, connections=args.connections, seconds=args.seconds, headers=headers)
        figures.base_rps.append(a.rps)
        figures.gate_rps.append(b.rps)
        print(f"  round {rnd + 1}  without {a.rps:>8,.0f}  with token {b.rps:>8,.0f} req/s")
    for _ in range(args.rounds):
        a = wrk(off.base + path, connections=1, seconds=args.latency_seconds, headers=headers)
        b = wrk(on.base + path, connections=1, seconds=args.latency_seconds, headers=headers)
        figures.base_p50.append(a.p50_ms)
        figures.gate_p50.append(b.p50_ms)
    return figures


def check_revocation(env: dict[str, str], on: Server, path: str, headers: dict[str, str]) -> None:
    rzcp(env, "clients", "revoke", CLIENT_ID)
    answer = httpx.get(on.base + path, headers={**CONTEXT_HEADERS, **headers}, timeout=30)
    if answer.status_code != 401:
        raise RuntimeError(f"after the revocation the token still read ({answer.status_code}), not 401")
    print("  revocation: the next request with the revoked client's token got a 401")


def report(title: str, figures: Interleaved, args: argparse.Namespace) -> bool:
    med = statistics.median
    met = figures.ratio >= AUTH_AIM
    print_settings(title, args)
    head = f"{'read by id':<22} {'req/s':>8} {'p50':>9}"
    print(head)
    print("-" * len(head))
    print(f"{'without authentication':<22} {med(figures.base_rps):>8,.0f} {med(figures.base_p50):>7.2f}ms")
    print(f"{'with a bearer token':<22} {med(figures.gate_rps):>8,.0f} {med(figures.gate_p50):>7.2f}ms")
    cost = med((1 / on - 1 / off) * 1e6 for on, off in zip(figures.gate_rps, figures.base_rps, strict=True))
    print(
        f"ratio {figures.ratio:.2f} (aim >= {AUTH_AIM:.2f} {'met' if met else 'NOT met'}); "
        f"authentication costs about {cost:,.0f} µs of the process per request"
    )
    return met


def run_one(kind: str, args: argparse.Namespace, workdir: Path) -> bool:
    title = {"sqlite": "SQLite (WAL)", "postgresql": "PostgreSQL (asyncpg)"}[kind]
    print(f"\n== {title}")
    with scratch_gateways(kind, workdir) as (env, servers):
        env["RZCP_ACCESS_TOKEN_SECONDS"] = "3600"  # the one token outlives the run
        off = start_uvicorn(
            servers,
            f"no-auth-{kind}",
            "gateway_app:create",
            {**env, "RZCP_AUTH_ENABLED": "false"},
            "/fhir/metadata",
        )  # first: it migrates the database
        on = start_uvicorn(servers, f"auth-{kind}", "gateway_app:create", env, "/fhir/metadata")
        cli_env = {**env, "RZCP_AUTO_MIGRATE": "false"}
        key = register(cli_env, workdir)
        token = fetch_token(on, key)
        headers = {"Authorization": f"Bearer {token}"}
        path = f"/fhir/Patient/{store_patient(off)}"
        size = check(off, on, path, headers)
        print(f"  GET {path} -> {size:,} bytes from both; without the token: 401")
        figures = measure(off, on, path, headers, args)
        check_revocation(cli_env, on, path, headers)
    return report(title, figures, args)


def main(argv: list[str] | None = None) -> int:
    args = parse(common_parser(__doc__), argv)

    def verdict(kind: str, met: bool) -> str:
        outcome = "met" if met else "NOT met"
        return f"aim (read with a token >= {AUTH_AIM:.2f} of the read without) on {kind}: {outcome}"

    return run_databases(args, run_one, "rzcp-bench-auth-", verdict)


if __name__ == "__main__":
    sys.exit(main())
