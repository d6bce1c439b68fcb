"""GraphQL of customers: lookup, keyset-paginated search, creation."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import Enum

import strawberry
from strawberry.types import Info

from app.api.alerts import UsageAlert, UsageAlertFiring, resolve_usage_alert_firings, resolve_usage_alerts
from app.api.authorizations import (
    LIVE_AUTHORIZATIONS_SHOWN,
    SpendAuthorization,
    UsageAuthorization,
    resolve_live_authorizations,
    resolve_live_spend_authorizations,
)
from app.api.billing import (
    BillingFailure,
    Invoice,
    PlanChange,
    UpcomingInvoice,
    resolve_billing_failure,
    resolve_invoices,
    resolve_plan_changes,
    resolve_upcoming_invoice,
)
from app.api.billing_details import (
    BillingDetails,
    BillingDetailsChange,
    resolve_billing_details,
    resolve_billing_details_history,
)
from app.api.catalog import BillingInterval, Plan
from app.api.charges import (
    MinimumSpend,
    OneOffCharge,
    PrepaidCommitment,
    resolve_minimum_spend,
    resolve_one_off_charges,
    resolve_prepaid_commitments,
)
from app.api.common import (
    Connection,
    UserError,
    connection,
    decode_time_cursor,
    exactly_one_of,
    not_a_cursor,
    page_size,
    run_mutation,
    time_cursor,
)
from app.api.coupons import Discount, resolve_discounts
from app.api.ledger import (
    Balance,
    CreditGrant,
    LedgerEntry,
    resolve_balance,
    resolve_credit_grants,
    resolve_ledger_entries,
)
from app.api.lifecycle import SubscriptionEvent, SubscriptionStatus, resolve_subscription_events
from app.api.metering import (
    Entitlement,
    MeterUsage,
    UsagePoint,
    resolve_entitlement,
    resolve_usage,
    resolve_usage_series,
    resolve_usage_watermark,
)
from app.api.permissions import requires
from app.api.price_overrides import PriceOverride, SubscriptionCharge, resolve_price_overrides, subscription_charges
from app.api.scope import customer_of, find_visible_customer
from app.api.topups import CreditBalance, CreditPurchase, resolve_credit_balance, resolve_credit_purchases
from app.auth import Capability
from customers import service as customers
from customers.billing_detail_changes import StoredDetails
from customers.calendar import current_period
from customers.lifecycle import subscription_status
from customers.models import Customer as CustomerRow
from customers.models import Subscription as SubscriptionRow


@strawberry.enum(
    description="ACTIVE; PAST_DUE (a payment failed and is being retried); SUSPENDED (the last retry failed, or "
    "staff suspended them: usage is refused)."
)
class CustomerStatus(Enum):
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    SUSPENDED = "SUSPENDED"


@strawberry.type
class ScheduledPlanChange:
    effective_at: datetime
    plan_version_id: strawberry.Private[uuid.UUID]

    @strawberry.field
    async def plan(self, info: Info) -> Plan:
        plan, version = await info.context.loaders.plan_version.load(self.plan_version_id)
        return Plan.from_model(plan, version)


@strawberry.type(
    description="A customer's subscription to a plan: its own billing calendar, trial, lifecycle and invoices. "
    "A customer may have several (another product, or an add-on: a plan with no base fee), no two charging "
    "the same meter while both run."
)
class Subscription:
    id: strawberry.ID = strawberry.field(
        description="Names the subscription in mutations (subscriptionId) when the customer has several."
    )
    started_at: datetime = strawberry.field(description="When the subscription began (its trial, if any).")
    plan_version_id: strawberry.Private[uuid.UUID]
    row: strawberry.Private[SubscriptionRow]
    as_of: strawberry.Private[datetime]
    billing_anchor: datetime = strawberry.field(
        description="Where the billing calendar in effect starts: the start, the trial's end, or the last "
        "change of billing interval. Periods are anchored on it, or on billingAnchorDay when set.",
    )
    scheduled_change: ScheduledPlanChange | None = strawberry.field(
        default=None, description="A plan change waiting for the end of the current period."
    )
    status: SubscriptionStatus = strawberry.field(default=SubscriptionStatus.ACTIVE)
    cancel_at: datetime | None = strawberry.field(
        default=None, description="When it ends (or ended): a cancel's moment, or the period's end it is scheduled for."
    )
    canceled_at: datetime | None = strawberry.field(default=None, description="When the cancel was asked for.")
    cancel_reason: str | None = None
    paused_at: datetime | None = strawberry.field(default=None, description="Since when it is paused.")

    trial_ends_at: datetime | None = strawberry.field(
        default=None, description="The end of the trial (no base fee before it); null without a trial."
    )
    billing_anchor_day: int | None = strawberry.field(
        default=None,
        description="Calendar billing: periods start on this day of the month (clamped to short months), or "
        "ISO weekday for weekly plans; the first period is prorated. Null: anniversary billing.",
    )

    @strawberry.field(description="The plan's charges, each with the plan's price beside the customer's own.")
    async def charges(self, info: Info) -> list[SubscriptionCharge]:
        return await subscription_charges(info, self.row, self.plan_version_id)

    @strawberry.field(description="The plan version the subscription is on now.")
    async def plan(self, info: Info) -> Plan:
        plan, version = await info.context.loaders.plan_version.load(self.plan_version_id)
        return Plan.from_model(plan, version)

    @strawberry.field(description="The billing interval of the plan in effect.")
    async def interval(self, info: Info) -> BillingInterval:
        _, version = await info.context.loaders.plan_version.load(self.plan_version_id)
        return BillingInterval(version.interval)

    @strawberry.field(description="Whether the subscription is in its trial now.")
    def in_trial(self) -> bool:
        return self.row.in_trial(self.as_of)

    async def _current_period(self, info: Info) -> tuple[datetime, datetime]:
        _, version = await info.context.loaders.plan_version.load(self.plan_version_id)
        period = current_period(self.row, version.interval, info.context.now())
        return period.start, period.end

    @classmethod
    def from_model(cls, row: SubscriptionRow, as_of: datetime) -> Subscription:
        scheduled = None
        pending, moment = row.pending_plan_version_id, row.pending_change_at
        if pending is not None and moment is not None and moment > as_of:
            scheduled = ScheduledPlanChange(effective_at=moment, plan_version_id=pending)
        return cls(
            id=strawberry.ID(str(row.id)),
            started_at=row.started_at,
            plan_version_id=row.version_at(as_of),
            # A copy of no session: a dry run rolls back, which expires the session's rows.
            row=SubscriptionRow(**row.model_dump()),
            as_of=as_of,
            scheduled_change=scheduled,
            status=SubscriptionStatus(subscription_status(row, as_of)),
            cancel_at=row.cancel_at,
            canceled_at=row.canceled_at,
            cancel_reason=row.cancel_reason,
            paused_at=row.paused_at,
            trial_ends_at=row.trial_ends_at,
            billing_anchor=row.billing_anchor_at(as_of),
            billing_anchor_day=row.billing_anchor_day,
        )

    @strawberry.field(description="Start of the billing period in progress (periods are half-open).")
    async def current_period_start(self, info: Info) -> datetime:
        return (await self._current_period(info))[0]

    @strawberry.field(description="End of the billing period in progress: the next one starts here.")
    async def current_period_end(self, info: Info) -> datetime:
        return (await self._current_period(info))[1]


@strawberry.type(description="A customer: who is billed, their usage, credits, invoices and subscriptions.")
class Customer:
    id: strawberry.ID = strawberry.field(description="Tally's id for the customer.")
    external_id: str = strawberry.field(description="Your id for the customer, as usage events name them.")
    name: str = strawberry.field(description="For people and invoices.")
    email: str | None = strawberry.field(description="Where invoices and receipts are sent; null: not sent.")
    currency: str = strawberry.field(description="The ISO 4217 code they are billed in.")
    status: CustomerStatus = strawberry.field(description="Whether they pay on time, and may use more.")
    created_at: datetime
    row_id: strawberry.Private[uuid.UUID]
    details: strawberry.Private[StoredDetails]

    usage: list[MeterUsage] = strawberry.field(
        resolver=resolve_usage,
        description="Usage of every meter in a range (by default the current billing period), priced under the "
        "customer's plan.",
    )
    balance: Balance = strawberry.field(
        resolver=resolve_balance,
        permission_classes=[requires(Capability.READ_LEDGER)],
        description="The ledger's balances: credits left, what is owed, usage not invoiced yet.",
    )
    credit_grants: Connection[CreditGrant] = strawberry.field(
        resolver=resolve_credit_grants,
        permission_classes=[requires(Capability.READ_LEDGER)],
        description="Credits granted to the customer, newest first, with what remains of each.",
    )
    ledger_entries: Connection[LedgerEntry] = strawberry.field(
        resolver=resolve_ledger_entries,
        permission_classes=[requires(Capability.READ_LEDGER)],
        description="The customer's ledger transactions, newest first: every movement of their money.",
    )
    usage_series: list[UsagePoint] | None = strawberry.field(
        resolver=resolve_usage_series,
        description="A meter's usage over time, one point per hour or day. Refused arguments answer null with an "
        "error whose extensions give the `code` (UNKNOWN_METER, INVALID_RANGE, TOO_MANY_POINTS) and the `field`; "
        "the customer still answers.",
    )
    entitlement: Entitlement | None = strawberry.field(
        resolver=resolve_entitlement,
        description="The cheap check: a read (used < limit) that holds nothing, so callers asking at the same "
        "moment may all be allowed and pass the limit together; `authorize` holds the quantity where a limit "
        "must hold under concurrency. An unknown meter answers null with an UNKNOWN_METER error (field `meter`).",
    )
    live_authorizations: list[UsageAuthorization] = strawberry.field(
        resolver=resolve_live_authorizations,
        permission_classes=[requires(Capability.CHECK_ENTITLEMENTS)],
        description=f"Usage authorizations holding a quantity now (allowed, unsettled, unexpired), soonest to "
        f"expire first, at most {LIVE_AUTHORIZATIONS_SHOWN}.",
    )
    live_spend_authorizations: list[SpendAuthorization] = strawberry.field(
        resolver=resolve_live_spend_authorizations,
        permission_classes=[requires(Capability.CHECK_ENTITLEMENTS)],
        description=f"Spend authorizations holding money now (allowed, unsettled, unexpired), soonest to expire "
        f"first, at most {LIVE_AUTHORIZATIONS_SHOWN}.",
    )
    invoices: Connection[Invoice] = strawberry.field(
        resolver=resolve_invoices,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="The customer's issued invoices, newest first.",
    )
    plan_changes: list[PlanChange] = strawberry.field(
        resolver=resolve_plan_changes,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="Plan changes, newest first, with who made them.",
    )
    subscription_events: list[SubscriptionEvent] = strawberry.field(
        resolver=resolve_subscription_events,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="Cancels, resumes, pauses and unpauses, newest first, with who asked and why.",
    )
    upcoming_invoice: UpcomingInvoice | None = strawberry.field(
        resolver=resolve_upcoming_invoice,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="The invoice that will close the current period, as it stands now.",
    )
    usage_watermark: datetime | None = strawberry.field(resolver=resolve_usage_watermark)
    price_overrides: list[PriceOverride] = strawberry.field(
        resolver=resolve_price_overrides,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="Changes of the customer's own prices, newest first (history kept, never edited).",
    )
    billing_failure: BillingFailure | None = strawberry.field(
        resolver=resolve_billing_failure,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="Set while the customer's next invoice cannot be issued (the others are billed regardless).",
    )
    one_off_charges: Connection[OneOffCharge] = strawberry.field(
        resolver=resolve_one_off_charges,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="One-off charges, newest first; status filters (PENDING ones wait for the next invoice).",
    )
    prepaid_commitments: Connection[PrepaidCommitment] = strawberry.field(
        resolver=resolve_prepaid_commitments,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="Prepaid commitments, newest first, with what remains of each.",
    )
    discounts: list[Discount] = strawberry.field(
        resolver=resolve_discounts,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="Discounts their invoices take, in the order they stack, with the periods left of each "
        "(used-up and removed ones are left out).",
    )
    usage_alerts: list[UsageAlert] = strawberry.field(
        resolver=resolve_usage_alerts,
        description="Live usage and spend alerts watching the customer: their own and their plans'.",
    )
    usage_alert_firings: list[UsageAlertFiring] = strawberry.field(
        resolver=resolve_usage_alert_firings,
        description="Thresholds of their alerts crossed, newest first (the latest 50).",
    )
    credit_balance: CreditBalance = strawberry.field(
        resolver=resolve_credit_balance,
        permission_classes=[requires(Capability.READ_LEDGER)],
        description="The credits balance, its low-balance threshold and auto-recharge.",
    )
    credit_purchases: Connection[CreditPurchase] = strawberry.field(
        resolver=resolve_credit_purchases,
        permission_classes=[requires(Capability.READ_LEDGER)],
        description="Credits bought (and auto-recharges), newest first.",
    )
    minimum_spend: MinimumSpend = strawberry.field(
        resolver=resolve_minimum_spend,
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="The minimum spend per billing period in effect now, and the subscription's own settings.",
    )
    billing_details: BillingDetails = strawberry.field(
        resolver=resolve_billing_details,
        description="What invoices, credit notes and emails say of the customer as buyer; see updateCustomer.",
    )
    billing_details_history: list[BillingDetailsChange] = strawberry.field(
        resolver=resolve_billing_details_history,
        description="Changes of the billing details, newest first (who made each: staff only).",
    )

    @strawberry.field(
        description="The customer's primary subscription: the first one they took that has no cancel (past or "
        "scheduled), else their first. See `subscriptions` for all of them."
    )
    async def subscription(self, info: Info) -> Subscription | None:
        row = await info.context.loaders.subscription_by_customer.load(self.row_id)
        if row is None:
            return None
        return Subscription.from_model(row, info.context.now())

    @strawberry.field(
        description="Every subscription of the customer, the primary one first, then the others as they were "
        "taken (canceled ones last). Each has its own periods and invoices."
    )
    async def subscriptions(self, info: Info) -> list[Subscription]:
        rows = await info.context.loaders.subscriptions_by_customer.load(self.row_id)
        return [Subscription.from_model(row, info.context.now()) for row in rows]

    @classmethod
    def from_model(cls, row: CustomerRow) -> Customer:
        return cls(
            id=strawberry.ID(str(row.id)),
            external_id=row.external_id,
            name=row.name,
            email=row.email,
            currency=row.currency,
            status=CustomerStatus(row.status),
            created_at=row.created_at,
            row_id=row.id,
            details=StoredDetails.of(row),
        )


@strawberry.input
class CreateCustomerInput:
    external_id: str = strawberry.field(description="Your id for the customer; unique.")
    name: str
    currency: str = strawberry.field(description="ISO 4217 code, e.g. USD.")
    email: str | None = None
    plan_key: str | None = strawberry.field(default=None, description="Subscribe to this plan's newest version.")
    started_at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; the billing period is anchored on it."
    )
    trial_days: int | None = strawberry.field(
        default=None, description="Days of trial (no base fee); defaults to the plan's trial_days, 0 for none."
    )
    billing_anchor_day: int | None = strawberry.field(
        default=None,
        description="Bill on calendar periods starting on this day of the month (1-31, clamped to short months; "
        "an ISO weekday 1-7 for weekly plans), the first period prorated. Wins over the plan's billing_anchor; "
        "defaults to the plan's (calendar plans: the 1st, or Monday).",
    )


@strawberry.type(description="The customer created, or why not.")
class CreateCustomerPayload:
    customer: Customer | None = strawberry.field(description="The new customer; null when refused.")
    user_errors: list[UserError] = strawberry.field(description="Why it was refused; empty when it was created.")


@strawberry.input
class CreateSubscriptionInput:
    customer_id: strawberry.ID
    plan_key: str = strawberry.field(
        description="Subscribe to this plan's newest version. Refused (METER_ALREADY_CHARGED) when it charges a "
        "meter another subscription of the customer charges: each meter's usage belongs to one subscription."
    )
    idempotency_key: str = strawberry.field(
        description="The same key with the same input returns the first subscription; with another input, "
        "IDEMPOTENCY_KEY_REUSED."
    )
    started_at: datetime | None = strawberry.field(
        default=None, description="Defaults to now; the subscription's billing period is anchored on it."
    )
    trial_days: int | None = strawberry.field(
        default=None, description="Days of trial (no base fee); defaults to the plan's trial_days, 0 for none."
    )
    billing_anchor_day: int | None = strawberry.field(
        default=None,
        description="Calendar periods starting on this day of the month (an ISO weekday for weekly plans); "
        "defaults to the plan's.",
    )


@strawberry.type
class CreateSubscriptionPayload:
    subscription: Subscription | None
    customer: Customer | None
    user_errors: list[UserError]


@strawberry.type
class CustomersQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_CUSTOMERS)],
        description="One customer by id or external id; null when not found or not yours.",
    )
    async def customer(
        self, info: Info, id: strawberry.ID | None = None, external_id: str | None = None
    ) -> Customer | None:
        if (id is None) == (external_id is None):
            raise exactly_one_of("id", "externalId")
        row = await find_visible_customer(
            info.context.session, info.context.viewer, customer_id=id, external_id=external_id
        )
        return Customer.from_model(row) if row else None

    @strawberry.field(
        permission_classes=[requires(Capability.READ_CUSTOMERS)],
        description="Newest first; search matches external id, name or email.",
    )
    async def customers(
        self, info: Info, search: str | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[Customer]:
        context = info.context
        limit = page_size(first, default=25, maximum=context.settings.page_size_max)
        position = decode_time_cursor(after)
        try:
            keyset = (position[0], uuid.UUID(position[1])) if position else None
        except ValueError:
            raise not_a_cursor() from None
        rows = await customers.search_customers(
            context.session,
            search=search,
            after=keyset,
            limit=limit + 1,
            only_customer_id=context.viewer.customer_scope,
        )
        return connection(rows, limit, Customer.from_model, lambda row: time_cursor(row.created_at, row.id))


@strawberry.type
class CustomersMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.WRITE_CUSTOMERS)],
        description="Create a customer, optionally on a plan from a moment on; an external id already taken is "
        "refused (TAKEN, field externalId).",
    )
    async def create_customer(self, info: Info, input: CreateCustomerInput) -> CreateCustomerPayload:
        context = info.context
        new = customers.NewCustomer(
            external_id=input.external_id,
            name=input.name,
            currency=input.currency,
            email=input.email,
            plan_key=input.plan_key,
            started_at=input.started_at,
            trial_days=input.trial_days,
            billing_anchor_day=input.billing_anchor_day,
        )
        bounds = customers.StartBounds(
            backdate=timedelta(days=context.settings.backdate_max_days),
            ahead=timedelta(days=context.settings.start_ahead_max_days),
        )
        row, errors = await run_mutation(
            info,
            lambda: customers.create_customer(
                context.session, new, as_of=context.now(), start_bounds=bounds, actor=context.viewer.actor
            ),
        )
        return CreateCustomerPayload(customer=Customer.from_model(row) if row else None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.CHANGE_PLANS)],
        description="Subscribe an existing customer to one more plan (another product, or an add-on: a plan with "
        "no base fee). It has its own billing calendar and trial, and its own invoices (one per subscription and "
        "period); its opening invoice is issued by the next billing run.",
    )
    async def create_subscription(self, info: Info, input: CreateSubscriptionInput) -> CreateSubscriptionPayload:
        context = info.context
        bounds = customers.StartBounds(
            backdate=timedelta(days=context.settings.backdate_max_days),
            ahead=timedelta(days=context.settings.start_ahead_max_days),
        )

        async def subscribe() -> CreateSubscriptionPayload:
            customer = await customer_of(info, input.customer_id)
            new = customers.NewSubscription(
                customer_id=customer.id,
                plan_key=input.plan_key,
                idempotency_key=input.idempotency_key,
                started_at=input.started_at,
                trial_days=input.trial_days,
                billing_anchor_day=input.billing_anchor_day,
            )
            row = await customers.add_subscription(context.session, new, as_of=context.now(), start_bounds=bounds)
            # Built before the transaction ends: its rows are expired by the commit.
            return CreateSubscriptionPayload(
                subscription=Subscription.from_model(row, context.now()),
                customer=Customer.from_model(customer),
                user_errors=[],
            )

        payload, errors = await run_mutation(info, subscribe)
        return payload or CreateSubscriptionPayload(subscription=None, customer=None, user_errors=errors)
