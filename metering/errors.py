"""Metering's refusals, each with its stable code (part of the public contract). The codes of a
rejected event are :class:`metering.events.Code`; the event log's ``EVENT_LOG_UNAVAILABLE`` is
:class:`metering.event_log.LogUnavailable`."""

from __future__ import annotations

from ledger.errors import InvalidInput, NotFound


class UnknownMeter(NotFound):
    """A meter key the catalog does not have: the same code and field wherever a meter is named
    (GraphQL's field error or userError, REST's 404)."""

    code = "UNKNOWN_METER"

    def __init__(self, meter_key: str, *, field: str = "meter"):
        super().__init__(f"no meter {meter_key!r}", field=field)


class InvalidBody(InvalidInput):
    """A request body that is not what the endpoint reads (not a JSON object, an unknown field)."""

    code = "INVALID_BODY"


class InvalidMeterKey(InvalidInput):
    code = "INVALID_METER"


class InvalidIdempotencyKey(InvalidInput):
    code = "INVALID_IDEMPOTENCY_KEY"


class InvalidQuantity(InvalidInput):
    code = "INVALID_QUANTITY"


class InvalidTtl(InvalidInput):
    code = "INVALID_TTL"


class MeterNotAdditive(InvalidInput):
    """An authorization against a meter that reads a level rather than a sum: a level cannot be
    held in advance."""

    code = "METER_NOT_ADDITIVE"


class BodyNotEvents(InvalidBody):
    """The body is neither a JSON array of events nor NDJSON: the whole request is refused."""


class InvalidRange(InvalidInput):
    """A usage range whose end is not after its start (ranges are half-open: ``[from, to)``)."""

    code = "INVALID_RANGE"


class TooManyPoints(InvalidInput):
    code = "TOO_MANY_POINTS"


class TooManyBuckets(InvalidInput):
    code = "TOO_MANY_BUCKETS"


class ReplayLimitOutOfRange(InvalidInput):
    """A quarantine replay asked for fewer than one event or more than one transaction should
    carry. GraphQL and the CLI refuse it alike, before anything is replayed; the code stays the
    generic ``INVALID`` that ``replayQuarantine`` has always answered with."""

    code = "INVALID"

    def __init__(self, most: int):
        super().__init__(f"must be between 1 and {most}", field="limit")
