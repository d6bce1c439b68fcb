"""GraphQL of plan changes: move a customer to a plan's newest version. Above both the billing
types (the prorations) and the customer types (the subscription it answers with), so that neither
of those modules imports the other."""

from __future__ import annotations

from datetime import datetime, timedelta

import strawberry
from strawberry.types import Info

from app.api.billing import ChangePlanInput, Proration, proration_of
from app.api.common import UserError, run_mutation
from app.api.customers import Subscription
from app.api.permissions import requires
from app.api.scope import customer_of, subscription_id_of
from app.auth import Capability
from app.billing_run import billing_window
from billing.invoices import service as billing
from billing.invoices.plan_changes import change_plan
from customers.subscriptions import PlanChangeRequest


@strawberry.type(description="What a plan change did (or, for a dry run, would do).")
class ChangePlanPayload:
    subscription: Subscription | None = strawberry.field(description="The subscription after the change.")
    prorations: list[Proration] = strawberry.field(description="What the change charges or credits (immediate only).")
    effective_at: datetime | None = strawberry.field(description="When the new version takes effect.")
    user_errors: list[UserError] = strawberry.field(description="Why it was refused; empty when it was done.")


@strawberry.type
class PlanChangeMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.CHANGE_PLANS)],
        description="Move a customer to a plan's newest version, now (prorated) or at the period's end.",
    )
    async def change_plan(self, info: Info, input: ChangePlanInput) -> ChangePlanPayload:
        context = info.context

        async def move() -> ChangePlanPayload:
            customer = await customer_of(info, input.customer_id)
            request = PlanChangeRequest(
                customer_id=customer.id,
                plan_key=input.plan_key,
                timing=input.effective.value,
                idempotency_key=input.idempotency_key,
                actor=context.viewer.actor,
                at=input.at,
                subscription_id=subscription_id_of(input.subscription_id),
            )
            outcome = await change_plan(
                context.session,
                request,
                as_of=context.now(),
                backdate_limit=timedelta(days=context.settings.backdate_max_days),
                dry_run=input.dry_run,
            )
            subscription, currency = outcome.subscription, outcome.currency
            if outcome.starts_calendar and outcome.effective_at <= context.now():
                # A change of interval closes the period in progress: it is invoiced at once.
                await billing.issue_due_now(
                    context.session,
                    customer.id,
                    as_of=context.now(),
                    window=billing_window(context.settings),
                    subscription_id=subscription.id,
                )
                await context.session.refresh(subscription)
            # Built before the transaction ends: a dry run rolls back, which expires the rows.
            return ChangePlanPayload(
                subscription=Subscription.from_model(subscription, context.now()),
                prorations=[proration_of(p.description, p.amount, currency) for p in outcome.prorations],
                effective_at=outcome.effective_at,
                user_errors=[],
            )

        payload, errors = await run_mutation(info, move, commit=not input.dry_run)
        return payload or ChangePlanPayload(subscription=None, prorations=[], effective_at=None, user_errors=errors)
