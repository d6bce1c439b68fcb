"""Coupons: a percentage or a fixed amount off a customer's invoices, applied by staff with a code.

What is reused from promotions (:mod:`ledger.promotions`): the code format and its
case-insensitive uniqueness (``CODE_PATTERN``, ``code_key``), the ``ALREADY_REDEEMED`` refusal
(once per customer and code), and the redemption limit kept by one conditional increment that
re-checks ``active``, the limit and the expiry on the row's newest version. What differs: a
promotion grants credit at once (a ledger transaction), a coupon changes invoices to come, so it
writes a :class:`~billing.models.CustomerDiscount` that the invoices then use period by period.

Rules where the issue is silent:
- ``applies_to`` names meter keys: a meter keeps its key across plans and plan versions (a plan
  charge's id changes with every version), invoice lines carry the meter they bill, and the
  catalog and the usage API already speak in meter keys. Empty: the whole invoice.
- ``redeem_by`` is the last moment a coupon can be applied; a discount already given runs its
  course. Archiving a coupon stops new applications, not the discounts given.
- A period of a discount is used by an ``opening`` or ``period`` invoice it takes something off;
  an invoice with nothing it applies to leaves its periods for the next. ``one_off`` and
  ``commitment`` invoices are not discounted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel.ext.asyncio.session import AsyncSession

from billing.discounts import repository
from billing.discounts.discounting import Discountable, DiscountTaken, DiscountTerms, discounts_taken
from billing.discounts.errors import CouponUnavailable
from billing.models import COUPON_DURATIONS, Coupon, CustomerDiscount
from ledger.errors import AlreadyRedeemed, IdempotencyKeyReused, InvalidInput, NotFound, Taken
from ledger.money import normalize_currency, places_needed, plain_decimal, to_major, to_minor_exact
from ledger.promotions import CODE_PATTERN
from pricing.service import list_meters

MAX_NAME_LENGTH = 200
MAX_PERCENT_PLACES = 4
MAX_DURATION_PERIODS = 120
MAX_APPLIES_TO = 50
MAX_REDEMPTIONS = 10**9
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class NewCoupon:
    code: str
    name: str
    duration: str
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None
    currency: str | None = None
    applies_to: tuple[str, ...] = ()
    duration_periods: int | None = None
    max_redemptions: int | None = None
    redeem_by: datetime | None = None


def _checked_text(value: str, *, field: str, limit: int) -> str:
    """Required text of at most ``limit`` characters (the length is checked before anything else)."""
    text = (value or "").strip()
    if not text:
        raise InvalidInput("is required", field=field)
    if len(text) > limit:
        raise InvalidInput(f"must be at most {limit} characters", field=field)
    return text


def _checked_code(code: str) -> str:
    code = (code or "").strip()
    if not CODE_PATTERN.match(code):
        raise InvalidInput("3 to 64 letters, digits, '-' or '_'", field="code")
    return code


def _off(new: NewCoupon) -> tuple[Decimal | None, int | None, str | None]:
    """The percentage, or the amount in minor units and its currency; exactly one of the two."""
    if (new.percent_off is None) == (new.amount_off is None):
        raise InvalidInput("give either percentOff or amountOff", field="percentOff")
    if new.percent_off is not None:
        percent = new.percent_off
        if new.currency is not None:
            raise InvalidInput("a currency goes with amountOff only", field="currency")
        if not percent.is_finite() or not Decimal(0) < percent <= 100:
            raise InvalidInput("must be more than 0 and at most 100", field="percentOff")
        if places_needed(percent) > MAX_PERCENT_PLACES:
            raise InvalidInput(f"must have at most {MAX_PERCENT_PLACES} decimal places", field="percentOff")
        return plain_decimal(percent), None, None
    assert new.amount_off is not None
    if new.currency is None:
        raise InvalidInput("is required with amountOff", field="currency")
    currency = normalize_currency(new.currency)
    if not new.amount_off.is_finite() or new.amount_off <= 0:
        raise InvalidInput("must be more than 0", field="amountOff")
    return None, to_minor_exact(new.amount_off, currency, field="amountOff"), currency


async def _meter_keys(session: AsyncSession, keys: tuple[str, ...]) -> list[str]:
    if len(keys) > MAX_APPLIES_TO:
        raise InvalidInput(f"at most {MAX_APPLIES_TO} meters", field="appliesTo")
    known = {meter.key for meter in await list_meters(session)}
    wanted = list(dict.fromkeys(key.strip() for key in keys))
    unknown = [key for key in wanted if key not in known]
    if unknown:
        shown = ", ".join(repr(key[:64]) for key in unknown[:5])
        raise InvalidInput(f"no meter {shown}: name meters by their key", field="appliesTo")
    return wanted


async def create_coupon(session: AsyncSession, new: NewCoupon, *, actor: str, as_of: datetime) -> Coupon:
    """Write a coupon; every field is checked before anything is written."""
    code = _checked_code(new.code)
    name = _checked_text(new.name, field="name", limit=MAX_NAME_LENGTH)
    percent_off, amount_off, currency = _off(new)
    if new.duration not in COUPON_DURATIONS:
        raise InvalidInput(f"must be one of {', '.join(COUPON_DURATIONS)}", field="duration")
    if (new.duration == "repeating") != (new.duration_periods is not None):
        raise InvalidInput("is required for a repeating coupon, and only for one", field="durationPeriods")
    if new.duration_periods is not None and not 1 <= new.duration_periods <= MAX_DURATION_PERIODS:
        raise InvalidInput(f"must be between 1 and {MAX_DURATION_PERIODS}", field="durationPeriods")
    if new.max_redemptions is not None and not 1 <= new.max_redemptions <= MAX_REDEMPTIONS:
        raise InvalidInput(f"must be between 1 and {MAX_REDEMPTIONS:,}", field="maxRedemptions")
    if new.redeem_by is not None and new.redeem_by <= as_of:
        raise InvalidInput("must be in the future", field="redeemBy")
    coupon = Coupon(
        code=code,
        code_key=code.lower(),
        name=name,
        percent_off=percent_off,
        amount_off=amount_off,
        currency=currency,
        applies_to=await _meter_keys(session, new.applies_to),
        duration=new.duration,
        duration_periods=new.duration_periods,
        max_redemptions=new.max_redemptions,
        redeem_by=new.redeem_by,
        actor=actor,
        created_at=as_of,
    )
    if not await repository.insert_coupon(session, coupon):
        raise Taken(f"a coupon {code!r} already exists (codes ignore case)", field="code")
    return coupon


async def archive_coupon(session: AsyncSession, coupon_id: uuid.UUID, *, as_of: datetime) -> Coupon:
    """Stop the coupon being applied again; the discounts it gave keep running. Archiving an
    archived coupon changes nothing."""
    await repository.archive_coupon(session, coupon_id, as_of)
    coupon = await repository.coupon_by_id(session, coupon_id)
    if coupon is None:
        raise NotFound("no such coupon", field="couponId")
    return coupon


async def coupons(session: AsyncSession, *, include_archived: bool = True) -> list[Coupon]:
    return await repository.coupons(session, include_archived=include_archived)


async def apply_coupon(
    session: AsyncSession,
    *,
    customer_id: uuid.UUID,
    currency: str,
    code: str,
    idempotency_key: str,
    actor: str,
    as_of: datetime,
) -> CustomerDiscount:
    """Give the customer the coupon's discount: once per customer and coupon, while the coupon is
    active, before its ``redeem_by`` and under its redemption limit. The same key with the same
    code returns the first discount and counts nothing; with another code it is refused."""
    key = _checked_text(idempotency_key, field="idempotencyKey", limit=MAX_KEY_LENGTH)
    code = (code or "").strip()
    coupon = await repository.coupon_by_code(session, code.lower()) if CODE_PATTERN.match(code) else None
    if coupon is None:
        raise NotFound(f"no coupon {code[:64]!r}", field="code")
    earlier = await repository.discount_by_key(session, customer_id, key)
    if earlier is not None:
        if earlier.coupon_id != coupon.id:
            raise IdempotencyKeyReused()
        return earlier
    if coupon.currency is not None and coupon.currency != currency:
        raise InvalidInput(f"this coupon takes {coupon.currency} off, the customer pays in {currency}", field="code")
    discount = CustomerDiscount(
        customer_id=customer_id,
        coupon_id=coupon.id,
        periods={"once": 1, "repeating": coupon.duration_periods}.get(coupon.duration),
        status="active",
        idempotency_key=key,
        actor=actor,
        applied_at=as_of,
    )
    if not await repository.insert_discount(session, discount):
        raced = await repository.discount_by_key(session, customer_id, key)
        if raced is not None and raced.coupon_id == coupon.id:
            return raced
        raise AlreadyRedeemed("this customer already has this coupon", field="code")
    if not await repository.count_redemption(session, coupon.id, as_of):
        raise CouponUnavailable("this coupon is archived, past its redeem-by date or fully redeemed", field="code")
    return discount


async def remove_discount(
    session: AsyncSession, *, customer_id: uuid.UUID, discount_id: uuid.UUID, actor: str, as_of: datetime
) -> CustomerDiscount:
    """End a discount: invoices issued from now on no longer use it (issued ones keep theirs).
    Removing a removed discount changes nothing. The coupon's redemption stays counted."""
    discount = await repository.discount_by_id(session, discount_id, lock=True)
    if discount is None or discount.customer_id != customer_id:
        raise NotFound("this customer has no such discount", field="discountId")
    await repository.remove_discount(session, discount_id, actor, as_of)
    removed = await repository.discount_by_id(session, discount_id)
    assert removed is not None
    return removed


