"""A customer's billing details: the legal name, address, tax id, invoice emails and locale their
invoices, credit notes and emails are addressed in.

``tax_exemption`` says how tax applies: ``none`` (the rates of their address or assignment),
``exempt`` (no tax, e.g. a charity), ``reverse_charge`` (the buyer accounts for the tax: EU B2B
with a tax id). Documents are rendered in ``locale``, one of :data:`SUPPORTED_LOCALES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from customers.models import Customer

SUPPORTED_LOCALES = ("en", "fr", "de", "es")
TAX_EXEMPTIONS = ("none", "exempt", "reverse_charge")


@dataclass(frozen=True)
class BillingDetails:
    """What an invoice says of its buyer; kept on the invoice as issued (a later change of address
    never rewrites an issued document)."""

    name: str
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

    @property
    def addressee(self) -> str:
        """The name documents are addressed to: the legal name when there is one."""
        return self.legal_name or self.name

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "legal_name": self.legal_name,
            "address_line1": self.address_line1,
            "address_line2": self.address_line2,
            "city": self.city,
            "postal_code": self.postal_code,
            "region": self.region,
            "country": self.country,
            "tax_id": self.tax_id,
            "tax_exemption": self.tax_exemption,
            "invoice_emails": list(self.invoice_emails),
            "locale": self.locale,
        }


def billing_details_of(customer: Customer) -> BillingDetails:
    """The customer's billing details as they stand; invoice emails default to the customer's email."""
    emails = tuple(customer.invoice_emails or ([customer.email] if customer.email else []))
    return BillingDetails(
        name=customer.name,
        legal_name=customer.legal_name,
        address_line1=customer.address_line1,
        address_line2=customer.address_line2,
        city=customer.city,
        postal_code=customer.postal_code,
        region=customer.region,
        country=customer.country,
        tax_id=customer.tax_id,
        tax_exemption=customer.tax_exemption,
        invoice_emails=emails,
        locale=customer.locale,
    )
