"""GraphQL of one-off charges and commitments (minimum spend, prepaid commitments).

Every mutation here writes with an ``idempotencyKey``; the two that move money take ``dryRun``
and answer the amounts they would post. Charges, commitments and minimums are finance's (the
``adjust_balances`` capability: finance and admin); customers read their own.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from app.api.billing import Invoice
from app.api.common import (
    Connection,
    Money,
    UserError,
    connection,
    decode_time_cursor,
    money,
    not_a_cursor,
    page_size,
    run_mutation,
    time_cursor,
)
from app.api.ledger import GrantStatus
from app.api.permissions import requires
from app.api.scope import STAFF_ONLY, WHICH_SUBSCRIPTION, customer_of, staff_only, subscription_id_of
from app.auth import Capability
from app.telemetry import current_trace_id
from billing.invoices import commitments, one_off
from billing.invoices import service as billing
from billing.models import Invoice as InvoiceRow
from billing.models import MinimumSpend as MinimumSpendRow
from billing.models import OneOffCharge as ChargeRow
from billing.models import PrepaidCommitment as CommitmentRow
from ledger.errors import NotFound
from ledger.models import CreditGrant as GrantRow
from ledger.money import quantize_major


@strawberry.enum
class OneOffChargeTiming(Enum):
    NOW = "now"
    NEXT_INVOICE = "next_invoice"


@strawberry.enum
class OneOffChargeStatus(Enum):
    PENDING = "pending"
    INVOICED = "invoiced"
    CANCELED = "canceled"


@strawberry.enum
class MinimumSpendSource(Enum):
    SUBSCRIPTION = "subscription"
    PLAN = "plan"
    NONE = "none"


def major(amount: Decimal, currency: str) -> Money:
    return Money(amount=quantize_major(amount, currency), currency=currency)


@strawberry.type(description="A fee outside the plan, invoiced at once or on the customer's next invoice.")
class OneOffCharge:
    id: strawberry.ID
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Money = strawberry.field(description="quantity × unitPrice, rounded once to the minor unit.")
    amount_exact: Decimal
    when: OneOffChargeTiming
    status: OneOffChargeStatus
    created_at: datetime
    canceled_at: datetime | None
    invoice: Invoice | None = strawberry.field(description="The invoice that billed it; null while pending.")
    actor: str | None = staff_only("Who charged it. " + STAFF_ONLY)
    cancel_reason: str | None = staff_only("Why it was canceled. " + STAFF_ONLY)

    @classmethod
    def from_model(cls, row: ChargeRow, invoice: InvoiceRow | None = None) -> OneOffCharge:
        return cls(
            id=strawberry.ID(str(row.id)),
            description=row.description,
            quantity=row.quantity,
            unit_price=row.unit_price,
            amount=money(row.amount, row.currency),
            amount_exact=row.amount_exact,
            when=OneOffChargeTiming(row.timing),
            status=OneOffChargeStatus(row.status),
            created_at=row.created_at,
            canceled_at=row.canceled_at,
            invoice=Invoice.from_model(invoice) if invoice is not None else None,
            actor=row.actor,
            cancel_reason=row.cancel_reason,
        )


@strawberry.type(description="An amount invoiced now and drawn down like credits until it ends.")
class PrepaidCommitment:
    id: strawberry.ID
    amount: Money
    remaining: Money = strawberry.field(description="What usage has not drawn yet (0 once expired).")
    starts_at: datetime
    ends_at: datetime = strawberry.field(description="What remains then expires (to breakage, in the ledger).")
    priority: int = strawberry.field(description="Among the customer's credits, lower is drawn first.")
    status: GrantStatus
    created_at: datetime
    invoice: Invoice | None
    actor: str | None = staff_only("Who made it. " + STAFF_ONLY)

    @classmethod
    def from_model(
        cls, row: CommitmentRow, grant: GrantRow | None, invoice: InvoiceRow | None = None
    ) -> PrepaidCommitment:
        status = GrantStatus.ACTIVE
        if grant is not None:
            status = GrantStatus(grant.status.upper())
            if status is GrantStatus.ACTIVE and grant.remaining == 0:
                status = GrantStatus.DEPLETED
        return cls(
            id=strawberry.ID(str(row.id)),
            amount=money(row.amount, row.currency),
            remaining=money(grant.remaining if grant is not None else row.amount, row.currency),
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            priority=row.priority,
            status=status,
            created_at=row.created_at,
            invoice=Invoice.from_model(invoice) if invoice is not None else None,
            actor=row.actor,
        )


@strawberry.type(description="A subscription's own minimum spend per period, from a moment on.")
class MinimumSpendSetting:
    id: strawberry.ID
    amount: Money | None = strawberry.field(description="Null: back to the plan's minimum.")
    effective_at: datetime
    created_at: datetime
    reason: str | None = staff_only("Why it was set. " + STAFF_ONLY)
    actor: str | None = staff_only("Who set it. " + STAFF_ONLY)

    @classmethod
    def from_model(cls, row: MinimumSpendRow) -> MinimumSpendSetting:
        return cls(
            id=strawberry.ID(str(row.id)),
            amount=major(row.amount, row.currency) if row.amount is not None else None,
            effective_at=row.effective_at,
            created_at=row.created_at,
            reason=row.reason,
            actor=row.actor,
        )


@strawberry.type(description="The least a billing period bills; a period short of it gets a true-up line.")
class MinimumSpend:
    amount: Money | None = strawberry.field(description="In effect now; null when there is none.")
    source: MinimumSpendSource
    settings: list[MinimumSpendSetting] = strawberry.field(description="The subscription's own, oldest first.")


def _after(after: str | None) -> tuple[datetime, str] | None:
    position = decode_time_cursor(after)
    if position is not None:
        try:
            uuid.UUID(position[1])
        except ValueError:
            raise not_a_cursor() from None
    return position


async def resolve_one_off_charges(
    root: strawberry.Parent[Any],
    info: Info,
    status: list[OneOffChargeStatus] | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Connection[OneOffCharge]:
    session = info.context.session
    limit = page_size(first, default=25, maximum=info.context.settings.page_size_max)
    rows = await one_off.one_off_charges(
        session,
        root.row_id,
        statuses=[s.value for s in status] if status else None,
        after=_after(after),
        limit=limit + 1,
    )
    invoices = await billing.invoices_by_id(session, [row.invoice_id for row in rows if row.invoice_id])
    return connection(
        rows,
        limit,
        lambda row: OneOffCharge.from_model(row, invoices.get(row.invoice_id) if row.invoice_id else None),
        lambda row: time_cursor(row.created_at, row.id),
    )


async def resolve_prepaid_commitments(
    root: strawberry.Parent[Any], info: Info, first: int | None = None, after: str | None = None
) -> Connection[PrepaidCommitment]:
    session = info.context.session
    limit = page_size(first, default=25, maximum=info.context.settings.page_size_max)
    rows = await commitments.prepaid_commitments(session, root.row_id, after=_after(after), limit=limit + 1)
    invoices = await billing.invoices_by_id(session, [row.invoice_id for row, _ in rows if row.invoice_id])
    return connection(
        rows,
        limit,
        lambda pair: PrepaidCommitment.from_model(
            pair[0], pair[1], invoices.get(pair[0].invoice_id) if pair[0].invoice_id else None
        ),
        lambda pair: time_cursor(pair[0].created_at, pair[0].id),
    )


async def resolve_minimum_spend(root: strawberry.Parent[Any], info: Info) -> MinimumSpend:
    now = await commitments.minimum_spend_now(info.context.session, root.row_id, as_of=info.context.now())
    return MinimumSpend(
        amount=major(now.amount, root.currency) if now.amount is not None else None,
        source=MinimumSpendSource(now.source),
        settings=[MinimumSpendSetting.from_model(row) for row in now.settings],
    )


@strawberry.input
class CreateOneOffChargeInput:
    customer_id: strawberry.ID
    description: str = strawberry.field(description="What the invoice line says; at most 500 characters.")
    quantity: Decimal = strawberry.field(description="Greater than 0, at most 1,000,000,000, 12 decimal places.")
    unit_price: Decimal = strawberry.field(description="Not negative; at most 12 decimal places.")
    currency: str = strawberry.field(description="Must be the customer's currency.")
    idempotency_key: str
    when: OneOffChargeTiming = strawberry.field(
        default=OneOffChargeTiming.NOW,
        description="NOW: its own invoice at once. NEXT_INVOICE: a line on the customer's next invoice.",
    )
    subscription_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="NEXT_INVOICE: whose next invoice bills it (Subscription.id); required when the customer has "
        "several subscriptions, by default their only one.",
    )
    dry_run: bool = strawberry.field(default=False, description="Answer the amounts and write nothing.")


@strawberry.type
class CreateOneOffChargePayload:
    charge: OneOffCharge | None
    invoice: Invoice | None = strawberry.field(description="NOW: the invoice issued (null for a dry run).")
    amount: Money | None = strawberry.field(description="What the charge posts to the customer's receivable.")
    credits_applied: Money | None = strawberry.field(description="NOW: the customer's credits drawn by it.")
    amount_due: Money | None = strawberry.field(description="NOW: what is left to collect.")
    user_errors: list[UserError]


@strawberry.input
class CancelOneOffChargeInput:
    charge_id: strawberry.ID
    reason: str
    idempotency_key: str


@strawberry.type
class CancelOneOffChargePayload:
    charge: OneOffCharge | None
    user_errors: list[UserError]


@strawberry.input
class CreatePrepaidCommitmentInput:
    customer_id: strawberry.ID
    amount: Decimal = strawberry.field(description="Invoiced now and granted as credits; in major units.")
    currency: str = strawberry.field(description="Must be the customer's currency.")
    ends_at: datetime = strawberry.field(description="What is left of the credits then expires.")
    idempotency_key: str
    starts_at: datetime | None = strawberry.field(default=None, description="The credits count from then; now.")
    priority: int | None = strawberry.field(default=None, description="Lower is drawn first; default 100.")
    dry_run: bool = strawberry.field(default=False, description="Answer the amounts and write nothing.")


@strawberry.type
class CreatePrepaidCommitmentPayload:
    commitment: PrepaidCommitment | None
    invoice: Invoice | None = strawberry.field(description="The commitment's invoice (null for a dry run).")
    amount: Money | None = strawberry.field(description="What the invoice bills and the credits granted.")
    user_errors: list[UserError]


@strawberry.input
class SetMinimumSpendInput:
    customer_id: strawberry.ID
    amount: Decimal | None = strawberry.field(description="Per billing period; null goes back to the plan's.")
    reason: str
    idempotency_key: str
    effective_at: datetime | None = strawberry.field(
        default=None, description="Default now; not inside a period already invoiced. Prorated within a period."
    )
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)


@strawberry.type
class SetMinimumSpendPayload:
    setting: MinimumSpendSetting | None
    user_errors: list[UserError]


@strawberry.type
class ChargesMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.ADJUST_BALANCES)],
        description="Charge a customer a one-off fee: on its own invoice now, or on their next invoice.",
    )
    async def create_one_off_charge(self, info: Info, input: CreateOneOffChargeInput) -> CreateOneOffChargePayload:
        context = info.context

        async def charge() -> CreateOneOffChargePayload:
            customer = await customer_of(info, str(input.customer_id))
            outcome = await one_off.create_one_off_charge(
                context.session,
                one_off.OneOffChargeRequest(
                    customer_id=customer.id,
                    description=input.description,
                    quantity=input.quantity,
                    unit_price=input.unit_price,
                    currency=input.currency,
                    timing=input.when.value,
                    idempotency_key=input.idempotency_key,
                    actor=context.viewer.actor,
                    subscription_id=subscription_id_of(input.subscription_id),
                ),
                as_of=context.now(),
                dry_run=input.dry_run,
                trace_id=current_trace_id(),
            )
            row, currency = outcome.charge, outcome.charge.currency
            # Built before the transaction ends: a dry run rolls back, which expires the rows.
            return CreateOneOffChargePayload(
                charge=OneOffCharge.from_model(row, outcome.invoice),
                invoice=Invoice.from_model(outcome.invoice) if outcome.invoice else None,
                amount=money(row.amount, currency),
                credits_applied=money(outcome.credits_applied, currency)
                if outcome.credits_applied is not None
                else None,
                amount_due=money(outcome.amount_due, currency) if outcome.amount_due is not None else None,
                user_errors=[],
            )

        payload, errors = await run_mutation(info, charge, commit=not input.dry_run)
        return payload or CreateOneOffChargePayload(
            charge=None, invoice=None, amount=None, credits_applied=None, amount_due=None, user_errors=errors
        )

    @strawberry.mutation(
        permission_classes=[requires(Capability.ADJUST_BALANCES)],
        description="Cancel a pending one-off charge before an invoice bills it.",
    )
    async def cancel_one_off_charge(self, info: Info, input: CancelOneOffChargeInput) -> CancelOneOffChargePayload:
        context = info.context

        async def cancel() -> OneOffCharge:
            try:
                charge_id = uuid.UUID(str(input.charge_id))
            except ValueError:
                raise NotFound("no such one-off charge", field="chargeId") from None
            row = await one_off.cancel_one_off_charge(
                context.session,
                charge_id=charge_id,
                reason=input.reason,
                actor=context.viewer.actor,
                idempotency_key=input.idempotency_key,
                as_of=context.now(),
                customer_id=context.viewer.customer_scope,
            )
            return OneOffCharge.from_model(row)

        charge, errors = await run_mutation(info, cancel)
        return CancelOneOffChargePayload(charge=charge, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.ADJUST_BALANCES)],
        description="Invoice a prepaid commitment now and grant it as credits until it ends.",
    )
    async def create_prepaid_commitment(
        self, info: Info, input: CreatePrepaidCommitmentInput
    ) -> CreatePrepaidCommitmentPayload:
        context = info.context

        async def commit() -> CreatePrepaidCommitmentPayload:
            customer = await customer_of(info, str(input.customer_id))
            outcome = await commitments.create_prepaid_commitment(
                context.session,
                commitments.CommitmentRequest(
                    customer_id=customer.id,
                    amount=input.amount,
                    currency=input.currency,
                    starts_at=input.starts_at,
                    ends_at=input.ends_at,
                    priority=input.priority,
                    idempotency_key=input.idempotency_key,
                    actor=context.viewer.actor,
                ),
                as_of=context.now(),
                backdate_limit=timedelta(days=context.settings.backdate_max_days),
                dry_run=input.dry_run,
                trace_id=current_trace_id(),
            )
            row = outcome.commitment
            return CreatePrepaidCommitmentPayload(
                commitment=PrepaidCommitment.from_model(row, outcome.grant, outcome.invoice),
                invoice=Invoice.from_model(outcome.invoice) if outcome.invoice else None,
                amount=money(row.amount, row.currency),
                user_errors=[],
            )

        payload, errors = await run_mutation(info, commit, commit=not input.dry_run)
        return payload or CreatePrepaidCommitmentPayload(commitment=None, invoice=None, amount=None, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.ADJUST_BALANCES)],
        description="Give a subscription its own minimum spend per period from a moment on (audited, versioned).",
    )
    async def set_minimum_spend(self, info: Info, input: SetMinimumSpendInput) -> SetMinimumSpendPayload:
        context = info.context

        async def set_minimum() -> MinimumSpendSetting:
            customer = await customer_of(info, str(input.customer_id))
            row = await commitments.set_minimum_spend(
                context.session,
                commitments.MinimumSpendRequest(
                    customer_id=customer.id,
                    amount=input.amount,
                    effective_at=input.effective_at,
                    reason=input.reason,
                    idempotency_key=input.idempotency_key,
                    actor=context.viewer.actor,
                    subscription_id=subscription_id_of(input.subscription_id),
                ),
                as_of=context.now(),
            )
            return MinimumSpendSetting.from_model(row)

        setting, errors = await run_mutation(info, set_minimum)
        return SetMinimumSpendPayload(setting=setting, user_errors=errors)
