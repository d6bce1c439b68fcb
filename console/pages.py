"""What every console page shares: the templates and their filters, the navigation, rendering a
page (or the block htmx swaps), the signed-in staff user as a GraphQL context, running an
operation, and CSV downloads. The sections (``console/*.py``) import it; ``console.routes``
assembles them."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response
from jinja2_fragments.fastapi import Jinja2Blocks

from app.api.context import TallyContext
from app.auth import Role, Viewer
from app.console_sessions import SESSION_KEY, active_session, touch_session
from app.dependencies import SessionDep
from console.forms import large_amount_in_words
from console.graphql_client import run_operation
from console.permissions import can, role_may
from console.views import (
    exact_amount,
    grouped_amount,
    readable_duration,
    utc_minute,
)

templates = Jinja2Blocks(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["duration"] = readable_duration
templates.env.filters["minute"] = utc_minute
templates.env.filters["exact"] = exact_amount
templates.env.filters["amount"] = grouped_amount
templates.env.globals["can"] = can  # every action's form and button: {% if can("grant_credits") %}
templates.env.globals["in_words"] = large_amount_in_words  # a confirmation's large amount, in words
NAVIGATION = [
    ("overview", "Overview"),
    ("customers", "Customers"),
    ("promotions", "Promotions"),
    ("invoices", "Invoices"),
    ("plans", "Plans"),
    ("pricing", "Pricing"),
    ("anomalies", "Anomalies"),
    ("reconciliation", "Reconciliation"),
    ("emails", "Emails"),
    ("webhooks", "Webhooks"),
    ("metering", "Metering"),
    ("traces", "Traces"),
    ("audit", "Audit log"),
]
# Sections only some roles may open (the capability their page needs), so only their navigation shows them.
SECTION_CAPABILITY = {"webhooks": "manage_webhooks", "reconciliation": "manage_collection"}
CSV_ROW_LIMIT = 10_000


# A spreadsheet reads a cell starting with one of these as a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
# A download's name may carry a customer's external id, which may be any text.
UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def spreadsheet_safe(cell: Any) -> Any:
    """The cell, with a ``'`` before text a spreadsheet would run as a formula (a customer named
    ``=HYPERLINK(…)``), as OWASP recommends; a plain number such as a credit's ``-5.00`` stays one."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def csv_download(filename: str, header: list[str], rows: list[list[Any]]) -> Response:
    """A console table as a CSV attachment, every cell safe to open in a spreadsheet."""
    output = io.StringIO()
    writer = csv.writer(output)
    writer.writerow([spreadsheet_safe(cell) for cell in header])
    writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    return Response(
        output.getvalue(),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{UNSAFE_IN_FILENAME.sub("_", filename)}"'},
    )


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    block: str | None = None,
    status_code: int = 200,
) -> Response:
    """A full page, or only ``block`` for an htmx request; caches keep the two apart."""
    staff = getattr(request.state, "staff", None)
    context = {
        "nav": [
            item
            for item in NAVIGATION
            if item[0] not in SECTION_CAPABILITY or role_may((staff or {}).get("role"), SECTION_CAPABILITY[item[0]])
        ],
        "staff": staff,
        "csrftoken": request.scope["csrftoken"](),
        **context,
    }
    response = templates.TemplateResponse(
        request,
        template,
        context,
        status_code=status_code,
        block_name=block if block and is_htmx(request) else None,
    )
    response.headers["Vary"] = "HX-Request"
    return response


def login_redirect(request: Request) -> HTTPException:
    target = f"/console/login?next={request.url.path}"
    return HTTPException(303, detail="sign in first", headers={"Location": target, "HX-Redirect": target})


async def console_context(request: Request, session: SessionDep) -> AsyncIterator[TallyContext]:
    """The signed-in staff user as a GraphQL viewer, while the server-side session the cookie
    names is live; otherwise a redirect to the login page."""
    lifetime = timedelta(seconds=request.app.state.settings.session_max_age_seconds)
    now = datetime.now(UTC)
    signed_in = await active_session(session, request.session.get(SESSION_KEY), as_of=now, lifetime=lifetime)
    if signed_in is None:
        request.session.clear()
        raise login_redirect(request)
    console_session, user = signed_in
    if await touch_session(session, console_session, as_of=now):
        await session.commit()
    request.state.staff = {"email": user.email, "role": user.role}
    viewer = Viewer(role=Role(user.role), actor=f"staff:{user.email}")
    yield TallyContext(
        session=session, viewer=viewer, settings=request.app.state.settings, event_log=request.app.state.event_log
    )


ContextDep = Annotated[TallyContext, Depends(console_context)]


async def query(request: Request, name: str, variables: dict[str, Any], context: TallyContext) -> dict[str, Any]:
    return await run_operation(request.app.state.schema, name, variables, context)
