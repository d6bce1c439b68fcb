"""Who may do what: roles, their capabilities, bearer tokens, and the request's viewer.

This module is the one place roles are mapped to capabilities. GraphQL permission classes
(``app.api.permissions``) and the REST dependency ``app.dependencies.requires`` both ask
:meth:`Viewer.can`.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from cachetools import TTLCache
from sqlalchemy import func, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import ApiToken
from customers import service as customers
from customers.models import Customer
from ledger.errors import InvalidInput, NotFound

TOKEN_PREFIX = "tly_"
# Every request checks its token, and the edge's entitlement checks cannot afford a database round
# trip for it: a known token's viewer is remembered for a few seconds in each server process.
# Revoking a token takes effect at once in the process that revokes it, within this many seconds
# in the others. Unknown tokens are never remembered (a new token works at once).
TOKEN_CACHE_SECONDS = 5
_viewers: TTLCache[str, Viewer] = TTLCache(maxsize=10_000, ttl=TOKEN_CACHE_SECONDS)
# While PostgreSQL cannot be reached, a token this process last read as valid (within this many
# seconds) stays valid: an edge in front of the event log keeps accepting usage through a database
# outage. No token can be revoked while the database is down; one revoked by another process just
# before it serves on here until the database answers again, and a token the database answers as
# unknown or revoked is forgotten here at once.
TOKEN_OUTAGE_SECONDS = 3600
_last_known: TTLCache[str, Viewer] = TTLCache(maxsize=10_000, ttl=TOKEN_OUTAGE_SECONDS)


class Role(StrEnum):
    ADMIN = "admin"
    FINANCE = "finance"
    SUPPORT = "support"
    VIEWER = "viewer"
    INGEST = "ingest"
    CUSTOMER = "customer"
    EDGE = "edge"


STAFF_ROLES = (Role.ADMIN, Role.FINANCE, Role.SUPPORT, Role.VIEWER)


class Capability(StrEnum):
    READ_CATALOG = "read_catalog"
    READ_CUSTOMERS = "read_customers"
    WRITE_CUSTOMERS = "write_customers"
    INGEST_USAGE = "ingest_usage"
    CHECK_ENTITLEMENTS = "check_entitlements"
    # Hold usage against a limit before using it (metering.authorizations): the edge, a customer its own.
    AUTHORIZE_USAGE = "authorize_usage"
    MANAGE_QUARANTINE = "manage_quarantine"
    READ_METERING = "read_metering"
    READ_LEDGER = "read_ledger"
    READ_PROMOTIONS = "read_promotions"
    GRANT_CREDITS = "grant_credits"
    ADJUST_BALANCES = "adjust_balances"
    MANAGE_PROMOTIONS = "manage_promotions"
    REDEEM_PROMOTIONS = "redeem_promotions"
    READ_TRACES = "read_traces"
    READ_INVOICES = "read_invoices"
    CHANGE_PLANS = "change_plans"
    SIMULATE_PRICING = "simulate_pricing"
    MANAGE_PAYMENT_METHODS = "manage_payment_methods"
    MANAGE_COLLECTION = "manage_collection"
    READ_ANOMALIES = "read_anomalies"
    MANAGE_ANOMALIES = "manage_anomalies"
    OVERRIDE_PRICES = "override_prices"  # a customer's own prices: finance and admin only
    # Name, email and billing details; a customer token its own (app.api.billing_details).
    UPDATE_BILLING_DETAILS = "update_billing_details"
    READ_EMAILS = "read_emails"  # the email outbox: staff only (recipients of every customer)
    RESEND_EMAILS = "resend_emails"
    # Outbound webhook endpoints, their secrets and deliveries: admin only (a secret signs what
    # Tally tells the product; a URL decides where every customer's data goes).
    MANAGE_WEBHOOKS = "manage_webhooks"
    # Buy credits and set the low-balance alert and auto-recharge: staff, and a customer token its own.
    PURCHASE_CREDITS = "purchase_credits"
    # Who did what to money and customers (app.api.audit): staff only, since it names staff.
    READ_AUDIT_LOG = "read_audit_log"


_STAFF_READ = {
    Capability.READ_CATALOG,
    Capability.READ_CUSTOMERS,
    Capability.READ_TRACES,
    Capability.CHECK_ENTITLEMENTS,
    Capability.READ_METERING,
    Capability.READ_LEDGER,
    Capability.READ_PROMOTIONS,
    Capability.READ_INVOICES,
    Capability.READ_ANOMALIES,
    Capability.READ_EMAILS,
    Capability.READ_AUDIT_LOG,
}
ROLE_CAPABILITIES: dict[Role, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability),
    Role.FINANCE: frozenset(
        {
            *_STAFF_READ,
            Capability.WRITE_CUSTOMERS,
            Capability.MANAGE_QUARANTINE,
            Capability.GRANT_CREDITS,
            Capability.ADJUST_BALANCES,
            Capability.MANAGE_PROMOTIONS,
            Capability.REDEEM_PROMOTIONS,
            Capability.CHANGE_PLANS,
            Capability.SIMULATE_PRICING,
            Capability.MANAGE_PAYMENT_METHODS,
            Capability.MANAGE_COLLECTION,
            Capability.MANAGE_ANOMALIES,
            Capability.OVERRIDE_PRICES,
            Capability.UPDATE_BILLING_DETAILS,
            Capability.RESEND_EMAILS,
            Capability.PURCHASE_CREDITS,
        }
    ),
    # Support grants credits up to TALLY_SUPPORT_GRANT_LIMIT a grant (Viewer.grant_limit; the ledger checks it).
    Role.SUPPORT: frozenset(
        {
            *_STAFF_READ,
            Capability.WRITE_CUSTOMERS,
            Capability.MANAGE_QUARANTINE,
            Capability.GRANT_CREDITS,
            Capability.MANAGE_PROMOTIONS,
            Capability.REDEEM_PROMOTIONS,
            Capability.CHANGE_PLANS,
            Capability.MANAGE_PAYMENT_METHODS,
            Capability.UPDATE_BILLING_DETAILS,
            Capability.RESEND_EMAILS,
            Capability.PURCHASE_CREDITS,
        }
    ),
    Role.VIEWER: frozenset(_STAFF_READ),
    # The contract: `ingest` only sends usage.
    Role.INGEST: frozenset({Capability.INGEST_USAGE}),
    # The edge's one token: it sends usage and asks whether a customer may use more, and reads
    # nothing else (a viewer token, which the edge used before, reads every customer's data).
    Role.EDGE: frozenset({Capability.INGEST_USAGE, Capability.CHECK_ENTITLEMENTS, Capability.AUTHORIZE_USAGE}),
    # A customer token reads its own customer only: every resolver of customer-owned data asks
    # app.api.scope, which applies Viewer.customer_scope; staff-only fields read as null.
    Role.CUSTOMER: frozenset(
        {
            Capability.READ_CATALOG,
            Capability.READ_CUSTOMERS,
            Capability.CHECK_ENTITLEMENTS,
            Capability.AUTHORIZE_USAGE,
            Capability.READ_LEDGER,
            Capability.READ_INVOICES,
            Capability.MANAGE_PAYMENT_METHODS,
            Capability.UPDATE_BILLING_DETAILS,
            Capability.PURCHASE_CREDITS,
        }
    ),
}


@dataclass(frozen=True)
class Viewer:
    """The caller of a request: a role, the customer a customer token is bound to, an actor."""

    role: Role
    actor: str
    customer_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        if self.role is Role.CUSTOMER and self.customer_id is None:
            raise ValueError("a customer viewer is bound to one customer")  # else it would see every customer

    def can(self, capability: Capability) -> bool:
        return capability in ROLE_CAPABILITIES[self.role]

    def grant_limit(self, support_grant_limit: Decimal) -> Decimal | None:
        """The largest credit one grant by this viewer may give, in major units (None: no limit):
        support grants up to TALLY_SUPPORT_GRANT_LIMIT; the ledger enforces it."""
        return support_grant_limit if self.role is Role.SUPPORT else None

    def may_see(self, customer_id: uuid.UUID | None) -> bool:
        """May this viewer see a row owned by ``customer_id``? The one rule, for GraphQL, REST and
        the documents: a customer's token sees its own rows; rows owned by no customer (Tally-wide
        ones) are visible only to viewers that are not scoped to a customer."""
        scope = self.customer_scope
        return scope is None or (customer_id is not None and customer_id == scope)

    @property
    def customer_scope(self) -> uuid.UUID | None:
        """The only customer this viewer may see, or None when it may see all."""
        return self.customer_id if self.role is Role.CUSTOMER else None

    @property
    def is_staff(self) -> bool:
        """Staff read staff-only fields (who did it, internal reasons); every other role reads null."""
        return self.role in STAFF_ROLES


def parse_role(value: str, *, allowed: tuple[Role, ...] = tuple(Role)) -> Role:
    try:
        role = Role(value.strip().lower())
    except ValueError:
        role = None
    if role is None or role not in allowed:
        raise InvalidInput(f"unknown role {value!r}: use one of {', '.join(r.value for r in allowed)}", field="role")
    return role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    id: uuid.UUID
    token: str
    role: Role
    customer_external_id: str | None


async def create_token(
    session: AsyncSession,
    *,
    role: str,
    customer_external_id: str | None,
    label: str | None,
    as_of: datetime,
) -> IssuedToken:
    """Create a token and return it once; only its hash is kept."""
    parsed_role = parse_role(role)
    customer_id = None
    if parsed_role is Role.CUSTOMER:
        if not customer_external_id:
            raise InvalidInput("a customer token needs --customer EXTERNAL_ID", field="customer")
        customer = await customers.get_customer(session, external_id=customer_external_id)
        if customer is None:
            raise NotFound(f"no customer with external id {customer_external_id!r}", field="customer")
        customer_id = customer.id
    elif customer_external_id:
        raise InvalidInput("--customer applies only to --role customer", field="customer")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        token_hash=hash_token(token),
        prefix=token[:12],
        role=parsed_role.value,
        customer_id=customer_id,
        label=label,
        created_at=as_of,
    )
    session.add(row)
    await session.flush()
    return IssuedToken(row.id, token, parsed_role, customer_external_id)


async def revoke_token(session: AsyncSession, token_or_id: str, *, as_of: datetime) -> uuid.UUID:
    """Revoke by the token itself or by its id; revoking twice keeps the first revocation time."""
    try:
        condition = col(ApiToken.id) == uuid.UUID(token_or_id)
    except ValueError:
        condition = col(ApiToken.token_hash) == hash_token(token_or_id)
    statement = (
        update(ApiToken)
        .where(condition)
        .values(revoked_at=func.coalesce(col(ApiToken.revoked_at), as_of))
        .returning(col(ApiToken.id))
    )
    row = (await session.execute(statement)).first()
    if row is None:
        raise NotFound("no such token (give the token or its id from `tally token list`)", field="token")
    _viewers.clear()
    _last_known.clear()
    return row[0]


async def list_tokens(session: AsyncSession) -> list[tuple[ApiToken, str | None]]:
    """Every token, oldest first, with the external id of its customer (customer tokens only)."""
    query = (
        select(ApiToken, Customer.external_id)
        .outerjoin(Customer, col(Customer.id) == col(ApiToken.customer_id))
        .order_by(col(ApiToken.created_at))
    )
    return [(token, external_id) for token, external_id in await session.exec(query)]


async def viewer_for_token(session: AsyncSession, token: str) -> Viewer | None:
    token_hash = hash_token(token)  # random 256-bit tokens: a hash names one token in any database
    if (viewer := _viewers.get(token_hash)) is not None:
        return viewer
    query = select(ApiToken).where(col(ApiToken.token_hash) == token_hash, col(ApiToken.revoked_at).is_(None))
    try:
        row = (await session.exec(query)).first()
    except (OSError, OperationalError, InterfaceError):
        if (remembered := _last_known.get(token_hash)) is not None:
            await session.rollback()
            return remembered
        raise
    if row is None:
        _last_known.pop(token_hash, None)
        return None
    viewer = Viewer(role=Role(row.role), actor=f"token:{row.prefix}", customer_id=row.customer_id)
    _viewers[token_hash] = _last_known[token_hash] = viewer
    return viewer
