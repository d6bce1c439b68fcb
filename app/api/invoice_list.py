"""GraphQL of the invoice list across customers (filters, totals per currency); the filter's
rules are :mod:`billing.invoices.search`'s. A customer token lists its own invoices only."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from app.api.billing import Invoice, InvoiceStatus
from app.api.common import Edge, Money, PageInfo, money, not_a_cursor, page_size
from app.api.permissions import requires
from app.api.scope import parse_customer_id
from app.auth import Capability
from billing.invoice_numbers import parse_invoice_number
from billing.invoices import search as invoice_search
from ledger.errors import TallyError
from ledger.money import normalize_currency


@strawberry.input(description="Which invoices to list; every condition given must hold.")
class InvoiceFilter:
    statuses: list[InvoiceStatus] | None = strawberry.field(default=None, description="Any of these statuses.")
    currency: str | None = None
    customer_id: strawberry.ID | None = None
    customer: str | None = strawberry.field(
        default=None, description="A customer's external id, or part of it or of their name (case-insensitive)."
    )
    issued_from: datetime | None = strawberry.field(default=None, description="Issued at or after.")
    issued_until: datetime | None = strawberry.field(default=None, description="Issued before.")
    min_total: Decimal | None = strawberry.field(default=None, description="Total at least, in its own currency.")
    max_total: Decimal | None = strawberry.field(default=None, description="Total at most, in its own currency.")
    overdue: bool = strawberry.field(
        default=False, description="Only unpaid invoices past their due date with something still due."
    )


@strawberry.type(description="An invoice in the list, with its customer and what it still asks for.")
class ListedInvoice:
    invoice: Invoice
    customer_external_id: str
    customer_name: str
    amount_still_due: Money = strawberry.field(description="0 unless unpaid; less REDUCE_DUE credit notes.")
    overdue: bool = strawberry.field(description="Unpaid, something still due, and past its due date.")


@strawberry.type(description="One currency's matching invoices, all of them (not only the page).")
class InvoiceListTotals:
    currency: str
    invoices: int
    total: Money
    still_due: Money


@strawberry.type
class InvoiceList:
    edges: list[Edge[ListedInvoice]]
    page_info: PageInfo
    totals: list[InvoiceListTotals] = strawberry.field(description="Per currency, never summed across currencies.")


def _refused(error: TallyError) -> GraphQLError:
    return GraphQLError(f"filter.{error.field}: {error.message}", extensions={"code": error.code, "field": error.field})


def domain_filter(found: InvoiceFilter | None, scope: uuid.UUID | None) -> invoice_search.InvoiceFilter:
    found = found or InvoiceFilter()
    customer_id = parse_customer_id(found.customer_id) if found.customer_id is not None else None
    if found.customer_id is not None and customer_id is None:
        raise GraphQLError("filter.customerId: no such customer", extensions={"code": "NOT_FOUND"})
    if scope is not None:
        customer_id = scope if customer_id in (None, scope) else None
        if customer_id is None:
            raise GraphQLError("filter.customerId: no such customer", extensions={"code": "NOT_FOUND"})
    try:
        currency = normalize_currency(found.currency) if found.currency else None
    except TallyError as error:
        raise _refused(error) from None
    return invoice_search.InvoiceFilter(
        statuses=tuple(status.value for status in found.statuses or ()),
        currency=currency,
        customer_id=customer_id,
        customer=found.customer,
        issued_from=found.issued_from,
        issued_until=found.issued_until,
        min_total=found.min_total,
        max_total=found.max_total,
        overdue=found.overdue,
    )


@strawberry.type
class InvoiceListQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="Invoices across customers, newest number first, with the totals of all that match.",
    )
    async def invoice_list(
        self,
        info: Info,
        filter: InvoiceFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        with_totals: bool = True,
    ) -> InvoiceList:
        context = info.context
        limit = page_size(first, default=50, maximum=context.settings.page_size_max)
        before_number = None
        if after is not None:
            before_number = parse_invoice_number(after)
            if before_number is None:
                raise not_a_cursor()
        try:
            found = await invoice_search.list_invoices(
                context.session,
                domain_filter(filter, context.viewer.customer_scope),
                as_of=context.now(),
                before_number=before_number,
                limit=limit + 1,
                with_totals=with_totals,
            )
        except TallyError as error:
            raise _refused(error) from None
        visible = found.rows[:limit]
        edges = [
            Edge(
                cursor=Invoice.from_model(row.invoice).number,
                node=ListedInvoice(
                    invoice=Invoice.from_model(row.invoice),
                    customer_external_id=row.customer_external_id,
                    customer_name=row.customer_name,
                    amount_still_due=money(row.still_due, row.invoice.currency),
                    overdue=row.overdue,
                ),
            )
            for row in visible
        ]
        return InvoiceList(
            edges=edges,
            page_info=PageInfo(has_next_page=len(found.rows) > limit, end_cursor=edges[-1].cursor if edges else None),
            totals=[
                InvoiceListTotals(
                    currency=t.currency,
                    invoices=t.invoices,
                    total=money(t.total, t.currency),
                    still_due=money(t.still_due, t.currency),
                )
                for t in found.totals
            ],
        )
