"""`rzcp demo`: a small care region on this machine, on SQLite.

It loads four simulated members (a GP practice, a hospital, a pharmacy, a GGZ clinic) with the Synthea and
nl-core patients in ./data (each member under its own ids, every person with the same test BSN), registers
them and one OAuth client each in the gateway (the clients' private keys go to the demo folder, never the
repository), announces their patients, writes a few consents, starts every member's FHIR server and the
gateway as child processes on loopback ports, and prints what to try. Ctrl-C stops every process it started.

The consents of Synthea's patient 85, "Mr. Bosco": GP practices and hospitals may see everything,
pharmacies medication only; nothing from the GGZ clinic to anyone (so a pull shows GP and hospital data,
none of the GGZ clinic's, and the GP's psychiatric diagnosis, labelled PSY, is withheld: no consent names
that label).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from joserfc import jwt
from joserfc.jwk import RSAKey

from rzcp.auth import registry
from rzcp.auth.devidp import DEV_OTP
from rzcp.consent.cache import note_consent_change
from rzcp.consent.cases import consent_from_compact
from rzcp.consent.policy import DEFAULT_POLICY_PATH, load_policy
from rzcp.exchange.directory import Directory
from rzcp.exchange.locator import Locator
from rzcp.exchange.secrets import BsnProtector, member_secret_box
from rzcp.fhir.search.definitions import SearchRegistry
from rzcp.membersim.loader import load_member_data
from rzcp.settings import Settings
from rzcp.store.db import Database
from rzcp.store.migrate import upgrade
from rzcp.store.resources import ResourceStore

DATA = Path(__file__).resolve().parents[3] / "data"
SYNTHEA = [
    DATA / "synthea" / "uscore_bundle_patient_85.json",
    DATA / "synthea" / "uscore_bundle_patient_355.json",
]
NL_CORE = [
    DATA / "nl-core" / "nl-core-Patient-01.json",
    DATA / "nl-core" / "nl-core-AllergyIntolerance-01.json",
]
#: What a member system needs, and no more: pull (read, search), announce patients, push messages.
SCOPE = "system/*.rs system/Patient.c system/Bundle.c"
PRACTITIONER = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers|900012345"
PSY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}


@dataclass
class DemoMember:
    key: str
    name: str
    ura: str
    category: str
    prefix: str
    types: list[str]
    files: list[Path]
    port: int = 0
    patients: dict[str, str] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


MEMBERS = [
    DemoMember(
        "gp",
        "Huisartsenpraktijk De Linde",
        "00000101",
        "huisartsen",
        "gp-",
        ["Condition", "MedicationRequest", "AllergyIntolerance", "Immunization"],
        [*SYNTHEA, *NL_CORE],
    ),
    DemoMember(
        "hospital",
        "Ziekenhuis Rijnstad",
        "00000201",
        "ziekenhuizen-labs",
        "zh-",
        ["Observation", "DiagnosticReport", "Procedure", "Encounter"],
        SYNTHEA,
    ),
    DemoMember(
        "pharmacy", "Apotheek Centraal", "00000301", "apotheken", "apo-", ["MedicationRequest"], SYNTHEA
    ),
    DemoMember("ggz", "GGZ De Oever", "00000401", "ggz", "ggz-", ["Condition", "CarePlan"], SYNTHEA[:1]),
]


#: What the demo says when Ctrl-C (or a SIGTERM) stops it.
STOPPING = "\nrzcp demo: stopping the gateway and the members it started"

#: The demo's staff at the development identity provider (user name `admin`, `auditor` or `chief`).
DEMO_PEOPLE = {"dev:admin": "admin", "dev:auditor": "auditor", "dev:chief": "admin,auditor"}


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _count(number: int, noun: str) -> str:
    """The number with the noun, plural but for one: "1 patient", "2 patients"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


