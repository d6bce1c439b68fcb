"""The anomaly scan: every detector (``usage_anomalies``, ``money_anomalies``) reads what it
judges as of ``as_of`` and returns findings, which :func:`scan` stores once per (kind, customer,
window).

A detector's window is chosen so that scanning again finds the same window: whole UTC days and
hours, billing periods, an invoice's period, a stuck watermark. Findings carry their numbers in
``numbers``: amounts as integers in minor units beside their currency, quantities and ratios as
decimal strings.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.findings import Finding, raise_anomaly
from billing.insights.anomalies import Thresholds
from billing.insights.money_anomalies import invoice_deltas, late_usage, ledger_invariants, unreconciled
from billing.insights.usage_anomalies import duplicate_rate, metering_lag, quarantine, usage_spikes, zero_usage_active
from metering.log_backlog import LogBacklog

Detector = Callable[[AsyncSession, datetime, Thresholds], Awaitable[list[Finding]]]

# Cheapest first; the ledger check reads every posting.
DETECTORS: dict[str, Detector] = {
    "QUARANTINE": quarantine,
    "DUPLICATE_RATE": duplicate_rate,
    "METERING_LAG": metering_lag,
    "UNRECONCILED": unreconciled,
    "INVOICE_DELTA": invoice_deltas,
    "LATE_USAGE": late_usage,
    "ZERO_USAGE_ACTIVE": zero_usage_active,
    "USAGE_SPIKE": usage_spikes,
    "LEDGER_INVARIANT": ledger_invariants,
}


@dataclass(frozen=True)
class ScanReport:
    """What one scan found, by kind: everything it found, and how much of that was new."""

    found: dict[str, int]
    new: dict[str, int]


async def scan(
    session: AsyncSession,
    *,
    as_of: datetime,
    thresholds: Thresholds,
    log_backlog: LogBacklog | None = None,
    on_detector: Callable[[str], None] = lambda kind: None,
) -> ScanReport:
    """Run every detector and store what it finds, in the caller's transaction. Findings already
    stored (same kind, customer and window) change nothing, so scanning again is harmless.
    ``log_backlog`` is the event log's, read by the caller (edge mode): METERING_LAG counts it."""
    found: dict[str, int] = {}
    new: dict[str, int] = {}
    detectors: dict[str, Detector] = {
        **DETECTORS,
        "METERING_LAG": functools.partial(metering_lag, log_backlog=log_backlog),
    }
    for kind, detect in detectors.items():
        findings = await detect(session, as_of, thresholds)
        found[kind] = len(findings)
        new[kind] = sum([await raise_anomaly(session, finding, as_of=as_of) for finding in findings])
        on_detector(kind)
    return ScanReport(found=found, new=new)
