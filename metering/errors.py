"""Metering's refusals, each with its stable code."""

from __future__ import annotations

from ledger.errors import NotFound


class UnknownMeter(NotFound):
    """A meter key the catalog does not have: the same code and field wherever a meter is named
    (GraphQL's field error or userError, REST's 404)."""

    code = "UNKNOWN_METER"

    def __init__(self, meter_key: str, *, field: str = "meter"):
        super().__init__(f"no meter {meter_key!r}", field=field)