async def prepare(folder: Path, port: int) -> dict[str, Any]:
    """Load the members, register them, announce their patients, write the consents. Returns what the
    printout needs."""
    database = Database(f"sqlite+aiosqlite:///{folder / 'gateway.db'}")
    settings = Settings(database_url=database.url)
    policy = load_policy(_emergency_policy(folder, settings.consent_policy_path))  # before any loading
    for offset, member in enumerate(MEMBERS, start=1):
        member.port = port + offset
        url = f"sqlite+aiosqlite:///{folder / f'member-{member.key}.db'}"
        report = await load_member_data(url, member.files, id_prefix=member.prefix, types=member.types)
        member.patients = report.patients
        loaded = f"{_count(report.created, 'resource')}, {_count(len(report.patients), 'patient')}"
        _log(f"  {member.name}: {loaded}")
    gp = MEMBERS[0]
    search = SearchRegistry.default()
    directory = Directory(member_secret_box(settings.secret_key), settings.member_timeout)
    locator = Locator(BsnProtector(settings.bsn_secret))
    keys_dir = folder / "keys"
    keys_dir.mkdir(exist_ok=True)
    clients: dict[str, tuple[str, Any]] = {}
    regional: dict[str, str] = {}
    try:
        await upgrade(database)
        async with database.write() as conn:
            for member in MEMBERS:
                await directory.add_member(
                    conn,
                    search,
                    ura=member.ura,
                    name=member.name,
                    category=member.category,
                    endpoint=member.base,
                )
                key = RSAKey.generate_key(2048, parameters={"kid": f"{member.key}-1"}, private=True)
                client_id = f"demo-{member.key}"
                await registry.add_client(
                    conn,
                    client_id=client_id,
                    member_ura=member.ura,
                    scope=SCOPE,
                    role="member",
                    jwks={"keys": [key.as_dict(private=False)]},
                )
                path = keys_dir / f"{client_id}.jwk.json"
                path.write_bytes(orjson.dumps(key.as_dict(private=True)))
                path.chmod(0o600)
                clients[member.key] = (client_id, key)
                for local, bsn in (member.patients or {}).items():
                    regional[bsn] = await locator.announce(conn, search, member.ura, bsn, local)
            # Mr. Bosco, Synthea's patient 85: the patient every member but one holds
            ms85_bsn = next(bsn for bsn in (MEMBERS[3].patients or {}).values())
            patient = regional[ms85_bsn]
            # Synthea's patient 355, held by the GP practice, the hospital and the pharmacy: no consents
            unconsented = next(bsn for bsn in (MEMBERS[1].patients or {}).values() if bsn != ms85_bsn)
            gp_local = next(local for local, bsn in (gp.patients or {}).items() if bsn == ms85_bsn)
            psy = {
                "resourceType": "Condition",
                "id": "gp-psy-1",
                "meta": {"security": [PSY]},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {
                    "coding": [
                        {
                            "system": "http://snomed.info/sct",
                            "code": "35489007",
                            "display": "Depressive disorder",
                        }
                    ]
                },
                "subject": {"reference": f"Patient/{gp_local}"},
            }
            for compact in (
                {"permit": {"to": ["huisartsen", "ziekenhuizen-labs"]}},
                {"permit": {"to": "apotheken", "data": ["medicatie"]}},
                {"deny": {"from": "ggz"}},
            ):
                consent_id = f"demo-{uuid.uuid4().hex[:8]}"
                consent = consent_from_compact(
                    {"id": consent_id, **compact}, policy, patient=f"Patient/{patient}"
                )
                consent.pop("meta", None)
                await ResourceStore(conn, search).create(consent, res_id=consent_id)
                await note_consent_change(conn, f"Patient/{patient}", consent_id)
    finally:
        await database.dispose()
    gp_db = Database(f"sqlite+aiosqlite:///{folder / 'member-gp.db'}")
    try:
        async with gp_db.write() as conn:
            store = ResourceStore(conn, search)
            with contextlib.suppress(Exception):
                await store.create(psy, res_id=psy["id"])
    finally:
        await gp_db.dispose()
    return {
        "patient": patient,
        "bsn": ms85_bsn,
        "unconsented": regional[unconsented],
        "clients": clients,
        "database": database.url,
    }


