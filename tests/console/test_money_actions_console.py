"""Money actions in the console, in-process: each role sees only the actions it may take, the
grant's review runs the grant's own validation, grants are voided and promotions edited or
deactivated after a review, and every one of them lands in the audit log."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.staff import create_user
from tests.conftest import now
from tests.console.test_console import PASSWORD, csrf_of, sign_in

ROLES = ("admin", "finance", "support", "viewer")


@pytest.fixture
async def demo(session: AsyncSession, demo_data: None) -> None:
    """One console user per staff role, and the demo customers (without usage)."""
    for role in ROLES:
        await create_user(session, email=f"{role}@staff.test", role=role, password=PASSWORD, as_of=now())
    await session.commit()


class SignedIn(dict[str, httpx.AsyncClient]):
    """A console client per role, signed in when a test first asks for it (a sign-in is an
    argon2 check: tests pay only for the roles they use)."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app

    async def of(self, role: str) -> httpx.AsyncClient:
        if role not in self:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://tally.test")
            assert (await sign_in(client, f"{role}@staff.test", PASSWORD)).status_code == 303
            self[role] = client
        return self[role]


@pytest.fixture
async def signed_in(app: FastAPI, demo: None) -> AsyncIterator[SignedIn]:
    clients = SignedIn(app)
    yield clients
    for client in clients.values():
        await client.aclose()


async def credits_url(client: httpx.AsyncClient, external_id: str) -> str:
    page = await client.get("/console/customers", params={"search": external_id})
    link = re.search(r'href="(/console/customers/[0-9a-f-]{36})"', page.text)
    assert link
    return f"{link.group(1)}/credits"


def grant_form(page: str, amount: str, **more: str) -> dict[str, str]:
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert key
    return {
        "csrftoken": csrf_of(page),
        "amount": amount,
        "reason": "outage apology",
        "expires_at": "",
        "priority": "100",
        "idempotency_key": key.group(1),
        **more,
    }


async def test_each_role_sees_only_the_actions_it_may_take(signed_in: SignedIn) -> None:
    may_see = {
        # action: roles that see it (the mutation's capability in app.auth)
        "Review grant…": {"admin", "finance", "support"},
        "Redeem a promotion": {"admin", "finance", "support"},
        "Void…": {"admin", "finance"},
        "Review purchase…": {"admin", "finance", "support"},
        "New customer": {"admin", "finance", "support"},
        "New promotion": {"admin", "finance", "support"},
        "Charge, commit or set a minimum…": {"admin", "finance"},
    }
    admin = await signed_in.of("admin")
    url = await credits_url(admin, "org_acme")
    granted = await admin.post(url.replace("/credits", "/grants"), data=grant_form((await admin.get(url)).text, "5"))
    assert granted.status_code == 303, "an active grant, which may be voided"
    for role in ROLES:
        client = await signed_in.of(role)
        credits = (await client.get(url)).text
        customers = (await client.get("/console/customers")).text
        promotions = (await client.get("/console/promotions")).text
        charges = (await client.get(url.replace("/credits", "/charges"))).text
        seen = credits + customers + promotions + charges
        shown = {action for action in may_see if action in seen}
        assert shown == {action for action, roles in may_see.items() if role in roles}, role
        assert ("Audit log" in customers) is True, "every staff role reads the audit log"
        assert ('href="/console/reconciliation"' in customers) == (role in {"admin", "finance"}), role
    viewer = await signed_in.of("viewer")
    customer = url.removesuffix("/credits")
    tabs = (
        "",
        "/credits",
        "/charges",
        "/invoices",
        "/discounts",
        "/alerts",
        "/payments",
        "/billing-details",
        "/emails",
    )
    pages = [customer + tab for tab in tabs] + [f"/console/{page}" for page in ("promotions", "customers", "metering")]
    pages += ["/console/anomalies", "/console/emails", "/console/audit", "/console/pricing"]
    for page in pages:
        forms = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]+)"', (await viewer.get(page)).text)
        assert forms == ["/console/logout"], f"a viewer's {page} holds no form that changes anything: {forms}"


async def test_the_grant_review_refuses_what_the_grant_would(signed_in: SignedIn, session: AsyncSession) -> None:
    support = await signed_in.of("support")
    url = await credits_url(support, "org_acme")
    page = (await support.get(url)).text
    grants_before = (await session.execute(text("SELECT count(*) FROM credit_grants"))).scalar_one()
    for amount, message in (
        ("-10", "must be"),
        ("ten dollars", "is not a decimal number"),
        ("150", "your role may grant at most 100.00 USD at once"),
    ):
        review = await support.post(url.replace("/credits", "/grants/confirm"), data=grant_form(page, amount))
        assert review.status_code == 422, amount
        assert "Confirm grant" not in review.text and "Review grant…" in review.text, "back on the form"
        error = re.search(r'name="amount"[^>]*>\s*<span class="field-error">([^<]+)</span>', review.text)
        assert error and message in error.group(1), (amount, review.text[-2000:])
        assert f'value="{amount}"' in review.text, "what was typed stays in the field"
    admin = await signed_in.of("admin")
    page = (await admin.get(url)).text
    review = await admin.post(url.replace("/credits", "/grants/confirm"), data=grant_form(page, "150000"))
    assert review.status_code == 200
    assert "Grant 150,000.00 USD to Acme Robotics?" in review.text
    assert "one hundred and fifty thousand US dollars" in review.text
    small = await admin.post(url.replace("/credits", "/grants/confirm"), data=grant_form(page, "9999.50"))
    assert "Grant 9,999.50 USD" in small.text and "amount-in-words" not in small.text
    grants_after = (await session.execute(text("SELECT count(*) FROM credit_grants"))).scalar_one()
    assert grants_after == grants_before, "a review (a dry run) grants nothing"


