"""create_app(settings): builds the FastAPI app and mounts the routers; nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import rzcp
from rzcp import api_description, health
from rzcp.admin.router import router as admin_router
from rzcp.audit.http import AuditMiddleware
from rzcp.audit.router import router as audit_router
from rzcp.auth import devidp
from rzcp.auth.router import install_oauth_errors
from rzcp.auth.router import router as auth_router
from rzcp.consent.router import router as consent_router
from rzcp.exchange.router import pull_router
from rzcp.exchange.router import router as exchange_router
from rzcp.exchange.service import Exchange
from rzcp.exchange.worker import OutboxWorker, audit_delivery
from rzcp.fhir.outcome import install_error_handlers
from rzcp.fhir.router import router as fhir_router
from rzcp.observability import RequestContextMiddleware, metrics_endpoint
from rzcp.runtime import Runtime
from rzcp.settings import Settings
from rzcp.store.migrate import upgrade
from rzcp.web import router as web


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime.build(settings)
    exchange = Exchange.build(
        settings, runtime.registry, policy=runtime.policy, consent_cache=runtime.consents, http=runtime.http
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime.auto_migrate:
            await upgrade(runtime.db)
        worker = None
        if settings.outbox_worker:
            worker = OutboxWorker(runtime.db, exchange, settings, on_delivery=audit_delivery(runtime.audit))
            app.state.outbox_worker = worker
            worker.start()
        yield
        if worker is not None:
            await worker.stop()
        await exchange.aclose()
        await runtime.aclose()

    app = FastAPI(
        title="RZCP gateway",
        version=rzcp.__version__,
        description="Regionaal Zorgcommunicatie Platform: the region's FHIR R4 gateway.",
        lifespan=lifespan,
        # the interactive pages load scripts and fonts from a CDN: the API is described by
        # /openapi.json (openapi/openapi.json) and the CapabilityStatement instead
        docs_url=None,
        redoc_url=None,
    )
    api_description.install(app)
    app.state.runtime = runtime
    app.state.exchange = exchange
    install_error_handlers(app)
    install_oauth_errors(app)
    app.include_router(auth_router)  # before the FHIR router: /fhir/.well-known/... is not a resource
    if settings.dev_idp:
        app.include_router(devidp.router)
    app.include_router(audit_router)  # before the generic FHIR routes: AuditEvent lives in the trail
    app.include_router(consent_router)  # likewise Consent/$evaluate
    # before the generic FHIR routes: $process-message and the pulled types would match /fhir/{type}
    app.include_router(exchange_router)
    app.include_router(pull_router([t for t in exchange.pull_types if not runtime.serves(t)]))
    app.include_router(fhir_router)
    app.include_router(health.router)
    app.include_router(admin_router)  # before web.mount: the static /admin would take /admin/api
    web.mount(app)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(RequestContextMiddleware)  # outermost: the audit record carries its request id
    return app


def app_from_environment() -> FastAPI:
    """The factory `rzcp serve` hands to uvicorn (each worker process builds its own app)."""
    import os
    from pathlib import Path

    from rzcp.gc_tuning import tune_for_serving
    from rzcp.settings import load_settings

    config = os.environ.get("RZCP_CONFIG_FILE")
    app = create_app(load_settings(Path(config) if config else None))
    tune_for_serving()
    return app
