"""The auditors' search and the patient's own access log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rzcp.audit import Decision, Practitioner, Returned, build_event, patient_access_log, search_events
from rzcp.audit.search import describe_access
from rzcp.audit.writer import AuditWriter
from rzcp.store.db import Database

from .conftest import UZI, make_facts

T = datetime(2026, 3, 4, 13, 5, tzinfo=UTC)


async def _seed(writer: AuditWriter) -> None:
    nurse = Practitioner(UZI, "900099999", name="J. Jansen", role="verpleegkundige")
    facts = [
        make_facts(recorded=T.replace(day=1)),
        make_facts(recorded=T.replace(day=2), patient="Patient/p2"),
        make_facts(
            recorded=T.replace(day=3),
            practitioner=nurse,
            member_ura="00005555",
            member_name="Ziekenhuis Oost",
            purpose="ETREAT",
            emergency_reason="bewusteloos",
            decisions=(Decision(True, "00002222", rule="emergency"),),
        ),
        make_facts(
            recorded=T.replace(day=4),
            returned=(),
            decisions=(Decision(False, "00002222", consents=(("c9", "1"),)),),
            query="patient=p1",
        ),
        make_facts(recorded=T.replace(day=5), status=503, returned=(), outcome_desc="source unavailable"),
        # the patient reads their own log: in the trail, not in the patient's list
        make_facts(
            recorded=T.replace(day=6),
            kind="patient",
            practitioner=None,
            client_id="rzcp-patient-app",
            member_ura=None,
            purpose="PATRQT",
            resource_type="AuditEvent",
            returned=(Returned("AuditEvent", 4),),
            decisions=(),
        ),
    ]
    for item in facts:
        await writer.record(item)


async def test_search_by_each_criterion(audit_db: Database, writer: AuditWriter) -> None:
    await _seed(writer)
    everything = await search_events(audit_db, count=100)
    assert everything.total == 6
    assert [e["recorded"][8:10] for e in everything.events] == ["06", "05", "04", "03", "02", "01"]
    by_patient = await search_events(audit_db, patient="p1")
    assert by_patient.total == 5
    assert (await search_events(audit_db, patient="Patient/p2")).total == 1
    assert (await search_events(audit_db, agent=f"{UZI}|900099999")).total == 1
    assert (await search_events(audit_db, member="00005555")).total == 1
    assert (await search_events(audit_db, client="rzcp-patient-app")).total == 1
    window = await search_events(audit_db, since=T.replace(day=2), until=T.replace(day=4))
    assert window.total == 2
    assert (await search_events(audit_db, since=datetime(2026, 3, 5))).total == 2  # naive = UTC
    assert (await search_events(audit_db, purpose="ETREAT")).total == 1
    assert (await search_events(audit_db, emergency=True)).total == 1
    assert (await search_events(audit_db, emergency=False)).total == 5
    assert (await search_events(audit_db, outcome="8")).total == 1
    assert (await search_events(audit_db, patient="p1", outcome="0", emergency=False)).total == 3
    first = everything.events[-1]
    corr = next(e for e in first["entity"] if e.get("type", {}).get("code") == "XrequestId")
    assert (await search_events(audit_db, correlation_id=corr["what"]["identifier"]["value"])).total == 1
    # paging
    page = await search_events(audit_db, patient="p1", offset=2, count=2)
    assert page.total == 5 and len(page.events) == 2
    assert [e["recorded"][8:10] for e in page.events] == ["04", "03"]
    assert (await search_events(audit_db, patient="p1", offset=10)).events == []


async def test_patient_access_log(audit_db: Database, writer: AuditWriter) -> None:
    await _seed(writer)
    total, entries = await patient_access_log(audit_db, "p1", lang="nl")
    assert total == 4  # not p2's, not the patient's own reading of the log
    newest, denied, emergency, oldest = entries[0], entries[1], entries[2], entries[3]
    assert oldest.who == "dr. A. de Vries" and oldest.role == "huisarts"
    assert oldest.organisation == "Huisartsenpraktijk De Linde"
    assert oldest.when.hour == 14  # 13:05 UTC is 14:05 in Amsterdam in March
    assert oldest.text == (
        "1 maart 2026 om 14:05: dr. A. de Vries (huisarts) van Huisartsenpraktijk De Linde "
        "bekeek metingen en uitslagen (4), voor uw behandeling."
    )
    assert emergency.emergency and emergency.emergency_reason == "bewusteloos"
    assert "J. Jansen (verpleegkundige) van Ziekenhuis Oost" in emergency.text
    assert "noodsituatie (opgegeven reden: bewusteloos)" in emergency.text
    assert not denied.shared and "er is niets gedeeld" in denied.text
    assert "Uw toestemming stond dat niet toe." in denied.text
    assert not newest.shared  # a failed request shares nothing
    _, english = await patient_access_log(audit_db, "Patient/p1", lang="en")
    assert english[3].text == (
        "1 March 2026 at 14:05: dr. A. de Vries (huisarts) at Huisartsenpraktijk De Linde "
        "viewed measurements and test results (4), for your treatment."
    )
    assert "This was an emergency access (reason given: bewusteloos)." in english[2].text
    other_total, other = await patient_access_log(audit_db, "p2")
    assert other_total == 1 and len(other) == 1
    assert (await patient_access_log(audit_db, "p3")) == (0, [])


def test_a_message_and_its_delivery_in_the_patients_words() -> None:
    """A push: the sender "sent a message about you (documents)", the receiver "received a message about
    you"; the envelope (Bundle, MessageHeader) is not the patient's data."""
    sent = build_event(
        make_facts(
            interaction="operation",
            operation="process-message",
            resource_type=None,
            query=None,
            returned=(Returned("MessageHeader", 1, None), Returned("DocumentReference", 1, None)),
        )
    )
    delivered = build_event(
        make_facts(
            interaction="operation",
            operation="process-message-delivery",
            resource_type=None,
            query=None,
            purpose=None,
            returned=(Returned("Bundle", 1, "00000201"),),
        )
    )
    assert describe_access(sent, "en").what == "sent a message about you (documents (1))"
    entry = describe_access(delivered, "nl", {"00000201": "Ziekenhuis Rijnstad"})
    assert entry.what == "ontving een bericht over u"
    assert entry.why == "een bericht tussen zorgverleners"
    assert "Bundle" not in entry.text


