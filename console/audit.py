"""The console's Audit log page: who did what to money or a customer, when, and what it changed
(before and after), newest first, filtered by actor, action, customer and dates, and as CSV."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.context import TallyContext
from console.pages import CSV_ROW_LIMIT, ContextDep, csv_download, query, render
from console.views import grouped_amount

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE = 50
AMOUNT = re.compile(r"-?\d+\.\d+")
ACTIONS = {
    "": "Any action",
    "credits.": "Credits (grant, void)",
    "credits.grant": "Credits granted",
    "credits.void": "Grants voided",
    "balance.adjust": "Balance adjustments",
    "ledger.reverse": "Reversals",
    "promotion.": "Promotions (create, edit, deactivate)",
    "invoice.": "Invoices (credit notes, write-offs, voids)",
    "charge.": "One-off charges",
    "subscription.": "Subscriptions (plan changes, cancel, pause)",
    "customer.": "Customers (created, billing details)",
}
FILTERS = ("actor", "action", "customer", "since", "until")


def _day(text: str, *, next_day: bool = False) -> str | None:
    """A ``YYYY-MM-DD`` filter as the start of that day UTC (of the day after, for an inclusive
    "until"); anything else filters nothing."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return datetime.combine(day + timedelta(days=1 if next_day else 0), time.min, tzinfo=UTC).isoformat()


def _filter(chosen: dict[str, str]) -> dict[str, Any]:
    return {
        "actor": chosen["actor"] or None,
        "action": chosen["action"] or None,
        "customer": chosen["customer"] or None,
        "since": _day(chosen["since"]),
        "until": _day(chosen["until"], next_day=True),
    }


def readable(value: Any) -> str:
    """A recorded value as a person reads it: yes/no, — for nothing, amounts grouped by thousands."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and AMOUNT.fullmatch(value):
        return grouped_amount(value)
    return str(value)


def changes(entry: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    """(field, before, after) of an entry, in the order the action wrote them; before is None for
    a field the action set without one before it (a reason, or anything it created)."""
    before, after = entry["before"] or {}, entry["after"] or {}
    names = list(after) + [name for name in before if name not in after]
    return [(name, readable(before[name]) if name in before else None, readable(after.get(name))) for name in names]


async def _entries(
    request: Request, context: TallyContext, chosen: dict[str, str], *, first: int, after: str | None
) -> dict[str, Any]:
    variables = {"filter": _filter(chosen), "first": first, "after": after}
    found: dict[str, Any] = (await query(request, "ConsoleAuditLog", variables, context))["auditLog"]
    return found


@router.get("/audit")
async def audit_page(
    request: Request,
    context: ContextDep,
    actor: str = "",
    action: str = "",
    customer: str = "",
    since: str = "",
    until: str = "",
    after: str | None = None,
) -> Response:
    chosen = {
        "actor": actor.strip(),
        "action": action.strip(),
        "customer": customer.strip(),
        "since": since,
        "until": until,
    }
    found = await _entries(request, context, chosen, first=PAGE, after=after)
    entries = [{**edge["node"], "changes": changes(edge["node"])} for edge in found["edges"]]
    return render(
        request,
        "audit.html",
        {
            "entries": entries,
            "page_info": found["pageInfo"],
            "chosen": chosen,
            "actions": ACTIONS,
            "query_string": urlencode({name: value for name, value in chosen.items() if value}),
        },
        block="results",
    )


@router.get("/audit.csv")
async def audit_csv(
    request: Request,
    context: ContextDep,
    actor: str = "",
    action: str = "",
    customer: str = "",
    since: str = "",
    until: str = "",
) -> Response:
    """The filtered log, newest first, before and after as JSON (at most CSV_ROW_LIMIT rows)."""
    chosen = {
        "actor": actor.strip(),
        "action": action.strip(),
        "customer": customer.strip(),
        "since": since,
        "until": until,
    }
    header = ["id", "recorded_at", "actor", "action", "subject_type", "subject_id", "customer_id", "before", "after"]
    rows: list[list[Any]] = []
    cursor = None
    while len(rows) < CSV_ROW_LIMIT:
        found = await _entries(request, context, chosen, first=100, after=cursor)
        for edge in found["edges"]:
            node = edge["node"]
            rows.append(
                [
                    node["id"],
                    node["recordedAt"],
                    node["actor"],
                    node["action"],
                    node["subjectType"],
                    node["subjectId"],
                    node["customerId"] or "",
                    json.dumps(node["before"]) if node["before"] is not None else "",
                    json.dumps(node["after"]) if node["after"] is not None else "",
                ]
            )
        if not found["pageInfo"]["hasNextPage"]:
            break
        cursor = found["pageInfo"]["endCursor"]
    return csv_download("audit-log.csv", header, rows)
