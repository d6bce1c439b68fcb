"""Usage alerts in the console in-process: a customer's Alerts tab creates one after a review (a
double submit creates one), refuses hostile input beside its field, and deletes after a review."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from tests.console.test_console import PASSWORD, csrf_of, customer_link, sign_in, staff

__all__ = ["staff"]

FORM = {"name": "Spend watch", "metric": "spend", "meter_key": "", "threshold_unit": "absolute",
        "thresholds": "100, 250.50", "spend_base": ""}  # fmt: skip


async def test_an_alert_is_created_after_review_refused_beside_its_field_and_deleted_after_review(
    client: httpx.AsyncClient, staff: None, session: AsyncSession
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    base = await customer_link(client, "org_acme")
    tab = await client.get(f"{base}/alerts")
    token = csrf_of(tab.text)
    assert "No alerts." in tab.text and "Nothing fired yet." in tab.text
    for hostile, message in [
        ({"thresholds": "1, " * 300}, "at most 10 thresholds"),
        ({"thresholds": "-3"}, "above 0"),
        ({"name": "x" * 5000}, "1 to 100 characters"),
        ({"metric": "usage", "meter_key": "nope"}, "give the key of one"),
    ]:
        refused = await client.post(f"{base}/alerts/review", data={**FORM, **hostile, "csrftoken": token})
        assert refused.status_code == 422 and message in refused.text, hostile
    review = await client.post(f"{base}/alerts/review", data={**FORM, "csrftoken": token})
    assert "Create the alert “Spend watch” for Acme Robotics?" in review.text
    assert "running amount in USD" in review.text and "100 USD, 250.5 USD" in review.text
    assert (await session.execute(text("SELECT count(*) FROM usage_alerts"))).scalar_one() == 0, "review only"
    first = await client.post(f"{base}/alerts", data={**FORM, "csrftoken": token})
    second = await client.post(f"{base}/alerts", data={**FORM, "csrftoken": token})
    assert first.status_code == 303 and second.status_code == 422 and "an alert of this name exists" in second.text
    listed = (await client.get(first.headers["location"])).text
    assert "Alert Spend watch created" in listed
    alert_id = re.search(r'id="alert-([0-9a-f-]+)"', listed)
    assert alert_id
    delete_review = await client.post(f"{base}/alerts/{alert_id.group(1)}/delete/review", data={"csrftoken": token})
    assert "Delete the alert “Spend watch” of Acme Robotics?" in delete_review.text
    deleted = await client.post(f"{base}/alerts/{alert_id.group(1)}/delete", data={"csrftoken": token})
    assert "No alerts." in (await client.get(deleted.headers["location"])).text
