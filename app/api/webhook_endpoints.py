"""GraphQL of outbound webhooks (admin only): the event types, the endpoints with their
deliveries and attempts, and the mutations that register, change, switch, rotate and delete an
endpoint, resend a delivery and replay an endpoint's events since a time. Create and update take
``dryRun`` (check everything, write nothing), as replay does (say how many events it would queue)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import Enum

import strawberry
from strawberry.types import Info

from app.api.common import Connection, UserError, connection, decode_time_cursor, page_size, run_mutation, time_cursor
from app.api.permissions import requires
from app.auth import Capability
from ledger.errors import NotFound
from notifications import webhook_endpoints as endpoints
from notifications.models import WebhookDeliveryAttempt, WebhookEndpoint
from notifications.webhook_endpoints import NO_SUCH_DELIVERY, NO_SUCH_ENDPOINT, DeliveryView, EndpointInput
from notifications.webhook_events import EVENT_TYPES

ADMIN = [requires(Capability.MANAGE_WEBHOOKS)]


@strawberry.enum
class WebhookDeliveryStatus(Enum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


@strawberry.type
class WebhookEventType:
    type: str
    description: str


@strawberry.type
class WebhookDeliveryAttemptRow:
    attempted_at: datetime
    response_status: int | None = strawberry.field(description="The HTTP status answered; null when none came.")
    error: str | None = strawberry.field(description="Why it failed: a non-2xx status, a timeout, no connection.")
    latency_ms: int
    response_excerpt: str = strawberry.field(description="The start of the answer's body (at most 1,024 characters).")

    @classmethod
    def from_model(cls, row: WebhookDeliveryAttempt) -> WebhookDeliveryAttemptRow:
        return cls(
            attempted_at=row.attempted_at,
            response_status=row.response_status,
            error=row.error,
            latency_ms=row.latency_ms,
            response_excerpt=row.response_excerpt,
        )


@strawberry.type
class WebhookDeliveryRow:
    id: strawberry.ID
    event_id: strawberry.ID = strawberry.field(description="Also the webhook-id header of every try.")
    event_type: str
    resource_type: str
    resource_id: str
    resource_version: int = strawberry.field(description="Keep the highest: deliveries may arrive in any order.")
    event_created_at: datetime
    status: WebhookDeliveryStatus
    attempts: int = strawberry.field(description="Tries since it was queued (or resent).")
    next_attempt_at: datetime | None = strawberry.field(description="When it is tried next; null once settled.")
    last_attempt_at: datetime | None
    last_response_status: int | None
    last_error: str | None
    last_latency_ms: int | None
    last_response_excerpt: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempt_history: list[WebhookDeliveryAttemptRow] = strawberry.field(description="Every try, newest first.")

    @classmethod
    def from_view(cls, view: DeliveryView) -> WebhookDeliveryRow:
        row, event = view.delivery, view.event
        last = view.attempts[0] if view.attempts else None
        return cls(
            id=strawberry.ID(str(row.id)),
            event_id=strawberry.ID(str(event.id)),
            event_type=event.type,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            resource_version=event.resource_version,
            event_created_at=event.created_at,
            status=WebhookDeliveryStatus(row.status),
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status in ("pending", "sending") else None,
            last_attempt_at=row.last_attempt_at,
            last_response_status=row.last_response_status,
            last_error=row.last_error,
            last_latency_ms=last.latency_ms if last else None,
            last_response_excerpt=last.response_excerpt if last else None,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            attempt_history=[WebhookDeliveryAttemptRow.from_model(attempt) for attempt in view.attempts],
        )


@strawberry.type
class WebhookDeliveryCounts:
    pending: int
    sending: int
    delivered: int
    failed: int


@strawberry.type
class WebhookEndpointNode:
    id: strawberry.ID
    url: str
    description: str
    event_types: list[str] | None = strawberry.field(description="The types it receives; null for every type.")
    enabled: bool
    disabled_reason: str | None
    secret: str = strawberry.field(description="Signs every delivery (Standard Webhooks, whsec_…).")
    previous_secret_until: datetime | None = strawberry.field(
        description="After a rotation, the old secret signs too (a second v1 signature) until then."
    )
    consecutive_failures: int = strawberry.field(description="Attempts failed since the last success.")
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    delivery_counts: WebhookDeliveryCounts | None = strawberry.field(
        description="Deliveries in each status (on the list of endpoints)."
    )

    @strawberry.field(description="Its deliveries, newest first, in one status or any.")
    async def deliveries(
        self,
        info: Info,
        status: WebhookDeliveryStatus | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[WebhookDeliveryRow]:
        limit = page_size(first, default=50, maximum=info.context.settings.page_size_max)
        position = decode_time_cursor(after)
        before = None
        if position is not None:
            try:
                before = (position[0], uuid.UUID(position[1]))
            except ValueError:
                before = None
        views = await endpoints.deliveries(
            info.context.session,
            uuid.UUID(str(self.id)),
            status=status.value if status else None,
            before=before,
            limit=limit + 1,
        )
        return connection(
            views,
            limit,
            WebhookDeliveryRow.from_view,
            lambda view: time_cursor(view.delivery.created_at, view.delivery.id),
        )

    @classmethod
    def from_model(cls, row: WebhookEndpoint, counts: dict[str, int] | None = None) -> WebhookEndpointNode:
        return cls(
            id=strawberry.ID(str(row.id)),
            url=row.url,
            description=row.description,
            event_types=list(row.event_types) if row.event_types is not None else None,
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            secret=row.secret,
            previous_secret_until=row.previous_secret_until if row.previous_secret else None,
            consecutive_failures=row.consecutive_failures,
            failing_since=row.failing_since,
            created_at=row.created_at,
            updated_at=row.updated_at,
            delivery_counts=WebhookDeliveryCounts(
                pending=counts.get("pending", 0),
                sending=counts.get("sending", 0),
                delivered=counts.get("delivered", 0),
                failed=counts.get("failed", 0),
            )
            if counts is not None
            else None,
        )


def _id(value: strawberry.ID, *, message: str = NO_SUCH_ENDPOINT, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(message, field=field) from None


@strawberry.type
class WebhooksQuery:
    @strawberry.field(permission_classes=ADMIN, description="Every type an endpoint may subscribe to.")
    def webhook_event_types(self) -> list[WebhookEventType]:
        return [WebhookEventType(type=name, description=text) for name, text in EVENT_TYPES.items()]

    @strawberry.field(permission_classes=ADMIN, description="Every webhook endpoint, oldest first, with counts.")
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpointNode]:
        rows = await endpoints.endpoints(info.context.session)
        counts = await endpoints.delivery_counts(info.context.session, [row.id for row in rows])
        return [WebhookEndpointNode.from_model(row, counts[row.id]) for row in rows]

    @strawberry.field(permission_classes=ADMIN, description="One webhook endpoint, with its deliveries.")
    async def webhook_endpoint(self, info: Info, id: strawberry.ID) -> WebhookEndpointNode | None:
        try:
            endpoint_id = uuid.UUID(str(id))
        except ValueError:
            return None
        found = await endpoints.endpoint_or_none(info.context.session, endpoint_id)
        if found is None:
            return None
        counts = await endpoints.delivery_counts(info.context.session, [found.id])
        return WebhookEndpointNode.from_model(found, counts[found.id])


@strawberry.input
class CreateWebhookEndpointInput:
    url: str = strawberry.field(description="http:// or https://, at most 2,048 characters.")
    event_types: list[str] | None = strawberry.field(default=None, description="Null for every type.")
    description: str = ""
    idempotency_key: str | None = strawberry.field(
        default=None, description="A retried create with the same key returns the same endpoint."
    )
    dry_run: bool = strawberry.field(default=False, description="Check the input; create nothing.")


@strawberry.input
class UpdateWebhookEndpointInput:
    id: strawberry.ID
    url: str | None = None
    event_types: list[str] | None = None
    every_event_type: bool = strawberry.field(default=False, description="Subscribe to every type.")
    description: str | None = None
    dry_run: bool = strawberry.field(default=False, description="Check the input; change nothing.")


@strawberry.input
class WebhookEndpointIdInput:
    id: strawberry.ID


@strawberry.input
class RotateWebhookSecretInput:
    id: strawberry.ID
    overlap_hours: int = strawberry.field(
        default=24, description="The old secret keeps signing beside the new one this long (0 to 168)."
    )


@strawberry.input
class ResendWebhookDeliveryInput:
    id: strawberry.ID


@strawberry.input
class ReplayWebhookEventsInput:
    endpoint_id: strawberry.ID
    since: datetime = strawberry.field(description="Every event of its types since then (at most 30 days back).")
    dry_run: bool = strawberry.field(default=False, description="Count the events; queue nothing.")


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpointNode | None
    dry_run: bool
    user_errors: list[UserError]


@strawberry.type
class DeleteWebhookEndpointPayload:
    deleted_id: strawberry.ID | None
    user_errors: list[UserError]


@strawberry.type
class WebhookDeliveryPayload:
    delivery: WebhookDeliveryRow | None
    user_errors: list[UserError]


@strawberry.type
class ReplayWebhookEventsPayload:
    events: int | None = strawberry.field(
        description="How many events of its types since then were (or would be) queued."
    )
    dry_run: bool
    user_errors: list[UserError]


async def _endpoint_payload(
    info: Info, action: Callable[[], Awaitable[WebhookEndpoint]], *, dry_run: bool = False
) -> WebhookEndpointPayload:
    """Run ``action`` at the request boundary; the endpoint is read inside the transaction (a dry
    run's rollback would expire it)."""

    async def read() -> WebhookEndpointNode:
        return WebhookEndpointNode.from_model(await action())

    node, errors = await run_mutation(info, read, commit=not dry_run)
    return WebhookEndpointPayload(endpoint=node, dry_run=dry_run, user_errors=errors)


@strawberry.type
class WebhooksMutation:
    @strawberry.mutation(
        permission_classes=ADMIN, description="Register a webhook endpoint, enabled, with a new secret."
    )
    async def create_webhook_endpoint(self, info: Info, input: CreateWebhookEndpointInput) -> WebhookEndpointPayload:
        context = info.context

        async def create() -> WebhookEndpoint:
            new = EndpointInput(
                url=input.url,
                event_types=tuple(input.event_types) if input.event_types is not None else None,
                description=input.description,
            )
            return await endpoints.create_endpoint(
                context.session, new, idempotency_key=input.idempotency_key, as_of=context.now()
            )

        return await _endpoint_payload(info, create, dry_run=input.dry_run)

    @strawberry.mutation(permission_classes=ADMIN, description="Change an endpoint's URL, types or description.")
    async def update_webhook_endpoint(self, info: Info, input: UpdateWebhookEndpointInput) -> WebhookEndpointPayload:
        context = info.context

        async def update() -> WebhookEndpoint:
            return await endpoints.update_endpoint(
                context.session,
                _id(input.id),
                url=input.url,
                event_types=tuple(input.event_types) if input.event_types is not None else None,
                every_event_type=input.every_event_type,
                description=input.description,
                as_of=context.now(),
            )

        return await _endpoint_payload(info, update, dry_run=input.dry_run)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Switch an endpoint on: its run of failures starts again and the deliveries that waited go now.",
    )
    async def enable_webhook_endpoint(self, info: Info, input: WebhookEndpointIdInput) -> WebhookEndpointPayload:
        context = info.context

        async def enable() -> WebhookEndpoint:
            return await endpoints.set_enabled(context.session, _id(input.id), True, as_of=context.now())

        return await _endpoint_payload(info, enable)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Switch an endpoint off: nothing is sent or queued for it until it is on (then replay).",
    )
    async def disable_webhook_endpoint(self, info: Info, input: WebhookEndpointIdInput) -> WebhookEndpointPayload:
        context = info.context

        async def disable() -> WebhookEndpoint:
            reason = f"disabled by {context.viewer.actor}"
            return await endpoints.set_enabled(
                context.session, _id(input.id), False, as_of=context.now(), reason=reason
            )

        return await _endpoint_payload(info, disable)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="A new secret; the old one keeps signing beside it (a second signature) for overlapHours.",
    )
    async def rotate_webhook_endpoint_secret(
        self, info: Info, input: RotateWebhookSecretInput
    ) -> WebhookEndpointPayload:
        context = info.context

        async def rotate() -> WebhookEndpoint:
            return await endpoints.rotate_secret(
                context.session, _id(input.id), overlap=timedelta(hours=input.overlap_hours), as_of=context.now()
            )

        return await _endpoint_payload(info, rotate)

    @strawberry.mutation(
        permission_classes=ADMIN, description="Remove an endpoint and its delivery history (disable it to keep them)."
    )
    async def delete_webhook_endpoint(self, info: Info, input: WebhookEndpointIdInput) -> DeleteWebhookEndpointPayload:
        context = info.context

        async def delete() -> uuid.UUID:
            endpoint_id = _id(input.id)
            await endpoints.delete_endpoint(context.session, endpoint_id)
            return endpoint_id

        deleted, errors = await run_mutation(info, delete)
        return DeleteWebhookEndpointPayload(
            deleted_id=strawberry.ID(str(deleted)) if deleted else None, user_errors=errors
        )

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Send a delivered or failed delivery again now; one still waiting is returned as it is.",
    )
    async def resend_webhook_delivery(self, info: Info, input: ResendWebhookDeliveryInput) -> WebhookDeliveryPayload:
        context = info.context

        async def resend() -> WebhookDeliveryRow:
            delivery_id = _id(input.id, message=NO_SUCH_DELIVERY)
            await endpoints.resend_delivery(context.session, delivery_id, as_of=context.now())
            return WebhookDeliveryRow.from_view(await endpoints.delivery_view(context.session, delivery_id))

        row, errors = await run_mutation(info, resend)
        return WebhookDeliveryPayload(delivery=row, user_errors=errors)

    @strawberry.mutation(
        permission_classes=ADMIN,
        description="Queue again every event of the endpoint's types since a time (waiting ones stay as they are).",
    )
    async def replay_webhook_events(self, info: Info, input: ReplayWebhookEventsInput) -> ReplayWebhookEventsPayload:
        context = info.context

        async def replay() -> int:
            return await endpoints.replay_since(
                context.session, _id(input.endpoint_id, field="endpointId"), since=input.since, as_of=context.now()
            )

        matched, errors = await run_mutation(info, replay, commit=not input.dry_run)
        return ReplayWebhookEventsPayload(events=matched, dry_run=input.dry_run, user_errors=errors)
