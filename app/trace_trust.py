"""Whose trace a request may join.

A W3C ``traceparent`` from an authenticated caller (a valid bearer token, or a live console
session) becomes the parent of the request's span, so a producer's trace runs on through Tally.
Anyone else would otherwise choose the trace id Tally's spans are written under, and could slip
spans into the trace of someone else's request: their request starts a new trace instead, with
a link to the context they sent. The decision is taken before the OpenTelemetry middleware (the
outermost one once instrumented) reads the headers, and looks at the database only for requests
that carry a trace context.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import Span, SpanContext, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.requests import cookie_parser
from starlette.types import Scope

from app.auth import viewer_for_token
from app.console_sessions import SESSION_COOKIE, active_session, session_id_in_cookie

TRACE_CONTEXT_HEADERS = (b"traceparent", b"tracestate", b"baggage")
UNTRUSTED_PARENT = "tally.untrusted_trace_parent"
LINK_REASON = "traceparent of an unauthenticated request"


def carries_trace_context(scope: Scope) -> bool:
    return any(name in TRACE_CONTEXT_HEADERS for name, _ in scope["headers"])


async def is_authenticated(app: Starlette, scope: Scope) -> bool:
    """Whether the request carries a bearer token Tally knows or the cookie of a live console session."""
    headers = {name: value.decode("latin-1") for name, value in scope["headers"]}
    scheme, _, token = headers.get(b"authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    settings = app.state.settings
    cookie = cookie_parser(headers.get(b"cookie", "")).get(SESSION_COOKIE)
    session_id = (
        session_id_in_cookie(cookie, secret=settings.session_secret, max_age=settings.session_max_age_seconds)
        if cookie
        else None
    )
    if not token and not session_id:
        return False
    with suppress_instrumentation():  # the check's SQL belongs to no trace
        async with app.state.sessions() as session:
            if token and await viewer_for_token(session, token) is not None:
                return True
            lifetime = timedelta(seconds=settings.session_max_age_seconds)
            return bool(session_id) and (
                await active_session(session, session_id, as_of=datetime.now(UTC), lifetime=lifetime) is not None
            )


async def distrust_anonymous_trace_context(app: Starlette, scope: Scope) -> Scope:
    """The scope unchanged for an authenticated request; otherwise without its trace context
    headers, the context they named kept under ``UNTRUSTED_PARENT`` for ``link_untrusted_parent``."""
    if not carries_trace_context(scope) or await is_authenticated(app, scope):
        return scope
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in TRACE_CONTEXT_HEADERS
    }
    incoming = get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    kept = [(name, value) for name, value in scope["headers"] if name not in TRACE_CONTEXT_HEADERS]
    distrusted = {**scope, "headers": kept}
    if incoming.is_valid:
        distrusted[UNTRUSTED_PARENT] = incoming
    return distrusted


def link_untrusted_parent(span: Span, scope: Scope) -> None:
    """The server request hook: the request span links the context an anonymous caller sent."""
    incoming: SpanContext | None = scope.get(UNTRUSTED_PARENT)
    if incoming is not None and span.is_recording():
        span.add_link(incoming, {"tally.link": LINK_REASON})
