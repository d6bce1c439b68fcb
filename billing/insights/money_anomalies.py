"""Anomalies of money: invoices far from the customer's usual, late usage weighing on an
invoice, differences with Stripe left open, and the ledger failing its own checks."""

from __future__ import annotations

import statistics
import uuid
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.findings import Finding
from billing.insights import anomaly_repository as repository
from billing.insights.anomalies import DAY, Thresholds, day_start, percent
from billing.invoice_numbers import invoice_number
from ledger.money import to_major
from ledger.verify import verify

INVOICE_DELTA_SHARE = Decimal("0.5")


async def invoice_deltas(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """INVOICE_DELTA: a period invoice issued in the lookback whose total is outside ±50% of the
    median of the customer's three period invoices before it.

    With fewer than three earlier invoices there is no trailing median yet, and a median of 0
    gives no scale: both are ignored. Void invoices count for neither side.
    """
    findings = []
    for row in await repository.invoices_with_previous(session, as_of - thresholds.lookback, as_of):
        previous = list(row["previous_totals"])
        if len(previous) < 3:
            continue
        median = int(statistics.median(previous))
        total = int(row["total"])
        if median <= 0 or abs(total - median) <= INVOICE_DELTA_SHARE * median:
            continue
        currency = row["currency"]
        change = Decimal(total - median) / median * 100
        findings.append(
            Finding(
                kind="INVOICE_DELTA",
                customer_id=row["customer_id"],
                window_start=row["period_start"],
                window_end=row["period_end"],
                severity="high" if abs(change) >= 100 else "medium",
                summary=(
                    f"Invoice {invoice_number(row['number'])} total {to_major(total, currency)} {currency} is "
                    f"{change.quantize(Decimal(1)):+}% against the median {to_major(median, currency)} {currency} "
                    f"of the 3 before it"
                ),
                numbers={
                    "invoiceId": str(row["id"]),
                    "invoiceNumber": row["number"],
                    "currency": currency,
                    "total": total,
                    "median": median,
                    "previousTotals": previous,
                    "changePercent": str(change.quantize(Decimal("0.1"))),
                },
            )
        )
    return findings


async def late_usage(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """LATE_USAGE: an invoice issued in the lookback whose late-usage lines (events that arrived
    after their period was invoiced) are above the threshold share of its subtotal: the edge or
    the grace period is too slow for the billing run. Invoices with no positive subtotal give no
    share and are not judged."""
    findings = []
    for row in await repository.late_usage_shares(session, as_of - thresholds.lookback, as_of):
        subtotal, late = int(row["subtotal"]), int(row["late_amount"])
        if subtotal <= 0 or abs(late) <= thresholds.late_usage_share * subtotal:
            continue
        currency = row["currency"]
        share = Decimal(late) / subtotal
        findings.append(
            Finding(
                kind="LATE_USAGE",
                customer_id=row["customer_id"],
                window_start=row["period_start"],
                window_end=row["period_end"],
                severity="high" if abs(share) >= Decimal("0.5") else "medium",
                summary=(
                    f"Late usage is {to_major(late, currency)} {currency} of invoice {invoice_number(row['number'])}'s "
                    f"subtotal {to_major(subtotal, currency)} {currency} ({percent(share)})"
                ),
                numbers={
                    "invoiceId": str(row["id"]),
                    "invoiceNumber": row["number"],
                    "currency": currency,
                    "lateAmount": late,
                    "subtotal": subtotal,
                    "lateLines": int(row["late_lines"]),
                    "share": str(share.quantize(Decimal("0.0001"))),
                    "threshold": str(thresholds.late_usage_share),
                },
            )
        )
    return findings


async def unreconciled(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """UNRECONCILED: open differences between the ledger and Stripe, one finding per customer and
    UTC day the reconciliation first saw them."""
    grouped: dict[tuple[uuid.UUID | None, datetime], list[dict[str, str | None]]] = {}
    for row in await repository.open_discrepancies(session, as_of):
        grouped.setdefault((row["customer_id"], day_start(row["detected_at"])), []).append(
            {
                "discrepancyId": str(row["id"]),
                "kind": row["kind"],
                "objectId": row["object_id"],
                "invoiceId": str(row["invoice_id"]) if row["invoice_id"] else None,
                "summary": row["summary"],
            }
        )
    findings = []
    for (customer_id, day), discrepancies in grouped.items():
        first = discrepancies[0]
        more = f" (and {len(discrepancies) - 1} more)" if len(discrepancies) > 1 else ""
        findings.append(
            Finding(
                kind="UNRECONCILED",
                customer_id=customer_id,
                window_start=day,
                window_end=day + DAY,
                severity="high",
                summary=(
                    f"{len(discrepancies)} open difference(s) with Stripe: {first['kind']} {first['summary']}{more}"
                ),
                numbers={"discrepancies": discrepancies},
            )
        )
    return findings


async def ledger_invariants(session: AsyncSession, as_of: datetime, thresholds: Thresholds) -> list[Finding]:
    """LEDGER_INVARIANT: anything `tally ledger verify` reports. It must never fire; when it does,
    it is critical and listed before everything else. One finding a UTC day while it lasts."""
    violations = await verify(session)
    if not violations:
        return []
    day = day_start(as_of)
    return [
        Finding(
            kind="LEDGER_INVARIANT",
            customer_id=None,
            window_start=day,
            window_end=day + DAY,
            severity="critical",
            summary=f"{len(violations)} ledger invariant violation(s): {violations[0]}",
            numbers={
                "violations": [{"check": v.check, "subject": v.subject, "detail": v.detail} for v in violations],
            },
        )
    ]
