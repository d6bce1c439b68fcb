"""`tally webhook …`: outbound webhook endpoints from the command line, through the same services
as the GraphQL mutations, with the same checks (and dry runs): register, list, change, switch,
rotate the secret, delete; an endpoint's deliveries, resend one, replay since a time; and send
what is due now (what `tally serve` does every second)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import JsonOption, load_settings, prepared_database, print_json, run_in_session
from ledger.errors import InvalidInput, NotFound
from notifications.models import WEBHOOK_DELIVERY_STATUSES, WebhookEndpoint
from notifications.webhook_endpoints import NO_SUCH_DELIVERY, NO_SUCH_ENDPOINT, DeliveryView

webhook_cli = typer.Typer(help="Outbound webhooks: endpoints, deliveries, resend and replay.", no_args_is_help=True)
EndpointArgument = Annotated[str, typer.Argument(help="The endpoint's id (see `tally webhook list`).")]
EventOption = Annotated[
    list[str] | None, typer.Option("--event", help="An event type to receive (repeatable; none: every type).")
]


def _uuid(value: str, message: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(message, field=field) from None


def _document(endpoint: WebhookEndpoint, *, with_secret: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "description": endpoint.description,
        "eventTypes": endpoint.event_types,
        "enabled": endpoint.enabled,
        "disabledReason": endpoint.disabled_reason,
        "previousSecretUntil": endpoint.previous_secret_until if endpoint.previous_secret else None,
        "consecutiveFailures": endpoint.consecutive_failures,
        "failingSince": endpoint.failing_since,
        "createdAt": endpoint.created_at,
    }
    if with_secret:
        document["secret"] = endpoint.secret
    return document


def _line(document: dict[str, Any]) -> str:
    types = ", ".join(document["eventTypes"]) if document["eventTypes"] else "every event"
    state = "enabled" if document["enabled"] else f"disabled ({document['disabledReason']})"
    return f"{document['id']}  {document['url']}  [{types}]  {state}"


def _delivery(view: DeliveryView) -> dict[str, Any]:
    row, last = view.delivery, view.attempts[0] if view.attempts else None
    return {
        "id": str(row.id),
        "eventId": str(view.event.id),
        "eventType": view.event.type,
        "resourceVersion": view.event.resource_version,
        "status": row.status,
        "attempts": row.attempts,
        "nextAttemptAt": row.next_attempt_at if row.status in ("pending", "sending") else None,
        "lastResponseStatus": row.last_response_status,
        "lastError": row.last_error,
        "lastLatencyMs": last.latency_ms if last else None,
        "createdAt": row.created_at,
        "deliveredAt": row.delivered_at,
    }


def _endpoint_command(
    work_on: Callable[[AsyncSession], Awaitable[WebhookEndpoint]],
    *,
    as_json: bool,
    verb: str,
    commit: bool = True,
    with_secret: bool = False,
) -> None:

    async def work(session: AsyncSession) -> dict[str, Any]:
        return _document(await work_on(session), with_secret=with_secret)

    document = run_in_session(load_settings(), work, commit=commit)
    if as_json:
        print_json(document)
    else:
        typer.echo(f"{verb} {_line(document)}")
        if with_secret:
            typer.echo(f"secret: {document['secret']}")


@webhook_cli.command("event-types")
def event_types(as_json: JsonOption = False) -> None:
    """Every event type an endpoint may receive."""
    from notifications.webhook_events import EVENT_TYPES

    if as_json:
        print_json([{"type": name, "description": text} for name, text in EVENT_TYPES.items()])
        return
    for name, text in EVENT_TYPES.items():
        typer.echo(f"{name:<26} {text}")


@webhook_cli.command("create")
def create(
    url: Annotated[str, typer.Argument(help="http:// or https://, at most 2,048 characters.")],
    event: EventOption = None,
    description: Annotated[str, typer.Option("--description", help="At most 500 characters.")] = "",
    key: Annotated[
        str | None, typer.Option("--key", help="Idempotency key: a retry returns the same endpoint.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the input; create nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Register an endpoint, enabled, and print its signing secret (whsec_…)."""
    from notifications import webhook_endpoints as endpoints

    async def work_on(session: AsyncSession) -> WebhookEndpoint:
        new = endpoints.EndpointInput(url, tuple(event) if event else None, description)
        return await endpoints.create_endpoint(session, new, idempotency_key=key, as_of=datetime.now(UTC))

    verb = "would create" if dry_run else "created"
    _endpoint_command(work_on, as_json=as_json, verb=verb, commit=not dry_run, with_secret=not dry_run)