def _emergency_policy(folder: Path, source: Path | None) -> Path:
    """A copy of the region's policy (`source`, or the repository's) with its emergency rule
    (break-the-glass) switched on, for the demo to show it: the law is strict, so the policy has it off
    and a region switches it on deliberately. Read and checked as the gateway reads it first, so a missing
    or broken policy is said as the gateway says it."""
    load_policy(source)
    data = yaml.safe_load((source or DEFAULT_POLICY_PATH).read_text(encoding="utf-8"))
    data["emergency"]["enabled"] = True
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def _start_children(
    folder: Path, port: int, database_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Each process goes into `processes` as it starts, so that an interrupt halfway still stops it."""
    # -P: the working directory is not put on sys.path, so a clone of the repository there (an `rzcp/`
    # folder) cannot stand in for the installed package (a new user's demo failed so)
    python = [sys.executable, "-P", "-m", "rzcp.cli"]
    for member in MEMBERS:
        url = f"sqlite+aiosqlite:///{folder / f'member-{member.key}.db'}"
        command = [*python, "member-sim", "--name", member.name, "--ura", member.ura]
        command += ["--port", str(member.port), "--database", url]
        processes.append(subprocess.Popen(command, env={**os.environ}))  # noqa: S603 - our own command
    env = {
        **os.environ,
        "RZCP_DATABASE_URL": database_url,
        "RZCP_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}/fhir",
        "RZCP_ACCESS_TOKEN_SECONDS": "3600",
        # the web apps' logins go through the development identity provider (a BSN form; staff with the
        # development second factor): never in production, which refuses RZCP_DEV_IDP
        "RZCP_DEV_IDP": "1",
        "RZCP_PERSON_ROLES": orjson.dumps(DEMO_PEOPLE).decode(),
        "RZCP_CONSENT_POLICY_PATH": str(folder / "policy.yaml"),  # the emergency rule on (_emergency_policy)
    }
    gateway = [*python, "serve", "--port", str(port)]
    processes.append(subprocess.Popen(gateway, env=env))  # noqa: S603 - our own command


def _wait_up(urls: list[str], processes: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a demo process stopped while starting; see the lines above")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")
            time.sleep(0.2)


def _token(port: int, client_id: str, key: Any) -> str:
    token_url = f"http://127.0.0.1:{port}/auth/token"
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240, "jti": uuid.uuid4().hex}
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])
    form = {
        "grant_type": "client_credentials",
        "scope": SCOPE,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    response = httpx.post(token_url, data=form, timeout=10)
    response.raise_for_status()
    return response.json()["access_token"]


def _first_traffic(port: int, facts: dict[str, Any], tokens: dict[str, str], message: Path) -> None:
    """A few exchanges, so the patient's access log and the console's charts show something from the start:
    the hospital's pull and $everything, the pharmacy's (partly withheld) pull, and the GP's push."""
    base = f"http://127.0.0.1:{port}/fhir"
    patient = facts["patient"]
    context = {"X-Purpose-Of-Use": "TREAT", "X-Acting-Practitioner": PRACTITIONER}
    calls = [
        ("hospital", "GET", f"{base}/Condition?patient=Patient/{patient}&_count=100", None),
        ("hospital", "GET", f"{base}/Patient/{patient}/$everything?_count=50", None),
        ("pharmacy", "GET", f"{base}/Condition?patient=Patient/{patient}", None),
        ("pharmacy", "GET", f"{base}/MedicationRequest?patient=Patient/{patient}", None),
        ("gp", "POST", f"{base}/$process-message", _own_copy(message)),
    ]
    with httpx.Client(timeout=30) as http:
        for who, method, url, body in calls:
            headers = {"Authorization": f"Bearer {tokens[who]}", **context}
            if body is not None:
                headers["Content-Type"] = "application/fhir+json"
            with contextlib.suppress(httpx.HTTPError):
                http.request(method, url, headers=headers, content=body)


def _own_copy(message: Path) -> bytes:
    """The demo's own push under another Bundle id than message.json's, so that the user's first push of
    message.json is a new message, not "accepted again (already known)"."""
    bundle = orjson.loads(message.read_bytes())
    bundle["id"] = "demo-discharge-0"
    return orjson.dumps(bundle)


#: The message's Patient entry, which its letter names as its subject.
_PATIENT_ENTRY = "urn:uuid:0b7f4a52-3c1e-4d6a-9f1e-7a2d5c8e4b10"


def _message(folder: Path, bsn: str) -> Path:
    hospital = MEMBERS[1]
    bundle = {
        "resourceType": "Bundle",
        "id": "demo-discharge-1",
        "type": "message",
        "entry": [
            {
                "resource": {
                    "resourceType": "MessageHeader",
                    "eventCoding": {
                        "system": "http://rzcp.nl/fhir/CodeSystem/events",
                        "code": "discharge-letter",
                    },
                    "destination": [
                        {
                            "endpoint": hospital.base,
                            "receiver": {
                                "identifier": {
                                    "system": "http://fhir.nl/fhir/NamingSystem/ura",
                                    "value": hospital.ura,
                                }
                            },
                        }
                    ],
                    "source": {"endpoint": MEMBERS[0].base},
                }
            },
            {
                "fullUrl": _PATIENT_ENTRY,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": bsn}],
                },
            },
            {
                "resource": {
                    "resourceType": "DocumentReference",
                    "status": "current",
                    "subject": {"reference": _PATIENT_ENTRY},  # the letter is about the message's patient
                    "type": {
                        "coding": [
                            {"system": "http://loinc.org", "code": "18842-5", "display": "Discharge summary"}
                        ]
                    },
                    "content": [{"attachment": {"contentType": "text/plain", "data": "T250c2xhZ2JyaWVm"}}],
                }
            },
        ],
    }
    path = folder / "message.json"
    path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    return path


