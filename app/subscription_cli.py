"""`tally subscription create|list|cancel|resume|pause|unpause EXTERNAL_ID`: a customer's
subscriptions from the command line, through the same services as the API (the actor is ``cli``).
A customer with several subscriptions names the one to change with ``--subscription ID``."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import JsonOption, fail, load_settings, now, parse_as_of, print_json, run_in_session
from billing.invoice_numbers import invoice_number
from billing.subscriptions.lifecycle import LifecycleOutcome, change_lifecycle
from customers import service as customers
from customers.errors import CustomerNotFound
from customers.lifecycle import CANCEL, PAUSE, RESUME, UNPAUSE, LifecycleRequest, subscription_status
from customers.models import Subscription
from ledger.money import round_to_minor, to_major

subscription_cli = typer.Typer(
    help="A customer's subscriptions: add one, list them, cancel, resume, pause, unpause.", no_args_is_help=True
)

DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print what it would post; change nothing.")]
KeyOption = Annotated[
    str | None, typer.Option("--key", help="Idempotency key: rerun with the same key to retry safely (default: new).")
]
SubscriptionOption = Annotated[
    str | None,
    typer.Option(
        "--subscription", help="Which subscription (its id, from `tally subscription list`): needed when several."
    ),
]
AtOption = Annotated[
    str | None,
    typer.Option(
        "--at", help="When (ISO 8601 with offset), inside the current period, not in the future; default now."
    ),
]


def subscription_id_option(value: str | None) -> uuid.UUID | None:
    """The ``--subscription`` option: a subscription's id (``tally subscription list``), or None."""

    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"--subscription: {value!r} is not a subscription id (see `tally subscription list`)")


class Timing(StrEnum):
    immediately = "immediately"
    period_end = "period-end"


def _request(
    external_id: str,
    kind: str,
    key: str | None,
    *,
    at: str | None = None,
    timing: str | None = None,
    reason: str | None = None,
    subscription: str | None = None,
) -> LifecycleRequest:

    moment = parse_as_of(at) if at is not None else None
    request = LifecycleRequest(
        customer_id=uuid.UUID(int=0),  # looked up in the transaction
        kind=kind,
        idempotency_key=key or str(uuid.uuid4()),
        actor="cli",
        timing=timing,
        at=moment,
        reason=reason,
        subscription_id=subscription_id_option(subscription),
    )
    return request


def _report(outcome: LifecycleOutcome, external_id: str, kind: str, dry_run: bool) -> dict[str, Any]:

    currency = outcome.currency
    final = outcome.final_invoice
    subscription = outcome.subscription
    return {
        "customer": external_id,
        "action": kind.lower(),
        "dryRun": dry_run,
        "status": subscription_status(subscription, now()),
        "effectiveAt": outcome.effective_at,
        "cancelAt": subscription.cancel_at,
        "pausedAt": subscription.paused_at,
        "prorations": [
            {"description": p.description, "amount": str(to_major(round_to_minor(p.amount, currency), currency))}
            for p in outcome.prorations
        ],
        "finalInvoice": None
        if final is None
        else {
            "periodStart": final.draft.period_start,
            "periodEnd": final.draft.period_end,
            "lines": [
                {
                    "kind": line.kind,
                    "description": line.description,
                    "amount": str(to_major(line.amount(currency), currency)),
                }
                for line in final.draft.lines
            ],
            "total": str(to_major(final.total, currency)),
            "creditsApplied": str(to_major(final.credits_applied, currency)),
        },
        "issuedInvoices": [invoice_number(invoice.number) for invoice in outcome.issued],
        "currency": currency,
    }


def _run(external_id: str, request: LifecycleRequest, *, dry_run: bool, as_json: bool) -> None:

    settings = load_settings()

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await customers.get_customer(session, external_id=external_id)
        if customer is None:
            raise CustomerNotFound(field="externalId")
        outcome = await change_lifecycle(
            session,
            replace(request, customer_id=customer.id),
            as_of=now(),
            late_window=timedelta(days=settings.event_max_age_days),
            backdate_limit=timedelta(days=settings.backdate_max_days),
            dry_run=dry_run,
        )
        return _report(outcome, external_id, request.kind, dry_run)

    report = run_in_session(settings, work, commit=not dry_run)
    if as_json:
        print_json(report)
        return
    prefix = "Would " if dry_run else ""
    effective = report["effectiveAt"].isoformat()
    typer.echo(f"{prefix}{report['action']} {external_id}: effective {effective}, now {report['status']}")
    for proration in report["prorations"]:
        typer.echo(f"  {proration['description']}: {proration['amount']} {report['currency']}")
    final = report["finalInvoice"]
    if final is not None:
        issued = ", ".join(report["issuedInvoices"]) or (
            "not issued (dry run)" if dry_run else "issued at the period's end"
        )
        typer.echo(f"Final invoice ({issued}):")
        for line in final["lines"]:
            typer.echo(f"  {line['description']}: {line['amount']} {report['currency']}")
        typer.echo(f"  total {final['total']} {report['currency']}, credits applied {final['creditsApplied']}")


