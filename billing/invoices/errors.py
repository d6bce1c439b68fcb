"""The refusals of invoices, one-off charges and credit notes, each with its stable code (part of
the public contract). A request for a subscription the customer lacks or that ended raises
:mod:`customers.errors`' codes; an amount in another currency, :class:`ledger.errors.CurrencyMismatch`."""

from __future__ import annotations

from ledger.errors import InvalidInput


class NotPending(InvalidInput):
    """A one-off charge that was invoiced or canceled already: only a pending one can be canceled."""

    code = "NOT_PENDING"


class InvoiceVoid(InvalidInput):
    code = "INVOICE_VOID"

    def __init__(self) -> None:
        super().__init__("the invoice is void: nothing is left to credit", field="invoiceId")


class CreditExceeded(InvalidInput):
    """A credit note for more than the invoice (or its line) has left to credit, or than is still due."""

    code = "CREDIT_EXCEEDED"
