"""`tally tax`: the catalog's tax rates and the rates assigned to a customer, through the same
service as the assignTaxRates mutation, with the same checks and dry run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlmodel.ext.asyncio.session import AsyncSession

from app.cli_support import JsonOption, load_settings, print_json, run_in_session

tax_cli = typer.Typer(help="Tax rates: list them, assign them to a customer.", no_args_is_help=True)


@tax_cli.command("rates")
def tax_rates(as_json: JsonOption = False) -> None:
    """The catalog's tax rates, in their current versions."""
    from ledger.money import plain_decimal
    from pricing.repository import current_tax_rates

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        return [
            {
                "key": rate.key,
                "name": rate.name,
                "rate": str(plain_decimal(rate.rate)),
                "inclusive": rate.inclusive,
                "country": rate.country,
                "region": rate.region,
                "version": rate.version,
            }
            for rate in await current_tax_rates(session)
        ]

    rates = run_in_session(load_settings(), work, commit=False)
    if as_json:
        print_json(rates)
        return
    for rate in rates:
        where = f"{rate['country']}-{rate['region']}" if rate["region"] else rate["country"]
        kind = "inclusive" if rate["inclusive"] else "exclusive"
        typer.echo(f"{rate['key']}: {rate['name']} {rate['rate']} % {kind}, {where} (version {rate['version']})")


@tax_cli.command("assign")
def tax_assign(
    external_id: Annotated[str, typer.Argument(help="The customer's external id.")],
    keys: Annotated[
        list[str] | None, typer.Argument(help="Tax rate keys, in order; none: back to the customer's address.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the keys; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Tax a customer at these rates instead of their address's (replaces their assigned rates)."""
    from customers import service as customers
    from customers.errors import CustomerNotFound
    from customers.tax_rates import assign_tax_rates

    async def work(session: AsyncSession) -> list[str]:
        customer = await customers.get_customer(session, external_id=external_id)
        if customer is None:
            raise CustomerNotFound(field="customer")
        return await assign_tax_rates(session, customer.id, list(keys or []), as_of=datetime.now(UTC), dry_run=dry_run)

    assigned = run_in_session(load_settings(), work, commit=not dry_run)
    if as_json:
        print_json({"customer": external_id, "taxRateKeys": assigned, "dryRun": dry_run})
        return
    what = ", ".join(assigned) if assigned else "none (the rates of their address)"
    typer.echo(f"{'would assign' if dry_run else 'assigned'} to {external_id}: {what}")