async def coupon_of(session: AsyncSession, coupon_id: uuid.UUID) -> Coupon:
    coupon = await repository.coupon_by_id(session, coupon_id)
    assert coupon is not None, "a discount's coupon is never deleted (a foreign key)"
    return coupon


async def periods_used(session: AsyncSession, discount_id: uuid.UUID) -> int:
    return (await repository.periods_used(session, [discount_id])).get(discount_id, 0)


@dataclass(frozen=True)
class ActiveDiscount:
    discount: CustomerDiscount
    coupon: Coupon
    periods_used: int

    @property
    def periods_left(self) -> int | None:
        """Invoices it will still discount; None: forever."""
        return None if self.discount.periods is None else max(self.discount.periods - self.periods_used, 0)


async def active_discounts(
    session: AsyncSession, customer_ids: list[uuid.UUID], *, lock: bool = False
) -> dict[uuid.UUID, list[ActiveDiscount]]:
    """Each customer's discounts that are not removed and have periods left, in the order they
    stack (oldest first)."""
    rows = await repository.active_discounts(session, customer_ids, lock=lock)
    used = await repository.periods_used(session, [row.id for row in rows])
    found = await repository.coupons_by_id(session, list({row.coupon_id for row in rows}))
    theirs: dict[uuid.UUID, list[ActiveDiscount]] = {customer_id: [] for customer_id in customer_ids}
    for row in rows:
        active = ActiveDiscount(row, found[row.coupon_id], used.get(row.id, 0))
        if active.periods_left != 0:
            theirs[row.customer_id].append(active)
    return theirs


