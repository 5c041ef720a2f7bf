"""The outbox's delivery worker: one per gateway process, started in the app's lifespan.

It claims due messages through the database (rzcp.exchange.outbox.claim), delivers each through the
receiver's adapter with the message id as idempotency key and the gateway's statement of its sender
(rzcp.exchange.message.as_delivered), and writes the result (delivered, retry later with back-off,
rejected, failed for good). A claimed message is leased for `outbox_lease_seconds`; a worker
that dies mid-delivery simply lets the lease run out, and a worker in any process picks the message up
again and sends it with the same key. `wake()` shortens the wait after a message was accepted in this
process. `on_delivery` (the audit's hook) is awaited with a `DeliveryReport` for every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from rzcp.audit.events import AuditFacts, Returned
from rzcp.audit.redact import recorded_text
from rzcp.exchange.adapters import DeliveryOutcome, DeliveryStatus
from rzcp.exchange.message import as_delivered
from rzcp.exchange.outbox import (
    NO_LONGER_PERMITTED,
    DeliveryReport,
    Message,
    RetryPlan,
    any_due,
    claim,
    extend_lease,
    finish,
    still_permitted,
)
from rzcp.exchange.service import Exchange
from rzcp.settings import Settings
from rzcp.store.db import Database

log = logging.getLogger("rzcp.exchange.outbox")

DeliveryHook = Callable[[DeliveryReport], Awaitable[None]]


#: The longest wait between rounds while they keep failing.
MAX_FAILURE_DELAY = 60.0
#: How much longer than the receiver's timeout a claim is held while its delivery is under way.
LEASE_MARGIN = 5.0


def failure_delay(poll: float, failures: int) -> float:
    """The wait after the n-th failed round in a row: the poll interval, doubling up to a minute."""
    return min(poll * 2 ** min(failures - 1, 16), MAX_FAILURE_DELAY)


class OutboxWorker:
    def __init__(
        self,
        db: Database,
        exchange: Exchange,
        settings: Settings,
        *,
        name: str | None = None,
        batch: int = 20,
        on_delivery: DeliveryHook | None = None,
    ) -> None:
        self.db = db
        self.exchange = exchange
        self.name = name or f"worker-{uuid.uuid4().hex[:12]}"
        self.batch = batch
        self.lease = settings.outbox_lease_seconds
        self.poll = settings.outbox_poll_seconds
        self.plan = RetryPlan(
            settings.outbox_retry_seconds, settings.outbox_retry_max_seconds, settings.outbox_max_attempts
        )
        self.on_delivery = on_delivery
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"rzcp-outbox-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                done = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away for a while: keep trying, ever less often
                failures += 1
                if failures == 1:
                    log.exception("outbox worker %s: a round failed", self.name)
                else:  # one line, not a traceback a second per worker (an operator's trial: 5,400 in 30 s)
                    log.warning(
                        "outbox worker %s: %d rounds failed (%s)", self.name, failures, type(exc).__name__
                    )
                await asyncio.sleep(failure_delay(self.poll, failures))
                continue
            if failures:
                log.warning("outbox worker %s: rounds succeed again after %d failed", self.name, failures)
                failures = 0
            if done:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    async def run_once(self) -> int:
        """Claim one batch and deliver it; how many messages were attempted."""
        async with self.db.query() as conn:  # a cheap read first: no write lock while nothing is due
            if not await any_due(conn):
                return 0
        token = f"{self.name}:{uuid.uuid4().hex[:12]}"
        async with self.db.write() as conn:
            messages = await claim(conn, token, lease_seconds=self.lease, limit=self.batch)
        if messages:
            await asyncio.gather(*(self._deliver(m, token) for m in messages))
        return len(messages)

    async def _deliver(self, message: Message, token: str) -> None:
        directory = self.exchange.directory
        async with self.db.query() as conn:
            receiver = (await directory.members(conn, [message.receiver_ura])).get(message.receiver_ura)
            sender = (await directory.members(conn, [message.sender_ura], active_only=False)).get(
                message.sender_ura
            )
            permitted = receiver is not None and await still_permitted(
                self.exchange, conn, message, sender, receiver
            )
        outcome: DeliveryOutcome | None = None
        if receiver is not None and not permitted:
            status = DeliveryStatus.REJECTED
            outcome = DeliveryOutcome(receiver.ura, status, detail=NO_LONGER_PERMITTED, called=False)
        elif receiver is not None and message.attempts > self.plan.max_attempts:
            # claimed again and again without a result (workers that died, or lost their lease): no call
            detail = "no result was written for the last attempts"
            outcome = DeliveryOutcome(receiver.ura, DeliveryStatus.RETRY_LATER, detail=detail)
        elif receiver is not None:
            if receiver.timeout + LEASE_MARGIN > self.lease:
                async with self.db.write() as conn:
                    if not await extend_lease(conn, message.id, token, receiver.timeout + LEASE_MARGIN):
                        return  # another worker has it now
            outcome = await self._attempt(receiver, message, sender)
        async with self.db.write() as conn:
            report = await finish(conn, message, token, outcome, self.plan)
        if self.on_delivery is not None and (outcome is None or outcome.called or report.result != "retry"):
            # a call put off (its circuit open) disclosed nothing: no record, and none in her access log
            try:
                await self.on_delivery(report)
            except Exception:
                log.exception("outbox worker %s: the delivery hook failed for %s", self.name, message.id)

    async def _attempt(self, receiver: Any, message: Message, sender: Any) -> DeliveryOutcome:
        """One call to the receiver; a failure of our own (a bug, a bad stored message) is a retry with
        its result written, never a claim left to run out and be taken again."""
        adapter = self.exchange.adapters.for_member(receiver)
        assert message.content is not None
        try:
            content = as_delivered(message.content, message.sender_ura, sender)
            return await adapter.deliver(receiver, content, idempotency_key=message.id)
        except Exception as exc:
            log.exception("outbox worker %s: delivering %s failed", self.name, message.id)
            detail = f"the gateway could not deliver it ({type(exc).__name__})"
            return DeliveryOutcome(receiver.ura, DeliveryStatus.RETRY_LATER, detail=detail)


def audit_delivery(writer: Any) -> DeliveryHook:
    """The hook that records each delivery attempt in the audit trail (the gateway itself as actor)."""

    async def record(report: DeliveryReport) -> None:
        # the gateway's words only: the receiver's own (its reason, in the sender's Task) are free text from
        # outside, which the trail does not keep
        desc = (
            f"{report.result} to {report.receiver_ura} (message {report.message_id} from "
            f"{report.sender_ura}), attempt {report.attempt}: {recorded_text(report.detail)}"
        )
        outcome = {"delivered": 200, "retry": 503, "rejected": 422, "failed": 502}[report.result]
        facts = AuditFacts(
            interaction="operation",
            operation="process-message-delivery",
            status=outcome,
            correlation_id=f"outbox:{report.message_id}:{report.attempt}",
            kind="system",
            subject="rzcp-outbox",
            client_id="rzcp-outbox",  # the gateway's own delivery worker, not an unauthenticated caller
            member_ura=report.receiver_ura,
            patient=report.patient,
            target=f"Bundle/{report.message_id}",
            returned=(Returned("Bundle", 1, report.sender_ura),) if report.result == "delivered" else (),
            purpose=None,
            outcome_desc=desc[:500],
        )
        await writer.record(facts)

    return record
