"""GraphQL of the Plans page: every plan version with the customers on it
(:mod:`customers.plan_subscribers`). Staff only: it names every customer."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from app.api.catalog import Plan
from app.api.permissions import requires
from app.auth import Capability
from customers.plan_subscribers import plan_versions_in_use


@strawberry.type(description="A customer on a plan version.")
class PlanSubscriber:
    customer_id: strawberry.ID
    external_id: str
    name: str


@strawberry.type(description="A plan version and who is on it now (subscriptions not ended, paused ones included).")
class PlanVersionInUse:
    plan: Plan
    newest: bool = strawberry.field(description="The version new subscriptions get; older ones keep their customers.")
    subscriptions: int
    subscribers: list[PlanSubscriber] = strawberry.field(description="By name; a customer once per subscription.")


@strawberry.type
class PlanSubscribersQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_CUSTOMERS)],
        description="Every plan version, newest first per plan, with the customers on it. Staff only.",
    )
    async def plan_versions(self, info: Info) -> list[PlanVersionInUse]:
        context = info.context
        if not context.viewer.is_staff:
            raise GraphQLError(
                "Forbidden: this list names every customer; staff only.", extensions={"code": "FORBIDDEN"}
            )
        found = []
        for version in await plan_versions_in_use(context.session, as_of=context.now()):
            plan_row, version_row = await context.loaders.plan_version.load(version.version_id)
            found.append(
                PlanVersionInUse(
                    plan=Plan.from_model(plan_row, version_row),
                    newest=version.newest,
                    subscriptions=len(version.subscribers),
                    subscribers=[
                        PlanSubscriber(
                            customer_id=strawberry.ID(str(s.customer_id)), external_id=s.external_id, name=s.name
                        )
                        for s in version.subscribers
                    ],
                )
            )
        return found