@webhook_cli.command("list")
def list_endpoints(
    secrets: Annotated[bool, typer.Option("--secrets", help="Show each endpoint's signing secret.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Every endpoint, oldest first."""
    from notifications import webhook_endpoints as endpoints

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        return [_document(row, with_secret=secrets) for row in await endpoints.endpoints(session)]

    documents = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(documents)
        return
    for document in documents:
        typer.echo(_line(document) + (f"  {document['secret']}" if secrets else ""))
    if not documents:
        typer.echo("no webhook endpoints")


@webhook_cli.command("update")
def update(
    endpoint: EndpointArgument,
    url: Annotated[str | None, typer.Option("--url")] = None,
    event: EventOption = None,
    every_event: Annotated[bool, typer.Option("--every-event", help="Receive every type.")] = False,
    description: Annotated[str | None, typer.Option("--description")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the input; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Change an endpoint's URL, event types or description."""
    from notifications import webhook_endpoints as endpoints

    async def work_on(session: AsyncSession) -> WebhookEndpoint:
        return await endpoints.update_endpoint(
            session,
            _uuid(endpoint, NO_SUCH_ENDPOINT, "endpoint"),
            url=url,
            event_types=tuple(event) if event else None,
            every_event_type=every_event,
            description=description,
            as_of=datetime.now(UTC),
        )

    _endpoint_command(work_on, as_json=as_json, verb="would update" if dry_run else "updated", commit=not dry_run)


@webhook_cli.command("enable")
def enable(endpoint: EndpointArgument, as_json: JsonOption = False) -> None:
    """Switch an endpoint on: the deliveries that waited go at once."""
    from notifications import webhook_endpoints as endpoints

    async def work_on(session: AsyncSession) -> WebhookEndpoint:
        endpoint_id = _uuid(endpoint, NO_SUCH_ENDPOINT, "endpoint")
        return await endpoints.set_enabled(session, endpoint_id, True, as_of=datetime.now(UTC))

    _endpoint_command(work_on, as_json=as_json, verb="enabled")


@webhook_cli.command("disable")
def disable(endpoint: EndpointArgument, as_json: JsonOption = False) -> None:
    """Switch an endpoint off: nothing is sent or queued for it until it is on (then replay)."""
    from notifications import webhook_endpoints as endpoints

    async def work_on(session: AsyncSession) -> WebhookEndpoint:
        endpoint_id = _uuid(endpoint, NO_SUCH_ENDPOINT, "endpoint")
        return await endpoints.set_enabled(
            session, endpoint_id, False, as_of=datetime.now(UTC), reason="disabled by cli"
        )

    _endpoint_command(work_on, as_json=as_json, verb="disabled")


@webhook_cli.command("rotate")
def rotate(
    endpoint: EndpointArgument,
    overlap_hours: Annotated[
        int, typer.Option("--overlap-hours", help="The old secret keeps signing beside the new one this long (0-168).")
    ] = 24,
    as_json: JsonOption = False,
) -> None:
    """Give an endpoint a new signing secret, and print it."""
    from notifications import webhook_endpoints as endpoints

    async def work_on(session: AsyncSession) -> WebhookEndpoint:
        if not 0 <= overlap_hours <= 168:
            raise InvalidInput("between 0 and 168 hours", field="--overlap-hours")
        endpoint_id = _uuid(endpoint, NO_SUCH_ENDPOINT, "endpoint")
        return await endpoints.rotate_secret(
            session, endpoint_id, overlap=timedelta(hours=overlap_hours), as_of=datetime.now(UTC)
        )

    _endpoint_command(work_on, as_json=as_json, verb="rotated", with_secret=True)


@webhook_cli.command("delete")
def delete(endpoint: EndpointArgument, as_json: JsonOption = False) -> None:
    """Remove an endpoint with its delivery history (disable it to keep them)."""
    from notifications import webhook_endpoints as endpoints

    async def work(session: AsyncSession) -> str:
        endpoint_id = _uuid(endpoint, NO_SUCH_ENDPOINT, "endpoint")
        await endpoints.delete_endpoint(session, endpoint_id)
        return str(endpoint_id)

    deleted = run_in_session(load_settings(), work)
    if as_json:
        print_json({"deletedId": deleted})
    else:
        typer.echo(f"deleted {deleted}")


@webhook_cli.command("deliveries")
def deliveries(
    endpoint: EndpointArgument,
    status: Annotated[str | None, typer.Option(help=f"One of {', '.join(WEBHOOK_DELIVERY_STATUSES)}.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """An endpoint's deliveries, newest first: status, tries, the last answer and its latency."""
    from notifications import webhook_endpoints as endpoints

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        endpoint_id = _uuid(endpoint, NO_SUCH_ENDPOINT, "endpoint")
        await endpoints.endpoint(session, endpoint_id, field="endpoint")
        return [
            _delivery(view) for view in await endpoints.deliveries(session, endpoint_id, status=status, limit=limit)
        ]

    documents = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(documents)
        return
    if not documents:
        typer.echo("no deliveries")
    for document in documents:
        answer = document["lastResponseStatus"] or document["lastError"] or "-"
        latency = f"{document['lastLatencyMs']} ms" if document["lastLatencyMs"] is not None else "-"
        typer.echo(
            f"{document['createdAt'].isoformat()}  {document['status']:<9} {document['attempts']} tries  "
            f"{document['eventType']:<24} {answer}  {latency}  {document['id']}"
        )


@webhook_cli.command("resend")
def resend(
    delivery: Annotated[str, typer.Argument(help="The delivery's id (see `tally webhook deliveries`).")],
    as_json: JsonOption = False,
) -> None:
    """Send a delivered or failed delivery again now."""
    from notifications import webhook_endpoints as endpoints

    async def work(session: AsyncSession) -> dict[str, Any]:
        delivery_id = _uuid(delivery, NO_SUCH_DELIVERY, "delivery")
        await endpoints.resend_delivery(session, delivery_id, as_of=datetime.now(UTC))
        return _delivery(await endpoints.delivery_view(session, delivery_id))

    document = run_in_session(load_settings(), work)
    if as_json:
        print_json(document)
    else:
        typer.echo(f"delivery {document['id']} is {document['status']}: the sender sends it within seconds")


@webhook_cli.command("replay")
def replay(
    endpoint: EndpointArgument,
    since: Annotated[str, typer.Option("--since", help="ISO 8601 time with offset, at most 30 days back.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count the events; queue nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Queue again every event of the endpoint's types since a time."""
    from notifications import webhook_endpoints as endpoints

    async def work(session: AsyncSession) -> int:
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise InvalidInput(f"{since[:64]!r} is not an ISO 8601 time", field="--since") from None
        endpoint_id = _uuid(endpoint, NO_SUCH_ENDPOINT, "endpoint")
        return await endpoints.replay_since(session, endpoint_id, since=moment, as_of=datetime.now(UTC))

    matched = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json({"events": matched, "dryRun": dry_run})
    else:
        typer.echo(f"{matched} events {'would be' if dry_run else 'are'} queued again")


@webhook_cli.command("send")
def send(as_json: JsonOption = False) -> None:
    """Fan out new events and send every delivery due now, as `tally serve` does."""
    from app.database import create_engine, session_factory
    from app.webhook_sender import send_webhooks, webhook_sending

    settings = load_settings()
    url = prepared_database(settings)

    async def main() -> Any:
        engine = create_engine(url)
        try:
            return await send_webhooks(session_factory(engine), webhook_sending(settings), as_of=datetime.now(UTC))
        finally:
            await engine.dispose()

    report = asyncio.run(main())
    document = {
        "fannedOut": report.fanned_out,
        "delivered": report.delivered,
        "retrying": report.retrying,
        "failed": report.failed,
        "disabled": report.disabled,
    }
    if as_json:
        print_json(document)
    else:
        typer.echo(
            f"{report.fanned_out} events fanned out; {report.delivered} delivered, {report.retrying} to retry, "
            f"{report.failed} failed" + (f"; disabled {', '.join(report.disabled)}" if report.disabled else "")
        )
