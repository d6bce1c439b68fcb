"""Console view models: shaping GraphQL answers for templates (no data access here)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
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
UPCOMING_SECTIONS: dict[str, tuple[str, int, str]] = {}


def readable_duration(milliseconds: object) -> str:
    """``"850 ms"``, ``"12.4 s"``, ``"3.2 min"``, ``"5.1 h"``: a lag people can read at a glance."""
    if milliseconds is None:
        return "—"
    value = float(str(milliseconds))
    for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} ms"


def utc_minute(timestamp: object) -> str:
    """``"2026-01-31 14:00"`` from an ISO timestamp of the API (always UTC); billing periods are
    anchored on the minute a subscription started, so the date alone would hide the boundary."""
    if not timestamp:
        return "—"
    return str(timestamp)[:16].replace("T", " ")


@dataclass(frozen=True)
class DistributionBar:
    x: float
    y: float
    width: float
    height: float
    label: str
    customers: int
    direction: str  # "down", "flat" or "up": the bar's colour


@dataclass(frozen=True)
class DistributionChart:
    width: int
    height: int
    bars: list[DistributionBar]
    customers: int


def distribution_chart(buckets: list[dict[str, Any]], *, width: int = 720, height: int = 160) -> DistributionChart:
    """One bar per change bucket of a pricing simulation, in the API's order (a lot less to a lot
    more). Floats are pixel positions only; the counts shown are the API's integers."""
    peak = max((b["customers"] for b in buckets), default=0)
    slot = width / max(len(buckets), 1)
    bars = []
    for index, bucket in enumerate(buckets):
        bar_height = round(bucket["customers"] / peak * height, 2) if peak else 0.0
        label = bucket["label"]
        direction = "flat" if label == "-5% to +5%" else "down" if label.startswith(("below", "-")) else "up"
        bars.append(
            DistributionBar(
                x=round(index * slot + slot * 0.15, 2),
                y=round(height - bar_height, 2),
                width=round(slot * 0.7, 2),
                height=bar_height,
                label=label,
                customers=bucket["customers"],
                direction=direction,
            )
        )
    return DistributionChart(width, height, bars, sum(b["customers"] for b in buckets))


def biggest_movers_first(customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Simulated customers by the size of their change (either way), then by external id, as the
    API orders its own ``biggestMovers``; amounts compare as exact decimals."""
    return sorted(customers, key=lambda c: (-abs(Decimal(c["difference"]["amount"])), c["externalId"]))


def exact_amount(amount: object) -> str:
    """An exact decimal string without its trailing zeros (``"20.000000000000"`` → ``"20"``), never
    in exponent notation: display only, the value is unchanged."""
    if amount is None:
        return "—"
    value = Decimal(str(amount))
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def grouped_amount(value: object) -> str:
    """An amount with thousands separators, exactly as precise as the API gave it: ``"12345.50"``
    → ``"12,345.50"``; a Money (``{"amount", "currency"}``) → ``"12,345.50 USD"``. The console's
    one way to print an amount (the ``amount`` filter)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, dict):
        return f"{grouped_amount(value.get('amount'))} {value.get('currency', '')}".rstrip()
    try:
        return f"{Decimal(str(value)):,f}"
    except ArithmeticError:
        return str(value)
