"""GraphQL of the finance overview (the console's landing page): every figure is defined in
:mod:`billing.insights.overview`; this module only shapes it. Tally-wide, so staff only."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from app.api.common import Money, money
from app.api.permissions import requires
from app.auth import Capability
from app.collection import stripe_gateway
from billing.insights import overview
from ledger.money import round_to_minor


def _mrr_money(amount: Decimal, currency: str) -> Money:
    return money(round_to_minor(amount, currency), currency)


@strawberry.type(
    description="One currency's monthly recurring revenue (MRR) and what moved it this calendar month (UTC). "
    "MRR is the base fees of active subscriptions, each as its monthly worth (a yearly fee / 12); usage is "
    "not recurring and not in it. start + new + expansion − contraction − churned = now (rounded for display)."
)
class MrrFigures:
    currency: str
    start: Money = strawberry.field(description="MRR at the start of the month.")
    now: Money = strawberry.field(description="MRR now.")
    new: Money = strawberry.field(description="From customers paying no recurring fee at the start of the month.")
    expansion: Money = strawberry.field(description="Increases of customers who paid one at the start and still do.")
    contraction: Money = strawberry.field(description="Decreases of customers who paid one at the start and still do.")
    churned: Money = strawberry.field(description="Of customers who paid one at the start and pay none now.")
    customers: int = strawberry.field(description="Customers paying a recurring fee now.")

    @classmethod
    def from_movement(cls, found: overview.MrrMovement) -> MrrFigures:
        c = found.currency
        return cls(
            currency=c,
            start=_mrr_money(found.start, c),
            now=_mrr_money(found.now, c),
            new=_mrr_money(found.new, c),
            expansion=_mrr_money(found.expansion, c),
            contraction=_mrr_money(found.contraction, c),
            churned=_mrr_money(found.churned, c),
            customers=found.customers,
        )


@strawberry.type(
    description="Billed revenue of one calendar month (UTC) in one currency: subtotals (before tax and credits) "
    "of the invoices issued in it; void invoices, credit purchases and prepaid commitments left out."
)
class MonthRevenue:
    month: datetime = strawberry.field(description="The month's first instant (UTC).")
    billed: Money


@strawberry.type(description="An aging bucket of unpaid invoices: what they still ask for, by days past due.")
class AgingBucket:
    label: str = strawberry.field(description="current (not due yet), 1–30 days, 31–60 days, 61–90 days, over 90 days.")
    amount: Money


@strawberry.type(description="One currency's unpaid invoices (credit purchases excluded: unpaid, they are no debt).")
class Receivables:
    currency: str
    outstanding: Money = strawberry.field(
        description="What unpaid invoices still ask for (less REDUCE_DUE credit notes)."
    )
    overdue: Money = strawberry.field(description="The part of it past its due date.")
    invoices: int
    overdue_invoices: int
    aging: list[AgingBucket] = strawberry.field(description="The outstanding amount by days past due, oldest last.")


@strawberry.type(description="Credit customers hold and may still spend: the remaining amount of active grants.")
class CreditsOutstanding:
    remaining: Money
    customers: int


@strawberry.type(description="Events counted one UTC day, across customers.")
class DailyEvents:
    day: datetime
    events: int


@strawberry.type(description="One of the most used meters and its events per day, across customers.")
class MeterTrend:
    key: str
    name: str
    events: int = strawberry.field(description="Events over the whole window.")
    daily: list[DailyEvents] = strawberry.field(description="Oldest first, a zero for a day without events.")


@strawberry.type(description="Tally's finance and operations at a glance, per currency; staff only.")
class FinanceOverview:
    as_of: datetime
    mrr: list[MrrFigures]
    revenue_by_month: list[MonthRevenue] = strawberry.field(
        description="The last 12 months with the current one, oldest first, per currency."
    )
    receivables: list[Receivables]
    credits_outstanding: list[CreditsOutstanding]
    usage_trend: list[MeterTrend] = strawberry.field(description="The 3 meters with the most events in 30 days.")
    open_anomalies: int
    open_discrepancies: int = strawberry.field(description="Open reconciliation discrepancies.")
    collection_on: bool = strawberry.field(
        description="False when no STRIPE_API_KEY is set: nothing is collected through Stripe or reconciled with it, "
        "so openDiscrepancies says nothing."
    )
    roll_up_lag_ms: int | None = strawberry.field(
        description="How long the oldest counted measurement has waited to be rolled up; null when none waits."
    )
    oldest_watermark_age_ms: int | None = strawberry.field(
        description="Age of the least complete customer's usage watermark; null before any usage."
    )


def _milliseconds(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


@strawberry.type
class OverviewQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_INVOICES)],
        description="The finance overview: MRR, revenue, receivables, credits, usage and what needs a person. "
        "Staff only (it reads every customer).",
    )
    async def finance_overview(self, info: Info) -> FinanceOverview:
        context = info.context
        if not context.viewer.is_staff:
            raise GraphQLError(
                "Forbidden: the overview reads every customer; staff only.", extensions={"code": "FORBIDDEN"}
            )
        session, as_of = context.session, context.now()
        operations = await overview.operations(session, as_of=as_of)
        return FinanceOverview(
            as_of=as_of,
            mrr=[MrrFigures.from_movement(found) for found in await overview.mrr(session, as_of=as_of)],
            revenue_by_month=[
                MonthRevenue(month=row.month, billed=money(row.billed, row.currency))
                for row in await overview.revenue_by_month(session, as_of=as_of)
            ],
            receivables=[
                Receivables(
                    currency=found.currency,
                    outstanding=money(found.outstanding, found.currency),
                    overdue=money(found.overdue, found.currency),
                    invoices=found.invoices,
                    overdue_invoices=found.overdue_invoices,
                    aging=[
                        AgingBucket(label=label, amount=money(amount, found.currency))
                        for label, amount in found.buckets.items()
                    ],
                )
                for found in await overview.receivables(session, as_of=as_of)
            ],
            credits_outstanding=[
                CreditsOutstanding(remaining=money(found.remaining, found.currency), customers=found.customers)
                for found in await overview.credits_outstanding(session)
            ],
            usage_trend=[
                MeterTrend(
                    key=trend.key,
                    name=trend.name,
                    events=trend.events,
                    daily=[DailyEvents(day=day, events=events) for day, events in trend.daily],
                )
                for trend in await overview.usage_trend(session, as_of=as_of)
            ],
            open_anomalies=operations.anomalies_open,
            open_discrepancies=operations.discrepancies_open,
            collection_on=stripe_gateway(info.context.settings) is not None,
            roll_up_lag_ms=_milliseconds(operations.rollup_lag_seconds),
            oldest_watermark_age_ms=_milliseconds(operations.watermark_age_seconds),
        )
