"""The console's Billing details page in-process: a tab of every customer page; the form's review
step (updateCustomer's dry run: each field before and after), its confirmation, the history;
refusals beside their inputs (htmx and not); the form only for roles that may change them."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from customers.service import NewCustomer, create_customer
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in


@pytest.fixture
async def customer_id(session: AsyncSession) -> str:
    for email, role in (("cs@example.com", "support"), ("ro@example.com", "viewer")):
        await create_user(session, email=email, role=role, password=PASSWORD, as_of=now())
    customer = await create_customer(
        session, NewCustomer(external_id="org_bd", name="Acme", currency="EUR", email="ap@acme.test"), as_of=now()
    )
    await session.commit()
    return str(customer.id)


def form_fields(page: str, action: str) -> dict[str, str]:
    """The fields of the form posting to ``action``, as the page fills them."""
    form = page.split(f'action="{action}"')[1].split("</form>")[0]
    fields = dict(re.findall(r'<input name="([^"]+)"[^>]*value="([^"]*)"', form))
    fields |= dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form))
    fields |= {name: value for name, value in re.findall(r'<textarea name="([^"]+)"[^>]*>([^<]*)</textarea>', form)}
    for name, options in re.findall(r'<select name="([^"]+)">(.*?)</select>', form, re.S):
        fields[name] = re.search(r'<option value="([^"]+)" selected', options).group(1)  # type: ignore[union-attr]
    return {name: html.unescape(value) for name, value in fields.items()}


async def changes(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT count(*) FROM customer_billing_detail_changes"))).scalar_one())


async def test_review_then_confirm_a_change_of_billing_details(
    client: httpx.AsyncClient, session: AsyncSession, customer_id: str
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    overview = await client.get(f"/console/customers/{customer_id}")
    assert f'href="/console/customers/{customer_id}/billing-details"' in overview.text, "a tab of the customer page"
    page = await client.get(f"/console/customers/{customer_id}/billing-details")
    assert page.status_code == 200 and "Never changed" in page.text
    review_action = f"/console/customers/{customer_id}/billing-details/review"
    form = form_fields(page.text, review_action)
    assert form["name"] == "Acme" and form["locale"] == "en" and form["tax_exemption"] == "NONE"
    form |= {
        "legal_name": "Acme SAS",
        "line1": "1 rue de Rivoli",
        "postal_code": "75001",
        "city": "Paris",
        "country": "fr",
        "tax_id": "fr 40 303 265 045",
        "locale": "fr",
        "invoice_emails": "billing@acme.test\ncfo@acme.test",
    }

    review = await client.post(review_action, data=form, headers={"HX-Request": "true"})
    assert review.status_code == 200 and "<html" not in review.text, "htmx gets the editor alone"
    assert 'id="billing-details-review"' in review.text
    assert re.search(r"<code>address.country</code></td>\s*<td>—</td>\s*<td>FR</td>", review.text)
    assert "FR40303265045" in review.text and "billing@acme.test, cfo@acme.test" in review.text
    assert await changes(session) == 0, "a review changes nothing"

    confirm = form_fields(review.text, f"/console/customers/{customer_id}/billing-details")
    done = await client.post(f"/console/customers/{customer_id}/billing-details", data=confirm)
    assert done.status_code == 303
    shown = await client.get(done.headers["location"])
    assert "Billing details changed: legalName, address.line1" in shown.text
    assert 'id="addressee">Acme SAS' in shown.text and 'id="billing-tax-id">FR40303265045' in shown.text
    assert "staff:cs@example.com" in shown.text, "the history says who"
    assert await changes(session) == 1

    again = await client.post(f"/console/customers/{customer_id}/billing-details", data=confirm)
    assert "Nothing changed" in (await client.get(again.headers["location"])).text
    assert await changes(session) == 1, "a second submit changes nothing more"


async def test_refusals_show_beside_their_inputs(
    client: httpx.AsyncClient, session: AsyncSession, customer_id: str
) -> None:
    await sign_in(client, "cs@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{customer_id}/billing-details")
    review_action = f"/console/customers/{customer_id}/billing-details/review"
    form = form_fields(page.text, review_action) | {
        "country": "ZZZ",
        "locale": "xx",
        "invoice_emails": "ok@acme.test\nnot an email",
        "legal_name": "L" * 500,
    }
    refused = await client.post(review_action, data=form)
    assert refused.status_code == 422 and "<html" in refused.text, "without htmx, the whole page again"
    assert re.search(r'id="error-country">[^<]*not an ISO 3166-1 alpha-2', refused.text)
    assert re.search(r'id="error-locale">must be one of en, fr, de, es', refused.text)
    assert re.search(r'id="error-invoice_emails">line 2: [^<]*is not an email address', refused.text)
    assert re.search(r'id="error-legal_name">must be at most 200 characters', refused.text)
    assert 'value="ZZZ"' in refused.text, "the form as it was filled"
    swapped = await client.post(review_action, data=form, headers={"HX-Request": "true"})
    assert swapped.status_code == 200 and 'id="error-country"' in swapped.text
    assert await changes(session) == 0


async def test_a_viewer_reads_the_details_without_a_form(client: httpx.AsyncClient, customer_id: str) -> None:
    await sign_in(client, "ro@example.com", PASSWORD)
    page = await client.get(f"/console/customers/{customer_id}/billing-details")
    assert page.status_code == 200 and 'id="billing-recipients">ap@acme.test' in page.text
    assert "Your role may not change billing details" in page.text and "Review…" not in page.text
    refused = await client.post(
        f"/console/customers/{customer_id}/billing-details/review",
        data={"csrftoken": csrf_of(page.text), "name": "Hijack"},
    )
    assert refused.status_code == 400 and "may not update billing details" in refused.text
