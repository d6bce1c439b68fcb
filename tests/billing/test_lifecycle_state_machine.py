"""A random walk over a subscription's life: create (with a trial or not) → usage → end or extend
the trial → change → pause → unpause → cancel (both timings) → resume, at random moments inside
the bounds, the billing run after every step.

After every step, what was billed must equal an independent model kept by this test from the
operations alone: base fees are Σ over each closed period of fee × its share of the full period
(a calendar month; the trial is its own, without a fee) for its ACTIVE parts, plus the fee billed
in advance for the open period; usage is Σ calls × the price of the plan in effect at each call,
for calls in closed periods that were billable (active; trialing on a plan whose trial usage is
charged; paused on a plan that meters usage while paused). The ledger verifies after every step.
The model is a list of dated entries folded in time order, and the trial's end.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.database import create_engine, session_factory
from billing.invoices.plan_changes import change_plan
from billing.subscriptions.trials import change_trial_billed
from customers.lifecycle import CANCEL, PAUSE, RESUME, UNPAUSE
from customers.subscriptions import PlanChangeRequest
from customers.trials import TrialChangeRequest
from ledger.errors import TallyError
from ledger.verify import verify
from pricing.service import apply_catalog
from tests.billing.lifecycle_support import CATALOG, FEES, WINDOW, all_lines, bill, lifecycle, send_calls, subscribe

START = datetime(2026, 3, 1, tzinfo=UTC)
# Periods are calendar months (the first paid one after a trial a stub of its month).
WALK_CATALOG = CATALOG.replace('interval = "month"\n', 'interval = "month"\nbilling_anchor = "calendar"\n').replace(
    'base_fee = "100.00"\n', 'base_fee = "100.00"\ntrial_usage = "charged"\n'
)
PAUSED_USAGE = {"hundred": "meter", "sixty": "meter", "strict": "refuse"}
TRIAL_USAGE = {"hundred": "charged", "sixty": "free", "strict": "free"}
MAX_TRIAL = timedelta(days=365)


def month_containing(moment: datetime) -> tuple[datetime, datetime]:
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def share(part_start: datetime, part_end: datetime, start: datetime, end: datetime) -> Decimal:
    return Decimal((part_end - part_start) // timedelta(microseconds=1)) / Decimal(
        (end - start) // timedelta(microseconds=1)
    )


@dataclass
class Entry:
    moment: datetime
    kind: str  # plan, PAUSE, UNPAUSE, CANCEL (a trial's end is the model's ``trial_end``)
    plan: str | None = None
    scheduled: bool = False  # made for a period's end


@dataclass
class Model:
    """The subscription as this test understands it, and what the billing run must have billed."""

    plan: str
    trial_end: datetime | None = None
    entries: list[Entry] = field(default_factory=list)
    calls: list[tuple[datetime, int]] = field(default_factory=list)  # accepted calls
    cursor: datetime | None = None  # invoiced through
    closed: list[tuple[datetime, datetime, datetime, datetime]] = field(default_factory=list)  # and its full period
    advance: dict[datetime, Decimal] = field(default_factory=dict)  # fee billed in advance, by period start

    def state(self, moment: datetime) -> tuple[str, str]:
        """(status, plan) at ``moment``: the entries up to it, folded in time order."""
        status, plan = "ACTIVE", self.plan
        for entry in sorted(self.entries, key=lambda e: e.moment):
            if entry.moment > moment:
                break
            if entry.kind == "plan":
                plan = entry.plan or plan
            else:
                status = {PAUSE: "PAUSED", UNPAUSE: "ACTIVE", CANCEL: "CANCELED"}[entry.kind]
        if status == "ACTIVE" and self.trial_end is not None and moment < self.trial_end:
            status = "TRIALING"
        return status, plan

    def period(self, moment: datetime) -> tuple[datetime, datetime, datetime, datetime]:
        """(start, end, full start, full end) of the period containing ``moment``."""
        if self.trial_end is not None and moment < self.trial_end:
            return START, self.trial_end, START, self.trial_end
        full_start, full_end = month_containing(moment)
        start = max(full_start, self.trial_end) if self.trial_end is not None else full_start
        return start, full_end, full_start, full_end

    def in_advance(self, start: datetime) -> Decimal:
        _, end, full_start, full_end = self.period(start)
        return self.fee(start) * share(start, end, full_start, full_end)

    def ends(self) -> datetime | None:
        return next((e.moment for e in self.entries if e.kind == CANCEL), None)

    def fee(self, moment: datetime) -> Decimal:
        status, plan = self.state(moment)
        return Decimal(FEES[plan][0]) if status == "ACTIVE" else Decimal(0)

    def billable(self, moment: datetime) -> bool:
        status, plan = self.state(moment)
        return (
            status == "ACTIVE"
            or (status == "TRIALING" and TRIAL_USAGE[self.state(START)[1]] == "charged")
            or (status == "PAUSED" and PAUSED_USAGE[plan] == "meter")
        )

    def run(self, as_of: datetime, grace: timedelta = WINDOW.grace) -> None:
        """The billing run: the opening invoice, then each period closed ``grace`` ago (a canceled
        one closes when it is canceled), each billing the next period's fee in advance."""
        if self.cursor is None:
            if as_of < START:
                return
            self.cursor, self.advance[START] = START, self.in_advance(START)
        while self.state(self.cursor)[0] != "CANCELED":
            start, end, full_start, full_end = self.period(self.cursor)
            ends = self.ends()
            closes_at = min(end, ends) if ends is not None else end
            if closes_at + grace > as_of:
                return
            self.closed.append((start, end, full_start, full_end))
            self.advance[end] = self.in_advance(end)
            self.cursor = end

    def base_fees(self) -> Decimal:
        total = Decimal(0)
        for start, end, full_start, full_end in self.closed:
            moments = sorted({start, end, *(e.moment for e in self.entries if start < e.moment < end)})
            for part_start, part_end in itertools.pairwise(moments):
                total += self.fee(part_start) * share(part_start, part_end, full_start, full_end)
        return total + (self.advance.get(self.cursor, Decimal(0)) if self.cursor else Decimal(0))

    def usage(self) -> Decimal:
        return sum(
            (
                Decimal(FEES[self.state(at)[1]][1]) * count
                for at, count in self.calls
                if any(start <= at < end for start, end, _, _ in self.closed) and self.billable(at)
            ),
            Decimal(0),
        )

    def accepts(self, at: datetime) -> bool:
        status, plan = self.state(at)
        return status != "CANCELED" and not (status == "PAUSED" and PAUSED_USAGE[plan] == "refuse")

    def allows(self, kind: str, now: datetime, plan: str | None = None, at: datetime | None = None) -> bool:
        ends, (status, current) = self.ends(), self.state(now)
        over = ends is not None and ends <= now
        return {
            CANCEL: ends is None,
            RESUME: ends is not None and not over,
            PAUSE: not over and status != "PAUSED" and at is not None and self.state(at)[0] != "TRIALING",
            UNPAUSE: not over and status == "PAUSED",
            "change": ends is None and plan != current,
        }[kind]

    def allows_trial(self, kind: str, now: datetime, at: datetime) -> bool:
        """A trial ends early inside itself, or is extended within a year of the start, while it
        lasts, and neither while a cancel or a plan change is scheduled."""
        if self.trial_end is None or self.trial_end <= now or self.ends() is not None:
            return False
        if any(e.kind == "plan" and e.scheduled and e.moment > now for e in self.entries):
            return False
        if kind == "end":
            return START < at < self.trial_end
        return self.trial_end < at <= START + MAX_TRIAL


