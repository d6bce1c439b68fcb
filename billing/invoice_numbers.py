"""How an invoice's number is written and read back: ``INV-000042``, the one place the format lives.

Numbers are gapless and sequential across Tally (``billing.invoices.repository.WRITE_INVOICE`` takes them
from one counter; that statement writes the same format in SQL for the ``invoice.issued`` event).
"""

from __future__ import annotations

PREFIX = "INV-"
#: The most digits a number read back may have: it must fit in a bigint.
MAX_DIGITS = 18


def invoice_number(number: int) -> str:
    """``42`` as people and documents see it: ``INV-000042``."""
    return f"{PREFIX}{number:06d}"


def parse_invoice_number(text: str) -> int | None:
    """The number of ``INV-000042`` (any case) or of ``42``; None when it is not one."""
    digits = text.strip().upper().removeprefix(PREFIX)
    if not digits.isdigit() or not digits.isascii() or len(digits) > MAX_DIGITS:
        return None
    return int(digits)
