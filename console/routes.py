"""The console: its own pages (sign-in, customers, metering, traces) and :func:`install`, which
assembles every section (``console/*.py``) on the application. What pages share is in
:mod:`console.pages`; one template per page, htmx requests get only the block they swap."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.console_sessions import SESSION_KEY, end_session, start_session
from app.dependencies import SessionDep
from app.staff import LoginPolicy, verify_login
from console.charts import AxisChart, column_chart, duration_chart
from console.forms import field_errors
from console.graphql_client import ConsoleQueryFailed
from console.pages import CSV_ROW_LIMIT, ContextDep, csv_download, query, render
from console.views import (
    UPCOMING_SECTIONS,
    grouped_amount,
    readable_duration,
    waterfall,
)

LOGIN_FAILED = "Wrong email or password. After repeated failures, sign-in is paused for a while."
SIGN_IN_THROTTLED = "Too many sign-in attempts. Try again in {seconds} seconds."
router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("")
async def console_home() -> RedirectResponse:
    return RedirectResponse("/console/overview", status_code=307)


@router.get("/login")
async def login_page(request: Request, next: str = "/console/customers") -> Response:
    return render(request, "login.html", {"next": safe_next(next), "error": None, "email": ""})


def safe_next(target: str) -> str:
    """Only paths inside the console, so the login page cannot redirect anywhere else."""
    return target if target.startswith("/console/") and "//" not in target else "/console/customers"


@router.post("/login")
async def login(
    request: Request,
    session: SessionDep,
    email: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/console/customers",
) -> Response:
    settings = request.app.state.settings
    wait = request.app.state.sign_in_throttle.admit(request.client.host if request.client else None, email)
    if wait is not None:
        context = {"next": safe_next(next), "error": SIGN_IN_THROTTLED.format(seconds=wait), "email": email}
        throttled = render(request, "login.html", context, status_code=429)
        throttled.headers["Retry-After"] = str(wait)
        return throttled
    policy = LoginPolicy(settings.login_max_failures, timedelta(seconds=settings.login_lockout_seconds))
    checks = request.app.state.password_checks
    async with checks.turns:  # a free password-check thread first, then a database connection
        user = await verify_login(
            session, email=email, password=password, as_of=datetime.now(UTC), policy=policy, checks=checks
        )
        await session.commit()
    if user is None:
        request.session.clear()
        return render(
            request,
            "login.html",
            {"next": safe_next(next), "error": LOGIN_FAILED, "email": email},
            status_code=401,
        )
    console_session = await start_session(session, staff_user_id=user.id, as_of=datetime.now(UTC))
    await session.commit()
    request.session.clear()
    request.session[SESSION_KEY] = str(console_session.id)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout")
async def logout(request: Request, session: SessionDep) -> RedirectResponse:
    """Ends the session server-side, so a copy of the cookie signs nobody in any more."""
    await end_session(session, request.session.get(SESSION_KEY), as_of=datetime.now(UTC))
    await session.commit()
    request.session.clear()
    return RedirectResponse("/console/login", status_code=303)


@router.get("/customers")
async def customers_page(request: Request, context: ContextDep, search: str = "", after: str | None = None) -> Response:
    data = await query(request, "ConsoleCustomers", {"search": search or None, "first": 25, "after": after}, context)
    plans = (await query(request, "ConsolePlans", {}, context))["plans"]
    return render(
        request,
        "customers.html",
        {"customers": data["customers"], "search": search, "plans": plans, "errors": {}, "form": {}},
        block="rows",
    )


@router.get("/customers.csv")
async def customers_csv(context: ContextDep, request: Request, search: str = "") -> Response:
    """Every customer matching the search, as CSV, paged through the same GraphQL query."""
    header = ["id", "external_id", "name", "email", "currency", "status", "plan", "plan_version", "created_at"]
    rows: list[list[Any]] = []
    after, written = None, 0
    while written < CSV_ROW_LIMIT:
        page = (
            await query(request, "ConsoleCustomers", {"search": search or None, "first": 100, "after": after}, context)
        )["customers"]
        for edge in page["edges"]:
            node = edge["node"]
            plan = (node["subscription"] or {}).get("plan") or {}
            rows.append(
                [
                    node["id"],
                    node["externalId"],
                    node["name"],
                    node["email"] or "",
                    node["currency"],
                    node["status"],
                    plan.get("key", ""),
                    plan.get("version", ""),
                    node["createdAt"],
                ]
            )
            written += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    return csv_download("customers.csv", header, rows)


@router.post("/customers")
async def create_customer(
    request: Request,
    context: ContextDep,
    external_id: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    currency: Annotated[str, Form()] = "USD",
    plan_key: Annotated[str, Form()] = "",
) -> Response:
    form = {
        "external_id": external_id,
        "name": name,
        "email": email,
        "currency": currency,
        "plan_key": plan_key,
    }
    payload = (
        await query(
            request,
            "ConsoleCreateCustomer",
            {
                "input": {
                    "externalId": external_id,
                    "name": name,
                    "email": email or None,
                    "currency": currency,
                    "planKey": plan_key or None,
                }
            },
            context,
        )
    )["createCustomer"]
    if not payload["userErrors"]:
        return RedirectResponse(f"/console/customers/{payload['customer']['id']}", status_code=303)
    errors = field_errors(payload["userErrors"])
    data = await query(request, "ConsoleCustomers", {"first": 25}, context)
    plans = (await query(request, "ConsolePlans", {}, context))["plans"]
    return render(
        request,
        "customers.html",
        {"customers": data["customers"], "search": "", "plans": plans, "errors": errors, "form": form},
        status_code=422,
    )


# Points a chart shows, ending with the current hour or day.
CHART_POINTS = {"HOUR": 48, "DAY": 30}


@router.get("/customers/{customer_id}")
async def customer_page(
    request: Request, context: ContextDep, customer_id: str, meter: str | None = None, granularity: str = "DAY"
) -> Response:
    customer = (await query(request, "ConsoleCustomer", {"id": customer_id}, context))["customer"]
    if customer is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    usage = (await query(request, "ConsoleCustomerUsage", {"id": customer_id}, context))["customer"]
    chart_meter = meter or (usage["usage"][0]["meter"]["key"] if usage["usage"] else None)
    granularity = granularity if granularity in CHART_POINTS else "DAY"
    chart = None
    if chart_meter:
        until = datetime.now(UTC)
        step = timedelta(days=1) if granularity == "DAY" else timedelta(hours=1)
        current = until.replace(minute=0, second=0, microsecond=0)
        if granularity == "DAY":
            current = current.replace(hour=0)
        series = await query(
            request,
            "ConsoleUsageSeries",
            {
                "id": customer_id,
                "meter": chart_meter,
                "from": (current - step * (CHART_POINTS[granularity] - 1)).isoformat(),
                "to": until.isoformat(),
                "granularity": granularity,
            },
            context,
        )
        unit = next((u["meter"]["unit"] for u in usage["usage"] if u["meter"]["key"] == chart_meter), "")
        chart = usage_chart(chart_meter, unit, granularity, series["customer"]["usageSeries"])
    return render(
        request,
        "customer.html",
        {"customer": customer, "usage": usage, "chart": chart, "chart_meter": chart_meter, "granularity": granularity},
        block="usage_chart",
    )


def usage_chart(meter: str, unit: str, granularity: str, points: list[dict[str, Any]]) -> AxisChart:
    """A customer's usage of one meter by day or hour, in the meter's unit (plural when shown
    on the axis: "requests"), each column's exact quantity in its tooltip."""
    starts = [datetime.fromisoformat(point["start"]) for point in points]
    labels = [f"{s:%b} {s.day}" if granularity == "DAY" else f"{s:%H}:00" for s in starts]
    moments = [f"{s:%Y-%m-%d}" if granularity == "DAY" else f"{s:%Y-%m-%d %H}:00" for s in starts]
    quantities = [Decimal(point["quantity"]) for point in points]
    shown_unit = f"{unit}s" if unit.isalpha() and not unit.endswith("s") else unit or "units"
    return column_chart(
        f"{meter} by {granularity.lower()}",
        labels,
        quantities,
        unit=shown_unit,
        tooltips=[f"{m} UTC: {grouped_amount(q)} {shown_unit}" for m, q in zip(moments, quantities, strict=True)],
        width=960,
        height=240,
        most_labels=10,
        phone_width=360,
    )


