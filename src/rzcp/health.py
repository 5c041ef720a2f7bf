"""Liveness and readiness for the orchestrator: alive means the process answers; ready means the
database answers and its schema is at the migrations' head."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import text

from rzcp.store.migrate import current_revision, head_revision

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> Response:
    return Response(orjson.dumps({"status": "ok"}), media_type="application/json")


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    db = request.app.state.runtime.db
    checks: dict[str, str] = {}
    try:
        async with db.read() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        current, head = await current_revision(db), head_revision()
        checks["migrations"] = "ok" if current == head else f"at {current or 'none'}, head is {head}"
    except Exception:  # any failure to reach the database means "not ready"
        checks["database"] = "unreachable"
    if checks.get("migrations") == "ok":
        try:
            checks["audit"] = await _audit_writable(db)
        except Exception:  # its own check failed: the database answered the ones before
            checks["audit"] = "could not be checked"
    ready = all(v == "ok" for v in checks.values()) and "migrations" in checks
    body = {"status": "ready" if ready else "not ready", "checks": checks}
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")


async def _audit_writable(db: Any) -> str:
    """Whether this process's database role may append to the trail: without it every audited request
    is a 503, so the process must not be sent traffic (an operator's walkthrough revoked the grant and
    /readyz stayed ready). PostgreSQL checks the grants; SQLite, a file, has none to lose."""
    if db.is_sqlite:
        return "ok"
    async with db.read() as conn:
        allowed = await conn.scalar(
            text(  # the writer reads the chain's head and appends after it
                "SELECT has_table_privilege('audit_events', 'SELECT') "
                "AND has_table_privilege('audit_events', 'INSERT') "
                "AND has_table_privilege('audit_checkpoints', 'INSERT')"
            )
        )
    return "ok" if allowed else "the database role may not append to the audit trail"
