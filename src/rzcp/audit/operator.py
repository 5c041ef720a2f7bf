"""An operator's change at the command line, in the audit trail.

The console's API records every call (rzcp.admin.console_audit); `rzcp members`, `rzcp clients` and
`rzcp keys` change the same things (who may exchange data, with which keys and scopes), and `rzcp audit
export` reads the trail, which is itself an access (NEN 7513). At the command line there is no token:
the person is named by the operating system's account and the host, as far as this process can tell,
and the client is `rzcp-cli`. The record has the console's form (`console` type, the action under the
console's name for it, its parameters), so an auditor finds both in one search.
"""

from __future__ import annotations

import getpass
import socket
import uuid
from collections.abc import Mapping

from rzcp.audit.events import AuditFacts
from rzcp.audit.writer import AuditWriter
from rzcp.auth.bsn import without_bsns
from rzcp.settings import Settings
from rzcp.store.db import Database

#: The client an operator's command-line actions are recorded under.
CLI_CLIENT = "rzcp-cli"


def operator_name() -> str:
    """`account@host` of whoever runs the command."""
    try:
        account = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container's numeric user)
        account = "unknown"
    return f"{account}@{socket.gethostname()}"


async def record_operator_action(
    settings: Settings,
    db: Database,
    action: str,
    params: Mapping[str, str | None],
    *,
    status: int,
    outcome_desc: str | None = None,
) -> None:
    """Write the record and wait until it is committed; raises AuditUnavailable when it could not be."""
    facts = AuditFacts(
        interaction="operation",
        status=status,
        correlation_id=uuid.uuid4().hex,
        kind="person",
        subject=operator_name(),
        client_id=CLI_CLIENT,
        role="operator",
        purpose=None,
        outcome_desc=outcome_desc,
        console_action=action,
        console_params=tuple((k, without_bsns(v)) for k, v in params.items() if v is not None),
    )
    writer = AuditWriter.from_settings(settings, db)
    try:
        await writer.record(facts)
    finally:
        await writer.aclose()