@router.get("/metering")
async def metering_page(request: Request, context: ContextDep, replayed: str | None = None) -> Response:
    data = await query(request, "ConsoleMetering", {}, context)
    history = data["meteringHistory"]
    hours = [point["start"][11:16] for point in history["points"]]
    lag_chart = duration_chart(
        "Lag by hour, last 24 hours (UTC)",
        hours,
        {
            "ingest lag p50": ("p50", [p["ingestLagP50Ms"] for p in history["points"]]),
            "ingest lag p99": ("p99", [p["ingestLagP99Ms"] for p in history["points"]]),
            "processing p99": ("processing", [p["processingP99Ms"] for p in history["points"]]),
        },
        width=560,
        height=240,
    )
    snapshots = history["watermarks"]
    watermark_chart = duration_chart(
        "Watermark age, last 24 hours (UTC)",
        [snapshot["takenAt"][11:16] for snapshot in snapshots],
        {
            "median": ("p50", [s["watermarkAgeP50Ms"] for s in snapshots]),
            "oldest": ("p99", [s["watermarkAgeMaxMs"] for s in snapshots]),
        },
        width=560,
        height=240,
    )
    partitions = data["meteringOverview"]["eventLog"]["partitions"]
    log_chart = column_chart(
        "Event log backlog by partition",
        [f"p{p['partition']}" for p in partitions],
        [Decimal(p["pending"]) for p in partitions],
        unit="messages",
        tooltips=[
            f"partition {p['partition']} ({p['subject']}): {p['pending']} messages not yet counted"
            + (f", the oldest waiting {readable_duration(p['oldestPendingAgeMs'])}" if p["pending"] else "")
            for p in partitions
        ],
        width=560,
        height=220,
    )
    return render(
        request,
        "metering.html",
        {
            **data,
            "replayed": replayed,
            "lag_chart": lag_chart,
            "watermark_chart": watermark_chart,
            "log_chart": log_chart,
        },
    )


