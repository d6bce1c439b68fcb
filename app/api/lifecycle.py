"""GraphQL of a subscription's lifecycle as the customer types read it: its status and the audit of
its cancels, resumes, pauses and unpauses. The mutations, whose payloads name the subscription, sit
above the customer types in :mod:`app.api.lifecycle_mutations`."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from app.api.billing import Proration, proration_of
from app.api.common import page_size
from app.api.scope import STAFF_ONLY, staff_only
from customers.lifecycle import subscription_events
from customers.models import SubscriptionEvent as SubscriptionEventRow


@strawberry.enum(description="Where a subscription stands now.")
class SubscriptionStatus(Enum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    CANCELED = "CANCELED"


@strawberry.enum
class CancelTiming(Enum):
    IMMEDIATELY = "IMMEDIATELY"
    PERIOD_END = "PERIOD_END"


@strawberry.enum
class SubscriptionEventKind(Enum):
    CANCEL = "CANCEL"
    RESUME = "RESUME"
    PAUSE = "PAUSE"
    UNPAUSE = "UNPAUSE"


@strawberry.type(description="The audit of a cancel, resume, pause or unpause: who, why, when, at what cost.")
class SubscriptionEvent:
    id: strawberry.ID
    kind: SubscriptionEventKind
    timing: CancelTiming | None = strawberry.field(description="A cancel's.")
    status: str = strawberry.field(
        description="applied, scheduled (a cancel at the period's end) or revoked (resumed before it)."
    )
    effective_at: datetime
    requested_at: datetime
    reason: str | None
    actor: str | None = staff_only("Who asked for it. " + STAFF_ONLY)
    prorations: list[Proration]

    @classmethod
    def from_model(cls, row: SubscriptionEventRow, currency: str, as_of: datetime) -> SubscriptionEvent:
        came_into_effect = row.status == "scheduled" and row.effective_at <= as_of
        return cls(
            id=strawberry.ID(str(row.id)),
            kind=SubscriptionEventKind(row.kind),
            timing=CancelTiming(row.timing) if row.timing else None,
            status="applied" if came_into_effect else row.status,
            effective_at=row.effective_at,
            requested_at=row.requested_at,
            reason=row.reason,
            actor=row.actor,
            prorations=[proration_of(p["description"], Decimal(p["amount"]), currency) for p in row.prorations],
        )


async def resolve_subscription_events(
    root: strawberry.Parent[Any], info: Info, first: int = 20
) -> list[SubscriptionEvent]:
    rows = await subscription_events(info.context.session, root.row_id, limit=page_size(first, default=20, maximum=100))
    return [SubscriptionEvent.from_model(row, root.currency, info.context.now()) for row in rows]
