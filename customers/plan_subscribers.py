"""Who is on each plan version: the subscriptions whose version it is now and that have not
ended, with their customers. One read across the catalog for the console's Plans page."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

# Every version (each currency's its own), newest first per plan; a subscription counts until its
# end (``cancel_at``, past or scheduled), paused ones included (they are still on the plan).
VERSIONS_AND_SUBSCRIBERS = text("""
SELECT v.id AS version_id, p.key AS plan_key, v.version, v.currency,
       max(v.version) OVER (PARTITION BY v.plan_id) AS newest_version,
       c.id AS customer_id, c.external_id, c.name
FROM plan_versions v
JOIN plans p ON p.id = v.plan_id
LEFT JOIN subscriptions s ON s.plan_version_id = v.id AND (s.cancel_at IS NULL OR s.cancel_at > :as_of)
LEFT JOIN customers c ON c.id = s.customer_id
ORDER BY p.key, v.version DESC, v.primary_currency DESC, v.currency, c.name, c.id
""")


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
    for row in (await session.execute(VERSIONS_AND_SUBSCRIBERS, {"as_of": as_of})).mappings():
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
