"""Shapes shared by every domain's GraphQL: Money, userErrors, Relay connections, cursors."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

import strawberry
from strawberry.types import Info

from app.database import in_transaction
from ledger.errors import InvalidFields, InvalidInput, TallyError
from ledger.money import to_major
from pricing.errors import CatalogInvalid

T = TypeVar("T")
Node = TypeVar("Node")


@strawberry.type(description="An amount of money: exact, in major units, always with its currency.")
class Money:
    amount: Decimal = strawberry.field(
        description="In major units (dollars, euros), exact, with the currency's own number of decimals."
    )
    currency: str = strawberry.field(description="The ISO 4217 code, upper case (USD, EUR, JPY).")


def money(minor: int, currency: str) -> Money:
    """A ledger amount (minor units) as the API shows it: a Decimal in major units."""
    return Money(amount=to_major(minor, currency), currency=currency)


@strawberry.type(
    description="Why a mutation was refused: it changed nothing. One entry per problem, each naming its field."
)
class UserError:
    field: list[str] | None = strawberry.field(
        description='The path of the input field at fault, e.g. ["amount"]; null when no one field is.'
    )
    code: str = strawberry.field(
        description="Machine-readable and stable, e.g. INVALID_AMOUNT, NOT_FOUND, IDEMPOTENCY_KEY_REUSED."
    )
    message: str = strawberry.field(description="For people: what is wrong and what to do next.")

    @classmethod
    def from_error(cls, error: TallyError) -> list[UserError]:
        """One entry per refusal; a catalog lists each of its problems with its path."""
        if isinstance(error, CatalogInvalid):
            return [cls(field=["catalog", p.path], code=error.code, message=p.message) for p in error.problems]
        if isinstance(error, InvalidFields):
            return [entry for each in error.errors for entry in cls.from_error(each)]
        return [cls(field=[error.field] if error.field else None, code=error.code, message=error.message)]


async def run_mutation(
    info: Info, action: Callable[[], Awaitable[T]], *, commit: bool = True
) -> tuple[T | None, list[UserError]]:
    """The request boundary of a mutation: commit on success (roll back instead for a dry run);
    on a refusal roll back, so a rejected mutation changes nothing, and report it as
    ``userErrors``. A deadlock or serialization failure reruns the whole action (mutations are
    idempotent by their keys)."""
    try:
        return await in_transaction(info.context.session, action, commit=commit), []
    except TallyError as error:
        return None, UserError.from_error(error)


@strawberry.type(description="Where a page of a list ends.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether another page follows this one.")
    end_cursor: str | None = strawberry.field(
        description="Pass it as `after` for the next page; null when the page is empty."
    )


@strawberry.type(description="One item of a page, with its place in the list.")
class Edge(Generic[Node]):
    cursor: str = strawberry.field(description="This item's place: pass it as `after` to read on from here.")
    node: Node = strawberry.field(description="The item.")


@strawberry.type(description="A page of a list, newest first unless the field says otherwise.")
class Connection(Generic[Node]):
    edges: list[Edge[Node]] = strawberry.field(description="The items of this page.")
    page_info: PageInfo = strawberry.field(description="Whether more follow, and where to read on.")


def not_a_cursor() -> InvalidInput:
    """The refusal of an ``after`` this API did not hand out."""
    return InvalidInput("not a cursor returned by this API", field="after", code="INVALID_CURSOR")


def exactly_one_of(first: str, second: str) -> InvalidInput:
    return InvalidInput(f"give exactly one of {first} or {second}", field=first, code="EXACTLY_ONE_ARGUMENT")


def encode_cursor(*values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


def decode_cursor(cursor: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise not_a_cursor() from None
    if not isinstance(values, list):
        raise not_a_cursor()
    return values


def time_cursor(moment: datetime, tie_breaker: object) -> str:
    """The cursor of a newest-first list ordered by (time, id)."""
    return encode_cursor(moment.isoformat(), tie_breaker)


def decode_time_cursor(after: str | None) -> tuple[datetime, str] | None:
    """The (time, id) position an ``after`` cursor of :func:`time_cursor` stands for."""
    if after is None:
        return None
    values = decode_cursor(after)
    try:
        return datetime.fromisoformat(values[0]), str(values[1])
    except (IndexError, TypeError, ValueError):
        raise not_a_cursor() from None


def page_size(first: int | None, *, default: int, maximum: int) -> int:
    if first is None:
        return default
    if not 1 <= first <= maximum:
        raise InvalidInput(f"must be between 1 and {maximum}", field="first", code="INVALID_PAGE_SIZE")
    return first


def connection(
    rows: Sequence[T], limit: int, to_node: Callable[[T], Node], cursor_of: Callable[[T], str]
) -> Connection[Node]:
    """Build a page from ``limit + 1`` fetched rows: the extra row only says a next page exists."""
    visible = rows[:limit]
    edges = [Edge(cursor=cursor_of(row), node=to_node(row)) for row in visible]
    return Connection(
        edges=edges,
        page_info=PageInfo(has_next_page=len(rows) > limit, end_cursor=edges[-1].cursor if edges else None),
    )
