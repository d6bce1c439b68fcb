"""The refusals of top-ups, the credit balance and spend authorizations, each with its stable code
(part of the public contract). A body that is not a request is :class:`metering.errors.InvalidBody`;
an amount in another currency, :class:`ledger.errors.CurrencyMismatch`."""

from __future__ import annotations

from ledger.errors import InvalidInput


class InvalidAmount(InvalidInput):
    code = "INVALID_AMOUNT"


class InvalidCurrency(InvalidInput):
    code = "INVALID_CURRENCY"


class RechargeInFlight(InvalidInput):
    """A recharge while an earlier auto-recharge of the customer still awaits payment."""

    code = "RECHARGE_IN_FLIGHT"
