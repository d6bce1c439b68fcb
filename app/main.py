"""The FastAPI factory: API, GraphQL, console and static files over one database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app import health, invoice_documents, jobs, metrics, rest, webhooks
from app.api.context import TallyContext
from app.api.schema import build_schema
from app.api.transport import TallyGraphQLRouter
from app.console_security import ConsoleCsrf, SecurityHeaders
from app.console_sessions import SESSION_COOKIE
from app.database import create_engine, latest_revision, libpq_url, session_factory
from app.dependencies import authenticate, bearer_token, get_session
from app.http_errors import install_error_answers
from app.log_consumption import consume_log
from app.request_limits import BodyLimits, RequestDeadline, RequestIntake
from app.settings import Settings
from app.sign_in_throttle import SignInFloodGuard, SignInThrottle
from app.staff import PasswordChecks
from app.telemetry import configure_metrics, configure_tracing, instrument_app
from app.trace_trust import carries_trace_context, distrust_anonymous_trace_context
from app.usage_ingest import EdgeCatalog, log_config
from app.vendored import api_docs_page
from billing.invoices.taxation import use_tax_policy
from metering.event_log import EventLog

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"


class TallyApp(FastAPI):
    """FastAPI, deciding whether a request may join the caller's trace before anything reads the
    trace context: once instrumented, the OpenTelemetry middleware is outside every middleware
    added here, so this decision is taken in the application's own entry point."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and carries_trace_context(scope):
            scope = await distrust_anonymous_trace_context(self, scope)
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, url: str, *, run_jobs: bool = False) -> FastAPI:
    """Build the ASGI application over the database at ``url`` (already migrated).

    ``run_jobs`` starts the periodic jobs and the usage roller in the server's event loop
    (``tally serve``).
    """
    engine = create_engine(
        url,
        statement_timeout_seconds=settings.statement_timeout_seconds,
        idle_in_transaction_timeout_seconds=settings.idle_in_transaction_timeout_seconds,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
    )
    # The background jobs have their own pool, with a longer statement timeout (a billing run's
    # queries may outlast a request's), so they never wait behind requests for a connection.
    jobs_engine = create_engine(
        url,
        statement_timeout_seconds=settings.jobs_statement_timeout_seconds,
        idle_in_transaction_timeout_seconds=settings.idle_in_transaction_timeout_seconds,
        connect_timeout_seconds=settings.database_connect_timeout_seconds,
        pool_size=settings.billing_concurrency + 2,
        max_overflow=2,
    )
    provider = configure_tracing(settings, libpq_url(url))
    configure_metrics(settings)
    use_tax_policy(settings.tax_policy)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runners = (
            [
                asyncio.create_task(jobs.run_periodic(jobs_sessions, settings)),
                asyncio.create_task(jobs.run_roller(jobs_sessions, settings)),
                asyncio.create_task(jobs.run_email_sender(jobs_sessions, settings)),
                asyncio.create_task(jobs.run_webhook_sender(jobs_sessions, settings)),
            ]
            if run_jobs
            else []
        )
        if run_jobs and settings.nats_servers:
            runners.append(asyncio.create_task(consume_log(jobs_sessions, settings)))
        yield
        for runner in runners:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        if provider is not None:
            provider.force_flush()
        if app.state.event_log is not None:
            await app.state.event_log.close()
        await engine.dispose()
        await jobs_engine.dispose()
        app.state.password_checks.close()

    app = TallyApp(
        title="Tally",
        summary="Usage-based billing",
        lifespan=lifespan,
        docs_url=None,  # served below, from static/vendor/ rather than a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    # Edge mode: POST /v1/events publishes to the replicated event log rather than to PostgreSQL.
    app.state.event_log = EventLog(log_config(settings)) if settings.nats_servers else None
    app.state.edge_catalog = EdgeCatalog()
    app.state.sessions = session_factory(engine)
    jobs_sessions = session_factory(jobs_engine)
    app.state.schema = build_schema(settings)
    app.state.database_url = url
    app.state.schema_revision = latest_revision()
    app.state.sign_in_throttle = SignInThrottle(
        per_address=settings.login_rate_per_address, per_email=settings.login_rate_per_email
    )
    app.state.password_checks = PasswordChecks(settings.password_check_concurrency)
    install_error_answers(app)

    @app.exception_handler(HTTPException)
    async def json_error(request: Request, error: HTTPException) -> JSONResponse:
        body = error.detail if isinstance(error.detail, dict) else {"code": "HTTP_ERROR", "message": str(error.detail)}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    async def graphql_context(request: Request, session: AsyncSession = Depends(get_session)) -> TallyContext:
        if request.method == "GET" and bearer_token(request) is None:
            # Only the GraphiQL page is served over GET (queries via GET are off).
            return TallyContext(session=session, viewer=None, settings=settings, event_log=app.state.event_log)
        viewer = await authenticate(request, session)
        # The connection before Strawberry runs anything: a database that cannot be reached is
        # then the API's JSON 503, not a GraphQL error quoting the driver's message.
        await session.connection()
        return TallyContext(session=session, viewer=viewer, settings=settings, event_log=app.state.event_log)

    app.include_router(
        TallyGraphQLRouter(
            app.state.schema,
            context_getter=graphql_context,
            allow_queries_via_get=False,
            graphql_ide="graphiql" if settings.development else None,
        ),
        prefix="/graphql",
    )

    app.include_router(rest.router)
    app.include_router(invoice_documents.router)
    app.include_router(webhooks.router)
    app.include_router(metrics.router)
    app.include_router(health.router)

    if settings.development:

        @app.get("/docs", include_in_schema=False)
        async def api_docs() -> HTMLResponse:
            return api_docs_page(app.openapi_url or "/openapi.json", app.title)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/console", status_code=307)

    from console.routes import install as install_console

    install_console(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # The last added runs first: headers on every answer (a CSRF refusal too), then the signed
    # session cookie, then the CSRF check, which needs the session.
    app.add_middleware(ConsoleCsrf, secret=settings.session_secret)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret,
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age_seconds,
        same_site="lax",
        https_only=settings.cookie_secure,
    )
    app.add_middleware(SecurityHeaders, hsts_always=settings.cookie_secure)
    # Outermost of the middlewares (added last): bodies are read and bounded before anything
    # else (the CSRF check's form parsing, a session, a database connection) sees the request.
    app.add_middleware(RequestDeadline, timeout_seconds=settings.request_timeout_seconds)
    app.add_middleware(
        RequestIntake,
        limits=BodyLimits(
            default=settings.max_body_bytes,
            by_path={
                "/v1/events": settings.events_max_body_bytes,
                "/graphql": settings.graphql_max_body_bytes,
                "/webhooks/stripe": settings.webhook_max_body_bytes,
                "/console/login": settings.login_max_body_bytes,
            },
        ),
        read_timeout_seconds=settings.body_read_timeout_seconds,
    )
    instrument_app(app, provider)
    refuse_sign_in_floods_first(app)
    return app


def refuse_sign_in_floods_first(app: FastAPI) -> None:
    """The sign-in flood guard goes around the whole stack, tracing included: a refused attempt
    costs no span, no middleware and no page, and a flood writes nothing to the span store."""
    build_stack = app.build_middleware_stack

    def build_guarded_stack() -> ASGIApp:
        return SignInFloodGuard(
            build_stack(),
            throttle=app.state.sign_in_throttle,
            refusal_delay_seconds=app.state.settings.login_refusal_delay_seconds,
        )

    app.build_middleware_stack = build_guarded_stack  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """The app of a worker process started by `tally serve --workers N` (DATABASE_URL is set)."""
    from app.database import database_url

    settings = Settings()
    return create_app(settings, database_url(settings), run_jobs=settings.serve_jobs)