def run_demo(port: int, folder: Path | None) -> None:
    """Without a folder the demo makes a temporary one and removes it when it stops: it holds the clients'
    private keys, of no use once the region is gone."""
    temporary = folder is None
    folder = folder or Path(tempfile.mkdtemp(prefix="rzcp-demo-"))
    folder.mkdir(parents=True, exist_ok=True)

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, stop)  # a terminated demo stops its children too
    # Ctrl-C is heard here even when the demo was started with it ignored (a script's background job):
    # its servers hear it regardless, and would otherwise stop as if they had failed
    signal.signal(signal.SIGINT, signal.default_int_handler)
    processes: list[subprocess.Popen[bytes]] = []
    try:  # from here on, an interrupt or an error stops what started and removes a temporary folder
        _check_ports_free(port)
        _log(f"rzcp demo: preparing the region in {folder}")
        facts = asyncio.run(prepare(folder, port))
        _start_children(folder, port, facts["database"], processes)
        _wait_up([f"{m.base}/metadata" for m in MEMBERS] + [f"http://127.0.0.1:{port}/healthz"], processes)
        tokens = {key: _token(port, *facts["clients"][key]) for key in ("hospital", "gp", "pharmacy")}
        message = _message(folder, facts["bsn"])
        _first_traffic(port, facts, tokens, message)
        _print_next(port, facts, tokens, message, folder, folder_kept=not temporary)
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        # Ctrl-C in a terminal reaches the children too, and one may stop before this process hears it
        interrupted = any(p.returncode in (-signal.SIGINT, 130) for p in processes)
        _log(STOPPING if interrupted else "rzcp demo: a process stopped; stopping the others")
    except KeyboardInterrupt:
        _log(STOPPING)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the stopping short
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if temporary and _removed(folder):
            _log(f"rzcp demo: removed {folder}")
        for number, handler in before.items():
            if handler is not None:  # None: set outside Python, nothing to restore
                signal.signal(number, handler)


