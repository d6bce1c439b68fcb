"""The SQL of the invoice list (:mod:`billing.invoices.search`): one filter, used by the page of
rows and by the totals, so the totals are always those of the rows listed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from ledger.money import MINOR_UNIT_DIGITS

# What an unpaid invoice still asks for: its amount due less what REDUCE_DUE credit notes took
# off it (as ``Invoice.amountStillDue`` and the overview's receivables count it).
_STILL_DUE = """
CASE WHEN i.status = 'issued'
     THEN i.amount_due - coalesce((SELECT sum(n.amount) FROM credit_notes n
                                   WHERE n.invoice_id = i.id AND n.method = 'REDUCE_DUE'), 0)
     ELSE 0 END
"""
# Amount bounds are in major units; each currency's minor unit says how to compare.
_MATCHING = f"""
FROM invoices i
JOIN customers c ON c.id = i.customer_id
JOIN unnest(CAST(:codes AS text[]), CAST(:digits AS int[])) AS unit(code, digits) ON unit.code = i.currency
CROSS JOIN LATERAL (SELECT {_STILL_DUE} AS still_due) AS due
WHERE (CAST(:statuses AS text[]) IS NULL OR i.status = ANY(CAST(:statuses AS text[])))
  AND (CAST(:currency AS text) IS NULL OR i.currency = :currency)
  AND (CAST(:customer_id AS uuid) IS NULL OR i.customer_id = :customer_id)
  AND (CAST(:customer AS text) IS NULL OR c.external_id = :customer
       OR c.external_id ILIKE :customer_pattern OR c.name ILIKE :customer_pattern)
  AND (CAST(:issued_from AS timestamptz) IS NULL OR i.issued_at >= :issued_from)
  AND (CAST(:issued_until AS timestamptz) IS NULL OR i.issued_at < :issued_until)
  AND (CAST(:min_total AS numeric) IS NULL OR i.total >= :min_total * 10 ^ unit.digits)
  AND (CAST(:max_total AS numeric) IS NULL OR i.total <= :max_total * 10 ^ unit.digits)
  AND (NOT CAST(:overdue AS boolean)
       OR (due.still_due > 0 AND i.kind <> 'credit_purchase' AND coalesce(i.due_at, i.issued_at) <= :as_of))
"""

PAGE = text(f"""
SELECT i.*, c.external_id AS customer_external_id, c.name AS customer_name, due.still_due
{_MATCHING}
  AND (CAST(:before_number AS bigint) IS NULL OR i.number < :before_number)
ORDER BY i.number DESC
LIMIT :limit
""")

TOTALS = text(f"""
SELECT i.currency, count(*) AS invoices, sum(i.total)::bigint AS total, sum(due.still_due)::bigint AS still_due
{_MATCHING}
GROUP BY i.currency
ORDER BY i.currency
""")


def _parameters(filters: dict[str, Any]) -> dict[str, Any]:
    codes = sorted(MINOR_UNIT_DIGITS)
    customer = filters.get("customer")
    pattern = (
        None if customer is None else "%" + customer.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
    )
    return {
        **filters,
        "codes": codes,
        "digits": [MINOR_UNIT_DIGITS[code] for code in codes],
        "customer_pattern": pattern,
    }


async def page(session: AsyncSession, filters: dict[str, Any], *, before_number: int | None, limit: int) -> list[Any]:
    params = {**_parameters(filters), "before_number": before_number, "limit": limit}
    return list((await session.execute(PAGE, params)).mappings())


async def totals(session: AsyncSession, filters: dict[str, Any]) -> list[Any]:
    return list((await session.execute(TOTALS, _parameters(filters))).mappings())
