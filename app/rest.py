"""REST endpoints beside GraphQL, for edge services and scripts that want plain JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlmodel.ext.asyncio.session import AsyncSession

from app.api.scope import find_visible_customer
from app.auth import Capability, Viewer
from app.billing_run import billing_window
from app.database import in_transaction
from app.dependencies import SessionDep, authenticate, requires
from app.usage_ingest import ingest_and_commit, ingest_limits, publish_and_confirm
from billing.credits import spend_authorizations
from billing.credits.spend_authorizations import is_spend_request
from ledger.errors import IdempotencyKeyReused, NotFound, TallyError
from ledger.money import to_major
from metering import authorizations, entitlements
from metering.errors import BodyNotEvents, UnknownMeter
from metering.event_log import LogUnavailable
from metering.events import loads_exact, parse_body

router = APIRouter(prefix="/v1")


@router.get("/whoami", summary="The role and customer of the calling token")
async def whoami(request: Request, session: SessionDep) -> dict[str, str | None]:
    viewer = await authenticate(request, session)
    return {
        "role": viewer.role.value,
        "actor": viewer.actor,
        "customerId": str(viewer.customer_id or "") or None,
    }


@router.get("/customers/{external_id}", summary="One customer by external id")
async def get_customer(
    external_id: str,
    session: SessionDep,
    viewer: Annotated[Viewer, Depends(requires(Capability.READ_CUSTOMERS))],
) -> dict[str, str | None]:
    customer = await find_visible_customer(session, viewer, external_id=external_id)
    if customer is None:
        raise HTTPException(404, detail={"code": "NOT_FOUND", "message": f"no customer {external_id!r}"})
    return {
        "id": str(customer.id),
        "externalId": customer.external_id,
        "name": customer.name,
        "email": customer.email,
        "currency": customer.currency,
        "status": customer.status,
        "createdAt": customer.created_at.isoformat(),
    }


@router.post("/events", summary="Send usage events (a JSON array, or NDJSON)")
async def post_events(
    request: Request,
    session: SessionDep,
    viewer: Annotated[Viewer, Depends(requires(Capability.INGEST_USAGE))],
) -> dict[str, object]:
    settings = request.app.state.settings
    body = await request.body()  # already read and bounded by TALLY_EVENTS_MAX_BODY_BYTES (app.request_limits)
    ndjson = request.headers.get("content-type", "").split(";")[0].strip() == "application/x-ndjson"
    try:
        items = parse_body(body, ndjson=ndjson)
    except BodyNotEvents as error:
        raise HTTPException(400, detail={"code": error.code, "message": error.message}) from None
    if len(items) > settings.events_max_per_request:
        raise HTTPException(
            413,
            detail={
                "code": "TOO_MANY_EVENTS",
                "message": f"at most {settings.events_max_per_request} events a request; split the batch",
            },
        )
    event_log = request.app.state.event_log
    if event_log is not None:
        try:
            logged = await publish_and_confirm(event_log, request.app.state.edge_catalog, session, items, settings)
        except LogUnavailable as error:
            raise HTTPException(
                503, detail={"code": error.code, "message": error.message}, headers={"Retry-After": "1"}
            ) from None
        return {
            "accepted": logged.accepted,
            "duplicates": logged.duplicates,
            "rejected": [{"index": r.index, "code": r.code, "message": r.message} for r in logged.rejected],
        }
    result = await ingest_and_commit(session, items, settings)
    return {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "rejected": [{"index": r.index, "code": r.code, "message": r.message} for r in result.rejected],
    }


@router.get("/customers/{external_id}/entitlements/{meter_key}", summary="May the customer use more of a meter?")
async def get_entitlement(
    external_id: str,
    meter_key: str,
    session: SessionDep,
    viewer: Annotated[Viewer, Depends(requires(Capability.CHECK_ENTITLEMENTS))],
) -> dict[str, object]:
    answer = await entitlements.entitlement_by_external_id(session, external_id, meter_key, as_of=datetime.now(UTC))
    if answer is None or not viewer.may_see(answer.customer_id):
        raise HTTPException(404, detail={"code": "NOT_FOUND", "message": f"no customer {external_id!r}"})
    found = answer.entitlement
    if found is None:
        raise HTTPException(404, detail=_refusal(UnknownMeter(meter_key)))
    return {
        "allowed": found.allowed,
        "used": format(found.used, "f"),
        "limit": format(found.limit, "f") if found.limit is not None else None,
        "remaining": format(found.remaining, "f") if found.remaining is not None else None,
        "reason": found.reason,
    }


# The body, read exactly from its text (numbers as decimals, never floats), so declared here for the
# OpenAPI document rather than by a model FastAPI would parse with floats.
_KEY_AND_TTL = {
    "idempotencyKey": {"type": "string", "maxLength": authorizations.MAX_IDEMPOTENCY_KEY_LENGTH},
    "ttlSeconds": {
        "type": "integer",
        "minimum": 1,
        "maximum": authorizations.MAX_TTL_SECONDS,
        "default": authorizations.DEFAULT_TTL_SECONDS,
    },
}
AUTHORIZATION_BODY = {
    "oneOf": [
        {
            "title": "A quantity of a meter",
            "type": "object",
            "required": ["meter", "quantity", "idempotencyKey"],
            "additionalProperties": False,
            "properties": {
                "meter": {"type": "string", "maxLength": authorizations.MAX_METER_KEY_LENGTH},
                "quantity": {"oneOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]},
                **_KEY_AND_TTL,
            },
        },
        {
            "title": "An amount of money, against the credits and the spend cap",
            "type": "object",
            "required": ["amount", "currency", "idempotencyKey"],
            "additionalProperties": False,
            "properties": {
                "amount": {"oneOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]},
                "currency": {"type": "string", "minLength": 3, "maxLength": 3},
                **_KEY_AND_TTL,
            },
        },
    ]
}
#: The process turn of a customer's money holds (beside each meter's: see ``process_turn``).
SPEND_TURN = "$spend"


@router.post(
    "/customers/{external_id}/authorizations",
    summary="Hold a quantity of a meter against its limit, or an amount against the credits and spend cap",
    status_code=201,
    responses={200: {"description": "the answer already given to this idempotency key"}},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": AUTHORIZATION_BODY}}}},
)
async def post_authorization(
    external_id: str,
    request: Request,
    session: SessionDep,
    viewer: Annotated[Viewer, Depends(requires(Capability.AUTHORIZE_USAGE))],
) -> JSONResponse:
    """201 with the answer (allowed or not: a refusal is an answer, not an error), 200 with the
    first answer when the idempotency key was used before for the same request. A body with
    ``amount`` and ``currency`` instead of ``meter`` and ``quantity`` holds money (see
    :mod:`billing.credits.spend_authorizations`)."""
    try:
        body = loads_exact(await request.body())
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError):
        raise HTTPException(400, detail={"code": "INVALID_BODY", "message": "the body must be a JSON object"}) from None
    try:
        if is_spend_request(body):
            return await _authorize_spend(request, session, viewer, external_id, body)
        wanted = authorizations.read_request(body, ingest_limits(request.app.state.settings))
        async with authorizations.process_turn(external_id, wanted.meter_key):
            done = await in_transaction(
                session,
                lambda: authorizations.authorize(
                    session, external_id, wanted, as_of=datetime.now(UTC), may_see=viewer.may_see
                ),
            )
    except TallyError as error:
        raise HTTPException(_status_of(error), detail=_refusal(error)) from None
    return JSONResponse(authorization_json(done.authorization, external_id), status_code=201 if done.created else 200)


async def _authorize_spend(
    request: Request, session: AsyncSession, viewer: Viewer, external_id: str, body: dict[str, Any]
) -> JSONResponse:
    wanted = spend_authorizations.read_spend_request(body)
    customer = await find_visible_customer(session, viewer, external_id=external_id)
    if customer is None:
        raise NotFound(f"no customer {external_id!r}", field="customer")
    window = billing_window(request.app.state.settings)
    async with authorizations.process_turn(external_id, SPEND_TURN):
        done = await in_transaction(
            session,
            lambda: spend_authorizations.authorize_spend(
                session, customer.id, wanted, as_of=datetime.now(UTC), window=window
            ),
        )
    return JSONResponse(
        spend_authorization_json(done.authorization, external_id), status_code=201 if done.created else 200
    )


def spend_authorization_json(found: spend_authorizations.SpendAuthorization, external_id: str) -> dict[str, object]:
    """Amounts as decimal strings in major units of ``currency``, as everywhere in the API."""

    def major(minor: int | None) -> str | None:
        return format(to_major(minor, found.currency), "f") if minor is not None else None

    return {
        "id": str(found.id),
        "customer": external_id,
        "amount": major(found.amount),
        "currency": found.currency,
        "allowed": found.allowed,
        "reason": found.reason,
        "spent": major(found.spent),
        "creditsAvailable": major(found.credits_available),
        "spendCap": major(found.spend_cap),
        "reserved": major(found.reserved),
        "remaining": major(found.remaining),
        "idempotencyKey": found.idempotency_key,
        "ttlSeconds": found.ttl_seconds,
        "createdAt": found.created_at.isoformat(),
        "expiresAt": found.expires_at.isoformat(),
        "settledAt": found.settled_at.isoformat() if found.settled_at else None,
    }


def _status_of(error: TallyError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, IdempotencyKeyReused):
        return 409
    return 400 if error.code == "INVALID_BODY" else 422


def _refusal(error: TallyError) -> dict[str, str | None]:
    return {"code": error.code, "field": error.field, "message": error.message}


def authorization_json(found: authorizations.Authorization, external_id: str) -> dict[str, object]:
    def plain(value: object) -> str | None:
        return format(value, "f") if value is not None else None

    return {
        "id": str(found.id),
        "customer": external_id,
        "meter": found.meter_key,
        "quantity": plain(found.quantity),
        "allowed": found.allowed,
        "reason": found.reason,
        "used": plain(found.used),
        "limit": plain(found.limit),
        "reserved": plain(found.reserved),
        "remaining": plain(found.remaining),
        "idempotencyKey": found.idempotency_key,
        "ttlSeconds": found.ttl_seconds,
        "createdAt": found.created_at.isoformat(),
        "expiresAt": found.expires_at.isoformat(),
        "settledAt": found.settled_at.isoformat() if found.settled_at else None,
    }
