"""`tally interim list|check`: threshold invoicing from the command line. ``list`` shows a
customer's interim invoices and where each subscription stands against its plan's threshold;
``check`` runs the check the roller runs after each roll-up (issuing what is due, never twice)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import JsonOption, customer_id_of, load_settings, prepared_database, print_json, run_in_session
from billing.invoice_numbers import invoice_number

interim_cli = typer.Typer(
    help="Threshold invoicing: interim invoices of a period's usage so far.", no_args_is_help=True
)


def _invoice(invoice: Any) -> dict[str, Any]:
    from ledger.money import to_major

    return {
        "number": invoice_number(invoice.number),
        "interimSequence": invoice.interim_sequence,
        "periodStart": invoice.period_start,
        "periodEnd": invoice.period_end,
        "issuedAt": invoice.issued_at,
        "total": str(to_major(invoice.total, invoice.currency)),
        "currency": invoice.currency,
        "status": invoice.status,
    }


@interim_cli.command("list")
def interim_list(
    external_id: Annotated[str, typer.Argument(metavar="EXTERNAL_ID", help="The customer's external id.")],
    as_json: JsonOption = False,
) -> None:
    """A customer's interim invoices, newest first, and each subscription's usage not billed yet
    against its plan's threshold."""
    from billing.invoices import service as billing
    from billing.invoices.threshold_invoicing import INTERIM, unbilled_usage
    from customers.service import all_subscriptions_of
    from ledger.money import to_major

    async def work(session: AsyncSession) -> dict[str, Any]:
        customer_id = await customer_id_of(session, external_id)
        invoices = await billing.invoices(session, customer_id, limit=1000)
        standings = []
        for subscription in (await all_subscriptions_of(session, [customer_id]))[customer_id]:
            standing = await unbilled_usage(session, subscription, as_of=datetime.now(UTC))
            if standing is not None:
                standings.append(
                    {
                        "subscriptionId": str(subscription.id),
                        "periodStart": standing.period_start,
                        "periodEnd": standing.period_end,
                        "unbilled": str(to_major(standing.unbilled, standing.currency)),
                        "threshold": str(to_major(standing.threshold, standing.currency)),
                        "currency": standing.currency,
                    }
                )
        return {
            "invoices": [_invoice(invoice) for invoice in invoices if invoice.kind == INTERIM],
            "thresholds": standings,
        }

    document = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(document)
        return
    if not document["invoices"]:
        typer.echo(f"{external_id} has no interim invoices")
    for invoice in document["invoices"]:
        typer.echo(
            f"{invoice['number']}  interim {invoice['interimSequence']} of {invoice['periodStart']:%Y-%m-%d} to "
            f"{invoice['periodEnd']:%Y-%m-%d}  {invoice['total']} {invoice['currency']}  {invoice['status']}"
        )
    for standing in document["thresholds"]:
        typer.echo(
            f"unbilled usage {standing['unbilled']} of a {standing['threshold']} {standing['currency']} threshold "
            f"({standing['periodStart']:%Y-%m-%d} to {standing['periodEnd']:%Y-%m-%d})"
        )


@interim_cli.command("check")
def interim_check(as_json: JsonOption = False) -> None:
    """Issue every interim invoice due now, as the roller does after each roll-up; safe to run
    twice or beside a running server: nothing is issued twice."""
    from app.database import create_engine, session_factory
    from app.threshold_run import invoice_thresholds

    settings = load_settings()
    url = prepared_database(settings)

    async def main() -> list[Any]:
        engine = create_engine(url)
        try:
            return await invoice_thresholds(session_factory(engine), settings, as_of=datetime.now(UTC))
        finally:
            await engine.dispose()

    issued = [_invoice(invoice) for invoice in asyncio.run(main())]
    if as_json:
        print_json(issued)
        return
    typer.echo(f"{len(issued)} interim invoice(s) issued")
    for invoice in issued:
        typer.echo(
            f"{invoice['number']}  interim {invoice['interimSequence']}  {invoice['total']} {invoice['currency']}"
        )
