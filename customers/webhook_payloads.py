"""What the webhook events of customers, subscriptions and credit grants carry as ``data``: the
resource as the GraphQL type of the same name shows it (``Customer``, ``Subscription``,
``CreditGrant``), built here from the domain rows since domains never import the API.

The shapes follow the API's serialization: camelCase field names, ids as strings, enums by their
GraphQL names (``ACTIVE``, ``REVERSE_CHARGE``), moments ISO-8601, money as the ``Money`` type
(``{"amount": "12.50", "currency": "EUR"}``, a decimal string in major units). Only the type's own
fields are sent, never its lists or connections (fetch those through the API); a test checks every
key against the schema, so the payloads cannot drift from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from customers.calendar import current_period
from customers.models import Customer, Subscription
from ledger.models import CreditGrant
from ledger.money import to_major
from notifications.webhook_events import Event
from pricing.service import plan_of_version, plan_version


def moment(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def money_json(minor: int, currency: str) -> dict[str, str]:
    """A ledger amount as the API's ``Money`` shows it: a decimal string in major units."""
    return {"amount": format(to_major(minor, currency), "f"), "currency": currency}


def enum_name(value: str) -> str:
    """A stored enum value as its GraphQL enum name (``reverse_charge`` is ``REVERSE_CHARGE``)."""
    return value.upper()


def customer_data(customer: Customer) -> dict[str, Any]:
    emails = list(customer.invoice_emails or [])
    return {
        "id": str(customer.id),
        "externalId": customer.external_id,
        "name": customer.name,
        "email": customer.email,
        "currency": customer.currency,
        "status": customer.status,
        "createdAt": moment(customer.created_at),
        "billingDetails": {
            "name": customer.name,
            "email": customer.email,
            "legalName": customer.legal_name,
            "address": {
                "line1": customer.address_line1,
                "line2": customer.address_line2,
                "city": customer.city,
                "postalCode": customer.postal_code,
                "region": customer.region,
                "country": customer.country,
            },
            "taxId": customer.tax_id,
            "taxExemption": enum_name(customer.tax_exemption),
            "invoiceEmails": emails,
            "recipients": emails or ([customer.email] if customer.email else []),
            "locale": customer.locale,
            "addressee": customer.legal_name or customer.name,
        },
    }


def customer_event(event_type: str, key: str, customer: Customer) -> Event:
    return Event(key, event_type, "Customer", str(customer.id), customer_data(customer), customer.id)


async def _plan_data(session: AsyncSession, version_id: Any) -> dict[str, Any]:
    version = await plan_version(session, version_id)
    plan = await plan_of_version(session, version_id)
    return {
        "key": plan.key,
        "name": plan.name,
        "version": version.version,
        "currency": version.currency,
        "interval": enum_name(version.interval),
    }


async def subscription_data(session: AsyncSession, subscription: Subscription, *, as_of: datetime) -> dict[str, Any]:
    """The subscription at ``as_of``, its plan in effect then and a plan change scheduled after it."""
    version_id = subscription.version_at(as_of)
    version = await plan_version(session, version_id)
    period = current_period(subscription, version.interval, as_of)
    pending, change_at = subscription.pending_plan_version_id, subscription.pending_change_at
    scheduled = None
    if pending is not None and change_at is not None and change_at > as_of:
        scheduled = {"effectiveAt": moment(change_at), "plan": await _plan_data(session, pending)}
    return {
        "id": str(subscription.id),
        "startedAt": moment(subscription.started_at),
        "billingAnchor": moment(subscription.billing_anchor_at(as_of)),
        "scheduledChange": scheduled,
        "status": subscription.status_at(as_of),
        "cancelAt": moment(subscription.cancel_at),
        "canceledAt": moment(subscription.canceled_at),
        "cancelReason": subscription.cancel_reason,
        "pausedAt": moment(subscription.paused_at),
        "trialEndsAt": moment(subscription.trial_ends_at),
        "billingAnchorDay": subscription.billing_anchor_day,
        "plan": await _plan_data(session, version_id),
        "interval": enum_name(version.interval),
        "inTrial": subscription.in_trial(as_of),
        "currentPeriodStart": moment(period.start),
        "currentPeriodEnd": moment(period.end),
    }


async def subscription_event(
    session: AsyncSession, event_type: str, key: str, subscription: Subscription, *, as_of: datetime
) -> Event:
    data = await subscription_data(session, subscription, as_of=as_of)
    return Event(key, event_type, "Subscription", str(subscription.id), data, subscription.customer_id)


def grant_data(grant: CreditGrant) -> dict[str, Any]:
    """A grant as staff read it (its reason as written): endpoints are the operator's own. Who
    granted it (``actor``, a person's address) is left out."""
    status = enum_name(grant.status)
    if status == "ACTIVE" and grant.remaining == 0:
        status = "DEPLETED"
    return {
        "id": str(grant.id),
        "amount": money_json(grant.amount, grant.currency),
        "remaining": money_json(grant.remaining, grant.currency),
        "priority": grant.priority,
        "effectiveAt": moment(grant.effective_at),
        "expiresAt": moment(grant.expires_at),
        "reason": grant.reason,
        "source": grant.source,
        "status": status,
        "createdAt": moment(grant.created_at),
    }


def grant_event(event_type: str, grant: CreditGrant) -> Event:
    """``credits.granted`` or ``credits.expired``, once per grant."""
    key = f"{event_type}:{grant.id}"
    return Event(key, event_type, "CreditGrant", str(grant.id), grant_data(grant), grant.customer_id)
