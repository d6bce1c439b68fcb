"""The console's subscription lifecycle page in-process: linked from the customer page; cancel
(both timings) and pause/unpause previewed with the dry run's amounts, then confirmed; resume;
forms only for roles that may change plans."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from app.billing_run import run_billing
from app.settings import Settings
from app.staff import create_user
from customers.service import NewCustomer, NewSubscription, add_subscription, create_customer
from pricing.service import apply_catalog
from tests.conftest import STORAGE_ADD_ON, now
from tests.console.test_console import PASSWORD, csrf_of, sign_in


@pytest.fixture
async def subscribed(
    session: AsyncSession, catalog: None, sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> str:
    """Staff of two roles, and a Pro customer who started 10 days ago, opening invoice issued."""
    for email, role in (("cs@example.com", "support"), ("ro@example.com", "viewer")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    started = now() - timedelta(days=10)
    customer = await create_customer(
        session,
        NewCustomer(external_id="org_life", name="Life Inc", currency="USD", plan_key="pro", started_at=started),
        as_of=started,
    )
    await session.commit()
    await run_billing(sessions, settings, as_of=now())
    return str(customer.id)


def hidden(html: str, action: str) -> dict[str, str]:
    """The confirmation form's fields, as the preview carries them."""
    form = html.split(f'lifecycle/{action}">')[1].split("</form>")[0]
    return dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))


async def count(session: AsyncSession, sql: str) -> int:
    return int((await session.execute(text(sql))).scalar_one())