def _check_ports_free(port: int) -> None:
    """The gateway's port and the members' next four, free before anything is loaded: a second demo
    loaded its data into the first one's members and then failed with a traceback (a new user's report)."""
    for number in range(port, port + len(MEMBERS) + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", number))
            except OSError:
                raise RuntimeError(
                    f"port {number} is in use; the demo needs ports {port} to {port + len(MEMBERS)} "
                    "(the gateway and its members): stop what holds it (another demo?) or give --port"
                ) from None


def _removed(folder: Path) -> bool:
    """Remove the demo's folder (it holds the clients' private keys), trying again for a few seconds: a
    preparation interrupted mid-write may leave a database thread closing its files while the first
    attempt runs."""
    for _ in range(30):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return True
        time.sleep(0.1)
    _log(f"rzcp demo: could not remove all of {folder}; remove it by hand")
    return False


def _print_next(
    port: int,
    facts: dict[str, Any],
    tokens: dict[str, str],
    message: Path,
    folder: Path,
    *,
    folder_kept: bool,
) -> None:
    base = f"http://127.0.0.1:{port}/fhir"
    patient = facts["patient"]
    context = f'-H "X-Purpose-Of-Use: TREAT" -H "X-Acting-Practitioner: {PRACTITIONER}"'
    headers = f'-H "Authorization: Bearer $TOKEN" {context}'
    gp_headers = f'-H "Authorization: Bearer $GP_TOKEN" {context}'
    pharmacy_headers = f'-H "Authorization: Bearer $PHARMACY_TOKEN" {context}'
    emergency_headers = (
        f'-H "Authorization: Bearer $TOKEN" -H "X-Purpose-Of-Use: ETREAT" '
        f'-H "X-Acting-Practitioner: {PRACTITIONER}" '
        '-H "X-Break-Glass-Reason: unconscious at the emergency department"'
    )
    unconsented = facts["unconsented"]
    total = """| grep -o '"total":[0-9]*'"""
    ggz = MEMBERS[3]
    ggz_local = next(local for local, bsn in (ggz.patients or {}).items() if bsn == facts["bsn"])
    data = shlex.quote(str(message))
    # URLs in single quotes: bash leaves their `$everything` and `$process-message` alone (in double
    # quotes it would expand `$process`); only $TOKEN, $GP_TOKEN, $PHARMACY_TOKEN and $LOCATION are meant
    lines = [
        "",
        "The RZCP demo region is running. Ctrl-C stops every process.",
        "",
        f"  gateway     {base}   (CapabilityStatement: {base}/metadata)",
        *(f"  {m.name:<28} {m.base}   URA {m.ura} ({m.category})" for m in MEMBERS),
        f"  demo folder {folder}  (databases, the clients' private keys, message.json)"
        + ("" if folder_kept else "; removed when the demo stops"),
        "",
        "Tokens (valid one hour) for the hospital's, the GP practice's and the pharmacy's systems:",
        "",
        f"export TOKEN={tokens['hospital']}",
        f"export GP_TOKEN={tokens['gp']}",
        f"export PHARMACY_TOKEN={tokens['pharmacy']}",
        "",
        f"Patient 'Mr. Bosco' (Synthea's patient 85) is Patient/{patient} at the region (BSN {facts['bsn']},",
        "a test number). Each member holds its own part of his Synthea record: the GP practice his",
        "conditions, medication, allergies and immunizations (and a psychiatric diagnosis labelled PSY),",
        "the hospital his observations, reports, procedures and encounters, the pharmacy his medication,",
        "the GGZ clinic conditions and care plans of its own.",
        "His consents: GP practices and hospitals may see everything, pharmacies only medication;",
        "nothing from the GGZ clinic.",
        "",
        "# a permitted pull: the hospital asks the region for his conditions; each entry names its source",
        "# in meta.security; his psychiatric diagnosis (labelled PSY) at the GP practice is withheld",
        f"curl -s {headers} '{base}/Condition?patient=Patient/{patient}&_count=100'",
        "",
        "# everything the region may show the hospital about him (GP and pharmacy data):",
        f"curl -s {headers} '{base}/Patient/{patient}/$everything?_count=50'",
        "",
        "# a shielded member: the GGZ clinic does hold conditions for him ...",
        f"curl -s '{ggz.base}/Condition?patient=Patient/{ggz_local}'",
        "# ... but the region's answer has none of them and no trace that the clinic was there (expect 0)",
        f"curl -s {headers} '{base}/Condition?patient=Patient/{patient}&_count=100' | grep -c {ggz.ura}",
        "",
        "# the pharmacy sees his medication, but not his conditions (an empty Bundle, as for no data):",
        f"curl -s {pharmacy_headers} '{base}/Condition?patient=Patient/{patient}'",
        "",
        "# an emergency: Synthea's patient 355 never gave consent, so the hospital's pull finds nothing",
        '# (expect "total":0) ...',
        f"curl -s {headers} '{base}/MedicationRequest?patient=Patient/{unconsented}' {total}",
        "# ... until its emergency department breaks the glass: this demo region switched the emergency",
        "# rule on (it is off unless a region decides otherwise): medication, allergies, problems and lab",
        "# results, for four hours, each access audited as an emergency with its reason",
        f"curl -s {emergency_headers} \\",
        f"  '{base}/MedicationRequest?patient=Patient/{unconsented}' {total}",
        "",
        "# a push: the GP sends a discharge letter to the hospital; then follow its Location header, pasted",
        "# between the single quotes (it holds a $, which bash would expand between double quotes)",
        f'curl -si {gp_headers} -H "Content-Type: application/fhir+json" --data @{data} \\',
        f"  '{base}/$process-message'",
        "export LOCATION='<the Location header above>'",
        f'curl -s {gp_headers} "$LOCATION"',
        "",
        "# the member directory",
        f"curl -s {headers} '{base}/Organization'",
        "",
        "The web apps (log in at the development identity provider; the demo made a few exchanges already):",
        f"  patient app   http://127.0.0.1:{port}/app/     log in as Mr. Bosco with BSN {facts['bsn']}",
        f"  console       http://127.0.0.1:{port}/admin/   user admin, auditor or chief (both roles);",
        f"                second factor {DEV_OTP} (the development code; without it the console refuses)",
        "",
        "The rzcp commands work on the demo's gateway with its database (in another terminal):",
        f"  export RZCP_DATABASE_URL={shlex.quote(str(facts['database']))}",
        "  rzcp members list",
        "",
    ]
    print("\n".join(lines), flush=True)
