"""The app factory: nothing is built at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from sdserve import __version__
from sdserve.api.body_limit import BodyLimitMiddleware
from sdserve.api.compat import COMPAT_UPLOAD_PATHS, compat_routers
from sdserve.api.edge import install_edge
from sdserve.api.errors import install_error_handlers
from sdserve.api.openapi_doc import hoist_schemas
from sdserve.api.routes_admin import router as admin_router
from sdserve.api.routes_events import router as events_router
from sdserve.api.routes_native import router as native_router
from sdserve.api.routes_safety import admin as safety_admin_router
from sdserve.api.routes_safety import user as safety_user_router
from sdserve.api.routes_workflows import router as workflows_router
from sdserve.api.services import Services
from sdserve.observability.metrics import MetricsMiddleware
from sdserve.security import retention
from sdserve.worker.registry import ready_workers

log = logging.getLogger("sdserve.api")
# Routes that take input images get their own body limit (max_upload_bytes).
UPLOAD_PATHS = frozenset({"/v1/generate", "/v1/jobs", "/v1/workflows"} | COMPAT_UPLOAD_PATHS)


def create_app(services: Services, run_dispatcher: bool = True) -> FastAPI:
    """Build the ASGI app around ready-made services (tests inject their own)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = None
        if run_dispatcher:
            from sdserve.webhooks.delivery import WebhookDispatcher, WebhookSender
            from sdserve.webhooks.tenants import DeliveryResolver

            resolver = DeliveryResolver(
                services.queue,
                services.keys,
                services.server_key.sealer,
                services.webhook_secret,
                services.settings.public_base_url,
            )
            dispatcher = WebhookDispatcher(
                services.queue,
                WebhookSender(services.webhook_policy, services.settings.webhook_timeout_seconds),
                services.webhook_secret,
                services.settings,
                resolver=resolver,
            )
            task = asyncio.create_task(dispatcher.run(stop))
        sweeper = retention.start(services, stop)
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, timeout=5)
            if sweeper is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(sweeper, timeout=5)
            services.close()

    app = FastAPI(
        title="sdserve",
        version=__version__,
        description="Self-hosted Stable Diffusion image generation: a durable priority "
        "queue, batching GPU workers and a native REST API.",
        lifespan=lifespan,
    )
    app.state.services = services
    _document_parsed_bodies(app)
    install_error_handlers(app)
    app.include_router(native_router)
    app.include_router(events_router)
    app.include_router(workflows_router)
    app.include_router(admin_router)
    app.include_router(safety_admin_router)
    app.include_router(safety_user_router)
    for compat_router in compat_routers():
        app.include_router(compat_router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=services.settings.max_body_bytes,
        upload_bytes=services.settings.max_upload_bytes,
        upload_paths=UPLOAD_PATHS,
    )
    services.metrics.watch_queue(
        services.queue.stats,
        lambda: len(ready_workers(services.registry)),
    )
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    install_edge(app, services.settings)  # request ids, CORS: outermost
    return app


def _document_parsed_bodies(app: FastAPI) -> None:
    """Routes that parse JSON-or-multipart themselves document their body models."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = hoist_schemas(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
