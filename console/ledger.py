"""A customer's Ledger tab: one account (receivable or credits, per currency) as a statement in
ledger sequence, with debit and credit columns, the running balance, a link to the invoice or
grant behind each entry, "next page" paging and a CSV of the whole account."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.api.context import TallyContext
from console.pages import CSV_ROW_LIMIT, ContextDep, csv_download, query, render

router = APIRouter(prefix="/console", include_in_schema=False)

ACCOUNTS = {"receivable": "RECEIVABLE", "credits": "CREDITS"}
PAGE_SIZE = 100


async def statement_page(
    request: Request,
    context: TallyContext,
    customer_id: str,
    account: str,
    currency: str,
    *,
    first: int,
    after: str | None,
) -> dict[str, Any] | None:
    variables = {
        "id": customer_id,
        "account": ACCOUNTS.get(account, "RECEIVABLE"),
        "currency": currency or None,
        "first": first,
        "after": after if after and after.isdigit() else None,
    }
    found: dict[str, Any] | None = (await query(request, "ConsoleLedgerStatement", variables, context))[
        "ledgerStatement"
    ]
    return found


@router.get("/customers/{customer_id}/ledger")
async def ledger_tab(
    request: Request,
    context: ContextDep,
    customer_id: str,
    account: str = "receivable",
    currency: str = "",
    after: str | None = None,
) -> Response:
    customer = (await query(request, "ConsoleCustomerHeader", {"id": customer_id}, context))["customer"]
    statement = await statement_page(request, context, customer_id, account, currency[:3], first=PAGE_SIZE, after=after)
    if customer is None or statement is None:
        return render(request, "not_found.html", {"what": "customer"}, status_code=404)
    chosen = {"account": statement["account"].lower(), "currency": statement["currency"]}
    return render(
        request,
        "customer_ledger.html",
        {
            "customer": customer,
            "statement": statement,
            "chosen": chosen,
            "after": after,
            "first_url": f"?{urlencode(chosen)}",
            "next_url": f"?{urlencode({**chosen, 'after': statement['pageInfo']['endCursor']})}"
            if statement["pageInfo"]["hasNextPage"]
            else None,
            "csv_url": f"/console/customers/{customer_id}/ledger.csv?{urlencode(chosen)}",
        },
    )


@router.get("/customers/{customer_id}/ledger.csv")
async def ledger_csv(
    request: Request, context: ContextDep, customer_id: str, account: str = "receivable", currency: str = ""
) -> Response:
    header = [
        "sequence",
        "recorded_at",
        "effective_at",
        "kind",
        "description",
        "currency",
        "debit",
        "credit",
        "balance",
        "invoice",
        "grant_id",
        "transaction_id",
        "actor",
    ]
    rows: list[list[Any]] = []
    after, statement = None, None
    while len(rows) < CSV_ROW_LIMIT:
        statement = await statement_page(request, context, customer_id, account, currency[:3], first=100, after=after)
        if statement is None:
            return render(request, "not_found.html", {"what": "customer"}, status_code=404)
        for entry in statement["entries"]:
            rows.append(
                [
                    entry["sequence"],
                    entry["recordedAt"],
                    entry["effectiveAt"],
                    entry["kind"],
                    entry["description"],
                    entry["balance"]["currency"],
                    entry["debit"]["amount"],
                    entry["credit"]["amount"],
                    entry["balance"]["amount"],
                    entry["invoiceNumber"] or "",
                    entry["grantId"] or "",
                    entry["transactionId"],
                    entry["actor"] or "",
                ]
            )
        if not statement["pageInfo"]["hasNextPage"]:
            break
        after = statement["pageInfo"]["endCursor"]
    assert statement is not None
    name = f"ledger-{statement['account'].lower()}-{statement['currency']}-{customer_id}.csv"
    return csv_download(name, header, rows[:CSV_ROW_LIMIT])
