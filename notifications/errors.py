"""The refusals of notifications (webhook endpoints), each with its stable code (part of the
public contract); a text too long is :class:`ledger.errors.TooLong`."""

from __future__ import annotations

from ledger.errors import InvalidInput


class UnsupportedScheme(InvalidInput):
    """An endpoint URL that is not http:// or https://."""

    code = "UNSUPPORTED_SCHEME"


class TooMany(InvalidInput):
    code = "TOO_MANY"


class UnknownEventType(InvalidInput):
    code = "UNKNOWN_EVENT_TYPE"


class OutOfRange(InvalidInput):
    code = "OUT_OF_RANGE"


class RotationInProgress(InvalidInput):
    """A secret rotation while the previous one's old secret is still accepted."""

    code = "ROTATION_IN_PROGRESS"
