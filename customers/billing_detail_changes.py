"""Changing a customer's billing details, with their history.

A change is partial: the fields a :class:`BillingDetailsPatch` leaves :data:`UNSET` keep their
value; ``None`` clears an optional one. Every field is checked, and every refusal reported at
once (:class:`ledger.errors.InvalidFields`), each naming its GraphQL field (``address.country``,
``invoiceEmails[1]``); nothing is written when one is refused. Rules that join two fields (an EU
VAT number's prefix and the country, reverse charge and the tax id) are checked on the details
as they would stand after the change, so changing the country alone can refuse the tax id kept.

The customer row is locked while the change is worked out and written, and the history row is
written in the same transaction: concurrent changes take turns, and each history row's ``before``
is what the previous one's ``after`` left. A change that changes nothing writes nothing, which
also makes a retried request harmless without an idempotency key.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Final

from babel import Locale
from sqlmodel.ext.asyncio.session import AsyncSession

from customers import billing_detail_repository
from customers.billing_details import SUPPORTED_LOCALES, TAX_EXEMPTIONS
from customers.errors import (
    Forbidden,
    InvalidEmail,
    TaxIdCountryMismatch,
    TaxIdRequired,
    UnknownCountry,
    UnknownLocale,
    UnknownTaxExemption,
)
from customers.models import BillingDetailChange, Customer
from customers.selection import lock_customer
from customers.service import EMAIL_PATTERN
from customers.webhook_payloads import customer_event
from ledger import audit
from ledger.errors import InvalidFields, InvalidInput, LimitExceeded, TallyError, TooLong
from notifications.webhook_events import emit


class Unset:
    """The value of a field a patch leaves as it is (``None`` clears it)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()

MAX_INVOICE_EMAILS = 10
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path
MAX_TAX_ID_LENGTH = 32
# The longest each text may be: enough for any real address, short enough for an invoice's layout.
MAX_LENGTHS = {
    "name": 200,
    "legal_name": 200,
    "address_line1": 200,
    "address_line2": 200,
    "city": 100,
    "postal_code": 20,
    "region": 100,
}
# The GraphQL field of each column: refusals and the history's changes name these.
API_FIELDS = {
    "name": "name",
    "email": "email",
    "legal_name": "legalName",
    "address_line1": "address.line1",
    "address_line2": "address.line2",
    "city": "address.city",
    "postal_code": "address.postalCode",
    "region": "address.region",
    "country": "address.country",
    "tax_id": "taxId",
    "tax_exemption": "taxExemption",
    "invoice_emails": "invoiceEmails",
    "locale": "locale",
}
REQUIRED = ("name", "tax_exemption", "locale")

# ISO 3166-1 alpha-2: Babel's territories less its macro-regions and codes ISO does not assign
# (exceptional reservations such as EU and UN, user-assigned ones such as XK and ZZ).
NOT_ISO_COUNTRIES = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "XK", "ZZ"}
)
COUNTRIES = frozenset(
    code
    for code in map(str, Locale("en").territories)
    if len(code) == 2 and code.isalpha() and code not in NOT_ISO_COUNTRIES
)
# The prefix of each EU member state's VAT numbers: its ISO code, except Greece's (EL).
# fmt: off
EU_MEMBER_STATES = (
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
    "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
)
# fmt: on
EU_VAT_PREFIXES = {code: ("EL" if code == "GR" else code) for code in EU_MEMBER_STATES}
TAX_ID_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9./-]*$")


