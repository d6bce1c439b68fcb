"""The Overview page, the console's landing page: MRR and its movement, revenue by month,
receivables by age, credits outstanding, the usage trend of the top meters, and what needs a
person (open anomalies and discrepancies, metering lag). Every figure is defined in
``billing.insights.overview``; this module only lays it out."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from console.charts import AxisChart, column_chart, lines_chart
from console.pages import ContextDep, query, render
from console.views import grouped_amount

router = APIRouter(prefix="/console", include_in_schema=False)


def month_label(timestamp: str) -> str:
    """``"Mar 2026"`` from the API's first instant of a month."""
    return datetime.fromisoformat(timestamp).strftime("%b %Y")


def axis_month_label(timestamp: str, *, first: bool) -> str:
    """``"Mar"`` along a chart's axis; the year too on the first column and on each January."""
    moment = datetime.fromisoformat(timestamp)
    return f"{moment:%b %Y}" if first or moment.month == 1 else f"{moment:%b}"


def day_label(timestamp: str) -> str:
    """``"Mar 5"`` from the API's first instant of a UTC day."""
    moment = datetime.fromisoformat(timestamp)
    return f"{moment:%b} {moment.day}"


def revenue_charts(months: list[dict[str, Any]]) -> list[AxisChart]:
    """One chart per currency (amounts of two currencies never share an axis)."""
    by_currency: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in months:
        by_currency[row["billed"]["currency"]].append(row)
    charts = []
    for currency, rows in sorted(by_currency.items()):
        labels = [month_label(row["month"]) for row in rows]
        values = [Decimal(row["billed"]["amount"]) for row in rows]
        charts.append(
            column_chart(
                f"Billed revenue by month, {currency}",
                [axis_month_label(row["month"], first=index == 0) for index, row in enumerate(rows)],
                values,
                unit=currency,
                tooltips=[f"{label}: {grouped_amount(row['billed'])}" for label, row in zip(labels, rows, strict=True)],
                width=960,
                height=260,
                phone_width=360,
            )
        )
    return charts


def usage_chart(trends: list[dict[str, Any]]) -> AxisChart | None:
    if not trends:
        return None
    labels = [day_label(point["day"]) for point in trends[0]["daily"]]
    series: dict[str, tuple[str, list[Decimal | None]]] = {
        trend["name"]: (f"series-{index}", [Decimal(point["events"]) for point in trend["daily"]])
        for index, trend in enumerate(trends)
    }
    return lines_chart(
        "Events per day, top meters, last 30 days (UTC)", labels, series, unit="events / day", width=560, height=260
    )


@router.get("/overview")
async def overview_page(request: Request, context: ContextDep) -> Response:
    found = (await query(request, "ConsoleOverview", {}, context))["financeOverview"]
    return render(
        request,
        "overview.html",
        {
            "overview": found,
            "revenue_charts": revenue_charts(found["revenueByMonth"]),
            "usage_chart": usage_chart(found["usageTrend"]),
        },
    )
