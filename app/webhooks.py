"""`POST /webhooks/stripe`: Stripe's signed events, verified, stored once, answered at once."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request

from app.dependencies import SessionDep
from app.telemetry import current_trace_id
from billing.collection.webhooks import receive, verified_event
from ledger.errors import TallyError

router = APIRouter(prefix="/webhooks")


@router.post("/stripe", summary="Stripe webhook events (Stripe-Signature verified)")
async def stripe_webhook(request: Request, session: SessionDep) -> dict[str, object]:
    """400 with the reason for a missing, forged or stale signature, storing nothing; 200 once
    the event is stored (a redelivery answers 200 too, with ``duplicate: true``)."""
    try:
        event = verified_event(
            await request.body(),
            request.headers.get("stripe-signature"),
            request.app.state.settings.stripe_webhook_secret,
        )
    except TallyError as error:
        raise HTTPException(400, detail={"code": error.code, "message": error.message}) from None
    received = await receive(session, event, as_of=datetime.now(UTC), trace_id=current_trace_id())
    await session.commit()
    return {"received": True, "id": received.id, "duplicate": received.duplicate, "status": received.status}
