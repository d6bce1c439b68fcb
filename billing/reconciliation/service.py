"""Daily reconciliation: every payment and refund the ledger holds against Stripe's PaymentIntents,
charges and refunds, and every paid invoice against its payment. Each difference is recorded once
per (kind, object) with both sides as they were seen, and stays until someone resolves it with a
note; a later run that finds it again only updates when it was last seen.

Kinds: ``MISSING_IN_TALLY`` (Stripe took money for an invoice and the ledger does not know),
``MISSING_IN_STRIPE`` (the ledger holds a payment Stripe has no PaymentIntent for),
``AMOUNT_MISMATCH`` (paid or refunded amounts differ), ``CURRENCY_MISMATCH``,
``STATUS_MISMATCH`` (a payment the ledger holds is not succeeded in Stripe, or an invoice is paid
in Tally with no payment behind it), ``DUPLICATE`` (a second successful payment of an invoice).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.collection.stripe_gateway import (
    StripeGateway,
    StripeSidePayment,
    payment_in_stripe,
    tally_payments_in_stripe,
)
from billing.reconciliation import repository
from billing.tracing import tracer
from ledger.errors import InvalidInput, NotFound

WINDOW = timedelta(days=35)


@dataclass(frozen=True)
class Discrepancy:
    kind: str
    object_id: str
    summary: str
    invoice_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    tally_side: dict[str, Any] | None = None
    stripe_side: dict[str, Any] | None = None


@dataclass
class ReconciliationReport:
    as_of: datetime
    since: datetime
    checked: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)
    new: int = 0


@dataclass(frozen=True)
class _TallyPayment:
    payment_intent_id: str
    invoice_id: uuid.UUID
    customer_id: uuid.UUID
    invoice_number: int
    invoice_status: str
    amount: int
    currency: str
    refunded: int

    def as_seen(self) -> dict[str, Any]:
        return {
            "payment_intent": self.payment_intent_id,
            "invoice_number": self.invoice_number,
            "invoice_status": self.invoice_status,
            "amount": self.amount,
            "currency": self.currency,
            "refunded": self.refunded,
        }


async def reconcile(
    session: AsyncSession, gateway: StripeGateway, *, as_of: datetime, window: timedelta = WINDOW
) -> ReconciliationReport:
    """Compare the last ``window`` of payments on both sides and record what differs. Stripe is
    read before anything is written, and no ledger row is locked. The caller commits."""
    with tracer.start_as_current_span("reconciliation.run", attributes={"tally.as_of": as_of.isoformat()}) as span:
        report = await _reconcile(session, gateway, as_of=as_of, window=window)
        span.set_attribute("tally.checked", report.checked)
        span.set_attribute("tally.discrepancies", len(report.discrepancies))
        span.set_attribute("tally.new_discrepancies", report.new)
    return report


async def _reconcile(
    session: AsyncSession, gateway: StripeGateway, *, as_of: datetime, window: timedelta
) -> ReconciliationReport:
    report = ReconciliationReport(as_of=as_of, since=as_of - window)
    in_stripe = await tally_payments_in_stripe(gateway, since=report.since)
    in_tally = await _tally_payments(session, since=report.since)
    by_intent = {payment.payment_intent_id: payment for payment in in_stripe}
    by_tally = {payment.payment_intent_id for payment in in_tally}
    for payment in in_tally:
        seen = by_intent.get(payment.payment_intent_id) or await payment_in_stripe(gateway, payment.payment_intent_id)
        report.discrepancies.extend(_compare(payment, seen))
    invoices = await _invoices_of(session, [p.invoice_id for p in in_stripe if p.payment_intent_id not in by_tally])
    report.discrepancies.extend(_unknown_to_tally(in_stripe, in_tally, invoices))
    report.discrepancies.extend(await _paid_without_payment(session, since=report.since))
    report.checked = len(in_tally) + len(in_stripe)
    for discrepancy in report.discrepancies:
        report.new += await _record(session, discrepancy, as_of=as_of)
    await repository.record_run(session, as_of=as_of, checked=report.checked, discrepancies=len(report.discrepancies))
    return report


def _compare(payment: _TallyPayment, seen: StripeSidePayment | None) -> list[Discrepancy]:
    def found(kind: str, object_id: str, summary: str) -> Discrepancy:
        return Discrepancy(
            kind,
            object_id,
            summary,
            payment.invoice_id,
            payment.customer_id,
            payment.as_seen(),
            seen.as_seen() if seen is not None else None,
        )

    intent = payment.payment_intent_id
    if seen is None:
        return [
            found("MISSING_IN_STRIPE", intent, f"Stripe has no payment {intent} (invoice {payment.invoice_number})")
        ]
    if seen.status != "succeeded":
        return [found("STATUS_MISMATCH", intent, f"payment {intent} is {seen.status} in Stripe, posted in the ledger")]
    if seen.currency != payment.currency:
        return [
            found(
                "CURRENCY_MISMATCH",
                intent,
                f"payment {intent}: {seen.currency} in Stripe, {payment.currency} in the ledger",
            )
        ]
    differences = []
    if seen.amount != payment.amount:
        differences.append(
            found(
                "AMOUNT_MISMATCH", intent, f"payment {intent}: {seen.amount} in Stripe, {payment.amount} in the ledger"
            )
        )
    if seen.amount_refunded != payment.refunded:
        differences.append(
            found(
                "AMOUNT_MISMATCH",
                f"{seen.charge_id}:refunds",
                f"refunds of {seen.charge_id}: {seen.amount_refunded} in Stripe, {payment.refunded} in the ledger",
            )
        )
    return differences


def _unknown_to_tally(
    in_stripe: list[StripeSidePayment],
    in_tally: list[_TallyPayment],
    invoices: dict[str, tuple[uuid.UUID, uuid.UUID, int]],
) -> list[Discrepancy]:
    """Stripe's payments the ledger does not hold: a second payment of an invoice that is already
    paid (by a payment either side knows) is a duplicate; the first is missing in Tally."""
    known = {payment.payment_intent_id for payment in in_tally}
    paid_invoices = {str(payment.invoice_id) for payment in in_tally}
    found = []
    for payment in sorted(in_stripe, key=lambda p: p.payment_intent_id not in known):
        if payment.payment_intent_id in known:
            continue
        kind = "DUPLICATE" if payment.invoice_id in paid_invoices else "MISSING_IN_TALLY"
        paid_invoices.add(payment.invoice_id)
        what = "a second payment" if kind == "DUPLICATE" else "a payment the ledger does not hold"
        invoice_id, customer_id, number = invoices.get(payment.invoice_id, (None, None, None))
        found.append(
            Discrepancy(
                kind,
                payment.payment_intent_id,
                f"{what} of invoice {number or payment.invoice_id}: {payment.payment_intent_id}, "
                f"{payment.amount} {payment.currency}",
                invoice_id,
                customer_id,
                None,
                payment.as_seen(),
            )
        )
    return found


async def _invoices_of(session: AsyncSession, refs: list[str]) -> dict[str, tuple[uuid.UUID, uuid.UUID, int]]:
    """Invoices named in Stripe's metadata: (id, customer, number) by the id as written there."""
    ids = [found for found in map(_uuid_or_none, refs) if found is not None]
    rows = await repository.invoice_customers_and_numbers(session, ids)
    return {str(invoice_id): (invoice_id, customer_id, number) for invoice_id, customer_id, number in rows}