async def test_void_a_grant_after_a_review_and_find_it_in_the_audit_log(
    signed_in: SignedIn,
) -> None:
    finance = await signed_in.of("finance")
    url = await credits_url(finance, "org_globex")
    page = (await finance.get(url)).text
    granted = await finance.post(url.replace("/credits", "/grants"), data=grant_form(page, "40"))
    assert granted.status_code == 303
    page = (await finance.get(url)).text
    grant_id = re.search(r'<tr id="grant-([0-9a-f-]{36})"><td>[^<]+</td><td class="num">40.00</td>', page)
    assert grant_id
    void_url = url.replace("/credits", f"/grants/{grant_id.group(1)}/void")
    refused = await finance.post(f"{void_url}/review", data={"csrftoken": csrf_of(page), "reason": " "})
    assert refused.status_code == 422 and "say why: a reason is required" in refused.text
    review = await finance.post(f"{void_url}/review", data={"csrftoken": csrf_of(page), "reason": "granted twice"})
    assert review.status_code == 200 and "40.00 USD that remains of it is taken back" in review.text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', review.text)
    assert key
    form = {"csrftoken": csrf_of(page), "reason": "granted twice", "idempotency_key": key.group(1)}
    voided = await finance.post(void_url, data=form)
    assert voided.status_code == 303
    after = (await finance.get(voided.headers["location"])).text
    assert "Voided the grant: 40.00 USD taken back" in after
    assert re.search(rf'<tr id="grant-{grant_id.group(1)}">.*?<td>voided</td>', after, re.S)
    again = await finance.post(void_url, data=form)
    assert again.status_code == 303, "a double submit of the confirmation voids once, harmlessly"
    other = await finance.post(void_url, data={**form, "idempotency_key": "another void"})
    assert other.status_code == 422 and "the grant is already voided" in other.text
    audit = (await finance.get("/console/audit", params={"action": "credits.", "customer": "org_globex"})).text
    assert audit.count("<code>credits.void</code>") == 1 and "<code>credits.grant</code>" in audit
    assert "staff:finance@staff.test" in audit and "40.00 → 0.00" in audit and "active → voided" in audit


async def test_edit_and_deactivate_a_promotion(signed_in: SignedIn) -> None:
    admin = await signed_in.of("admin")
    page = (await admin.get("/console/promotions")).text
    created = await admin.post(
        "/console/promotions",
        data={"csrftoken": csrf_of(page), "code": "AUTUMN", "description": "Autumn credit", "credit_amount": "12"},
    )
    assert created.status_code == 303
    listed = (await admin.get("/console/promotions")).text
    edit = re.search(r'href="(/console/promotions/[0-9a-f-]{36})" aria-label="Edit AUTUMN"', listed)
    assert edit
    form = {"csrftoken": csrf_of(listed), "description": "Autumn credit, for October", "max_redemptions": "0"}
    not_a_number = await admin.post(edit.group(1), data={**form, "credit_expires_in_days": "ninety"})
    assert not_a_number.status_code == 422 and "must be a whole number" in not_a_number.text
    assert 'value="ninety"' in not_a_number.text, "what was typed stays in the field"
    refused = await admin.post(edit.group(1), data=form)
    assert refused.status_code == 422 and "must be at least 1 (it was redeemed 0 times)" in refused.text
    saved = await admin.post(edit.group(1), data={**form, "max_redemptions": "50", "expires_at": "2031-10-31"})
    assert saved.status_code == 303 and "Saved promotion AUTUMN" in (await admin.get(saved.headers["location"])).text
    deactivated = await admin.post(f"{edit.group(1)}/active", data={"csrftoken": csrf_of(listed), "active": "false"})
    notice = (await admin.get(deactivated.headers["location"])).text
    assert "Promotion AUTUMN is deactivated: no new redemptions" in notice
    url = await credits_url(admin, "org_acme")
    page = (await admin.get(url)).text
    redeemed = await admin.post(
        url.replace("/credits", "/redemptions"),
        data={"csrftoken": csrf_of(page), "code": "AUTUMN", "idempotency_key": "a"},
    )
    assert redeemed.status_code == 422 and "inactive, expired or fully redeemed" in redeemed.text
    audit = await admin.get("/console/audit.csv", params={"action": "promotion.", "actor": "admin@staff.test"})
    rows = list(csv.DictReader(io.StringIO(audit.text)))
    assert [row["action"] for row in rows] == ["promotion.deactivate", "promotion.update", "promotion.create"]
    assert json.loads(rows[1]["before"]) == {
        "description": "Autumn credit",
        "max_redemptions": None,
        "expires_at": None,
    }
    assert json.loads(rows[1]["after"]) == {
        "description": "Autumn credit, for October",
        "max_redemptions": 50,
        "expires_at": "2031-10-31T23:59:59.999999+00:00",
    }
    assert {row["actor"] for row in rows} == {"staff:admin@staff.test"}