def describe_off(coupon: Coupon, meter_names: dict[str, str]) -> str:
    """What a coupon takes off, as an invoice line says it: "20% off API calls", "5.00 USD off"."""
    if coupon.percent_off is not None:
        off = f"{plain_decimal(coupon.percent_off)}% off"
    else:
        assert coupon.amount_off is not None and coupon.currency is not None
        off = f"{to_major(coupon.amount_off, coupon.currency)} {coupon.currency} off"
    if coupon.applies_to:
        off += " " + ", ".join(meter_names.get(key, key) for key in coupon.applies_to)
    return off


@dataclass(frozen=True)
class InvoiceDiscount:
    """A discount an invoice takes, and which of the discount's periods the invoice uses."""

    taken: DiscountTaken
    period_number: int


async def invoice_discounts(
    session: AsyncSession, customer_id: uuid.UUID, currency: str, lines: list[Discountable], *, lock: bool
) -> list[InvoiceDiscount]:
    """What the customer's discounts take off an invoice of ``lines``. ``lock`` (issuing) holds the
    discounts' rows until the invoice commits; a preview only reads them."""
    theirs = (await active_discounts(session, [customer_id], lock=lock))[customer_id]
    theirs = [d for d in theirs if d.coupon.currency in (None, currency)]
    if not theirs:
        return []
    meters = {meter.key: meter for meter in await list_meters(session)}
    names = {key: meter.name for key, meter in meters.items()}
    terms = []
    for active in theirs:
        coupon = active.coupon
        of = f" ({active.periods_used + 1} of {active.discount.periods})" if coupon.duration == "repeating" else ""
        terms.append(
            DiscountTerms(
                discount_id=active.discount.id,
                description=f"Discount {coupon.code}: {coupon.name}, {describe_off(coupon, names)}{of}",
                percent_off=coupon.percent_off,
                amount_off=coupon.amount_off,
                meter_ids=frozenset(meters[key].id for key in coupon.applies_to if key in meters)
                if coupon.applies_to
                else None,
            )
        )
    numbers = {active.discount.id: active.periods_used + 1 for active in theirs}
    return [InvoiceDiscount(taken, numbers[taken.discount_id]) for taken in discounts_taken(lines, terms, currency)]
