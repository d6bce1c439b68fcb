"""GraphQL of the audit log: who did what to money or a customer, when, and what it changed."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import strawberry
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info

from app.api.common import Connection, connection, decode_cursor, encode_cursor, page_size
from app.api.permissions import requires
from app.api.scope import find_visible_customer, parse_customer_id
from app.auth import Capability
from ledger import audit
from ledger.models import AuditEntry as AuditRow


@strawberry.type(description="One action on money or a customer, recorded in the action's own transaction.")
class AuditEntry:
    id: strawberry.ID
    recorded_at: datetime
    actor: str = strawberry.field(description="Who: `staff:<email>`, `token:<prefix>`, `cli`, or a job.")
    action: str = strawberry.field(description="What: `credits.grant`, `credits.void`, `promotion.update`…")
    subject_type: str
    subject_id: str = strawberry.field(description="The grant's or transaction's id, a promotion's code…")
    customer_id: strawberry.ID | None
    before: JSON | None = strawberry.field(description="The fields it changed, as they were (null: it created).")
    after: JSON | None = strawberry.field(description="The same fields after the action.")

    @classmethod
    def from_model(cls, row: AuditRow) -> AuditEntry:
        return cls(
            id=strawberry.ID(str(row.id)),
            recorded_at=row.recorded_at,
            actor=row.actor,
            action=row.action,
            subject_type=row.subject_type,
            subject_id=row.subject_id,
            customer_id=strawberry.ID(str(row.customer_id)) if row.customer_id else None,
            before=cast(JSON, row.before),
            after=cast(JSON, row.after),
        )


@strawberry.input
class AuditLogFilter:
    actor: str | None = strawberry.field(default=None, description="Part of the actor, any case.")
    action: str | None = strawberry.field(default=None, description="An action, or its start (`credits.`).")
    customer: str | None = strawberry.field(default=None, description="The customer's id or external id.")
    since: datetime | None = None
    until: datetime | None = strawberry.field(default=None, description="Exclusive.")


@strawberry.type
class AuditQuery:
    @strawberry.field(
        permission_classes=[requires(Capability.READ_AUDIT_LOG)],
        description="The audit log, newest first (staff only).",
    )
    async def audit_log(
        self, info: Info, filter: AuditLogFilter | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[AuditEntry]:
        context = info.context
        wanted = filter or AuditLogFilter()
        limit = page_size(first, default=50, maximum=context.settings.page_size_max)
        customer_id = None
        if wanted.customer:
            by_id = parse_customer_id(wanted.customer)
            found = await find_visible_customer(
                context.session,
                context.viewer,
                customer_id=by_id,
                external_id=None if by_id else wanted.customer.strip(),
            )
            if found is None:
                return connection([], limit, AuditEntry.from_model, lambda row: "")
            customer_id = found.id
        before_id = None
        if after is not None:
            values = decode_cursor(after)
            if not values or not isinstance(values[0], int):
                raise GraphQLError("after: not a cursor returned by this API")
            before_id = values[0]
        rows = await audit.entries(
            context.session,
            audit.AuditFilter(
                actor=wanted.actor,
                action=wanted.action,
                customer_id=customer_id,
                since=wanted.since,
                until=wanted.until,
            ),
            before_id=before_id,
            limit=limit + 1,
        )
        return connection(rows, limit, AuditEntry.from_model, lambda row: encode_cursor(row.id))