@dataclass(frozen=True)
class BillingDetailsPatch:
    """What a request changes: :data:`UNSET` keeps a field, ``None`` clears an optional one."""

    name: str | Unset | None = UNSET
    email: str | Unset | None = UNSET
    legal_name: str | Unset | None = UNSET
    address_line1: str | Unset | None = UNSET
    address_line2: str | Unset | None = UNSET
    city: str | Unset | None = UNSET
    postal_code: str | Unset | None = UNSET
    region: str | Unset | None = UNSET
    country: str | Unset | None = UNSET
    tax_id: str | Unset | None = UNSET
    tax_exemption: str | Unset | None = UNSET
    invoice_emails: Sequence[str] | Unset | None = UNSET
    locale: str | Unset | None = UNSET

    def given(self) -> dict[str, Any]:
        """The fields the request names, with their values as sent."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not UNSET}


@dataclass(frozen=True)
class StoredDetails:
    """The billing columns of a customer as stored (``invoice_emails`` empty: the customer's email)."""

    name: str
    email: str | None
    legal_name: str | None
    address_line1: str | None
    address_line2: str | None
    city: str | None
    postal_code: str | None
    region: str | None
    country: str | None
    tax_id: str | None
    tax_exemption: str
    invoice_emails: tuple[str, ...]
    locale: str

    @classmethod
    def of(cls, customer: Customer) -> StoredDetails:
        return cls(
            **{f.name: getattr(customer, f.name) for f in fields(cls) if f.name != "invoice_emails"},
            invoice_emails=tuple(customer.invoice_emails or ()),
        )

    def as_json(self, names: Sequence[str]) -> dict[str, Any]:
        return {name: list(value) if isinstance(value := getattr(self, name), tuple) else value for name in names}


@dataclass(frozen=True)
class BillingDetailsUpdate:
    """What a change did (or, in a dry run, would do): the details before and after, the fields
    that differ, and the history row written (None for a dry run or a change of nothing)."""

    customer: Customer
    before: StoredDetails
    after: StoredDetails
    changed: tuple[str, ...]
    change: BillingDetailChange | None


def _text(raw: Any, name: str, problems: list[TallyError]) -> str | None:
    """A trimmed text, or None for an empty one; refused when too long or holding control characters
    (a newline in an address line would break the invoice's layout)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        problems.append(InvalidInput("must be text", field=API_FIELDS[name]))
        return None
    value = unicodedata.normalize("NFC", raw).strip()
    limit = MAX_LENGTHS.get(name)
    if limit is not None and len(value) > limit:
        problems.append(TooLong(f"must be at most {limit} characters", field=API_FIELDS[name]))
        return None
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        problems.append(InvalidInput("must not contain control or invisible characters", field=API_FIELDS[name]))
        return None
    return value or None


def _email(raw: Any, field: str, problems: list[TallyError]) -> str | None:
    if not isinstance(raw, str):
        problems.append(InvalidInput("must be an email address", field=field))
        return None
    value = raw.strip()
    if len(value) > MAX_EMAIL_LENGTH:
        problems.append(TooLong(f"must be at most {MAX_EMAIL_LENGTH} characters", field=field))
        return None
    if not EMAIL_PATTERN.match(value) or any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        problems.append(InvalidEmail(f"{value[:80]!r} is not an email address", field=field))
        return None
    return value


def _invoice_emails(raw: Any, problems: list[TallyError]) -> tuple[str, ...]:
    """Each address checked (naming its position), duplicates dropped (case-insensitively, the
    first spelling kept), at most :data:`MAX_INVOICE_EMAILS`."""
    if raw is None:
        return ()
    if len(raw) > MAX_INVOICE_EMAILS * 10:  # not worth checking one by one
        problems.append(
            LimitExceeded(f"at most {MAX_INVOICE_EMAILS} addresses (got {len(raw)})", field="invoiceEmails")
        )
        return ()
    kept: dict[str, str] = {}
    for position, entry in enumerate(raw):
        address = _email(entry, f"invoiceEmails[{position}]", problems)
        if address is not None:
            kept.setdefault(address.casefold(), address)
    if len(kept) > MAX_INVOICE_EMAILS:
        problems.append(
            LimitExceeded(f"at most {MAX_INVOICE_EMAILS} addresses (got {len(kept)})", field="invoiceEmails")
        )
    return tuple(kept.values())


def _tax_id(raw: Any, problems: list[TallyError]) -> str | None:
    """Spaces removed, in capitals: ``fr 40 303 265 045`` is ``FR40303265045``."""
    text = _text(raw, "tax_id", problems)
    if text is None:
        return None
    value = "".join(text.split()).upper()
    if len(value) > MAX_TAX_ID_LENGTH:
        problems.append(TooLong(f"must be at most {MAX_TAX_ID_LENGTH} characters", field="taxId"))
        return None
    if not TAX_ID_PATTERN.match(value):
        problems.append(InvalidInput("may hold only letters, digits, '.', '/' and '-'", field="taxId"))
        return None
    return value


def _country(raw: Any, problems: list[TallyError]) -> str | None:
    text = _text(raw, "country", problems)
    if text is None:
        return None
    code = text.upper()
    if code not in COUNTRIES:
        problems.append(
            UnknownCountry(
                f"{text[:10]!r} is not an ISO 3166-1 alpha-2 country code (e.g. FR, US)",
                field="address.country",
            )
        )
        return None
    return code


def _choice(
    raw: Any, name: str, allowed: Sequence[str], refusal: type[InvalidInput], problems: list[TallyError]
) -> str | None:
    if raw is None:
        problems.append(InvalidInput("cannot be cleared", field=API_FIELDS[name]))
        return None
    value = raw.strip().lower() if isinstance(raw, str) else raw
    if value not in allowed:
        problems.append(refusal(f"must be one of {', '.join(allowed)}", field=API_FIELDS[name]))
        return None
    return str(value)


def checked_details(current: StoredDetails, patch: BillingDetailsPatch) -> StoredDetails:
    """The details as they would stand after ``patch``, every field checked; :class:`InvalidFields`
    lists every refusal. Pure: the tests call it without a database."""
    problems: list[TallyError] = []
    values: dict[str, Any] = {}
    for name, raw in patch.given().items():
        if name == "name":
            values[name] = _text(raw, name, problems)
            if values[name] is None and not any(p.field == "name" for p in problems):
                problems.append(InvalidInput("must not be empty", field="name"))
        elif name == "email":
            values[name] = (
                None if raw is None or (isinstance(raw, str) and not raw.strip()) else _email(raw, "email", problems)
            )
        elif name == "country":
            values[name] = _country(raw, problems)
        elif name == "tax_id":
            values[name] = _tax_id(raw, problems)
        elif name == "tax_exemption":
            values[name] = _choice(raw, name, TAX_EXEMPTIONS, UnknownTaxExemption, problems)
        elif name == "locale":
            values[name] = _choice(raw, name, SUPPORTED_LOCALES, UnknownLocale, problems)
        elif name == "invoice_emails":
            values[name] = _invoice_emails(raw, problems)
        else:
            values[name] = _text(raw, name, problems)
    if problems:
        raise InvalidFields(problems)
    after = replace(current, **values)
    _check_together(after, set(values))
    return after


def _check_together(after: StoredDetails, given: set[str]) -> None:
    """The rules that join fields, on the details as they would stand. The refusal names the
    field the request gave (the country, when only it changed and no longer fits the tax id)."""
    problems: list[TallyError] = []
    prefix = EU_VAT_PREFIXES.get(after.country or "")
    if prefix is not None and after.tax_id is not None and not after.tax_id.startswith(prefix):
        field = "taxId" if "tax_id" in given or "country" not in given else "address.country"
        problems.append(
            TaxIdCountryMismatch(
                f"an EU VAT number starts with its country's code: {prefix} for {after.country} "
                f"(e.g. {prefix}123456789), not {after.tax_id[:2]!r}",
                field=field,
            )
        )
    if after.tax_exemption == "reverse_charge" and after.tax_id is None:
        field = "taxId" if "tax_id" in given and "tax_exemption" not in given else "taxExemption"
        problems.append(TaxIdRequired("reverse charge needs the buyer's tax id (EU B2B): give taxId", field=field))
    if problems:
        raise InvalidFields(problems)


async def update_billing_details(
    session: AsyncSession,
    customer_id: uuid.UUID,
    patch: BillingDetailsPatch,
    *,
    actor: str,
    as_of: datetime,
    dry_run: bool = False,
    may_set_tax_exemption: bool = True,
) -> BillingDetailsUpdate:
    """Change the billing details a patch names, record the change and tell the product
    (``customer.updated``, once per change); see the module's docstring. ``dry_run`` checks and
    works out the same outcome and writes nothing. A caller that is not staff (a customer's own
    token) passes ``may_set_tax_exemption=False``: whether tax is charged is staff's to say."""
    if not may_set_tax_exemption and not isinstance(patch.tax_exemption, Unset):
        raise Forbidden("Forbidden: a customer's tax exemption is set by staff", field="taxExemption")
    customer = await lock_customer(session, customer_id)
    before = StoredDetails.of(customer)
    after = checked_details(before, patch)
    changed = tuple(name for name in API_FIELDS if getattr(before, name) != getattr(after, name))
    if dry_run or not changed:
        return BillingDetailsUpdate(customer, before, after, changed, None)
    for name in changed:
        value = getattr(after, name)
        setattr(customer, name, list(value) if isinstance(value, tuple) else value)
    change = BillingDetailChange(
        customer_id=customer.id,
        changed_at=as_of,
        actor=actor,
        before=before.as_json(changed),
        after=after.as_json(changed),
    )
    session.add(customer)
    session.add(change)
    await session.flush()
    await emit(session, customer_event("customer.updated", f"customer.updated:{change.id}", customer), as_of=as_of)
    await audit.record(
        session,
        actor=actor,
        action="customer.update",
        subject_type="Customer",
        subject_id=customer.external_id,
        customer_id=customer.id,
        as_of=as_of,
        before=change.before,
        after=change.after,
    )
    return BillingDetailsUpdate(customer, before, after, changed, change)


async def history(session: AsyncSession, customer_id: uuid.UUID, *, limit: int = 50) -> list[BillingDetailChange]:
    """The customer's changes of billing details, newest first."""
    return await billing_detail_repository.changes_of(session, customer_id, limit=limit)
