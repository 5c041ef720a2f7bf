"""The gateway as the benchmarks run it: `uvicorn --factory gateway_app:create` (with `--app-dir bench`).

The database comes from RZCP_DATABASE_URL (and any other `RZCP_*` variable `Settings` reads); the served
types (all of R4) and the migration at start-up are fixed here, so the benchmark does not depend on how
list values are spelled in the environment. Built with `create_app` and the garbage collector tuned, as
production's `app_from_environment` does: the same middleware, routers and error handlers.
"""

from __future__ import annotations

from fastapi import FastAPI

from rzcp.app import create_app
from rzcp.audit.http import AuditMiddleware
from rzcp.gc_tuning import tune_for_serving
from rzcp.settings import Settings


def create() -> FastAPI:
    app = create_app(Settings(fhir_resource_types=["*"], auto_migrate=True))
    tune_for_serving()
    return app


def create_unaudited() -> FastAPI:
    """The same gateway without its audit middleware: for `run_store.py --audit-variant` only, to show
    what recording every request costs. Production has no such switch (no audit record, no response)."""
    app = create()
    app.user_middleware = [m for m in app.user_middleware if m.cls is not AuditMiddleware]
    return app
