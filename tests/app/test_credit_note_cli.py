"""`tally credit-note …` against a real database: a note previewed, made, retried by key and
listed; refusals are one-line reasons naming the field, exit 1, nothing written."""

from __future__ import annotations

import json

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from customers.service import NewCustomer, create_customer
from tests.app.test_cli import run, scalar
from tests.conftest import now

__all__ = ["run"]


@pytest.fixture
async def customer(session: AsyncSession, catalog: None) -> None:
    await create_customer(
        session, NewCustomer(external_id="org_cn", name="CN Co", currency="USD", plan_key="pro"), as_of=now()
    )
    await session.commit()


def test_every_credit_note_command_has_help(run) -> None:  # type: ignore[no-untyped-def]
    for command in (["credit-note"], ["credit-note", "create"], ["credit-note", "list"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output, command


def test_a_note_previewed_made_retried_listed_and_refused(run, database_url: str, customer: None) -> None:  # type: ignore[no-untyped-def]
    made = run("charge", "create", "org_cn", "--description", "Setup", "--unit-price", "100.01", "--now", "--json")
    assert made.exit_code == 0, made.output
    invoice = str(json.loads(made.stdout)["invoiceNumber"])  # 100.01, one line
    args = ("credit-note", "create", invoice, "--method", "credit", "--reason", "duplicate", "--amount", "40.00")
    preview = json.loads(run(*args, "--dry-run", "--json").stdout)
    assert (preview["number"], preview["amount"], preview["dryRun"]) == (None, "40.00", True)
    assert scalar(database_url, "SELECT count(*) FROM credit_notes") == 0
    made = json.loads(run(*args, "--idempotency-key", "cli-cn-1", "--json").stdout)
    assert (made["number"], made["invoiceNumber"], made["method"]) == ("CN-000001", invoice, "CREDIT")
    again = json.loads(run(*args, "--idempotency-key", "cli-cn-1", "--json").stdout)
    assert again["number"] == "CN-000001", "the same key credits once"
    per_line = run("credit-note", "create", invoice, "--method", "reduce-due", "--reason", "other", "--line", "0=10.00")
    assert per_line.exit_code == 0 and "CN-000002: 10.00 USD credited on" in per_line.output, per_line.output
    listed = json.loads(run("credit-note", "list", "org_cn", "--json").stdout)
    assert [(n["number"], n["amount"], n["method"]) for n in listed] == [
        ("CN-000002", "10.00", "REDUCE_DUE"),
        ("CN-000001", "40.00", "CREDIT"),
    ]
    plain = run("credit-note", "list", "org_cn")
    assert plain.exit_code == 0 and "CN-000001" in plain.output
    for bad, reason in (
        (("--amount", "50.02"), "amount: is more than the invoice's lines have left to credit (50.01)"),
        (("--amount", "0"), "amount: must be greater than zero"),
        (("--amount", "abc"), "--amount: 'abc' is not a decimal number"),
        (("--line", "7=1.00"), "lines.0.position: invoice"),
        (("--line", "x"), "--line: 'x' is not POSITION=AMOUNT"),
        (("--note", "n" * 5000, "--amount", "1"), "note: must be at most 1000 characters"),
    ):
        refused = run("credit-note", "create", invoice, "--method", "credit", "--reason", "other", *bad)
        assert refused.exit_code == 1 and reason in refused.output, (bad, refused.output)
    for bad, reason in (
        (("INV-999999", "--method", "credit"), "INVOICE: no such invoice"),
        ((invoice, "--method", "cash"), "--method: must be one of"),
        ((invoice, "--method", "refund"), "method: invoice"),
    ):
        refused = run("credit-note", "create", *bad, "--reason", "other", "--amount", "1")
        assert refused.exit_code == 1 and reason in refused.output, (bad, refused.output)
    assert scalar(database_url, "SELECT count(*) FROM credit_notes") == 2
