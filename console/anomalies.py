"""The Anomalies page: what looks wrong, the ledger's own failures first and loud; filters by
kind, severity, status and date (a GET form that htmx only speeds up), acknowledge and resolve
with a note (finance), and the filtered table as CSV."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from app.api.anomalies import AnomalyKind, AnomalySeverity, AnomalyStatus
from app.api.context import TallyContext
from console.forms import field_errors
from console.pages import CSV_ROW_LIMIT, ContextDep, csv_download, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

PAGE = 50
KINDS = [kind.name for kind in AnomalyKind]
SEVERITIES = [severity.name for severity in AnomalySeverity]
STATUSES = [status.name for status in AnomalyStatus]
# Everything ever detected, when no "from" date is given.
EPOCH = "2000-01-01T00:00:00+00:00"


@dataclass
class Filters:
    """The page's filters as submitted; unknown choices are dropped, bad dates reported."""

    kind: str = ""
    severity: str = ""
    status: str = ""
    from_date: date | None = None
    to_date: date | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, values: dict[str, str]) -> Filters:
        found = cls(
            kind=values.get("kind", "") if values.get("kind") in KINDS else "",
            severity=values.get("severity", "") if values.get("severity") in SEVERITIES else "",
            status=values.get("status", "") if values.get("status") in STATUSES else "",
        )
        for name in ("from", "to"):
            text = values.get(name, "").strip()
            if not text:
                continue
            try:
                setattr(found, f"{name}_date", date.fromisoformat(text))
            except ValueError:
                found.errors[name] = "give a date as YYYY-MM-DD"
        return found

    def variables(self) -> dict[str, Any]:
        """The GraphQL variables: the "to" date is included (until the next midnight, UTC)."""
        return {
            "since": f"{self.from_date.isoformat()}T00:00:00+00:00" if self.from_date else EPOCH,
            "until": f"{(self.to_date + timedelta(days=1)).isoformat()}T00:00:00+00:00" if self.to_date else None,
            "kind": self.kind or None,
            "severity": self.severity or None,
            "status": self.status or None,
        }

    def form(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "from": self.from_date.isoformat() if self.from_date else "",
            "to": self.to_date.isoformat() if self.to_date else "",
        }

    def query_string(self) -> str:
        return urlencode({name: value for name, value in self.form().items() if value})


@router.get("/anomalies")
async def anomalies_page(request: Request, context: ContextDep, after: str | None = None) -> Response:
    filters = Filters.parse(dict(request.query_params))
    return await _page(request, context, filters, after=after, notice=request.query_params.get("notice"))


async def _page(
    request: Request,
    context: TallyContext,
    filters: Filters,
    *,
    after: str | None = None,
    notice: str | None = None,
    row_errors: dict[str, dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    found = (await query(request, "ConsoleAnomalies", {**filters.variables(), "first": PAGE, "after": after}, context))[
        "anomalies"
    ]
    rows = [edge["node"] for edge in found["edges"]]
    return render(
        request,
        "anomalies.html",
        {
            "rows": rows,
            "numbers": {row["id"]: json.dumps(json.loads(row["numbers"]), indent=2) for row in rows},
            "page_info": found["pageInfo"],
            "ledger_failing": any(r["kind"] == "LEDGER_INVARIANT" and r["status"] != "RESOLVED" for r in rows),
            "filters": filters.form(),
            "filter_errors": filters.errors,
            "query_string": filters.query_string(),
            "kinds": KINDS,
            "severities": SEVERITIES,
            "statuses": STATUSES,
            "notice": notice,
            "row_errors": row_errors or {},
        },
        block="results",
        status_code=status_code,
    )


@router.get("/anomalies.csv")
async def anomalies_csv(request: Request, context: ContextDep) -> Response:
    """The filtered table, in the page's order, paged through the same GraphQL query."""
    filters = Filters.parse(dict(request.query_params))
    header = [
        "detected_at",
        "kind",
        "severity",
        "status",
        "customer",
        "summary",
        "window_start",
        "window_end",
        "numbers",
        "note",
        "status_by",
        "status_at",
    ]
    rows: list[list[Any]] = []
    after, written = None, 0
    while written < CSV_ROW_LIMIT:
        page = (
            await query(request, "ConsoleAnomalies", {**filters.variables(), "first": 100, "after": after}, context)
        )["anomalies"]
        for edge in page["edges"]:
            row = edge["node"]
            rows.append(
                [
                    row["detectedAt"],
                    row["kind"],
                    row["severity"],
                    row["status"],
                    (row["customer"] or {}).get("externalId", ""),
                    row["summary"],
                    row["windowStart"],
                    row["windowEnd"],
                    row["numbers"],
                    row["note"] or "",
                    row["statusBy"] or "",
                    row["statusAt"] or "",
                ]
            )
            written += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    return csv_download("anomalies.csv", header, rows)


async def _submitted(request: Request) -> tuple[Filters, dict[str, str]]:
    """The form, and the filters of the page it was sent from (they travel in ``back``)."""
    form = {name: str(value) for name, value in (await request.form()).items()}
    return Filters.parse(dict(parse_qsl(form.get("back", "")))), form


def _back_to(filters: Filters, notice: str) -> RedirectResponse:
    separator = "&" if filters.query_string() else ""
    return RedirectResponse(
        f"/console/anomalies?{filters.query_string()}{separator}{urlencode({'notice': notice})}", status_code=303
    )


@router.post("/anomalies/{anomaly_id}/acknowledge")
async def acknowledge(request: Request, context: ContextDep, anomaly_id: str) -> Response:
    filters, _ = await _submitted(request)
    payload = (await query(request, "ConsoleAcknowledgeAnomaly", {"input": {"anomalyId": anomaly_id}}, context))[
        "acknowledgeAnomaly"
    ]
    if payload["userErrors"]:
        errors = {anomaly_id: field_errors(payload["userErrors"])}
        return await _page(request, context, filters, row_errors=errors, status_code=422)
    return _back_to(filters, "Acknowledged")


@router.post("/anomalies/{anomaly_id}/resolve")
async def resolve(request: Request, context: ContextDep, anomaly_id: str) -> Response:
    filters, form = await _submitted(request)
    variables = {"input": {"anomalyId": anomaly_id, "note": form.get("note", "")}}
    payload = (await query(request, "ConsoleResolveAnomaly", variables, context))["resolveAnomaly"]
    if payload["userErrors"]:
        errors = {anomaly_id: field_errors(payload["userErrors"])}
        return await _page(request, context, filters, row_errors=errors, status_code=422)
    return _back_to(filters, "Resolved")
