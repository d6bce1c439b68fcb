"""What a caller may see: the one place customer-owned data is scoped to the request's viewer.

Every resolver (and REST endpoint) that finds a customer, or a row that belongs to one, asks here
(the rule itself is :meth:`app.auth.Viewer.may_see`, which the hosted documents ask too)
rather than writing its own check. The rule: a customer token sees its own customer and nothing
else, and whatever is not its own reads exactly as if it did not exist (the same ``NOT_FOUND``,
the same null, the same message, so no answer tells a missing customer from someone else's).
Staff-only fields (who did something, the reason staff wrote) resolve to null for every role
that is not staff, through :class:`StaffOnly`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import strawberry
from sqlmodel.ext.asyncio.session import AsyncSession
from strawberry.extensions import FieldExtension
from strawberry.types import Info

from app.auth import Viewer
from customers import service as customers
from customers.models import Customer
from ledger.errors import NotFound

Row = TypeVar("Row")
NO_SUCH_CUSTOMER = "no such customer"
STAFF_ONLY = "Staff only: null for customer tokens."


def only_visible(viewer: Viewer, rows: Iterable[Row], customer_of: Callable[[Row], uuid.UUID | None]) -> list[Row]:
    """The rows of a list that the viewer may see: a customer token keeps its own rows only."""
    return [row for row in rows if viewer.may_see(customer_of(row))]


def parse_customer_id(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def find_visible_customer(
    session: AsyncSession, viewer: Viewer, *, customer_id: object = None, external_id: str | None = None
) -> Customer | None:
    """The customer by id (any text; not a UUID finds nothing) or external id, or None when there
    is none or the viewer may not see it."""
    parsed = parse_customer_id(customer_id) if customer_id is not None else None
    if customer_id is not None and parsed is None:
        return None
    found = await customers.get_customer(session, customer_id=parsed, external_id=external_id)
    if found is None or not viewer.may_see(found.id):
        return None
    return found


async def visible_customer(
    session: AsyncSession, viewer: Viewer, customer_id: object, *, field: str = "customerId"
) -> Customer:
    """The customer a mutation or a lookup names, or ``NOT_FOUND`` on ``field`` when it does not
    exist or is not the viewer's."""
    found = await find_visible_customer(session, viewer, customer_id=customer_id)
    if found is None:
        raise NotFound(NO_SUCH_CUSTOMER, field=field)
    return found


async def customer_of(info: Info, customer_id: object, *, field: str = "customerId") -> Customer:
    """:func:`visible_customer` for a resolver: the customer its input names, as the viewer may see it."""
    return await visible_customer(info.context.session, info.context.viewer, customer_id, field=field)


async def load_visible_customer(info: Info, customer_id: uuid.UUID) -> Customer | None:
    """A customer a row refers to (an anomaly's, say), batched through the request's DataLoader;
    None when the viewer may not see it."""
    if not info.context.viewer.may_see(customer_id):
        return None
    found: Customer | None = await info.context.loaders.customer.load(customer_id)
    return found


class StaffOnly(FieldExtension):
    """A field that names staff or carries what staff wrote for staff. Any viewer that is not staff
    (a customer token above all) reads null, or, with ``otherwise``, the public counterpart kept in
    that attribute of the object (a description written for the customer)."""

    def __init__(self, otherwise: str | None = None):
        super().__init__()
        self.otherwise = otherwise

    def _public(self, source: Any) -> Any:
        return getattr(source, self.otherwise) if self.otherwise else None

    def resolve(self, next_: Callable[..., Any], source: Any, info: Info, **kwargs: Any) -> Any:
        return next_(source, info, **kwargs) if info.context.viewer.is_staff else self._public(source)

    async def resolve_async(self, next_: Callable[..., Awaitable[Any]], source: Any, info: Info, **kwargs: Any) -> Any:
        return await next_(source, info, **kwargs) if info.context.viewer.is_staff else self._public(source)


def staff_only(description: str = STAFF_ONLY) -> Any:
    """A nullable field that only staff read (see :class:`StaffOnly`)."""
    return strawberry.field(default=None, description=description, extensions=[StaffOnly()])


def written_by_tally(actor: str) -> bool:
    """Was this written by Tally itself (the billing run, Stripe's events, a job) rather than by a
    person or a script's token? Only such text is shown to customers as it stands."""
    return actor in ("billing", "stripe") or actor.startswith("job:")


WHICH_SUBSCRIPTION = (
    "Which of the customer's subscriptions (Subscription.id): required when they have several; by default "
    "their only one."
)


def subscription_id_of(value: object | None) -> uuid.UUID | None:
    """The subscription an input names (None when it names none). Whose it is, the service checks
    against the customer the input names; not a UUID is not found, as any other."""
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound("the customer has no such subscription", field="subscriptionId") from None
