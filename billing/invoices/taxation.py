"""The tax of an invoice: the seam between billing and whatever computes tax.

:func:`taxes_of` reads what decides the tax (the customer's address, tax id, exemption and
assigned rates; the catalog's current rates) and hands it to the configured
:class:`pricing.tax.TaxCalculator`. Tally's own is :func:`pricing.tax.catalog_taxes`; an external
tax provider (Stripe Tax, Avalara…) plugs in by installing another calculator with
:func:`use_tax_policy` where the app starts (``app.main.create_app`` and the CLI do it from
the settings), with no change to composing or issuing invoices. Issuing
(:func:`billing.invoices.invoicing.issue`) and the upcoming invoice both call :func:`taxes_of`, so a
preview shows the tax the invoice will carry.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from customers.repository import tax_profile
from pricing.repository import current_tax_rates
from pricing.tax import TaxBuyer, TaxCalculator, TaxLine, TaxRate, catalog_taxes


@dataclass(frozen=True)
class TaxPolicy:
    """Who sells (the seller's country decides EU reverse charge) and what computes the tax."""

    seller_country: str | None = None
    calculator: TaxCalculator = catalog_taxes


_policy = TaxPolicy()


def use_tax_policy(policy: TaxPolicy) -> None:
    """Install the policy of this process (set once at start from the settings)."""
    global _policy
    _policy = policy


def tax_policy() -> TaxPolicy:
    return _policy


async def taxes_of(
    session: AsyncSession, customer_id: uuid.UUID, currency: str, line_amounts: Sequence[int]
) -> list[TaxLine]:
    """The tax lines of an invoice of ``line_amounts`` (minor units) to the customer, now."""
    country, region, tax_id, exemption, assigned = await tax_profile(session, customer_id)
    buyer = TaxBuyer(country, region, tax_id, exemption, tuple(assigned))
    rates = [
        TaxRate(rate.key, rate.name, rate.rate, rate.inclusive, rate.country, rate.region)
        for rate in await current_tax_rates(session)
    ]
    policy = _policy
    return policy.calculator(line_amounts, currency, rates, buyer, policy.seller_country)
