"""GraphQL of the ledger: balances, credit grants, ledger entries, grants and adjustments."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from app.api.common import (
    Connection,
    Money,
    UserError,
    connection,
    decode_time_cursor,
    money,
    page_size,
    run_mutation,
    time_cursor,
)
from app.api.context import TallyContext
from app.api.permissions import requires
from app.api.scope import STAFF_ONLY, StaffOnly, customer_of, staff_only, written_by_tally
from app.auth import Capability
from customers import credits
from ledger import grants as credit
from ledger import service as ledger
from ledger.errors import NotFound
from ledger.models import CreditGrant as GrantRow
from ledger.money import round_to_minor, to_minor_exact


@strawberry.enum(
    description="ACTIVE (credits remain), DEPLETED (all used), EXPIRED (its expiry passed) or VOIDED (taken back)."
)
class GrantStatus(Enum):
    ACTIVE = "ACTIVE"
    DEPLETED = "DEPLETED"
    EXPIRED = "EXPIRED"
    VOIDED = "VOIDED"


# What a customer reads of a ledger movement, by its kind: staff read the reason as it was written.
PUBLIC_ENTRY_LABELS = {
    "credit_grant": "Credits granted",
    "credit_consumption": "Credits applied",
    "credit_expiry": "Credits expired",
    "credit_void": "Credits withdrawn",
    "adjustment": "Balance adjustment",
    "reversal": "Correction",
    "write_off": "Written off as uncollectible",
    "invoice": "Invoice",
    "payment": "Payment",
    "refund": "Refund",
    "dispute": "Dispute",
}
PUBLIC_GRANT_LABELS = {
    "manual": "Credits granted",
    "promotion": "Promotional credits",
    "purchase": "Credits purchased",
    "invoice": "Credit note",
    "commitment": "Prepaid commitment",
}


def public_description(label: str, reason: str, actor: str) -> str:
    """The customer's view of a reason: Tally's own wording as it stands (an invoice's period, a
    payment's id), and for what a person wrote (a support ticket, a dispute note) the label alone."""
    return f"{label}: {reason}" if written_by_tally(actor) else label


@strawberry.type(description="Credits given to a customer: drawn by their invoices, by priority then expiry.")
class CreditGrant:
    id: strawberry.ID = strawberry.field(description="Tally's id for the grant.")
    amount: Money = strawberry.field(description="What was granted.")
    remaining: Money = strawberry.field(description="What is left to draw.")
    priority: int = strawberry.field(description="Lower is drawn first (then the soonest to expire).")
    effective_at: datetime = strawberry.field(description="When it was granted.")
    expires_at: datetime | None = strawberry.field(description="When what remains expires; null: never.")
    description: str = strawberry.field(description="What the grant is, in words fit for the customer.")
    reason: str = strawberry.field(
        description="Staff read the reason as it was written; any other role reads the description.",
        extensions=[StaffOnly(otherwise="description")],
    )
    source: str
    actor: str | None = staff_only("Who granted it. " + STAFF_ONLY)
    status: GrantStatus = strawberry.field(description="Whether credits remain to draw, and if not, why.")
    created_at: datetime

    @classmethod
    def from_model(cls, grant: GrantRow) -> CreditGrant:
        status = GrantStatus(grant.status.upper())
        if status is GrantStatus.ACTIVE and grant.remaining == 0:
            status = GrantStatus.DEPLETED
        label = PUBLIC_GRANT_LABELS.get(grant.source, "Credits granted")
        return cls(
            id=strawberry.ID(str(grant.id)),
            amount=money(grant.amount, grant.currency),
            remaining=money(grant.remaining, grant.currency),
            priority=grant.priority,
            effective_at=grant.effective_at,
            expires_at=grant.expires_at,
            description=public_description(label, grant.reason, grant.actor),
            reason=grant.reason,
            source=grant.source,
            actor=grant.actor,
            status=status,
            created_at=grant.created_at,
        )


@strawberry.type(description="One ledger transaction of the customer: balanced debits and credits, never changed.")
class LedgerEntry:
    id: strawberry.ID = strawberry.field(description="Tally's id for the transaction.")
    kind: str = strawberry.field(
        description="What moved: invoice, payment, credit_grant, credit_consumption, credit_expiry, credit_void, "
        "adjustment, reversal, refund, write_off…"
    )
    effective_at: datetime = strawberry.field(description="When it counts (a backdated adjustment is earlier).")
    recorded_at: datetime = strawberry.field(description="When Tally wrote it.")
    description: str = strawberry.field(
        description="Staff read the kind and the reason as it was written; any other role reads a public "
        "description (Tally's own wording, or only what kind of movement it is).",
        extensions=[StaffOnly(otherwise="public_description")],
    )
    public_description: strawberry.Private[str]
    amount: Money = strawberry.field(description="The transaction's size: the sum of its debits.")
    actor: str | None = staff_only("Who made it. " + STAFF_ONLY)

    @classmethod
    def from_row(cls, row: Any) -> LedgerEntry:
        kind, reason, actor = row["kind"], row["reason"], row["actor"]
        return cls(
            id=strawberry.ID(str(row["id"])),
            kind=kind,
            effective_at=row["effective_at"],
            recorded_at=row["recorded_at"],
            description=f"{kind.replace('_', ' ')}: {reason}",
            public_description=public_description(
                PUBLIC_ENTRY_LABELS.get(kind, kind.replace("_", " ").capitalize()), reason, actor
            ),
            amount=money(int(row["size"] or 0), row["currency"]),
            actor=actor,
        )


@strawberry.type(description="A customer's balances in their currency, from the ledger.")
class Balance:
    credits: Money = strawberry.field(description="Credit the customer holds, from the ledger.")
    unbilled: Money = strawberry.field(
        description="Accrued in the current period and not invoiced yet: usage, prorations, late usage."
    )
    outstanding: Money = strawberry.field(description="What the customer owes: the receivable's balance.")


async def resolve_balance(root: strawberry.Parent[Any], info: Info) -> Balance:
    context = info.context
    found = await ledger.balances(context.session, root.row_id, root.currency)
    upcoming = await context.upcoming_invoice(root.row_id)
    return Balance(
        credits=money(found.credits, root.currency),
        unbilled=money(upcoming.unbilled if upcoming else 0, root.currency),
        outstanding=money(found.outstanding, root.currency),
    )


async def resolve_credit_grants(
    root: strawberry.Parent[Any], info: Info, first: int | None = None, after: str | None = None
) -> Connection[CreditGrant]:
    limit = page_size(first, default=25, maximum=info.context.settings.page_size_max)
    rows = await credit.grants(info.context.session, root.row_id, after=decode_time_cursor(after), limit=limit + 1)
    return connection(rows, limit, CreditGrant.from_model, lambda g: time_cursor(g.created_at, g.id))


async def resolve_ledger_entries(
    root: strawberry.Parent[Any], info: Info, first: int | None = None, after: str | None = None
) -> Connection[LedgerEntry]:
    limit = page_size(first, default=25, maximum=info.context.settings.page_size_max)
    rows = await ledger.entries(info.context.session, root.row_id, after=decode_time_cursor(after), limit=limit + 1)
    return connection(rows, limit, LedgerEntry.from_row, lambda r: time_cursor(r["recorded_at"], r["id"]))


@strawberry.input
class GrantCreditsInput:
    customer_id: strawberry.ID
    amount: Decimal
    reason: str
    idempotency_key: str
    expires_at: datetime | None = None
    priority: int | None = strawberry.field(default=None, description="Lower is consumed first; default 100.")
    dry_run: bool = strawberry.field(
        default=False, description="Validate it exactly as a grant would be and answer the grant; write nothing."
    )


@strawberry.type(description="The grant made (or, for a dry run, checked), or why not.")
class GrantCreditsPayload:
    grant: CreditGrant | None = strawberry.field(description="The grant; null when refused.")
    user_errors: list[UserError] = strawberry.field(description="Why it was refused; empty when it was granted.")


@strawberry.input
class VoidCreditGrantInput:
    grant_id: strawberry.ID
    reason: str
    idempotency_key: str
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only a grant of this customer (any other is NOT_FOUND): a page's guard."
    )
    dry_run: bool = strawberry.field(default=False, description="Answer what would be voided; write nothing.")


