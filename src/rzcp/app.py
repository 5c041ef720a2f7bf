"""create_app(settings): builds the FastAPI app and mounts the routers; nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import rzcp
from rzcp import health
from rzcp.fhir.outcome import install_error_handlers
from rzcp.fhir.router import router as fhir_router
from rzcp.observability import RequestContextMiddleware, metrics_endpoint
from rzcp.runtime import Runtime
from rzcp.settings import Settings
from rzcp.store.migrate import upgrade


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    runtime = Runtime.build(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if runtime.auto_migrate:
            await upgrade(runtime.db)
        yield
        await runtime.db.dispose()

    app = FastAPI(
        title="RZCP gateway",
        version=rzcp.__version__,
        description="Regionaal Zorgcommunicatie Platform: the region's FHIR R4 gateway.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(fhir_router)
    app.include_router(health.router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    app.add_middleware(RequestContextMiddleware)
    return app


def app_from_environment() -> FastAPI:
    """The factory `rzcp serve` hands to uvicorn (each worker process builds its own app)."""
    import os
    from pathlib import Path

    from rzcp.settings import load_settings

    config = os.environ.get("RZCP_CONFIG_FILE")
    return create_app(load_settings(Path(config) if config else None))