@subscription_cli.command("cancel")
def cancel(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    timing: Annotated[
        Timing, typer.Option("--timing", help="immediately (a final invoice now) or period-end (revocable until then).")
    ],
    reason: Annotated[str | None, typer.Option("--reason", help="Why; kept in the audit.")] = None,
    at: AtOption = None,
    key: KeyOption = None,
    subscription: SubscriptionOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """End a subscription now (its final invoice issued at once) or at the end of its period."""
    value = "IMMEDIATELY" if timing == Timing.immediately else "PERIOD_END"
    request = _request(external_id, CANCEL, key, at=at, timing=value, reason=reason, subscription=subscription)
    _run(external_id, request, dry_run=dry_run, as_json=as_json)


@subscription_cli.command("resume")
def resume(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    key: KeyOption = None,
    subscription: SubscriptionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Undo a cancel scheduled for the period's end."""
    request = _request(external_id, RESUME, key, subscription=subscription)
    _run(external_id, request, dry_run=False, as_json=as_json)


@subscription_cli.command("pause")
def pause(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    at: AtOption = None,
    key: KeyOption = None,
    subscription: SubscriptionOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pause: no base fee while paused (the unused part credited), entitlements refused."""
    request = _request(external_id, PAUSE, key, at=at, subscription=subscription)
    _run(external_id, request, dry_run=dry_run, as_json=as_json)


@subscription_cli.command("unpause")
def unpause(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    at: AtOption = None,
    key: KeyOption = None,
    subscription: SubscriptionOption = None,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Unpause: the rest of the period's base fee is charged."""
    request = _request(external_id, UNPAUSE, key, at=at, subscription=subscription)
    _run(external_id, request, dry_run=dry_run, as_json=as_json)


def _listed(subscription: Subscription, plans: dict[uuid.UUID, str]) -> dict[str, Any]:

    return {
        "id": str(subscription.id),
        "plan": plans[subscription.id],
        "status": subscription_status(subscription, now()),
        "startedAt": subscription.started_at,
        "cancelAt": subscription.cancel_at,
        "invoicedThrough": subscription.invoiced_through,
    }


@subscription_cli.command("create")
def create(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    plan: Annotated[str, typer.Option("--plan", help="The plan's key: its newest version is subscribed to.")],
    start: Annotated[
        str | None, typer.Option("--start", help="When it starts (ISO 8601 with offset); default now.")
    ] = None,
    trial_days: Annotated[int | None, typer.Option("--trial-days", help="Days of trial; default the plan's.")] = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a subscription to an existing customer: another product, or an add-on (a plan with no
    base fee). Refused when its plan charges a meter another of their subscriptions charges. Its
    invoices are its own; its opening invoice is issued by the next billing run."""

    settings = load_settings()
    started_at = parse_as_of(start) if start is not None else None
    idempotency_key = key or str(uuid.uuid4())

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer = await customers.get_customer(session, external_id=external_id)
        if customer is None:
            raise CustomerNotFound(field="externalId")
        new = customers.NewSubscription(
            customer.id, plan, idempotency_key, started_at=started_at, trial_days=trial_days
        )
        bounds = customers.StartBounds(
            backdate=timedelta(days=settings.backdate_max_days), ahead=timedelta(days=settings.start_ahead_max_days)
        )
        subscription = await customers.add_subscription(session, new, as_of=now(), start_bounds=bounds)
        return {"customer": external_id, **_listed(subscription, {subscription.id: plan})}

    report = run_in_session(settings, work)
    if as_json:
        print_json(report)
        return
    typer.echo(
        f"{external_id}: subscribed to {plan} from {report['startedAt'].isoformat()} (subscription {report['id']})"
    )


@subscription_cli.command("list")
def list_subscriptions(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    as_json: JsonOption = False,
) -> None:
    """The customer's subscriptions, the primary one first, with their ids."""
    from pricing.service import plan_of_version

    settings = load_settings()

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        customer = await customers.get_customer(session, external_id=external_id)
        if customer is None:
            raise CustomerNotFound(field="externalId")
        theirs = (await customers.all_subscriptions_of(session, [customer.id]))[customer.id]
        plans = {s.id: (await plan_of_version(session, s.plan_version_id)).key for s in theirs}
        return [_listed(subscription, plans) for subscription in theirs]

    found = run_in_session(settings, work, commit=False)
    if as_json:
        print_json(found)
        return
    for row in found:
        ends = f", ends {row['cancelAt'].isoformat()}" if row["cancelAt"] else ""
        typer.echo(f"{row['id']}  {row['plan']}  {row['status']}  from {row['startedAt'].isoformat()}{ends}")