async def _tally_payments(session: AsyncSession, *, since: datetime) -> list[_TallyPayment]:
    return [_TallyPayment(*row) for row in await repository.payments_since(session, since=since)]


async def _paid_without_payment(session: AsyncSession, *, since: datetime) -> list[Discrepancy]:
    rows = await repository.paid_invoices_without_payment(session, since=since)
    return [
        Discrepancy(
            "STATUS_MISMATCH",
            f"invoice:{number}",
            f"invoice {number} is paid in Tally with no Stripe payment behind it",
            invoice_id,
            customer_id,
            {"invoice_number": number, "status": "paid", "amount_due": amount_due, "currency": currency},
            None,
        )
        for invoice_id, customer_id, number, amount_due, currency in rows
    ]


async def _record(session: AsyncSession, discrepancy: Discrepancy, *, as_of: datetime) -> int:
    """1 when the discrepancy is new; a known one is only marked seen again (a resolved one stays resolved)."""
    inserted = await repository.record_discrepancy(
        session,
        kind=discrepancy.kind,
        object_id=discrepancy.object_id,
        invoice_id=discrepancy.invoice_id,
        customer_id=discrepancy.customer_id,
        summary=discrepancy.summary,
        tally_side=discrepancy.tally_side,
        stripe_side=discrepancy.stripe_side,
        as_of=as_of,
    )
    return 1 if inserted else 0


async def resolve(session: AsyncSession, discrepancy_id: uuid.UUID, *, note: str, actor: str, as_of: datetime) -> None:
    """Close a discrepancy with what was found or done about it (the note is required)."""
    if not note.strip():
        raise InvalidInput("say what was found or done", field="note")
    if not await repository.resolve_discrepancy(session, discrepancy_id, note=note.strip(), actor=actor, as_of=as_of):
        raise NotFound("no such discrepancy", field="discrepancyId")


async def last_reconciled_at(session: AsyncSession) -> datetime:
    return await repository.last_run_as_of(session) or datetime.min.replace(tzinfo=UTC)


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
