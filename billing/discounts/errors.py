"""The refusals of coupons, each with its stable code (part of the public contract); a coupon the
customer already has is :class:`ledger.errors.AlreadyRedeemed`, as for a promotion."""

from __future__ import annotations

from ledger.errors import TallyError


class CouponUnavailable(TallyError):
    """A coupon that is inactive, past its redeem-by date or fully redeemed."""

    code = "COUPON_UNAVAILABLE"
