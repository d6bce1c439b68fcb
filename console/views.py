"""Console view models: shaping GraphQL answers for templates (no data access here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class WaterfallRow:
    span: dict[str, Any]
    depth: int
    offset_percent: float
    width_percent: float
    duration_ms: str


def waterfall(spans: list[dict[str, Any]]) -> list[WaterfallRow]:
    """Order spans depth-first under their parents and place each bar on the trace's timeline.

    Percentages are layout only (CSS widths), never amounts.
    """
    if not spans:
        return []
    starts = {s["spanId"]: datetime.fromisoformat(s["startTime"]) for s in spans}
    trace_start = min(starts.values())
    trace_end = max((starts[s["spanId"]].timestamp() - trace_start.timestamp()) * 1e6 + s["durationUs"] for s in spans)
    total_us = max(trace_end, 1)
    known = {s["spanId"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span["parentSpanId"] if span["parentSpanId"] in known else None
        children.setdefault(parent, []).append(span)
    rows: list[WaterfallRow] = []

    def visit(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: starts[s["spanId"]]):
            offset_us = (starts[span["spanId"]] - trace_start).total_seconds() * 1e6
            rows.append(
                WaterfallRow(
                    span=span,
                    depth=depth,
                    offset_percent=round(100 * offset_us / total_us, 2),
                    width_percent=max(round(100 * span["durationUs"] / total_us, 2), 0.3),
                    duration_ms=f"{span['durationUs'] / 1000:.2f}",
                )
            )
            visit(span["spanId"], depth + 1)

    visit(None, 0)
    return rows


# Pages in the navigation that later issues build; each says which issue fills it.
UPCOMING_SECTIONS = {
    "promotions": ("Promotions", 4, "credit grants and promotion codes"),
    "invoices": ("Invoices", 5, "billing runs and invoices"),
    "anomalies": ("Anomalies", 7, "finance anomaly detection"),
    "reconciliation": ("Reconciliation", 6, "daily reconciliation of the ledger with Stripe"),
    "metering": ("Metering", 3, "usage ingestion, rollups and metering lag"),
}