async def test_pause_then_unpause_each_previewed_then_confirmed(
    client: httpx.AsyncClient, session: AsyncSession, subscribed: str
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    overview = await client.get(f"/console/customers/{subscribed}")
    assert f'href="/console/customers/{subscribed}/lifecycle"' in overview.text, "linked from the customer page"
    page = await client.get(f"/console/customers/{subscribed}/lifecycle")
    assert 'id="subscription-status">ACTIVE' in page.text and "Preview pause" in page.text
    form = {"csrftoken": csrf_of(page.text), "idempotency_key": "console-pause"}
    preview = await client.post(
        f"/console/customers/{subscribed}/lifecycle/pause/preview", data=form, headers={"HX-Request": "true"}
    )
    assert preview.status_code == 200 and "<html" not in preview.text
    assert re.search(r"Unused time on Pro v1 \([^)]+\)</td><td class=\"num\">-\d+\.\d\d USD", preview.text)
    assert await count(session, "SELECT count(*) FROM subscription_events") == 0, "a preview changes nothing"
    confirm = hidden(preview.text, "pause")
    assert confirm["idempotency_key"] == "console-pause" and confirm["at"]
    first = await client.post(f"/console/customers/{subscribed}/lifecycle/pause", data=confirm)
    second = await client.post(f"/console/customers/{subscribed}/lifecycle/pause", data=confirm)
    assert first.status_code == second.status_code == 303, "a double submit is harmless"
    paused = await client.get(first.headers["location"])
    assert "Subscription paused from" in paused.text and 'id="subscription-status">PAUSED' in paused.text
    assert "Preview unpause" in paused.text and "cs@example.com" in paused.text
    assert await count(session, "SELECT count(*) FROM subscription_events") == 1

    form = {"csrftoken": csrf_of(paused.text), "idempotency_key": "console-unpause"}
    preview = await client.post(f"/console/customers/{subscribed}/lifecycle/unpause/preview", data=form)
    assert "<html" in preview.text and "Remaining time on Pro v1" in preview.text, "works without JavaScript"
    done = await client.post(f"/console/customers/{subscribed}/lifecycle/unpause", data=hidden(preview.text, "unpause"))
    assert "Subscription unpaused" in (await client.get(done.headers["location"])).text


async def test_cancel_at_period_end_then_resume_then_cancel_now_with_its_final_invoice(
    client: httpx.AsyncClient, session: AsyncSession, subscribed: str
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{subscribed}/lifecycle")
    form = {"csrftoken": csrf_of(page.text), "idempotency_key": "end-1", "timing": "PERIOD_END", "reason": "budget"}
    preview = await client.post(f"/console/customers/{subscribed}/lifecycle/cancel/preview", data=form)
    assert "the final invoice as it stands now" in preview.text and 'id="final-total"' in preview.text
    done = await client.post(f"/console/customers/{subscribed}/lifecycle/cancel", data=hidden(preview.text, "cancel"))
    scheduled = await client.get(done.headers["location"])
    assert "A cancel is scheduled for" in scheduled.text and "budget" in scheduled.text
    resumed = await client.post(
        f"/console/customers/{subscribed}/lifecycle/resume",
        data={"csrftoken": csrf_of(scheduled.text), "idempotency_key": "resume-1"},
    )
    assert "Scheduled cancel revoked" in (await client.get(resumed.headers["location"])).text

    form = {**form, "idempotency_key": "now-1", "timing": "IMMEDIATELY", "reason": "fraud"}
    preview = await client.post(f"/console/customers/{subscribed}/lifecycle/cancel/preview", data=form)
    total = re.search(r'id="final-total">(-?[\d.]+) USD', preview.text)
    assert total and total.group(1).startswith("-"), "the unused part of the fee paid in advance is credited"
    assert await count(session, "SELECT count(*) FROM invoices") == 1, "the preview issued nothing"
    done = await client.post(f"/console/customers/{subscribed}/lifecycle/cancel", data=hidden(preview.text, "cancel"))
    ended = await client.get(done.headers["location"])
    assert "final invoice INV-" in ended.text and 'id="subscription-status">CANCELED' in ended.text
    assert "The subscription has ended" in ended.text
    assert await count(session, "SELECT count(*) FROM invoices") == 2


async def test_refusals_show_beside_the_form_and_viewers_see_no_forms(
    client: httpx.AsyncClient, subscribed: str
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{subscribed}/lifecycle")
    refused = await client.post(
        f"/console/customers/{subscribed}/lifecycle/unpause/preview",
        data={"csrftoken": csrf_of(page.text), "idempotency_key": "x"},
    )
    assert refused.status_code == 422 and "the subscription is not paused" in refused.text
    await client.post("/console/logout", data={"csrftoken": csrf_of(page.text)})
    await sign_in(client, "ro@example.com", PASSWORD)
    viewer = await client.get(f"/console/customers/{subscribed}/lifecycle")
    assert "Your role may not change subscriptions" in viewer.text and "Preview pause" not in viewer.text


async def test_with_an_add_on_the_page_picks_the_subscription_its_forms_act_on(
    client: httpx.AsyncClient, session: AsyncSession, subscribed: str
) -> None:
    """Pro and a storage add-on: the page lists both, and canceling the add-on from it leaves Pro
    running (without naming it, the API would refuse: the customer has two subscriptions)."""
    await apply_catalog(session, STORAGE_ADD_ON, as_of=now())
    new = NewSubscription(uuid.UUID(subscribed), "storage-addon", "console-add-on")
    add_on = str((await add_subscription(session, new, as_of=now())).id)
    await session.commit()
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{subscribed}/lifecycle")
    picker = page.text.split('id="subscription-picker"')[1].split("</nav>")[0]
    assert "Pro" in picker and "Storage add-on" in picker
    chosen = await client.get(f"/console/customers/{subscribed}/lifecycle?subscription={add_on}")
    assert f'name="subscription_id" value="{add_on}"' in chosen.text
    form = {
        "csrftoken": csrf_of(chosen.text),
        "idempotency_key": "cancel-add-on",
        "timing": "IMMEDIATELY",
        "reason": "storage moved elsewhere",
        "subscription_id": add_on,
    }
    preview = await client.post(f"/console/customers/{subscribed}/lifecycle/cancel/preview", data=form)
    assert preview.status_code == 200 and 'id="confirm-cancel"' in preview.text, preview.text
    assert await count(session, "SELECT count(*) FROM subscription_events") == 0, "a preview changes nothing"
    done = await client.post(f"/console/customers/{subscribed}/lifecycle/cancel", data=hidden(preview.text, "cancel"))
    assert done.status_code == 303 and f"subscription={add_on}" in done.headers["location"]
    ends = await session.execute(
        text(
            "SELECT p.key, s.cancel_at IS NOT NULL FROM subscriptions s JOIN plan_versions v "
            "ON v.id = s.plan_version_id JOIN plans p ON p.id = v.plan_id WHERE s.customer_id = :c"
        ),
        {"c": subscribed},
    )
    assert {key: ends_at for key, ends_at in ends.all()} == {"pro": False, "storage-addon": True}
