"""The refusals of billing's insights, each with its stable code (part of the public contract)."""

from __future__ import annotations

from ledger.errors import InvalidInput


class AlreadyResolved(InvalidInput):
    """An anomaly acknowledged or resolved after someone resolved it: a resolution is final."""

    code = "ALREADY_RESOLVED"
