"""`tally credits buy|auto-recharge` against a real database: a purchase invoiced once by key, a
dry run that writes nothing, auto-recharge enabled below its threshold buying once, and refusals
as one-line reasons with exit 1 and nothing written."""

from __future__ import annotations

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.service import NewCustomer, create_customer
from tests.app.test_cli import run, scalar
from tests.conftest import now

__all__ = ["run"]


@pytest.fixture
async def customer(session: AsyncSession) -> None:
    await create_customer(session, NewCustomer(external_id="org_cli", name="CLI Co", currency="USD"), as_of=now())
    await session.commit()


def test_credits_bought_once_by_key_and_auto_recharge_buys_once(run, database_url: str, customer: None) -> None:
    preview = run("credits", "buy", "org_cli", "25", "--dry-run")
    assert preview.exit_code == 0 and "would invoice 25.00 USD of credits" in preview.output
    assert scalar(database_url, "SELECT count(*) FROM credit_purchases") == 0
    bought = run("credits", "buy", "org_cli", "25", "--key", "k1", "--expires-in-days", "30")
    again = run("credits", "buy", "org_cli", "25", "--key", "k1", "--expires-in-days", "30")
    assert bought.exit_code == again.exit_code == 0 and "granted when paid" in bought.output
    assert scalar(database_url, "SELECT count(*) FROM credit_purchases") == 1, "the same key buys once"
    for _ in range(2):
        set_up = run("credits", "auto-recharge", "org_cli", "--threshold", "5", "--amount", "20", "--monthly-cap", "40")
        assert set_up.exit_code == 0, set_up.output
    assert "auto-recharge on, credits 0.00" in set_up.output
    assert scalar(database_url, "SELECT count(*) FROM credit_purchases WHERE origin = 'auto_recharge'") == 1


REFUSALS = [
    (("buy", "org_cli", "--", "-5"), "amount: must be greater than zero"),
    (("buy", "org_cli", "1e30"), "amount:"),
    (("buy", "org_cli", "5", "--key", "k" * 300), "idempotencyKey:"),
    (("buy", "org_nobody", "5"), "no such customer"),
    (("auto-recharge", "org_cli", "--threshold", "5", "--amount", "20"), "rechargeMonthlyCap: is required"),
]


def test_refusals_say_why_and_write_nothing(run, database_url: str, customer: None) -> None:
    for args, reason in REFUSALS:
        refused = run("credits", *args)
        assert refused.exit_code == 1 and reason in refused.output, (args, refused.output)
    assert scalar(database_url, "SELECT count(*) FROM credit_purchases") == 0
    assert scalar(database_url, "SELECT count(*) FROM credit_balance_settings") == 0