step_strategy = st.tuples(
    # hours later, or into the next month's or the trial end's grace hour
    st.one_of(st.integers(1, 48), st.integers(1, 10 * 24), st.just("boundary"), st.just("trial_end")),
    st.one_of(  # a cancel ends the walk's interest: the others come more often
        st.tuples(st.just("usage"), st.integers(1, 5)),
        st.tuples(st.just("usage"), st.integers(1, 5)),
        st.tuples(st.just("change"), st.sampled_from(sorted(FEES)), st.sampled_from(["IMMEDIATELY", "PERIOD_END"])),
        st.tuples(st.just("change"), st.sampled_from(sorted(FEES)), st.sampled_from(["IMMEDIATELY", "PERIOD_END"])),
        st.tuples(st.just(PAUSE)),
        st.tuples(st.just(PAUSE)),
        st.tuples(st.just(UNPAUSE)),
        st.tuples(st.just(UNPAUSE)),
        st.tuples(st.just(CANCEL), st.sampled_from(["IMMEDIATELY", "PERIOD_END", "PERIOD_END"])),
        st.tuples(st.just(RESUME)),
        st.tuples(st.just(RESUME)),
        st.tuples(st.just("bill")),
        st.tuples(st.just("trial"), st.just("end")),
        st.tuples(st.just("trial"), st.just("extend"), st.integers(1, 40)),
        st.tuples(st.just("trial"), st.just("end")),
        st.tuples(st.just("trial"), st.just("extend"), st.integers(1, 40)),
    ),
    st.integers(1, 100),  # where the moment falls between the earliest it may be and now, in percent
)


