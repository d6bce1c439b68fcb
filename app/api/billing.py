"""GraphQL of invoices, the upcoming invoice and plan changes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app.api.catalog import Plan
from app.api.common import (
    Connection,
    Money,
    connection,
    exactly_one_of,
    money,
    not_a_cursor,
    page_size,
)
from app.api.credit_notes import CreditNote, notes_of_invoice
from app.api.ledger import LedgerEntry
from app.api.permissions import requires
from app.api.price_overrides import PriceOverride, resolve_dropped_price_overrides
from app.api.provenance import InvoiceLineProvenance
from app.api.scope import STAFF_ONLY, WHICH_SUBSCRIPTION, staff_only
from app.auth import Capability
from app.invoice_documents import public_url
from billing.documents.breakdown import line_explanation
from billing.invoice_numbers import invoice_number, parse_invoice_number
from billing.invoices import service as billing
from billing.invoices.invoicing import DraftLine
from billing.invoices.provenance import explain_line
from billing.models import Invoice as InvoiceRow
from billing.models import InvoiceLine as InvoiceLineRow
from billing.models import InvoiceTaxLine as InvoiceTaxLineRow
from customers.models import PlanChange as PlanChangeRow
from customers.subscriptions import plan_changes
from ledger import service as ledger
from ledger.money import plain_decimal, round_to_minor, to_minor_exact
from pricing.tax import REVERSE_CHARGE_NOTE, TaxLine


@strawberry.enum(
    description="issued (awaiting payment), paid (also when credits paid it all), void (cancelled, owes nothing) "
    "or uncollectible (written off)."
)
class InvoiceStatus(Enum):
    ISSUED = "issued"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


@strawberry.enum
class InvoiceLineKind(Enum):
    BASE_FEE = "base_fee"
    USAGE = "usage"
    PRORATION = "proration"
    LATE_USAGE = "late_usage"
    ONE_OFF = "one_off"
    MINIMUM_SPEND = "minimum_spend"
    COMMITMENT = "commitment"
    ADVANCE = "advance"
    ADVANCE_PRORATION = "advance_proration"
    DISCOUNT = "discount"
    CREDIT_PURCHASE = "credit_purchase"


@strawberry.type(description="One line of an invoice: what it bills, how much of it, for what time.")
class InvoiceLine:
    kind: InvoiceLineKind = strawberry.field(description="What the line bills: base fee, usage, proration…")
    description: str = strawberry.field(description="The line as the invoice prints it, e.g. Premium requests.")
    quantity: Decimal | None = strawberry.field(description="How much was used or billed; null for a flat amount.")
    unit_price: Decimal | None = strawberry.field(description="Per unit, for per-unit charges and base fees.")
    amount: Money = strawberry.field(description="Rounded once from amountExact, half away from zero.")
    amount_exact: Decimal = strawberry.field(description="The exact amount before rounding.")
    dimensions: JSON
    service_start: datetime = strawberry.field(description="What time the line pays for, half-open.")
    service_end: datetime
    position: int = strawberry.field(description="The line's place on its invoice, from 0.")
    issued: strawberry.Private[tuple[InvoiceRow, InvoiceLineRow] | None]
    rated_by: strawberry.Private[tuple[uuid.UUID | None, uuid.UUID | None]] = (None, None)  # version, charge
    # (quantity, exact amount) of each line of the same charge and service period: dimensions' shares
    charge_parts: strawberry.Private[list[tuple[Decimal, Decimal]]] = strawberry.field(default_factory=list)

    @strawberry.field(
        description='How the amount follows from the quantity, e.g. "314 calls, 250 included, 64 × 0.04 = 2.56"; '
        "null for lines other than usage, and when the charge's terms do not rate back to the amount (a price "
        "override, an allowance prorated over part of a period, an interim invoice's difference)."
    )
    async def explanation(self, info: Info) -> str | None:
        version_id, charge_id = self.rated_by
        if self.kind is not InvoiceLineKind.USAGE or version_id is None or charge_id is None:
            return None
        rows = await info.context.loaders.charges_by_version.load(version_id)
        charge, meter = next(((c, m) for c, m in rows if c.id == charge_id), (None, None))
        unit = meter.unit if meter else ""
        return line_explanation(
            "usage", self.quantity, self.amount_exact, charge, unit, self.amount.currency, self.charge_parts
        )

    @strawberry.field(
        description="Why this amount: the plan version, and for usage the rollups and raw events that fed the "
        "line. Null on the upcoming invoice. Reads events: ask for it on one invoice, not on lists."
    )
    async def provenance(self, info: Info) -> InvoiceLineProvenance | None:
        if self.issued is None:
            return None
        invoice, line = self.issued
        return InvoiceLineProvenance.from_model(await explain_line(info.context.session, invoice, line))

    @classmethod
    def from_draft(
        cls,
        line: DraftLine | InvoiceLineRow,
        currency: str,
        amount_minor: int,
        position: int,
        issued: tuple[InvoiceRow, InvoiceLineRow] | None = None,
        siblings: Sequence[DraftLine | InvoiceLineRow] = (),
    ) -> InvoiceLine:
        return cls(
            position=position,
            issued=issued,
            kind=InvoiceLineKind(line.kind),
            description=line.description,
            quantity=line.quantity,
            unit_price=line.unit_price,
            amount=money(amount_minor, currency),
            amount_exact=line.amount_exact,
            dimensions=cast(JSON, line.dimensions),
            service_start=line.service_start,
            service_end=line.service_end,
            rated_by=(line.plan_version_id, line.plan_charge_id),
            charge_parts=[
                (other.quantity, other.amount_exact)
                for other in siblings
                if other.kind == "usage"
                and other.quantity is not None
                and other.plan_charge_id == line.plan_charge_id
                and other.service_start == line.service_start
            ],
        )


@strawberry.type(description="One tax rate's tax on an invoice, rounded once for the whole invoice.")
class InvoiceTaxLine:
    rate_key: str = strawberry.field(description="The catalog's tax rate key (reverse_charge under reverse charge).")
    name: str = strawberry.field(description="As the invoice prints it, e.g. VAT.")
    rate: Decimal = strawberry.field(description="A percent: 20 is 20 %, as applied when issued.")
    inclusive: bool = strawberry.field(description="Inside the prices (the total does not change) or added on top.")
    taxable_amount: Money = strawberry.field(description="What the rate applies to, net of this tax.")
    tax: Money
    reverse_charge: bool = strawberry.field(description="No tax: the buyer accounts for it (EU B2B).")

    @classmethod
    def from_line(cls, line: TaxLine | InvoiceTaxLineRow, currency: str) -> InvoiceTaxLine:
        if isinstance(line, InvoiceTaxLineRow):
            line = TaxLine(
                line.rate_key,
                line.name,
                line.rate,
                line.inclusive,
                line.taxable_amount,
                line.tax_amount,
                line.reverse_charge,
            )
        return cls(
            rate_key=line.rate_key,
            name=line.name,
            rate=plain_decimal(line.rate),
            inclusive=line.inclusive,
            taxable_amount=money(line.taxable, currency),
            tax=money(line.tax, currency),
            reverse_charge=line.reverse_charge,
        )


def tax_note(lines: list[InvoiceTaxLine]) -> str | None:
    return REVERSE_CHARGE_NOTE if any(line.reverse_charge for line in lines) else None


@strawberry.type(description="An issued invoice: immutable once issued (corrected by credit notes).")
class Invoice:
    id: strawberry.ID = strawberry.field(description="Tally's id for the invoice; people use its number.")
    number: str = strawberry.field(description="Gapless and sequential across Tally, e.g. INV-000042.")
    status: InvoiceStatus = strawberry.field(description="Where its payment stands.")
    kind: str = strawberry.field(
        description="opening (first base fee), period (a closed period), one_off (a one-off charge billed at "
        "once), commitment (a prepaid commitment), interim (the usage so far of a period whose unbilled usage "
        "reached the plan's invoice threshold; the period invoice bills only the rest) or credit_purchase "
        "(credits bought, granted when it is paid)."
    )
    period_start: datetime = strawberry.field(description="The start of the time it bills.")
    period_end: datetime = strawberry.field(description="The end of the time it bills (exclusive).")
    issued_at: datetime = strawberry.field(description="When it was issued.")
    subtotal: Money = strawberry.field(description="The sum of its lines, before tax and credits.")
    credits_applied: Money = strawberry.field(description="The customer's credits it drew.")
    total: Money = strawberry.field(description="The lines plus the exclusive tax.")
    amount_due: Money = strawberry.field(description="What the customer pays: total less credits, at least 0.")
    tax: Money = strawberry.field(description="All its tax, inclusive and exclusive.")
    row: strawberry.Private[InvoiceRow]

    @strawberry.field(
        description="Whether it is an interim invoice (threshold invoicing): it bills a period's usage so far, "
        "before the period closes."
    )
    def interim(self) -> bool:
        return self.row.kind == "interim"

    @strawberry.field(description="An interim invoice's number within its period (1, 2, …); null for other kinds.")
    def interim_sequence(self) -> int | None:
        return self.row.interim_sequence

    @strawberry.field(description="One line per tax rate applied (or one reverse-charge line).")
    async def tax_lines(self, info: Info) -> list[InvoiceTaxLine]:
        rows = await info.context.loaders.invoice_tax_lines.load(self.row.id)
        return [InvoiceTaxLine.from_line(row, self.row.currency) for row in rows]

    @strawberry.field(description="The note the invoice carries under reverse charge; null otherwise.")
    async def tax_note(self, info: Info) -> str | None:
        return tax_note(await self.tax_lines(info))

    @strawberry.field(description="How the amount due is collected, in a sentence.")
    def collection(self, info: Info) -> str:
        if not self.row.amount_due:
            return "nothing due"
        closed = {"paid": "paid", "void": "voided", "uncollectible": "written off as uncollectible"}
        if self.row.status in closed:
            return closed[self.row.status]
        if not info.context.settings.stripe_api_key:
            return "awaiting payment: collection is off (set STRIPE_API_KEY to collect through Stripe)"
        return "awaiting payment: collected through Stripe (see the customer's Payments tab)"

    @strawberry.field
    async def customer_id(self) -> strawberry.ID:
        return strawberry.ID(str(self.row.customer_id))

    @strawberry.field(
        description="The subscription whose period it bills (one invoice per subscription and period); null "
        "for an invoice outside the periods (a one-off charge invoiced at once, a prepaid commitment)."
    )
    def subscription_id(self) -> strawberry.ID | None:
        return strawberry.ID(str(self.row.subscription_id)) if self.row.subscription_id else None

    @strawberry.field(
        description="When payment is due: the issue date plus the payment terms (TALLY_PAYMENT_TERMS_DAYS)."
    )
    def due_at(self) -> datetime:
        return self.row.due_at or self.row.issued_at

    @strawberry.field(
        description="The invoice's PDF, for staff and the invoice's own customer (send the bearer token; add "
        "?locale=en|fr|de|es for another language): absolute when TALLY_PUBLIC_BASE_URL is set, else a path."
    )
    def pdf_url(self, info: Info) -> str:
        return public_url(info.context.settings, f"/v1/invoices/{self.row.id}/pdf")

    @strawberry.field(description="The trace that issued it (its spans link the ingest traces it rated).")
    async def trace_id(self) -> str | None:
        return self.row.trace_id

    @strawberry.field(description="Its lines, in the order the invoice prints them.")
    async def lines(self, info: Info) -> list[InvoiceLine]:
        rows = await info.context.loaders.invoice_lines.load(self.row.id)
        return [self._line(row, rows) for row in rows]

    @strawberry.field(description="One line by its position; null when there is none.")
    async def line(self, info: Info, position: int) -> InvoiceLine | None:
        rows = await info.context.loaders.invoice_lines.load(self.row.id)
        return next((self._line(row, rows) for row in rows if row.position == position), None)

    def _line(self, row: InvoiceLineRow, rows: Sequence[InvoiceLineRow]) -> InvoiceLine:
        return InvoiceLine.from_draft(
            row, self.row.currency, row.amount, row.position, issued=(self.row, row), siblings=rows
        )

    @strawberry.field(description="What its credit notes took back, in all (0 when it has none).")
    async def credited_amount(self, info: Info) -> Money:
        notes = await info.context.loaders.credit_notes_by_invoice.load(uuid.UUID(self.id))
        return money(sum(note.amount for note in notes), self.total.currency)  # self.row expires on a dry run

    @strawberry.field(description="What is left to collect: the amount due less what REDUCE_DUE credit notes took off.")
    async def amount_still_due(self, info: Info) -> Money:
        notes = await info.context.loaders.credit_notes_by_invoice.load(uuid.UUID(self.id))
        reduced = sum(note.amount for note in notes if note.method == "REDUCE_DUE")
        return money(to_minor_exact(self.amount_due.amount, self.total.currency) - reduced, self.total.currency)

    @strawberry.field(description="Its credit notes, oldest first.")
    async def credit_notes(self, info: Info) -> list[CreditNote]:
        return await notes_of_invoice(info, uuid.UUID(self.id))

    @strawberry.field(description="The ledger transactions this invoice posted: the charge and the credits.")
    async def ledger_entries(self, info: Info) -> list[LedgerEntry]:
        ids = [i for i in (self.row.ledger_transaction_id, self.row.credits_transaction_id) if i is not None]
        return [LedgerEntry.from_row(row) for row in await ledger.entries_by_ids(info.context.session, ids)]

    @classmethod
    def from_model(cls, row: InvoiceRow) -> Invoice:
        currency = row.currency
        return cls(
            id=strawberry.ID(str(row.id)),
            number=invoice_number(row.number),
            status=InvoiceStatus(row.status),
            kind=row.kind,
            period_start=row.period_start,
            period_end=row.period_end,
            issued_at=row.issued_at,
            subtotal=money(row.subtotal, currency),
            credits_applied=money(row.credits_applied, currency),
            total=money(row.total, currency),
            amount_due=money(row.amount_due, currency),
            tax=money(row.tax_amount, currency),
            row=row,
        )


@strawberry.type(
    description="The invoice that will close the current period, as it stands now (usage so far): nothing is written."
)
class UpcomingInvoice:
    period_start: datetime = strawberry.field(description="The start of the period in progress.")
    period_end: datetime = strawberry.field(description="The end of the period; the invoice is issued then.")
    subtotal: Money = strawberry.field(description="The sum of its lines so far, before tax and credits.")
    credits_applied: Money = strawberry.field(description="The credits it would draw if issued now.")
    total: Money = strawberry.field(description="The lines plus the exclusive tax.")
    amount_due: Money = strawberry.field(description="What the customer would pay: total less credits, at least 0.")
    lines: list[InvoiceLine] = strawberry.field(description="Its lines so far.")
    tax: Money = strawberry.field(description="The tax it would carry if issued now.")
    tax_lines: list[InvoiceTaxLine]
    tax_note: str | None = strawberry.field(description="The reverse-charge note it would carry; null otherwise.")

    @classmethod
    def from_preview(cls, preview: billing.UpcomingInvoice) -> UpcomingInvoice:
        draft, currency = preview.draft, preview.draft.currency
        tax_lines = [InvoiceTaxLine.from_line(line, currency) for line in preview.taxes]
        return cls(
            period_start=draft.period_start,
            period_end=draft.period_end,
            subtotal=money(draft.subtotal, currency),
            credits_applied=money(preview.credits_applied, currency),
            total=money(preview.total, currency),
            amount_due=money(preview.amount_due, currency),
            lines=[
                InvoiceLine.from_draft(line, currency, line.amount(currency), position, siblings=draft.lines)
                for position, line in enumerate(draft.lines)
            ],
            tax=money(preview.tax, currency),
            tax_lines=tax_lines,
            tax_note=tax_note(tax_lines),
        )


async def resolve_invoices(
    root: strawberry.Parent[Any], info: Info, first: int | None = None, after: str | None = None
) -> Connection[Invoice]:
    limit = page_size(first, default=25, maximum=info.context.settings.page_size_max)
    before_number = None
    if after is not None:
        before_number = parse_invoice_number(after)
        if before_number is None:
            raise not_a_cursor()
    rows = await billing.invoices(info.context.session, root.row_id, before_number=before_number, limit=limit + 1)
    return connection(rows, limit, Invoice.from_model, lambda row: invoice_number(row.number))


@strawberry.type(description="Why the customer's next invoice could not be issued; the billing job retries it.")
class BillingFailure:
    error: str = strawberry.field(description="What the last try raised: its type and first line.")
    attempts: int = strawberry.field(description="Tries that failed since the first.")
    first_failed_at: datetime
    last_failed_at: datetime
    next_attempt_at: datetime = strawberry.field(
        description="When the billing job tries again (backoff); `tally billing run --retry-failed` tries at once."
    )
    trace_id: str | None = strawberry.field(description="The trace of the last failed try.")


async def resolve_billing_failure(root: strawberry.Parent[Any], info: Info) -> BillingFailure | None:
    found = await info.context.loaders.billing_failure.load(root.row_id)
    if found is None:
        return None
    return BillingFailure(
        error=found.error,
        attempts=found.attempts,
        first_failed_at=found.first_failed_at,
        last_failed_at=found.last_failed_at,
        next_attempt_at=found.next_attempt_at,
        trace_id=found.trace_id,
    )


async def resolve_upcoming_invoice(root: strawberry.Parent[Any], info: Info) -> UpcomingInvoice | None:
    preview = await info.context.upcoming_invoice(root.row_id)
    return UpcomingInvoice.from_preview(preview) if preview else None


@strawberry.type
class BillingQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="One invoice by id or number (INV-000042); null when not found or not yours.",
    )
    async def invoice(self, info: Info, id: strawberry.ID | None = None, number: str | None = None) -> Invoice | None:
        if (id is None) == (number is None):
            raise exactly_one_of("id", "number")
        session = info.context.session
        row: InvoiceRow | None = None
        if id is not None:
            try:
                row = (await billing.invoices_by_id(session, [uuid.UUID(str(id))])).get(uuid.UUID(str(id)))
            except ValueError:
                return None
        elif number is not None:
            parsed = parse_invoice_number(number)
            row = await billing.invoice_by_number(session, parsed) if parsed is not None else None
        if row is None or not info.context.viewer.may_see(row.customer_id):
            return None
        return Invoice.from_model(row)


@strawberry.enum
class PlanChangeTiming(Enum):
    IMMEDIATELY = "IMMEDIATELY"
    PERIOD_END = "PERIOD_END"


@strawberry.input
class ChangePlanInput:
    customer_id: strawberry.ID
    plan_key: str
    effective: PlanChangeTiming
    idempotency_key: str
    subscription_id: strawberry.ID | None = strawberry.field(default=None, description=WHICH_SUBSCRIPTION)
    at: datetime | None = strawberry.field(default=None, description="Defaults to now; inside the current period.")
    dry_run: bool = strawberry.field(default=False, description="Return the prorations; change nothing.")


@strawberry.type(description="What a mid-period plan change charges or credits for the rest of the period.")
class Proration:
    description: str = strawberry.field(description="What it is for, as the invoice will print it.")
    amount: Money = strawberry.field(description="Rounded as the invoice will round it; a credit is negative.")
    amount_exact: Decimal = strawberry.field(description="The exact amount before rounding.")


@strawberry.type
class PlanChange:
    """The audit of a plan change: who, when, from what, to what, and its prorations."""

    id: strawberry.ID
    timing: PlanChangeTiming
    status: str = strawberry.field(description="applied, scheduled or canceled (by a later immediate change).")
    effective_at: datetime
    requested_at: datetime
    actor: str | None = staff_only("Who asked for it. " + STAFF_ONLY)
    prorations: list[Proration]
    row: strawberry.Private[PlanChangeRow]
    dropped_price_overrides: list[PriceOverride] = strawberry.field(
        resolver=resolve_dropped_price_overrides,
        description="The customer's price overrides the change dropped (each belonged to the plan they left).",
    )

    @strawberry.field
    async def from_plan(self, info: Info) -> Plan:
        plan, version = await info.context.loaders.plan_version.load(self.row.from_plan_version_id)
        return Plan.from_model(plan, version)

    @strawberry.field
    async def to_plan(self, info: Info) -> Plan:
        plan, version = await info.context.loaders.plan_version.load(self.row.to_plan_version_id)
        return Plan.from_model(plan, version)

    @classmethod
    def from_model(cls, row: PlanChangeRow, currency: str, as_of: datetime) -> PlanChange:
        came_into_effect = row.status == "scheduled" and row.effective_at <= as_of
        return cls(
            id=strawberry.ID(str(row.id)),
            timing=PlanChangeTiming(row.timing),
            status="applied" if came_into_effect else row.status,
            effective_at=row.effective_at,
            requested_at=row.requested_at,
            actor=row.actor,
            prorations=[proration_of(p["description"], Decimal(p["amount"]), currency) for p in row.prorations],
            row=row,
        )


def proration_of(description: str, amount: Decimal, currency: str) -> Proration:
    return Proration(
        description=description, amount=money(round_to_minor(amount, currency), currency), amount_exact=amount
    )


async def resolve_plan_changes(root: strawberry.Parent[Any], info: Info, first: int = 20) -> list[PlanChange]:
    rows = await plan_changes(info.context.session, root.row_id, limit=page_size(first, default=20, maximum=100))
    return [PlanChange.from_model(row, root.currency, info.context.now()) for row in rows]
