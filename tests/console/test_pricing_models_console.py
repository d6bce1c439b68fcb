"""The Pricing page shows today's plans, each charge in words, the newer models included."""

from __future__ import annotations

import html
import re

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from pricing.service import apply_catalog
from tests.conftest import graphql, now
from tests.console.test_console import PASSWORD, csrf_of, sign_in
from tests.pricing.test_catalog_models import ALL_MODELS

SEATS = """
[[meters]]
key = "seats"
name = "Seats"
unit = "seat"
event_type = "seat.count"
aggregation = "latest"
value_property = "seats"

[[plans]]
key = "team"
name = "Team"
currency = "USD"
interval = "month"
base_fee = "20"

  [[plans.charges]]
  meter = "seats"
  model = "per_unit"
  unit_price = "10"
  billed = "in_advance"
"""


async def test_the_pricing_page_lists_current_plans_readably(client: httpx.AsyncClient, session: AsyncSession) -> None:
    await create_user(session, email="ro@example.com", role="viewer", password=PASSWORD, as_of=now())
    await apply_catalog(session, ALL_MODELS, as_of=now())
    await session.commit()
    await sign_in(client, "ro@example.com", PASSWORD)
    page = await client.get("/console/pricing")
    assert page.status_code == 200
    section = html.unescape(page.text[page.text.index('id="current-plans"') : page.text.index('id="simulation"')])
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))
    assert "P p v1, month 10.00 USD whole days" in text
    for summary in (
        "volume, the tier reached prices every unit: up to 5 at 7 USD each; above 5 at 6 USD each + 30 USD flat",
        "stair steps, one price for the step reached: up to 10: 100 USD; above 10: 300 USD",
        "1 USD per whole package of 100 (a partial package is free)",
        "2.9% of the value + 0.3 USD per event; first 3 events free; each event at least 0.5 USD and at most "
        "12 USD; 500 of the value free",
    ):
        assert summary in text, summary
    token = csrf_of(page.text)
    fragment = await client.post(
        "/console/pricing",
        data={"csrftoken": token, "catalog": ""},
        headers={"HX-Request": "true", "X-CSRFToken": token},
    )
    assert fragment.text.lstrip().startswith('<div id="simulation">')
    assert 'id="current-plans"' not in fragment.text, "an htmx swap renders the simulation block alone"


async def test_graphql_plans_show_the_new_terms(client: httpx.AsyncClient, session: AsyncSession, token_for) -> None:  # type: ignore[no-untyped-def]
    await apply_catalog(session, ALL_MODELS, as_of=now())
    await session.commit()
    answer = await graphql(
        client,
        await token_for("viewer"),
        """{ plans { key proration charges { model rounding percentageRate fixedFee freeEvents perEventMinimum
             perEventMaximum included tiers { upTo unitPrice flatFee } } } }""",
    )
    [plan] = [p for p in answer.json()["data"]["plans"] if p["key"] == "p"]
    volume, steps, package, percentage = plan["charges"]
    assert plan["proration"] == "DAY"
    assert volume["tiers"] == [
        {"upTo": "5", "unitPrice": "7", "flatFee": "0"},
        {"upTo": None, "unitPrice": "6", "flatFee": "30"},
    ]
    assert [t["flatFee"] for t in steps["tiers"]] == ["100", "300"] and steps["model"] == "STAIR_STEP"
    assert (package["rounding"], volume["rounding"]) == ("DOWN", None)
    assert {
        k: percentage[k]
        for k in ("percentageRate", "fixedFee", "freeEvents", "perEventMinimum", "perEventMaximum", "included")
    } == {
        "percentageRate": "2.9",
        "fixedFee": "0.3",
        "freeEvents": 3,
        "perEventMinimum": "0.5",
        "perEventMaximum": "12",
        "included": "500",
    }


async def test_a_charge_billed_in_advance_says_so_on_the_pricing_page(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    await create_user(session, email="ro@example.com", role="viewer", password=PASSWORD, as_of=now())
    await apply_catalog(session, SEATS, as_of=now())
    await session.commit()
    await sign_in(client, "ro@example.com", PASSWORD)
    page = await client.get("/console/pricing")
    section = html.unescape(page.text[page.text.index('id="current-plans"') : page.text.index('id="simulation"')])
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", section))
    assert "in advance 10 USD per unit; billed in advance for the value at the period's start" in text, text
