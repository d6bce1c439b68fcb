"""`tally charge …` and `tally commitment …` against a real database: outputs, retries by key,
refusals as one-line reasons with exit 1 and nothing written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.service import NewCustomer, create_customer
from tests.app.test_cli import run, scalar
from tests.conftest import now

__all__ = ["run"]


@pytest.fixture
async def customer(session: AsyncSession, catalog: None) -> None:
    await create_customer(
        session, NewCustomer(external_id="org_cli", name="CLI Co", currency="USD", plan_key="pro"), as_of=now()
    )
    await session.commit()


def test_every_charge_and_commitment_command_has_help(run) -> None:
    for command in (
        ["charge"],
        ["charge", "create"],
        ["charge", "list"],
        ["charge", "cancel"],
        ["commitment"],
        ["commitment", "create"],
        ["commitment", "minimum-spend"],
    ):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command


def test_charges_now_and_next_invoice_listed_and_canceled(run, database_url: str, customer: None) -> None:
    args = ("charge", "create", "org_cli", "--description", "Setup", "--quantity", "3", "--unit-price", "33.335")
    preview = json.loads(run(*args, "--now", "--dry-run", "--json").stdout)
    assert (preview["amount"], preview["amountDue"], preview["chargeId"]) == ("100.01", "100.01", None)
    assert scalar(database_url, "SELECT count(*) FROM one_off_charges") == 0
    made = json.loads(run(*args, "--now", "--idempotency-key", "cli-1", "--json").stdout)
    assert made["invoiceNumber"].startswith("INV-") and made["status"] == "invoiced"
    again = json.loads(run(*args, "--now", "--idempotency-key", "cli-1", "--json").stdout)
    assert again["chargeId"] == made["chargeId"], "the same key charges once"
    pending = run(*args)
    assert pending.exit_code == 0 and "on org_cli's next invoice" in pending.output

    listed = json.loads(run("charge", "list", "org_cli", "--status", "pending", "--json").stdout)
    [waiting] = listed
    canceled = run("charge", "cancel", waiting["chargeId"], "--reason", "mistake")
    assert canceled.exit_code == 0 and "canceled" in canceled.output
    statuses = scalar(database_url, "SELECT array_agg(status ORDER BY created_at) FROM one_off_charges")
    assert statuses == ["invoiced", "canceled"]

    for bad, reason in (
        (("--unit-price", "-1"), "unitPrice: must not be negative"),
        (("--unit-price", "abc"), "--unit-price: 'abc' is not a decimal number"),
        (("--currency", "EUR"), "currency: the customer is billed in USD, not EUR"),
    ):
        refused = run("charge", "create", "org_cli", "--description", "x", "--unit-price", "1", *bad)
        assert refused.exit_code == 1 and reason in refused.output, refused.output
    unknown = run("charge", "create", "nobody", "--description", "x", "--unit-price", "1")
    assert unknown.exit_code == 1 and "no such customer" in unknown.output
    assert scalar(database_url, "SELECT count(*) FROM one_off_charges") == 2


def test_commitment_and_minimum_spend(run, database_url: str, customer: None) -> None:
    ends = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    made = run("commitment", "create", "org_cli", "--amount", "1200", "--ends-at", ends, "--json")
    assert made.exit_code == 0, made.output
    document = json.loads(made.stdout)
    assert (document["amount"], document["invoiceNumber"][:4]) == ("1200.00", "INV-")
    assert scalar(database_url, "SELECT remaining FROM credit_grants WHERE source = 'commitment'") == 120000
    past = run("commitment", "create", "org_cli", "--amount", "5", "--ends-at", "2001-01-01T00:00:00Z")
    assert past.exit_code == 1 and "endsAt" in past.output
    minimum = run("commitment", "minimum-spend", "org_cli", "--amount", "150", "--reason", "contract")
    assert minimum.exit_code == 0 and "org_cli: 150.00 USD per period from" in minimum.output
    assert scalar(database_url, "SELECT count(*) FROM minimum_spends") == 1
