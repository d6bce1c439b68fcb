"""`tally demo`: the example catalog, customers across its plans, and a staff admin to sign in.

Loading is idempotent: a second run finds the demo admin and changes nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel.ext.asyncio.session import AsyncSession

from app import staff
from customers import service as customers
from pricing import service as catalog

CATALOG_PATH = Path(__file__).with_name("catalog.toml")
DEMO_ADMIN_EMAIL = "admin@example.com"

# (external id, name, email domain, plan key)
DEMO_CUSTOMERS = [
    ("org_acme", "Acme Robotics", "acme.example", "team"),
    ("org_globex", "Globex Analytics", "globex.example", "pro"),
    ("org_initech", "Initech", "initech.example", "pro"),
    ("org_umbrella", "Umbrella Health", "umbrella.example", "team"),
    ("org_hooli", "Hooli Search", "hooli.example", "pro"),
    ("org_piedpiper", "Pied Piper", "piedpiper.example", "hobby"),
    ("org_stark", "Stark Industrial", "stark.example", "team"),
    ("org_wayne", "Wayne Logistics", "wayne.example", "pro"),
    ("org_wonka", "Wonka Confectionery", "wonka.example", "hobby"),
    ("org_tyrell", "Tyrell Genetics", "tyrell.example", "team"),
    ("org_cyberdyne", "Cyberdyne Systems", "cyberdyne.example", "pro"),
    ("org_soylent", "Soylent Foods", "soylent.example", "hobby"),
    ("org_vandelay", "Vandelay Imports", "vandelay.example", "pro"),
    ("org_massive", "Massive Dynamic", "massive.example", "team"),
    ("org_oscorp", "Oscorp Labs", "oscorp.example", "pro"),
    ("org_gringotts", "Gringotts Ledger Co", "gringotts.example", "team"),
    ("org_duff", "Duff Brewing", "duff.example", "hobby"),
    ("org_nakatomi", "Nakatomi Trading", "nakatomi.example", "pro"),
    ("org_prestige", "Prestige Worldwide", "prestige.example", "hobby"),
    ("org_dunder", "Dunder Mifflin Paper", "dundermifflin.example", "pro"),
    ("org_bluth", "Bluth Company", "bluth.example", "hobby"),
    ("org_aperture", "Aperture Science", "aperture.example", "team"),
    ("org_blackmesa", "Black Mesa Research", "blackmesa.example", "pro"),
    ("org_monarch", "Monarch Solutions", "monarch.example", "hobby"),
    ("org_weyland", "Weyland Yutani", "weyland.example", "team"),
]


@dataclass(frozen=True)
class DemoResult:
    loaded: bool
    customers: int
    admin_email: str
    admin_password: str | None


async def load_demo(
    session: AsyncSession, *, as_of: datetime, advance: Callable[[str], None] = lambda step: None
) -> DemoResult:
    """Load the demo unless it is there already. ``advance`` reports each step (a progress bar).

    The admin's password is random and returned once; the CLI keeps it under the data dir.
    """
    if await staff.get_user(session, DEMO_ADMIN_EMAIL) is not None:
        return DemoResult(False, 0, DEMO_ADMIN_EMAIL, None)
    catalog_text = await asyncio.to_thread(CATALOG_PATH.read_text)
    await catalog.apply_catalog(session, catalog_text, as_of=as_of)
    advance("catalog")
    for index, (external_id, name, domain, plan_key) in enumerate(DEMO_CUSTOMERS):
        # Spread sign-ups over the past months so billing periods are anchored on different days.
        created = as_of - timedelta(days=7 * (len(DEMO_CUSTOMERS) - index), hours=index)
        await customers.create_customer(
            session,
            customers.NewCustomer(
                external_id=external_id,
                name=name,
                email=f"billing@{domain}",
                currency="USD",
                plan_key=plan_key,
                started_at=created,
            ),
            as_of=created,
        )
        advance(external_id)
    password = secrets.token_urlsafe(12)
    await staff.create_user(session, email=DEMO_ADMIN_EMAIL, role="admin", password=password, as_of=as_of)
    advance("admin")
    return DemoResult(True, len(DEMO_CUSTOMERS), DEMO_ADMIN_EMAIL, password)


DEMO_STEPS = len(DEMO_CUSTOMERS) + 2
