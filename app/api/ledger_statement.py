"""GraphQL of a customer's ledger statement (one account, in ledger sequence, with debits,
credits, the running balance and the invoice or grant behind each entry); the statement itself
is :mod:`billing.insights.ledger_statement`'s."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from app.api.billing import invoice_number
from app.api.common import Money, PageInfo, money, page_size
from app.api.ledger import PUBLIC_ENTRY_LABELS, public_description
from app.api.permissions import requires
from app.api.scope import STAFF_ONLY, StaffOnly, find_visible_customer, staff_only
from app.auth import Capability
from billing.insights import ledger_statement
from ledger.errors import TallyError
from ledger.money import normalize_currency


@strawberry.enum(description="Which of a customer's accounts: what they owe, or the credit they hold.")
class StatementAccount(Enum):
    RECEIVABLE = "receivable"
    CREDITS = "credits"


@strawberry.type(description="One of the customer's accounts a statement can show.")
class StatementAccountRef:
    account: StatementAccount
    currency: str


@strawberry.type(description="One transaction's movement of the account.")
class StatementEntry:
    sequence: str = strawberry.field(description="Its place in the ledger (increasing, never tied); a decimal string.")
    transaction_id: strawberry.ID
    kind: str
    effective_at: datetime
    recorded_at: datetime
    description: str = strawberry.field(
        description="Staff read the reason as written; any other role a public description.",
        extensions=[StaffOnly(otherwise="public_description")],
    )
    public_description: strawberry.Private[str]
    actor: str | None = staff_only("Who made it. " + STAFF_ONLY)
    debit: Money = strawberry.field(description="Debited to the account (0 when credited).")
    credit: Money = strawberry.field(description="Credited to the account (0 when debited).")
    balance: Money = strawberry.field(
        description="After this entry, in the account's own sense: owed (receivable) or held (credits)."
    )
    invoice_id: strawberry.ID | None = strawberry.field(
        description="The invoice it charges, credits, pays or reverses; null when none."
    )
    invoice_number: str | None
    grant_id: strawberry.ID | None = strawberry.field(description="The credit grant it created or drew on.")

    @classmethod
    def from_entry(cls, entry: ledger_statement.StatementEntry, currency: str) -> StatementEntry:
        label = PUBLIC_ENTRY_LABELS.get(entry.kind, entry.kind.replace("_", " ").capitalize())
        return cls(
            sequence=str(entry.sequence),
            transaction_id=strawberry.ID(str(entry.transaction_id)),
            kind=entry.kind,
            effective_at=entry.effective_at,
            recorded_at=entry.recorded_at,
            description=f"{entry.kind.replace('_', ' ')}: {entry.reason}",
            public_description=public_description(label, entry.reason, entry.actor),
            actor=entry.actor,
            debit=money(entry.debit, currency),
            credit=money(entry.credit, currency),
            balance=money(entry.balance, currency),
            invoice_id=strawberry.ID(str(entry.invoice_id)) if entry.invoice_id else None,
            invoice_number=invoice_number(entry.invoice_number) if entry.invoice_number is not None else None,
            grant_id=strawberry.ID(str(entry.grant_id)) if entry.grant_id else None,
        )


@strawberry.type(description="A customer's account as a statement, oldest entry first.")
class LedgerStatement:
    customer_id: strawberry.ID
    account: StatementAccount
    currency: str
    accounts: list[StatementAccountRef] = strawberry.field(description="Every account the customer has.")
    entries: list[StatementEntry]
    page_info: PageInfo


@strawberry.type
class LedgerStatementQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_LEDGER)],
        description="A customer's receivable or credits in ledger sequence, with the running balance; null "
        "when the customer is not found or not yours. Currency: the customer's own unless given.",
    )
    async def ledger_statement(
        self,
        info: Info,
        customer_id: strawberry.ID,
        account: StatementAccount = StatementAccount.RECEIVABLE,
        currency: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> LedgerStatement | None:
        context = info.context
        customer = await find_visible_customer(context.session, context.viewer, customer_id=customer_id)
        if customer is None:
            return None
        try:
            currency = normalize_currency(currency) if currency else customer.currency
        except TallyError as error:
            raise GraphQLError(f"currency: {error.message}", extensions={"code": error.code}) from None
        if after is not None and not (after.isdigit() and len(after) < 19):
            raise GraphQLError("after: not a cursor returned by this API")
        limit = page_size(first, default=100, maximum=context.settings.page_size_max)
        entries = await ledger_statement.statement(
            context.session,
            customer.id,
            account=account.value,
            currency=currency,
            after_sequence=int(after or 0),
            limit=limit + 1,
        )
        shown = [StatementEntry.from_entry(entry, currency) for entry in entries[:limit]]
        accounts = await ledger_statement.statement_accounts(context.session, customer.id)
        return LedgerStatement(
            customer_id=strawberry.ID(str(customer.id)),
            account=account,
            currency=currency,
            accounts=[StatementAccountRef(account=StatementAccount(kind), currency=c) for kind, c in accounts],
            entries=shown,
            page_info=PageInfo(has_next_page=len(entries) > limit, end_cursor=shown[-1].sequence if shown else None),
        )
