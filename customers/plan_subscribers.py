"""Who is on each plan version: the subscriptions whose version it is now and that have not
ended, with their customers. One read across the catalog for the console's Plans page."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from customers import repository


@dataclass(frozen=True)
class Subscriber:
    customer_id: uuid.UUID
    external_id: str
    name: str


@dataclass
class VersionInUse:
    version_id: uuid.UUID
    plan_key: str
    version: int
    currency: str
    newest: bool  # the version new subscriptions get
    subscribers: list[Subscriber] = field(default_factory=list)  # a customer once per subscription


async def plan_versions_in_use(session: AsyncSession, *, as_of: datetime) -> list[VersionInUse]:
    """Every plan version, newest first per plan, with the customers on it at ``as_of``."""
    found: dict[uuid.UUID, VersionInUse] = {}
    for row in await repository.versions_and_subscribers(session, as_of=as_of):
        version = found.setdefault(
            row["version_id"],
            VersionInUse(
                row["version_id"],
                row["plan_key"],
                row["version"],
                row["currency"],
                row["version"] == row["newest_version"],
            ),
        )
        if row["customer_id"] is not None:
            version.subscribers.append(Subscriber(row["customer_id"], row["external_id"], row["name"]))
    return list(found.values())