async def billed(session: AsyncSession, customer_id: uuid.UUID) -> tuple[Decimal, Decimal]:
    lines = await all_lines(session, customer_id)
    fees = sum((line.amount_exact for line in lines if line.kind in ("base_fee", "proration")), Decimal(0))
    usage = sum((line.amount_exact for line in lines if line.kind in ("usage", "late_usage")), Decimal(0))
    return fees, usage


async def walk(session: AsyncSession, first_plan: str, trial_days: int | None, steps: list[tuple[Any, ...]]) -> None:
    external_id = f"w-{uuid.uuid4().hex[:10]}"
    customer_id = await subscribe(session, external_id, first_plan, START, trial_days=trial_days)
    model, now, last = Model(first_plan), START, START
    if trial_days:
        model.trial_end = START + timedelta(days=trial_days)
    for delay, action, where in steps:
        if delay == "boundary":
            now = month_containing(now)[1] + timedelta(minutes=where % 60)
        elif delay == "trial_end" and model.trial_end is not None and model.trial_end > now:
            now = model.trial_end + timedelta(minutes=where % 60)
        else:
            now += timedelta(hours=delay if isinstance(delay, int) else 24)
        period_start, period_end, _, _ = model.period(now)
        earliest = max(last, period_start)
        at = earliest + (now - earliest) * where / 100 if earliest < now else None
        kind = action[0]
        if kind == "usage":
            called = now - timedelta(minutes=1)
            result = await send_calls(session, external_id, action[1], called, received=now)
            expected = action[1] if model.accepts(called) else 0
            assert result.accepted == expected, (kind, now, result.rejected)
            if expected:
                model.calls.append((called, expected))
            last = max(last, called)
        elif kind == "change" and at is not None and at > earliest:
            _, plan, timing = action
            request = PlanChangeRequest(customer_id, plan, timing, uuid.uuid4().hex, actor="test", at=at)
            allowed = model.allows("change", now, plan)
            try:
                await change_plan(session, request, as_of=now)
                await session.commit()
            except TallyError as refused:
                await session.rollback()
                assert not allowed, (kind, now, refused.code, refused.message)
            else:
                assert allowed, (kind, now)
                moment = period_end if timing == "PERIOD_END" else at
                model.entries = [e for e in model.entries if not (e.scheduled and e.moment >= moment)]
                model.entries.append(Entry(moment, "plan", plan, scheduled=timing == "PERIOD_END"))
                last = max(last, at) if timing == "IMMEDIATELY" else last
        elif kind in (PAUSE, UNPAUSE, CANCEL, RESUME) and ((at is not None and at > earliest) or kind == RESUME):
            timing = action[1] if kind == CANCEL else None
            moment = period_end if timing == "PERIOD_END" else at
            options: dict[str, Any] = {"timing": timing} if kind == CANCEL else {}
            if kind != RESUME and timing != "PERIOD_END":
                options["at"] = at
            allowed = model.allows(kind, now, at=moment)
            try:
                await lifecycle(session, customer_id, kind, as_of=now, **options)
            except TallyError as refused:
                assert not allowed, (kind, now, refused.code, refused.message)
            else:
                assert allowed, (kind, now)
                if kind == RESUME:
                    model.entries = [e for e in model.entries if e.kind != CANCEL]
                else:
                    assert moment is not None
                    if kind == CANCEL:
                        model.entries = [e for e in model.entries if not (e.scheduled and e.moment >= moment)]
                    model.entries.append(Entry(moment, kind, scheduled=timing == "PERIOD_END"))
                    if timing == "IMMEDIATELY":
                        model.run(now, grace=timedelta(0))  # the final invoice, at once
                if kind != RESUME and timing != "PERIOD_END":
                    last = max(last, moment)
        elif kind == "trial":
            until = (model.trial_end or now) + timedelta(days=action[2]) if action[1] == "extend" else at
            if until is None:
                continue
            request = TrialChangeRequest(customer_id, action[1], uuid.uuid4().hex, actor="test", at=until)
            allowed = model.allows_trial(action[1], now, until)
            try:
                await change_trial_billed(session, request, as_of=now, window=WINDOW)
                await session.commit()
            except TallyError as refused:
                await session.rollback()
                assert not allowed, (action, now, refused.code, refused.message)
            else:
                assert allowed, (action, now)
                model.trial_end = until
                if action[1] == "end":
                    model.run(now, grace=timedelta(0))  # the trial's invoice, at once
                    last = max(last, until)
        await bill(session, customer_id, now)
        model.run(now)
        fees, usage = await billed(session, customer_id)
        assert abs(fees - model.base_fees()) < Decimal("1e-18"), (now, action, fees, model.base_fees())
        assert usage == model.usage(), (now, action, usage, model.usage())
        assert await verify(session) == []


