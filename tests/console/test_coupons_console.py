"""Coupons in the console in-process: created and archived on the Promotions page (errors beside
their field), applied on a customer's Discounts tab after a review that shows the upcoming invoice
with the discount (a double submit applies once), and removed after a review of their own."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.console.test_console import PASSWORD, csrf_of, customer_link, sign_in, staff

__all__ = ["staff"]

COUPON = {
    "code": "WELCOME10",
    "name": "Welcome",
    "kind": "percent",
    "off": "10",
    "currency": "",
    "applies_to": "",
    "duration": "repeating",
    "duration_periods": "2",
    "max_redemptions": "5",
    "redeem_by": "",
}


async def test_a_coupon_is_created_applied_after_review_and_removed_after_review(
    client: httpx.AsyncClient, staff: None, session: AsyncSession
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get("/console/promotions")
    token = csrf_of(page.text)
    assert "No coupons yet." in page.text
    bad = await client.post("/console/coupons", data={**COUPON, "off": "101", "csrftoken": token})
    assert bad.status_code == 422 and "must be more than 0 and at most 100" in bad.text
    assert 'value="WELCOME10"' in bad.text, "the form keeps what was typed"
    created = await client.post("/console/coupons", data={**COUPON, "csrftoken": token})
    assert created.status_code == 303
    listed = (await client.get(created.headers["location"])).text
    assert "Coupon WELCOME10 created" in listed and "10% off" in listed and "2 invoices" in listed and "0 / 5" in listed

    base = await customer_link(client, "org_acme")
    tab = await client.get(f"{base}/discounts")
    assert "No discounts." in tab.text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', tab.text)
    assert key
    form = {"csrftoken": token, "code": "welcome10", "idempotency_key": key.group(1)}
    unknown = await client.post(f"{base}/discounts/review", data={**form, "code": "NOPE"})
    assert unknown.status_code == 422 and "no coupon" in unknown.text
    review = await client.post(f"{base}/discounts/review", data=form)
    assert "Apply WELCOME10 to Acme Robotics?" in review.text
    assert "Discount WELCOME10: Welcome, 10% off (1 of 2)" in review.text, "the upcoming invoice with it"
    assert (await session.execute(text("SELECT count(*) FROM customer_discounts"))).scalar_one() == 0, "review only"
    first = await client.post(f"{base}/discounts", data=form)
    second = await client.post(f"{base}/discounts", data=form)
    assert first.status_code == second.status_code == 303
    applied = (await client.get(first.headers["location"])).text
    assert "Coupon WELCOME10 applied" in applied and 'id="discount-WELCOME10"' in applied
    assert (await session.execute(text("SELECT redemptions FROM coupons"))).scalar_one() == 1, "applied once"

    discount_id = (await session.execute(text("SELECT id FROM customer_discounts"))).scalar_one()
    review = await client.post(f"{base}/discounts/{discount_id}/remove/review", data={"csrftoken": token})
    assert "Remove WELCOME10 from Acme Robotics?" in review.text and "Discount WELCOME10" not in review.text
    removed = await client.post(f"{base}/discounts/{discount_id}/remove", data={"csrftoken": token})
    assert "Discount WELCOME10 removed" in (await client.get(removed.headers["location"])).text

    coupon_id = (await session.execute(text("SELECT id FROM coupons"))).scalar_one()
    archived = await client.post(f"/console/coupons/{coupon_id}/archive", data={"csrftoken": token})
    assert "Coupon WELCOME10 archived" in (await client.get(archived.headers["location"])).text
