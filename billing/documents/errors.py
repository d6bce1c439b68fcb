"""The refusals of invoice documents and links, each with a stable code and field."""

from __future__ import annotations

from ledger.errors import TallyError


class InvoiceNotFound(TallyError):
    code = "NOT_FOUND"


class InvoiceLinkInvalid(TallyError):
    """A hosted link that was altered, made up, or names another invoice: 404, never a hint."""

    code = "INVOICE_LINK_INVALID"


class InvoiceLinkExpired(TallyError):
    code = "INVOICE_LINK_EXPIRED"


class ExpiryOutOfRange(TallyError):
    code = "EXPIRY_OUT_OF_RANGE"


class UnknownLocale(TallyError):
    """A locale invoice documents are not written in."""

    code = "UNKNOWN_LOCALE"
