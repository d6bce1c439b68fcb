"""Tax rates assigned to a customer explicitly, instead of the rates of their address.

Assigning replaces the customer's whole set (an empty set goes back to their address), so a
retried request leaves the same state: no idempotency key is needed. Every key must name a tax
rate of the catalog; nothing is written otherwise. The customer row is locked while the set is
replaced, so two concurrent assignments apply one after the other, never mixed.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import repository
from customers.errors import CustomerNotFound, InvalidInput, UnknownTaxRate
from pricing.catalog import KEY_PATTERN
from pricing.repository import current_tax_rates

MAX_ASSIGNED_RATES = 10  # federal, state, county, city… and a margin; more is a mistake


async def assign_tax_rates(
    session: AsyncSession, customer_id: uuid.UUID, keys: list[str], *, as_of: datetime, dry_run: bool = False
) -> list[str]:
    """Set the customer's assigned tax rates to ``keys`` (in order); return them."""
    if len(keys) > MAX_ASSIGNED_RATES:
        raise InvalidInput(f"at most {MAX_ASSIGNED_RATES} tax rates", field="taxRateKeys")
    if len(set(keys)) != len(keys):
        raise InvalidInput("names a tax rate twice", field="taxRateKeys")
    known = {rate.key for rate in await current_tax_rates(session)}
    for key in keys:
        if not KEY_PATTERN.match(key) or key not in known:
            raise UnknownTaxRate(f"no tax rate {key[:64]!r} in the catalog", field="taxRateKeys")
    customer = await repository.lock_customer(session, customer_id)
    if customer is None:
        raise CustomerNotFound()
    if not dry_run:
        await repository.replace_tax_rates(session, customer_id, keys, as_of=as_of)
    return keys