@pytest.mark.parametrize(
    ("operation", "english", "dutch"),
    [
        ("announce", "registered that it holds data about you", "meldde dat het gegevens van u heeft"),
        ("withdraw", "registered that it no longer holds data about you", "meldde dat het geen gegevens"),
    ],
)
def test_a_members_announcement_in_the_patients_words(operation: str, english: str, dutch: str) -> None:
    """A member telling the region's locator that it holds (no longer holds) the patient's data is in the
    patient's access log as that, not as "asked for your personal details; nothing was shared"."""
    event = build_event(
        make_facts(interaction="operation", operation=operation, resource_type="Patient", query=None)
    )
    entry = describe_access(event, "en")
    assert entry.what == english and entry.why == "for the region's index of who holds your data"
    assert "nothing was shared" not in entry.text
    assert describe_access(event, "nl").what.startswith(dutch)


def test_an_auditor_reading_the_patients_trail_in_the_patients_words() -> None:
    """The console files an auditor's reading of a patient's trail under the patient (an administrator's
    walkthrough found it unfiled); the patient's log says what it was, not "asked for your data"."""
    event = build_event(
        make_facts(
            interaction="read",
            kind="person",
            subject="dev:chief",
            client_id="rzcp-admin-console",
            member_ura=None,
            member_name=None,
            role="auditor",
            practitioner=None,
            resource_type=None,
            query=None,
            returned=(),
            decisions=(),
            purpose=None,
            console_action="audit.search",
            console_params=(("bsn", "bsn given"), ("patient", "Patient/p1")),
        )
    )
    entry = describe_access(event, "en")
    assert entry.text.endswith(
        "an auditor of the region read the log of who looked at your data, to oversee the exchange."
    )
    assert "nothing was shared" not in entry.text
    assert "bekeek het logboek van wie uw gegevens inzag" in describe_access(event, "nl").text


def test_what_was_refused_reads_as_refused_in_the_patients_words() -> None:
    """A privacy officer's walkthrough read the patient's log: a refused push said "sent a message about
    you", a refused emergency attempt showed as an emergency access, a research request as "HRESCH", and a
    request without a valid token as a care provider who gave no name."""
    refused_push = build_event(
        make_facts(
            interaction="operation",
            operation="process-message",
            resource_type=None,
            query=None,
            status=403,
            returned=(),
        )
    )
    entry = describe_access(refused_push, "en")
    assert entry.what == "tried to send a message about you; it was refused" and not entry.shared
    assert (
        describe_access(refused_push, "nl").what == "probeerde een bericht over u te sturen; dat is geweigerd"
    )
    failed_delivery = build_event(
        make_facts(
            interaction="operation",
            operation="process-message-delivery",
            resource_type=None,
            query=None,
            purpose=None,
            status=502,
            returned=(),
        )
    )
    assert describe_access(failed_delivery, "en").what == "could not be given a message about you"
    refused_announce = build_event(
        make_facts(
            interaction="operation", operation="announce", resource_type="Patient", query=None, status=400
        )
    )
    assert describe_access(refused_announce, "en").what.endswith("; it was refused")
    no_reason = build_event(make_facts(purpose="ETREAT", status=400, returned=(), decisions=()))
    entry = describe_access(no_reason, "en")
    assert not entry.emergency and not entry.shared
    assert entry.text.endswith("It was asked for as an emergency access, and refused.")
    assert "This was an emergency access" not in entry.text
    granted = build_event(make_facts(purpose="ETREAT", emergency_reason="bewusteloos"))
    assert describe_access(granted, "en").emergency
    research = describe_access(build_event(make_facts(purpose="HRESCH", status=403, returned=())), "nl")
    assert research.why == "voor onderzoek"
    unknown = describe_access(build_event(make_facts(purpose="XYZZY", status=403, returned=())), "en")
    assert unknown.why == "for another purpose (XYZZY)"
    anonymous = build_event(
        make_facts(
            status=401,
            kind=None,
            subject=None,
            client_id=None,
            member_ura=None,
            member_name=None,
            role=None,
            practitioner=None,
            token_id=None,
            returned=(),
            decisions=(),
        )
    )
    entry = describe_access(anonymous, "en")
    assert entry.who == "someone who could not sign in" and entry.organisation is None
    assert entry.text.startswith("4 March 2026 at 14:05: someone who could not sign in asked for")
