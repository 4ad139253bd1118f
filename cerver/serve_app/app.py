"""The Ray Serve ingress: a FastAPI app built per replica by a factory."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve

from cerver import __version__
from cerver.actors.router import SessionRouter
from cerver.actors.sandbox_directory import SandboxDirectory
from cerver.config import Settings
from cerver.serve_app import errors
from cerver.serve_app.cors import OpenCors
from cerver.serve_app.deps import AppContext
from cerver.serve_app.limits import BodyLimit
from cerver.store import Store


def build_app(settings: Settings) -> FastAPI:
    from cerver import dashboard
    from cerver.serve_app import (
        routes_computes,
        routes_gateway,
        routes_index,
        routes_llm,
        routes_providers,  # issue 11 (cloud)
        routes_sandbox,
        routes_sessions,
    )

    app = FastAPI(
        title="Cerver on Ray",
        version=__version__,
        description="One stable doorway into execution: sessions, compute, transcripts, "
        "metrics, recommendations and stress tests.",
    )
    store = Store.open(settings.database_url)
    app.state.ctx = AppContext(
        settings=settings,
        store=store,
        sessions=SessionRouter(settings),
        sandboxes=SandboxDirectory(settings),
    )
    errors.install(app)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        # One byte over the file limit reaches the route, which answers with its own 413.
        large_bytes=settings.max_file_bytes + 1,
        large_suffixes=("/files",),
    )
    app.include_router(routes_sessions.router)
    app.include_router(routes_computes.router)
    app.include_router(routes_sandbox.router)
    app.include_router(routes_gateway.router)
    app.include_router(routes_llm.router)
    dashboard.install(app)
    from cerver.serve_app import routes_relay

    routes_relay.install(app)
    app.include_router(routes_providers.router)  # issue 11 (cloud)
    # The original Cerver API's index and CORS (issue 17); /dashboard stays closed to CORS.
    app.include_router(routes_index.router)
    app.add_middleware(OpenCors, closed_prefixes=("/dashboard",))
    if settings.server_timing:  # issue 16 (perfpath): outermost, so `app` is the whole time
        from cerver.serve_app.timing import ServerTiming

        app.add_middleware(ServerTiming)

    @app.on_event("startup")
    async def warm_pool() -> None:
        # Fill the session-host pool in the background; requests never wait for it.
        app.state.ctx.sessions.directory.warm.remote()

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app


# Every handler awaits (actors, threads): one replica serves many requests at once. Serve's
# default of 5 in flight per replica would make 5 long runs hold up every other call.
MAX_ONGOING_REQUESTS = 1000


@serve.deployment(
    name="cerver-ingress",
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
)
@serve.ingress()
class Ingress:
    def __init__(self, settings: Settings) -> None:
        logging.getLogger("cerver").setLevel(logging.INFO)
        self.settings = settings

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_app(self.settings)


def application(settings: Settings, env: dict[str, str] | None = None) -> serve.Application:
    """The Serve app. ``env``: variables for the ingress replicas' environment (their
    runtime_env), e.g. model keys for the ``env`` secrets backend when the replicas run
    somewhere the deploying process's environment does not reach (tests do this)."""
    # Ingress replicas: a relay's socket ends at one; its runs may arrive at any.
    ingress = Ingress.options(num_replicas=settings.ingress_replicas)  # type: ignore[attr-defined]
    if env:
        options = {"num_cpus": 0, "runtime_env": {"env_vars": dict(env)}}
        ingress = ingress.options(ray_actor_options=options)
    return ingress.bind(settings)  # type: ignore[no-any-return]
