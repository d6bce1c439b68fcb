"""Invoice accuracy: re-rate a sample of issued invoices from the raw events, not the rollups, and
count the lines that differ. The target is zero; each invoice that differs is an anomaly of kind
``INVOICE_ACCURACY`` (severity high), stored once per customer and period.

What is compared: the ``usage`` lines of ``period`` invoices (with what the period's interim
invoices billed added back), by charge, dimensions and service
period, quantity and exact amount, against the same periods rated on the same plan versions from
the events received by the invoice's issue (later arrivals are late usage, billed by a later
invoice). Both sides share the rating (``pricing``): this check catches rollups that drifted from
the events, events stored without reaching the rollups, and usage read wrongly, not a wrong price.
Late-usage lines are not re-rated. The tax is worked out again from the invoice's lines and the
rates its tax lines applied (each rounded once, :mod:`pricing.tax`), and the total must be the
lines plus the exclusive tax. Nothing is written but the anomalies.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.findings import Finding, raise_anomaly
from billing.insights import anomaly_repository
from billing.invoice_numbers import invoice_number
from billing.invoices.invoicing import rated_usage, usage_terms
from billing.invoices.repository import interim_billed, lines_of, tax_lines_of
from billing.models import Invoice
from customers.price_overrides import overrides_of_customer
from customers.service import all_subscriptions_of
from customers.subscriptions import phases_of
from ledger.money import plain_decimal, to_major
from metering.events import canonical_json
from metering.usage import charge_event_values, usage_from_events
from pricing.tax import TaxRate, TaxTreatment, exclusive_tax, tax_lines

ANOMALY_KIND = "INVOICE_ACCURACY"

LineKey = tuple[uuid.UUID | None, str, datetime]  # charge, canonical dimensions, service start


@dataclass(frozen=True)
class LineDifference:
    description: str
    billed_quantity: Decimal | None
    rerated_quantity: Decimal | None
    billed_amount: Decimal | None  # exact, before rounding
    rerated_amount: Decimal | None

    def as_dict(self) -> dict[str, Any]:
        return {key: str(value) if isinstance(value, Decimal) else value for key, value in self.__dict__.items()}


@dataclass(frozen=True)
class InvoiceCheck:
    invoice: Invoice
    differences: list[LineDifference]


@dataclass(frozen=True)
class AccuracyReport:
    checked: list[InvoiceCheck]
    anomalies_raised: int

    @property
    def differences(self) -> int:
        return sum(len(check.differences) for check in self.checked)


def _key(charge_id: uuid.UUID | None, dimensions: dict[str, Any], service_start: datetime) -> LineKey:
    return (charge_id, canonical_json(dimensions), service_start)


@dataclass(frozen=True)
class _Billed:
    description: str
    quantity: Decimal | None
    amount_exact: Decimal


async def check_invoice(session: AsyncSession, invoice: Invoice) -> InvoiceCheck:
    billed: dict[LineKey, _Billed] = {
        _key(line.plan_charge_id, line.dimensions, line.service_start): _Billed(
            line.description, line.quantity, line.amount_exact
        )
        for line in (await lines_of(session, [invoice.id]))[invoice.id]
        if line.kind == "usage"
    }
    from_events = functools.partial(usage_from_events, received_by=invoice.issued_at)
    events_received = functools.partial(charge_event_values, received_by=invoice.issued_at)
    # A period invoice always names its subscription (a database check).
    assert invoice.subscription_id is not None
    phases = await phases_of(session, invoice.subscription_id)
    overrides = await overrides_of_customer(session, invoice.customer_id)
    theirs = (await all_subscriptions_of(session, [invoice.customer_id]))[invoice.customer_id]
    subscription = next(s for s in theirs if s.id == invoice.subscription_id)
    # The period's interim invoices (threshold invoicing) billed part of its usage: add it back.
    for key, before in (await interim_billed(session, subscription, invoice.period_start)).items():
        line = billed.get(key, _Billed(before.description, Decimal(0), Decimal(0)))
        billed[key] = _Billed(
            line.description,
            plain_decimal((line.quantity or Decimal(0)) + before.quantity),
            line.amount_exact + before.amount_exact,
        )
    terms = await usage_terms(session, subscription, phases, invoice.period_start)
    rerated = {
        _key(line.plan_charge_id, line.dimensions, line.service_start): line
        for line in await rated_usage(
            session,
            invoice.customer_id,
            phases,
            invoice.period_start,
            invoice.period_end,
            read_usage=from_events,
            read_events=events_received,
            overrides=overrides,
            terms=terms,
        )
    }
    differences = await _tax_differences(session, invoice)
    for key in sorted(billed.keys() | rerated.keys(), key=lambda k: (str(k[0]), k[1], k[2])):
        was, now = billed.get(key), rerated.get(key)
        if was and now and (was.quantity, was.amount_exact) == (now.quantity, now.amount_exact):
            continue
        either = was or now
        assert either is not None
        differences.append(
            LineDifference(
                description=either.description,
                billed_quantity=was.quantity if was else None,
                rerated_quantity=now.quantity if now else None,
                billed_amount=was.amount_exact if was else None,
                rerated_amount=now.amount_exact if now else None,
            )
        )
    return InvoiceCheck(invoice, differences)


async def _tax_differences(session: AsyncSession, invoice: Invoice) -> list[LineDifference]:
    """The tax lines whose tax is not what their rate gives on the invoice's lines, and a total
    that is not the lines plus the exclusive tax."""
    amounts = [line.amount for line in (await lines_of(session, [invoice.id]))[invoice.id]]
    stored = (await tax_lines_of(session, [invoice.id]))[invoice.id]
    rates = tuple(TaxRate(line.rate_key, line.name, line.rate, line.inclusive, "") for line in stored)
    recomputed = tax_lines(amounts, TaxTreatment(rates), invoice.currency)
    differences = []
    for was, now in zip([line for line in stored if not line.reverse_charge], recomputed, strict=False):
        if (was.taxable_amount, was.tax_amount) != (now.taxable, now.tax):
            differences.append(
                LineDifference(
                    f"{was.name} {plain_decimal(was.rate)} %",
                    None,
                    None,
                    to_major(was.tax_amount, invoice.currency),
                    to_major(now.tax, invoice.currency),
                )
            )
    expected_total = sum(amounts) + exclusive_tax(recomputed)
    if invoice.total != expected_total:
        differences.append(
            LineDifference(
                "Total with tax",
                None,
                None,
                to_major(invoice.total, invoice.currency),
                to_major(expected_total, invoice.currency),
            )
        )
    return differences


async def verify_invoices(session: AsyncSession, *, sample: int, as_of: datetime) -> AccuracyReport:
    """Check ``sample`` random issued invoices and raise an anomaly for each one that differs."""
    checked = [
        await check_invoice(session, invoice)
        for invoice in await anomaly_repository.random_period_invoices(session, sample)
    ]
    raised = 0
    for check in checked:
        if not check.differences:
            continue
        invoice = check.invoice
        finding = Finding(
            kind=ANOMALY_KIND,
            customer_id=invoice.customer_id,
            window_start=invoice.period_start,
            window_end=invoice.period_end,
            severity="high",
            summary=f"Invoice {invoice_number(invoice.number)} differs from its raw events on "
            f"{len(check.differences)} line(s)",
            numbers={"invoice": invoice.number, "lines": [d.as_dict() for d in check.differences]},
        )
        raised += await raise_anomaly(session, finding, as_of=as_of)
    return AccuracyReport(checked, raised)
