"""GraphQL of price simulation: a draft catalog tried on real past usage, nothing written."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry
from strawberry.types import Info

from app.api.common import Money, UserError, money, run_mutation
from app.api.permissions import requires
from app.auth import Capability
from billing.invoices.simulation import PeriodSelection, simulate_pricing
from pricing.simulation import CustomerOutcome, SimulationSummary


@strawberry.input
class SimulatePricingInput:
    catalog: str = strawberry.field(description="A draft catalog (TOML): the plans to try on real usage.")
    from_: datetime | None = strawberry.field(
        default=None, name="from", description="Simulate the billing periods that end after this…"
    )
    to: datetime | None = strawberry.field(default=None, description="…and by this (default: now).")
    customers: list[str] | None = strawberry.field(
        default=None, description="External ids; default: every customer on a plan the draft changes."
    )
    periods: int | None = strawberry.field(
        default=None, description="Instead of from: each customer's last N closed billing periods."
    )


@strawberry.type
class SimulatedCustomer:
    external_id: str
    name: str
    plan_key: str
    periods: int
    current: Money
    simulated: Money
    difference: Money
    change_percent: Decimal | None = strawberry.field(description="Null when the customer paid nothing before.")

    @classmethod
    def from_outcome(cls, outcome: CustomerOutcome) -> SimulatedCustomer:
        currency = outcome.currency
        return cls(
            external_id=outcome.customer_key,
            name=outcome.name,
            plan_key=outcome.plan_key,
            periods=outcome.periods,
            current=money(outcome.current, currency),
            simulated=money(outcome.simulated, currency),
            difference=money(outcome.difference, currency),
            change_percent=outcome.change_percent,
        )


@strawberry.type
class SimulatedTotal:
    current: Money
    simulated: Money
    difference: Money


@strawberry.type
class ChangeBucket:
    label: str
    customers: int


@strawberry.type
class PricingSimulation:
    customers: list[SimulatedCustomer]
    totals: list[SimulatedTotal] = strawberry.field(description="Revenue per currency, now and under the draft.")
    distribution: list[ChangeBucket]
    biggest_movers: list[SimulatedCustomer]


@strawberry.type
class SimulatePricingPayload:
    simulation: PricingSimulation | None
    user_errors: list[UserError]


def simulation_of(summary: SimulationSummary) -> PricingSimulation:
    return PricingSimulation(
        customers=[SimulatedCustomer.from_outcome(o) for o in summary.outcomes],
        totals=[
            SimulatedTotal(
                current=money(current, currency),
                simulated=money(summary.simulated_by_currency[currency], currency),
                difference=money(summary.simulated_by_currency[currency] - current, currency),
            )
            for currency, current in sorted(summary.current_by_currency.items())
        ],
        distribution=[ChangeBucket(label=label, customers=count) for label, count in summary.distribution.items()],
        biggest_movers=[SimulatedCustomer.from_outcome(o) for o in summary.biggest_movers],
    )


@strawberry.type
class SimulationMutation:
    @strawberry.mutation(
        permission_classes=[requires(Capability.SIMULATE_PRICING)],
        description="Re-rate real past usage under a draft catalog; writes nothing.",
    )
    async def simulate_pricing(self, info: Info, input: SimulatePricingInput) -> SimulatePricingPayload:
        context = info.context
        now = context.now()
        end = input.to or now

        async def simulate() -> SimulationSummary:
            selection = PeriodSelection.checked(start=input.from_, end=end, last=input.periods, as_of=now)
            return await simulate_pricing(
                context.session,
                catalog_text=input.catalog,
                selection=selection,
                as_of=now,
                customer_external_ids=input.customers,
            )

        summary, errors = await run_mutation(info, simulate, commit=False)
        return SimulatePricingPayload(simulation=simulation_of(summary) if summary else None, user_errors=errors)