FULL_LIFE = [
    (72, ("usage", 3), 50),
    (48, ("change", "sixty", "IMMEDIATELY"), 50),
    (24, (PAUSE,), 50),
    (24, ("usage", 2), 10),
    (48, (UNPAUSE,), 50),
    (24, (CANCEL, "PERIOD_END"), 1),
    (24, (RESUME,), 1),
    ("boundary", ("bill",), 30),
    (48, (CANCEL, "IMMEDIATELY"), 40),
    (24, ("usage", 2), 1),
]
PAUSED_ACROSS_PERIODS = [
    (240, ("change", "strict", "PERIOD_END"), 1),
    ("boundary", ("bill",), 10),
    (120, (PAUSE,), 50),
    (24, ("usage", 2), 1),
    ("boundary", ("usage", 1), 5),
    (72, (UNPAUSE,), 50),
    (480, (CANCEL, "PERIOD_END"), 1),
    ("boundary", ("bill",), 59),
    (3, ("bill",), 1),
]
# Usage sent late from a pause under a refusing plan, received after a scheduled change to a plan
# that meters paused usage took over: the plan in effect when it happened refuses it.
LATE_FROM_A_REFUSING_PAUSE = [
    ("boundary", ("usage", 1), 1),
    ("boundary", (PAUSE,), 1),
    ("boundary", ("change", "hundred", "PERIOD_END"), 1),
    ("boundary", ("usage", 1), 60),
]

# Trial usage charged (Hundred's trial), a pause refused inside the trial, a change inside it, the
# trial ended early mid-month (a stub of March billed in advance), then the life after it.
TRIAL_LIFE = [
    (48, ("usage", 2), 50),
    (24, (PAUSE,), 50),
    (24, ("change", "sixty", "IMMEDIATELY"), 50),
    (24, ("usage", 1), 50),
    (24, ("trial", "end"), 50),
    (24, ("usage", 3), 50),
    ("boundary", ("bill",), 10),
    (48, (CANCEL, "IMMEDIATELY"), 50),
]
# A free trial extended past the month's end stays one period; a cancel at its end ends it there.
TRIAL_EXTENDED_PAST_A_MONTH = [
    (24, ("usage", 2), 50),
    (24, ("trial", "extend", 30), 50),
    ("boundary", ("usage", 1), 30),
    (24, (CANCEL, "PERIOD_END"), 50),
    ("trial_end", ("bill",), 30),
    (24, ("trial", "end"), 50),
]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(first_plan="hundred", trial_days=None, steps=FULL_LIFE)
@example(first_plan="hundred", trial_days=None, steps=PAUSED_ACROSS_PERIODS)
@example(first_plan="strict", trial_days=None, steps=LATE_FROM_A_REFUSING_PAUSE)
@example(first_plan="hundred", trial_days=20, steps=TRIAL_LIFE)
@example(first_plan="sixty", trial_days=10, steps=TRIAL_EXTENDED_PAST_A_MONTH)
@given(
    first_plan=st.sampled_from(sorted(FEES)),
    trial_days=st.one_of(st.none(), st.integers(1, 45), st.integers(1, 45)),  # a trial, twice as often
    steps=st.lists(step_strategy, min_size=4, max_size=12),
)
def test_any_walk_of_lifecycle_steps_bills_what_the_model_says(
    database_url: str, first_plan: str, trial_days: int | None, steps: list[tuple[Any, ...]]
) -> None:
    async def scenario() -> None:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                if not await session.scalar(text("SELECT count(*) FROM plans")):
                    await apply_catalog(session, WALK_CATALOG, as_of=START - timedelta(days=1))
                    await session.commit()
                await walk(session, first_plan, trial_days, steps)
        finally:
            await engine.dispose()

    asyncio.run(scenario())
