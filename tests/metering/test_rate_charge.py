"""A charge's split across dimensions does not depend on the order usage was read in: billing
reads rollups, the accuracy check reads raw events, and both must give each line the same share."""

from __future__ import annotations

import uuid
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

from metering.aggregation import Partial
from metering.usage import MeterUsage, rate_charge
from pricing.rating import ChargeTerms

REGIONS = ['{"region":"eu"}', '{"region":"us"}', '{"region":"ap"}']


def usage_read_in(order: list[str]) -> MeterUsage:
    meter = cast(Any, SimpleNamespace(id=uuid.uuid4(), aggregation="count"))
    return MeterUsage(meter, {dimensions: Partial(count=7) for dimensions in order})


def test_each_dimension_gets_the_same_share_whatever_the_reading_order() -> None:
    """21 units at a third: the amount does not divide into three equal 12-place shares, so one
    dimension takes the remainder; it must be the same one however the usage was read."""
    charge = cast(Any, SimpleNamespace(where={}))
    terms = ChargeTerms(model="per_unit", unit_price=Decimal(1) / Decimal(3))
    shares = [
        {dimensions: share for dimensions, _, share in rate_charge(usage_read_in(order), charge, terms).parts}
        for order in (REGIONS, list(reversed(REGIONS)), REGIONS[1:] + REGIONS[:1])
    ]
    assert shares[0] == shares[1] == shares[2]
    assert len(set(shares[0].values())) == 2, "two of the three shares are equal, one takes the remainder"
