"""`tally demo`: the example catalog, customers across its plans, and a staff admin to sign in.

Loading is idempotent: a second run finds the demo admin and changes nothing.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry import trace
from sqlmodel.ext.asyncio.session import AsyncSession

from app import staff
from app.settings import Settings
from app.telemetry import current_trace_id
from app.usage_ingest import ingest_limits
from billing.invoices import service as billing
from billing.invoices.plan_changes import change_plan
from billing.invoices.service import BillingWindow
from customers import credits
from customers import service as customers
from customers.subscriptions import PlanChangeRequest
from ledger import promotions
from metering.service import ROLL_UP_LIMIT, ingest, roll_up
from pricing import service as catalog

tracer = trace.get_tracer("tally.demo")

CATALOG_PATH = Path(__file__).with_name("catalog.toml")
DEMO_ADMIN_EMAIL = "admin@example.com"

# A customer billed by a run three weeks ago who has not paid since: on 14 days' terms its invoices fell
# due a week ago, so the Overview's aging and the Invoices page's overdue filter have something to show.
LATE_PAYER = "org_vandelay"
LATE_PAYER_BILLED_AGO = timedelta(days=20)

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
    session: AsyncSession,
    *,
    as_of: datetime,
    advance: Callable[[str], None] = lambda step: None,
    with_usage: bool = True,
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
            actor="demo",
        )
        advance(external_id)
    await add_demo_credits(session, as_of=as_of)
    if with_usage:
        await send_demo_usage(session, as_of=as_of, advance=advance)
    late_payer = (await customers.ids_by_external_id(session, [LATE_PAYER]))[LATE_PAYER]
    await bill_demo_customers(session, as_of=as_of - LATE_PAYER_BILLED_AGO, only=late_payer)
    await change_demo_plans(session, as_of=as_of)
    await bill_demo_customers(session, as_of=as_of)
    advance("invoices")
    password = secrets.token_urlsafe(12)
    await staff.create_user(session, email=DEMO_ADMIN_EMAIL, role="admin", password=password, as_of=as_of)
    advance("admin")
    return DemoResult(True, len(DEMO_CUSTOMERS), DEMO_ADMIN_EMAIL, password)


async def change_demo_plans(session: AsyncSession, *, as_of: datetime) -> None:
    """Hooli moved to Team today (prorated); Wayne moves to Team when its period ends."""
    for external_id, timing in (("org_hooli", "IMMEDIATELY"), ("org_wayne", "PERIOD_END")):
        customer = await customers.get_customer(session, external_id=external_id)
        assert customer is not None
        request = PlanChangeRequest(customer.id, "team", timing, f"demo-change-{external_id}", actor=DEMO_ADMIN_EMAIL)
        await change_plan(session, request, as_of=as_of)


async def bill_demo_customers(session: AsyncSession, *, as_of: datetime, only: uuid.UUID | None = None) -> int:
    """Every period closed by ``as_of`` (of the one customer ``only`` names, else of all),
    invoiced as `tally billing run` would, in the demo's one transaction: the console shows real
    invoices, with usage, prorations and credits applied, each due ``payment_terms`` after issue."""
    window = BillingWindow(grace=timedelta(hours=1), late_window=timedelta(days=35))
    issued = 0
    with tracer.start_as_current_span("demo.billing", attributes={"tally.as_of": as_of.isoformat()}):
        for customer_id in await billing.due_customers(session, as_of=as_of, window=window):
            if only is not None and customer_id != only:
                continue
            while (
                found := await billing.issue_next_invoice(
                    session, customer_id, as_of=as_of, window=window, trace_id=current_trace_id()
                )
            ) is not None:
                issued += 1
                if not found.more_due:
                    break
    return issued


async def add_demo_credits(session: AsyncSession, *, as_of: datetime) -> None:
    """Goodwill grants for a few customers, a welcome promotion redeemed by some, and a launch
    promotion with a hard cap: what customer success sees on a typical day."""
    by_external_id = await customers.ids_by_external_id(session, [c[0] for c in DEMO_CUSTOMERS])
    for external_id, amount, days, reason in (
        ("org_acme", 5000, 90, "outage credit, incident 2026-10-14"),
        ("org_globex", 2500, None, "annual contract bonus"),
        ("org_initech", 1000, 30, "migration help"),
    ):
        await credits.grant_credits(
            session,
            customer_id=by_external_id[external_id],
            currency="USD",
            amount=amount,
            reason=reason,
            actor="staff:admin@example.com",
            idempotency_key=f"demo-grant-{external_id}",
            as_of=as_of,
            expires_at=as_of + timedelta(days=days) if days else None,
        )
    await promotions.create_promotion(
        session,
        code="WELCOME10",
        description="Welcome credit for new teams",
        credit_amount=1000,
        currency="USD",
        actor="staff:admin@example.com",
        as_of=as_of,
        credit_expires_in_days=60,
        max_redemptions=100,
    )
    await promotions.create_promotion(
        session,
        code="LAUNCH50",
        description="Launch week: 50 USD, first 20 customers",
        credit_amount=5000,
        currency="USD",
        actor="staff:admin@example.com",
        as_of=as_of,
        credit_expires_in_days=30,
        max_redemptions=20,
    )
    for external_id in ("org_piedpiper", "org_wonka", "org_hooli"):
        await credits.redeem_promotion(
            session,
            code="WELCOME10",
            customer_id=by_external_id[external_id],
            currency="USD",
            actor="staff:admin@example.com",
            idempotency_key=f"demo-redeem-{external_id}",
            as_of=as_of,
        )


USAGE_DAYS = 30
DEMO_STEPS = len(DEMO_CUSTOMERS) + USAGE_DAYS + 3
MODELS = ("fast-1", "large-1")


def demo_events(day_start: datetime, day: int, rng: random.Random) -> list[dict[str, Any]]:
    """One day of plausible usage for every demo customer: requests and tokens by model on
    Pro, requests and active seats on Team, a light trickle on Hobby (some reach its limit)."""
    events: list[dict[str, Any]] = []

    def add(customer: str, event_type: str, at: datetime, properties: dict[str, Any]) -> None:
        events.append(
            {
                "id": f"demo-{customer}-{event_type}-{day}-{len(events)}",
                "customer": customer,
                "type": event_type,
                "timestamp": at.isoformat(),
                "properties": properties,
            }
        )

    for external_id, _, _, plan_key in DEMO_CUSTOMERS:
        scale = 0.5 + (sum(map(ord, external_id)) % 10) / 5
        if plan_key == "hobby":
            for _ in range(rng.randint(0, 3)):
                add(
                    external_id,
                    "request.completed",
                    day_start + timedelta(seconds=rng.randint(0, 86_399)),
                    {"model": "fast-1"},
                )
            continue
        for _ in range(int(rng.randint(20, 60) * scale)):
            at = day_start + timedelta(seconds=rng.randint(0, 86_399))
            model = rng.choice(MODELS)
            add(external_id, "request.completed", at, {"model": model})
            if plan_key == "pro":
                add(external_id, "llm.tokens", at, {"model": model, "tokens": rng.randint(200, 60_000)})
        if plan_key == "team":
            for seat in rng.sample(range(16), rng.randint(6, 14)):
                add(
                    external_id,
                    "seat.active",
                    day_start + timedelta(hours=rng.randint(8, 18)),
                    {"user_id": f"user-{seat}"},
                )
    return events


async def send_demo_usage(
    session: AsyncSession, *, as_of: datetime, advance: Callable[[str], None] = lambda step: None
) -> int:
    """A month of usage through the real ingestion function: past days as daily backfills, today
    as a live feed (each batch received seconds after its last event), plus three events for a
    customer that does not exist yet, left in quarantine."""
    rng = random.Random(42)
    limits = ingest_limits(Settings())
    accepted = 0
    today = as_of.replace(hour=0, minute=0, second=0, microsecond=0)
    for day in range(USAGE_DAYS, 0, -1):
        day_start = today - timedelta(days=day - 1)
        events = sorted(
            (e for e in demo_events(day_start, day, rng) if e["timestamp"] < as_of.isoformat()),
            key=lambda e: e["timestamp"],
        )
        # Past days arrive as one backfill batch; today arrives as a live feed in 5-minute batches.
        window = timedelta(minutes=5) if day == 1 else timedelta(days=1)
        while events:
            window_end = datetime.fromisoformat(events[0]["timestamp"]) + window
            batch = [e for e in events if datetime.fromisoformat(e["timestamp"]) < window_end]
            events = events[len(batch) :]
            latest = datetime.fromisoformat(batch[-1]["timestamp"])
            received_at = min(latest + timedelta(seconds=rng.randint(1, 5)), as_of)
            for offset in range(0, len(batch), 1000):
                part = batch[offset : offset + 1000]
                with tracer.start_as_current_span("demo.ingest", attributes={"tally.events": len(part)}):
                    result = await ingest(
                        session, part, received_at=received_at, limits=limits, trace_id=current_trace_id()
                    )
                    result.observe()
                accepted += result.accepted
        advance(f"usage {day_start:%Y-%m-%d}")
    newcomer = [
        {
            "id": f"demo-newco-{i}",
            "customer": "org_newco",
            "type": "request.completed",
            "timestamp": (as_of - timedelta(minutes=10 * i)).isoformat(),
            "properties": {"model": "fast-1"},
        }
        for i in range(3)
    ]
    with tracer.start_as_current_span("demo.ingest", attributes={"tally.events": len(newcomer)}):
        (await ingest(session, newcomer, received_at=as_of, limits=limits, trace_id=current_trace_id())).observe()
    while (await roll_up(session)) == ROLL_UP_LIMIT:  # as the server's roller would, before the demo's billing
        pass
    return accepted
