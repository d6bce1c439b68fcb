"""Ending and extending trials as billing sees them: a trial ended now closes the trial period at
once, so its invoice (the trial's usage when the plan charges it, and the first paid period's
base fee in advance, a stub's share of it on a calendar anchor) is issued in the same
transaction, after the plan's payment-method requirement is applied. A dry run does the same in a
transaction the caller rolls back, so it shows exactly the amounts the real change posts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import repository
from billing.invoices.service import BillingWindow, issue_due_now
from billing.models import Invoice
from customers.models import Subscription, TrialChange
from customers.trials import TrialChangeRequest, change_trial

RECENT_INVOICES = 10


@dataclass(frozen=True)
class TrialOutcome:
    subscription: Subscription
    change: TrialChange
    invoices: list[Invoice]  # issued by this change, oldest first (a repeated request: the first's)


async def change_trial_billed(
    session: AsyncSession,
    request: TrialChangeRequest,
    *,
    as_of: datetime,
    window: BillingWindow,
    backdate_limit: timedelta | None = None,
) -> TrialOutcome:
    """:func:`customers.trials.change_trial`, then every invoice due by ``as_of`` without grace
    (a trial ended now closes now; late usage of it is billed on the next invoice as usual)."""
    outcome = await change_trial(session, request, as_of=as_of, backdate_limit=backdate_limit)
    customer_id, change = request.customer_id, outcome.change
    if outcome.repeated:
        recent = await repository.invoices_page(session, customer_id, before_number=None, limit=RECENT_INVOICES)
        # The invoices the first request issued: issued at its moment, in its transaction.
        first = [
            invoice
            for invoice in reversed(recent)
            if invoice.issued_at == change.requested_at and invoice.subscription_id == outcome.subscription.id
        ]
        return TrialOutcome(outcome.subscription, change, first)
    invoices = []
    if change.kind == "end" and change.trial_ends_at <= as_of:
        invoices = await issue_due_now(
            session, customer_id, as_of=as_of, window=window, subscription_id=outcome.subscription.id
        )
    await session.refresh(outcome.subscription)
    return TrialOutcome(outcome.subscription, change, invoices)