class FormFields(HTMLParser):
    """The named inputs (and their values) of the form posting to ``action``."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action, self.inside, self.fields = action, False, dict[str, str]()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "form":
            self.inside = named.get("action") == self.action
        elif (
            self.inside
            and tag in ("input", "select", "textarea")
            and named.get("name")
            and (named.get("type") != "checkbox" or "checked" in named)
        ):
            self.fields.setdefault(str(named["name"]), named.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False


def fields_of(page: str, action: str) -> dict[str, str]:
    parser = FormFields(action)
    parser.feed(page)
    assert parser.fields, f"no form posts to {action}"
    return parser.fields


async def test_every_money_form_shows_what_was_mistyped_beside_the_field(signed_in: SignedIn) -> None:
    """ "ten" in an amount, a threshold or a price is refused beside that field on the form it was
    typed in, never on the error page; a refused purchase shows its reason, never an error."""
    admin = await signed_in.of("admin")
    customer = (await credits_url(admin, "org_acme")).removesuffix("/credits")
    listed = (await admin.get("/console/invoices", params={"customer": "org_acme", "status": "issued"})).text
    invoice = "/console/invoices/" + re.findall(r'href="/console/invoices/(INV-\d+)"', listed)[0]
    forms = [
        # the page, the form's action, what is typed, the message beside the field
        (f"{customer}/credits", f"{customer}/credit-purchases/review", {"amount": "ten"}, "not a decimal number"),
        (f"{customer}/credits", f"{customer}/credit-purchases/review", {"amount": "-5"}, "must be greater than zero"),
        (f"{customer}/credits", f"{customer}/credit-purchases/review", {"amount": "2000000"}, "must be at most"),
        (
            f"{customer}/credits",
            f"{customer}/credit-balance-settings",
            {"low_balance_threshold": "ten"},
            "not a decimal number",
        ),
        (
            f"{customer}/charges",
            f"{customer}/charges/review",
            {"description": "setup", "quantity": "1", "unit_price": "ten"},
            "not a decimal number",
        ),
        (f"{customer}/charges", f"{customer}/minimum-spend", {"amount": "ten"}, "not a decimal number"),
        (
            f"{customer}/alerts",
            f"{customer}/alerts/review",
            {"name": "spend", "thresholds": "ten"},
            "not a decimal number",
        ),
        (invoice, f"{invoice}/credit-notes/review", {"amount": "ten"}, "not a decimal number"),
        ("/console/promotions", "/console/coupons", {"code": "TEN", "name": "Ten", "off": "ten"}, "not a decimal"),
    ]
    for page, action, typed, message in forms:
        data = fields_of((await admin.get(page)).text, action) | typed
        answer = await admin.post(action, data=data)
        assert answer.status_code == 422, (action, typed, answer.status_code, answer.text[-1500:])
        assert "could not be answered" not in answer.text and "Unexpected error" not in answer.text, action
        errors = [html.unescape(e) for e in re.findall(r'class="(?:field-)?error"[^>]*>([^<]+)<', answer.text)]
        assert any(message in error for error in errors), (action, typed, errors)
        assert f'value="{next(iter(typed.values()))}"' in answer.text or action.endswith("credit-notes/review"), (
            "what was typed stays in the field"
        )


async def test_credits_tab_and_promotions_group_thousands(signed_in: SignedIn) -> None:
    admin = await signed_in.of("admin")
    url = await credits_url(admin, "org_acme")
    granted = await admin.post(
        url.replace("/credits", "/grants"), data=grant_form((await admin.get(url)).text, "12345.5")
    )
    assert granted.status_code == 303
    page = (await admin.get(url)).text
    held = re.search(r"<h3>Credits</h3><p>([^<]+)</p>", page)
    assert held and held.group(1).endswith("USD") and "," in held.group(1), "the balance held, 12,3…"
    latest = page[page.index('id="recent-ledger-entries"') :]
    assert '<td class="num">12,345.50 USD</td>' in latest, "the grant's ledger entry"
    assert f'href="{url.removesuffix("/credits")}/ledger"' in latest, "the statement is one click away"
    promotions = (await admin.get("/console/promotions")).text
    created = await admin.post(
        "/console/promotions",
        data={"csrftoken": csrf_of(promotions), "code": "BIGWINTER", "description": "Big", "credit_amount": "2500"},
    )
    assert created.status_code == 303
    assert "<td>2,500.00 USD</td>" in (await admin.get("/console/promotions")).text
