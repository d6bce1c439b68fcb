"""What happens when a trial of a plan that requires a payment method ends without one.

"On file" is what collection would charge: the Stripe customer's default payment method, as
Tally keeps it in step from Stripe's ``customer.updated`` and ``payment_method.attached`` events
(no call to Stripe from inside the billing run's transaction). Without one, the subscription is
either canceled at the trial's end (``cancel``, recorded as a lifecycle cancel whose reason says
why: nothing more is billed, entitlements answer no) or its
first paid period is billed and the customer goes ``PAST_DUE`` (``past_due``), as
TALLY_TRIAL_WITHOUT_PAYMENT_METHOD says.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.invoices import collection_state
from customers import service as customers
from customers.lifecycle import cancel_moment, record_automatic_cancel
from customers.models import Subscription, SubscriptionPhase
from customers.subscriptions import version_on
from pricing.service import plan_version

TRIAL_WITHOUT_PAYMENT_METHOD = ("cancel", "past_due")
TRIAL_END_REASON = "the trial ended without a payment method on file"


async def has_payment_method(session: AsyncSession, customer_id: uuid.UUID) -> bool:
    found = await collection_state.stripe_customer_of(session, customer_id)
    return found is not None and found[1] is not None


async def settle_trial_end(
    session: AsyncSession,
    subscription: Subscription,
    phases: list[SubscriptionPhase],
    *,
    behaviour: str,
    as_of: datetime,
) -> str | None:
    """Apply the trial's payment-method requirement at its end; return what was done ("cancel"
    or "past_due"), or None when nothing was required or a payment method is on file."""
    trial_end = subscription.trial_ends_at
    if trial_end is None or cancel_moment(phases) is not None:
        return None
    version = await plan_version(session, version_on(phases, subscription.started_at))
    if not version.trial_requires_payment_method or await has_payment_method(session, subscription.customer_id):
        return None
    if behaviour == "past_due":
        await customers.set_status(session, subscription.customer_id, "PAST_DUE")
        return "past_due"
    await record_automatic_cancel(session, subscription, phases, trial_end, reason=TRIAL_END_REASON, as_of=as_of)
    return "cancel"