@router.get("/metering/quarantine.csv")
async def quarantine_csv(request: Request, context: ContextDep) -> Response:
    data = await query(request, "ConsoleMetering", {}, context)
    header = ["event_id", "code", "message", "received_at", "payload"]
    rows: list[list[Any]] = []
    for row in data["quarantinedEvents"]:
        rows.append([row["eventId"], row["code"], row["message"], row["receivedAt"], json.dumps(row["payload"])])
    return csv_download("quarantine.csv", header, rows)


@router.post("/metering/replay")
async def replay_quarantine(request: Request, context: ContextDep) -> Response:
    payload = (await query(request, "ConsoleReplayQuarantine", {"input": {"limit": 10_000}}, context))[
        "replayQuarantine"
    ]
    summary = (
        f"{payload['accepted']} accepted, {payload['duplicates']} duplicate(s), {payload['rejected']} rejected, "
        f"{payload['stillWaiting']} still waiting"
    )
    return RedirectResponse(f"/console/metering?replayed={summary}", status_code=303)


@router.get("/traces")
async def traces_page(
    request: Request, context: ContextDep, search: str = "", after: str | None = None, show: str = ""
) -> Response:
    """Requests and jobs by default; ``show=all`` adds the stray SQL that runs outside either."""
    everything = show == "all"
    scope = "ALL" if everything else "REQUESTS_AND_JOBS"
    variables = {"search": search or None, "first": 50, "after": after, "scope": scope}
    data = await query(request, "ConsoleTraces", variables, context)
    return render(
        request, "traces.html", {"traces": data["traces"], "search": search, "everything": everything}, block="rows"
    )


@router.get("/traces/{trace_id}")
async def trace_page(request: Request, context: ContextDep, trace_id: str) -> Response:
    spans = (await query(request, "ConsoleTrace", {"traceId": trace_id}, context))["traceSpans"]
    if not spans:
        return render(request, "not_found.html", {"what": "trace"}, status_code=404)
    return render(request, "trace.html", {"trace_id": trace_id, "rows": waterfall(spans)})


@router.get("/{section}")
async def upcoming_section(request: Request, context: ContextDep, section: str) -> Response:
    if section not in UPCOMING_SECTIONS:
        return render(request, "not_found.html", {"what": "page"}, status_code=404)
    title, issue, what = UPCOMING_SECTIONS[section]
    return render(request, "upcoming.html", {"section": section, "title": title, "issue": issue, "what": what})


async def query_failed_page(request: Request, error: Exception) -> Response:
    messages = error.messages if isinstance(error, ConsoleQueryFailed) else [str(error)]
    return render(request, "error.html", {"messages": messages}, status_code=400)


def install(app: FastAPI) -> None:
    """Mount the console on the application (its catch-all section route last)."""
    from console.alerts import router as alerts_router
    from console.anomalies import router as anomalies_router
    from console.audit import router as audit_router
    from console.billing import router as billing_router
    from console.billing_details import router as billing_details_router
    from console.calendar import router as calendar_router
    from console.charges import router as charges_router
    from console.coupons import router as coupons_router
    from console.credits import router as credits_router
    from console.customer_links import router as customer_links_router
    from console.emails import router as emails_router
    from console.invoice_page import router as invoice_page_router
    from console.invoices import router as invoices_router
    from console.ledger import router as ledger_router
    from console.lifecycle import router as lifecycle_router
    from console.overview import router as overview_router
    from console.payments import router as payments_router
    from console.plans import router as plans_router
    from console.price_overrides import router as price_overrides_router
    from console.pricing import router as pricing_router
    from console.topups import router as topups_router
    from console.webhooks import router as webhooks_router

    app.include_router(customer_links_router)  # first: an external id must not reach the pages by id
    app.include_router(overview_router)
    app.include_router(invoices_router)
    app.include_router(ledger_router)
    app.include_router(plans_router)
    app.include_router(invoice_page_router)
    app.include_router(credits_router)
    app.include_router(topups_router)
    app.include_router(billing_router)
    app.include_router(pricing_router)
    app.include_router(anomalies_router)
    app.include_router(payments_router)
    app.include_router(charges_router)
    app.include_router(lifecycle_router)
    app.include_router(price_overrides_router)
    app.include_router(calendar_router)
    app.include_router(billing_details_router)
    app.include_router(coupons_router)
    app.include_router(alerts_router)
    app.include_router(emails_router)
    app.include_router(webhooks_router)
    app.include_router(audit_router)
    app.include_router(router)
    app.add_exception_handler(ConsoleQueryFailed, query_failed_page)