@strawberry.type
class VoidCreditGrantPayload:
    grant: CreditGrant | None = strawberry.field(description="The grant, voided (as it would be, for a dry run).")
    voided: Money | None = strawberry.field(
        description="What remained of the grant and was taken back to where it came from (consumed credit stays "
        "consumed)."
    )
    user_errors: list[UserError]


def grant_limit_minor(context: TallyContext, currency: str) -> int | None:
    """The viewer's largest grant (``Viewer.grant_limit``) in ``currency``'s minor units."""
    limit = context.viewer.grant_limit(context.settings.support_grant_limit)
    return None if limit is None else round_to_minor(limit, currency)


@strawberry.input
class AdjustBalanceInput:
    customer_id: strawberry.ID
    amount: Decimal = strawberry.field(
        description="Positive debits the customer (they owe more); negative credits them."
    )
    reason: str
    idempotency_key: str


@strawberry.type
class AdjustBalancePayload:
    entry_id: strawberry.ID | None
    user_errors: list[UserError]


@strawberry.type
class LedgerMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.GRANT_CREDITS)],
        description="Give a customer credits (double entry in the ledger); the same idempotency key grants once. "
        "Support may grant up to its role's limit.",
    )
    async def grant_credits(self, info: Info, input: GrantCreditsInput) -> GrantCreditsPayload:
        """Credit a customer. The support role may grant at most TALLY_SUPPORT_GRANT_LIMIT at a time."""
        context = info.context

        async def grant() -> CreditGrant:
            customer = await customer_of(info, str(input.customer_id))
            amount = to_minor_exact(input.amount, customer.currency)
            row = await credits.grant_credits(
                context.session,
                customer_id=customer.id,
                currency=customer.currency,
                amount=amount,
                reason=input.reason,
                actor=context.viewer.actor,
                idempotency_key=input.idempotency_key,
                as_of=context.now(),
                priority=100 if input.priority is None else input.priority,
                expires_at=input.expires_at,
                max_amount=grant_limit_minor(context, customer.currency),
            )
            return CreditGrant.from_model(row)  # before the transaction ends: a dry run's rollback expires it

        made, errors = await run_mutation(info, grant, commit=not input.dry_run)
        return GrantCreditsPayload(grant=made, user_errors=errors)

    @strawberry.mutation(
        permission_classes=[requires(Capability.ADJUST_BALANCES)],
        description="Void what remains of a credit grant: the ledger posts it back to where the grant came from "
        "(double entry); what was consumed stays consumed (finance).",
    )
    async def void_credit_grant(self, info: Info, input: VoidCreditGrantInput) -> VoidCreditGrantPayload:
        context = info.context

        async def void() -> VoidCreditGrantPayload:
            try:
                grant_id = uuid.UUID(str(input.grant_id))
            except ValueError:
                raise NotFound("no such credit grant", field="grantId") from None
            scope = context.viewer.customer_scope
            if input.customer_id is not None:
                scope = (await customer_of(info, str(input.customer_id))).id
            outcome = await credits.void_grant(
                context.session,
                grant_id=grant_id,
                reason=input.reason,
                actor=context.viewer.actor,
                idempotency_key=input.idempotency_key,
                as_of=context.now(),
                customer_id=scope,
            )
            return VoidCreditGrantPayload(
                grant=CreditGrant.from_model(outcome.grant),
                voided=money(outcome.voided, outcome.grant.currency),
                user_errors=[],
            )

        payload, errors = await run_mutation(info, void, commit=not input.dry_run)
        return payload or VoidCreditGrantPayload(grant=None, voided=None, user_errors=errors)

    @strawberry.mutation(permission_classes=[requires(Capability.ADJUST_BALANCES)])
    async def adjust_balance(self, info: Info, input: AdjustBalanceInput) -> AdjustBalancePayload:
        """Debit or credit a customer's receivable, with a reason (finance)."""
        context = info.context

        async def adjust() -> Any:
            customer = await customer_of(info, str(input.customer_id))
            sign = -1 if input.amount < 0 else 1
            amount = sign * to_minor_exact(input.amount.copy_abs(), customer.currency)  # abs() would round
            return await ledger.adjust_balance(
                context.session,
                customer_id=customer.id,
                currency=customer.currency,
                amount=amount,
                reason=input.reason,
                actor=context.viewer.actor,
                idempotency_key=input.idempotency_key,
                as_of=context.now(),
            )

        transaction, errors = await run_mutation(info, adjust)
        return AdjustBalancePayload(
            entry_id=strawberry.ID(str(transaction.id)) if transaction else None, user_errors=errors
        )


@strawberry.input
class ReverseTransactionInput:
    transaction_id: strawberry.ID
    reason: str
    idempotency_key: str


@strawberry.type
class ReverseTransactionPayload:
    entry_id: strawberry.ID | None
    user_errors: list[UserError]


@strawberry.type
class CorrectionsMutation:
    @strawberry.mutation(permission_classes=[requires(Capability.ADJUST_BALANCES)])
    async def reverse_transaction(self, info: Info, input: ReverseTransactionInput) -> ReverseTransactionPayload:
        """Correct a ledger entry by posting its mirror image (at most once; finance)."""
        context = info.context

        async def reverse() -> Any:
            try:
                transaction_id = uuid.UUID(str(input.transaction_id))
            except ValueError:
                raise NotFound("no such ledger transaction", field="transactionId") from None
            return await ledger.reverse_transaction(
                context.session,
                transaction_id=transaction_id,
                reason=input.reason,
                actor=context.viewer.actor,
                idempotency_key=input.idempotency_key,
                as_of=context.now(),
            )

        transaction, errors = await run_mutation(info, reverse)
        return ReverseTransactionPayload(
            entry_id=strawberry.ID(str(transaction.id)) if transaction else None, user_errors=errors
        )
