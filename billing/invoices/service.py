"""What the rest of Tally calls about invoices: issue the next one due, preview the upcoming one,
list and read them. Services never commit: the billing run commits one invoice at a time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from opentelemetry import trace
from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import provenance_repository, repository
from billing.invoices.invoicing import DEFAULT_PAYMENT_TERMS, DraftInvoice, amount_due, compose_period, issue, next_due
from billing.invoices.taxation import taxes_of
from billing.invoices.trial_ends import settle_trial_end
from billing.models import Invoice, InvoiceLine, InvoiceTaxLine
from customers import service as customers
from customers.calendar import schedule_of
from customers.lifecycle import CANCELED, status_on
from customers.models import Subscription
from customers.subscriptions import phases_of
from ledger.grants import drawable_credits
from pricing.service import plan_version
from pricing.tax import TaxLine, exclusive_tax

tracer = trace.get_tracer("tally.billing")
INGEST_LINKS_PER_PERIOD = 10


@dataclass(frozen=True)
class BillingWindow:
    """When periods close: ``grace`` after their end (late events still arrive), and how far back
    a closed period can still receive late events (the ingestion's maximum event age)."""

    grace: timedelta
    late_window: timedelta
    # What a trial that requires a payment method does when it ends without one: "cancel" or "past_due".
    trial_without_payment_method: str = "cancel"
    # How long after issue an invoice falls due (the ``due_at`` its documents show).
    payment_terms: timedelta = DEFAULT_PAYMENT_TERMS


async def due_customers(session: AsyncSession, *, as_of: datetime, window: BillingWindow) -> list[uuid.UUID]:
    return await repository.due_customers(session, opening_by=as_of, closing_by=as_of - window.grace)


@dataclass(frozen=True)
class IssuedInvoice:
    invoice: Invoice
    # Another invoice of this customer may be due by ``as_of`` too: another period closed (after
    # downtime), or another of their subscriptions, not looked at yet.
    more_due: bool


async def issue_next_invoice(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    as_of: datetime,
    window: BillingWindow,
    trace_id: str | None = None,
    subscription_id: uuid.UUID | None = None,
) -> IssuedInvoice | None:
    """Issue the customer's next due invoice (of the one subscription named, else of whichever
    of theirs is due, the one invoiced least far first) and move that subscription's billing
    cursor past it, or return None when nothing is due or another billing run holds them right
    now. Each subscription has its own periods and invoices. The subscription row locks (taken
    with SKIP LOCKED) and the invoice's unique (subscription, kind, period) key make concurrent
    and repeated runs issue each invoice once."""
    subscriptions = await repository.subscriptions_to_bill(session, customer_id, subscription_id)
    for position, subscription in enumerate(subscriptions):
        issued = await _issue_next_of(session, subscription, as_of=as_of, window=window, trace_id=trace_id)
        if issued is not None:
            return replace(issued, more_due=issued.more_due or position + 1 < len(subscriptions))
    return None


async def _issue_next_of(
    session: AsyncSession, subscription: Subscription, *, as_of: datetime, window: BillingWindow, trace_id: str | None
) -> IssuedInvoice | None:
    phases = await phases_of(session, subscription.id)
    # A subscription's plans are priced in the customer's currency (checked when subscribing).
    currency = (await plan_version(session, subscription.plan_version_id)).currency
    trial_end = subscription.trial_ends_at
    if (
        trial_end is not None
        and subscription.invoiced_through is not None
        and subscription.invoiced_through < trial_end <= as_of - window.grace
    ):
        # The next invoice closes the trial: a required payment method is checked first, since
        # without one the subscription may end with the trial (and bill no paid period).
        settled = await settle_trial_end(
            session, subscription, phases, behaviour=window.trial_without_payment_method, as_of=as_of
        )
        if settled == "cancel":
            phases = await phases_of(session, subscription.id)
    due = await next_due(
        session,
        subscription,
        phases,
        currency,
        as_of=as_of,
        grace=window.grace,
        late_window=window.late_window,
    )
    if due is None:
        return None
    with tracer.start_as_current_span("billing.invoice.issue") as span:
        invoice = await issue(
            session,
            due.draft,
            as_of=as_of,
            invoiced_through=due.invoiced_through,
            closes_at=due.closes_at,
            trace_id=trace_id,
            payment_terms=window.payment_terms,
        )
        await _trace_issuance(session, span, invoice, due.draft, as_of=as_of)
    more_due = due.closes_at is not None and due.closes_at + window.grace <= as_of
    return IssuedInvoice(invoice, more_due=more_due)


async def issue_due_now(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    as_of: datetime,
    window: BillingWindow,
    subscription_id: uuid.UUID | None = None,
) -> list[Invoice]:
    """Every invoice of the subscription (by default, of each of the customer's) due by ``as_of``
    without grace, oldest first: what a change that closes the period in progress (a trial
    ended, a change of billing interval) issues at once, in the caller's transaction. Late usage
    of the closed period is billed on the next invoice, as for any period."""
    at_once = replace(window, grace=timedelta(0))
    invoices = []
    while (
        issued := await issue_next_invoice(
            session, customer_id, as_of=as_of, window=at_once, subscription_id=subscription_id
        )
    ) is not None:
        invoices.append(issued.invoice)
    return invoices


async def _trace_issuance(
    session: AsyncSession, span: trace.Span, invoice: Invoice, draft: DraftInvoice, *, as_of: datetime
) -> None:
    """Name the invoice on its span and link the ingest traces of the usage it rated (its period's
    and any late period's), so one trace leads to the next. Only the trace id of an ingest is
    kept with its events, so a link names the trace (span id 0) and carries its event count.
    Nothing is queried when the span is not recorded (tracing off): the billing run is a hot path."""
    if not span.is_recording():
        return
    span.set_attributes(
        {
            "tally.customer_id": str(invoice.customer_id),
            "tally.invoice.number": invoice.number,
            "tally.invoice.kind": invoice.kind,
            "tally.invoice.lines": len(draft.lines),
            "tally.invoice.total_minor": invoice.total,
            "tally.invoice.currency": invoice.currency,
            "tally.events_rated": sum(count for _, _, count in draft.rated),
        }
    )
    for start, end, _ in draft.rated:
        for row in await provenance_repository.ingest_traces(
            session, invoice.customer_id, start, end, as_of, limit=INGEST_LINKS_PER_PERIOD
        ):
            context = trace.SpanContext(int(row["trace_id"], 16), trace.INVALID_SPAN_ID, is_remote=True)
            span.add_link(
                context,
                {
                    "tally.link": "ingest",
                    "tally.period_start": start.isoformat(),
                    "tally.events": int(row["events"]),
                    "tally.event_id": row["event_id"],
                },
            )


@dataclass(frozen=True)
class UpcomingInvoice:
    draft: DraftInvoice
    credits_applied: int
    # The tax it would carry today (billing.invoices.taxation), as issuing would work it out.
    taxes: tuple[TaxLine, ...] = ()

    @property
    def tax(self) -> int:
        return sum(line.tax for line in self.taxes)

    @property
    def total(self) -> int:
        return self.draft.subtotal + exclusive_tax(self.taxes)

    @property
    def amount_due(self) -> int:
        return amount_due(self.total, self.credits_applied)

    @property
    def running_amount(self) -> int:
        """What the period charges beyond the credits so far: base fee and usage less the credits
        they draw, before tax (what spend alerts and spend caps count)."""
        return max(self.draft.subtotal - self.credits_applied, 0)

    @property
    def unbilled(self) -> int:
        """Accrued so far and not invoiced yet: everything but the next period's fee in advance."""
        return sum(line.amount(self.draft.currency) for line in self.draft.lines if line.kind != "base_fee")


async def upcoming_invoice(
    session: AsyncSession,
    customer_id: uuid.UUID,
    *,
    as_of: datetime,
    window: BillingWindow,
    subscription_id: uuid.UUID | None = None,
) -> UpcomingInvoice | None:
    """The invoice that will close the current period of the subscription (by default the
    customer's primary one), as it stands now, with the credits that would apply to it. Nothing
    is written."""
    if subscription_id is None:
        subscription = (await customers.subscriptions_of(session, [customer_id])).get(customer_id)
    else:
        theirs = (await customers.all_subscriptions_of(session, [customer_id]))[customer_id]
        subscription = next((s for s in theirs if s.id == subscription_id), None)
    if subscription is None:
        return None
    customer = await customers.get_customer(session, customer_id=customer_id)
    assert customer is not None
    phases = await phases_of(session, subscription.id)
    if status_on(phases, as_of) == CANCELED:
        return None  # its final invoice was issued: nothing more will be
    period = (await schedule_of(session, subscription, phases)).period_containing(as_of)
    start, end = period.start, period.end
    draft = await compose_period(
        session,
        subscription,
        phases,
        customer.currency,
        start,
        end,
        late_since=as_of - window.late_window,
        count_events=False,
    )
    available = await drawable_credits(session, customer_id=customer_id, currency=customer.currency, as_of=as_of)
    taxes = tuple(
        await taxes_of(session, customer_id, customer.currency, [line.amount(draft.currency) for line in draft.lines])
    )
    total = draft.subtotal + exclusive_tax(taxes)
    return UpcomingInvoice(draft, min(max(total, 0), available), taxes)


async def invoices(
    session: AsyncSession, customer_id: uuid.UUID, *, before_number: int | None = None, limit: int
) -> list[Invoice]:
    """A customer's invoices, newest first, those numbered below ``before_number``."""
    return await repository.invoices_page(session, customer_id, before_number=before_number, limit=limit)


async def invoices_by_id(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Invoice]:
    return await repository.invoices_by_id(session, ids)


async def lines_of(session: AsyncSession, invoice_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[InvoiceLine]]:
    return await repository.lines_of(session, invoice_ids)


async def tax_lines_of(
    session: AsyncSession, invoice_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[InvoiceTaxLine]]:
    return await repository.tax_lines_of(session, invoice_ids)


async def invoice_by_number(session: AsyncSession, number: int) -> Invoice | None:
    return await repository.invoice_by_number(session, number)
