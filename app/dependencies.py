"""FastAPI dependencies: the request's database session and its authenticated viewer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from app.auth import Capability, Viewer, viewer_for_token


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; whoever changes data commits at the request boundary."""
    async with request.app.state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def unauthenticated(message: str) -> HTTPException:
    return HTTPException(
        401,
        detail={"code": "UNAUTHENTICATED", "message": message},
        headers={"WWW-Authenticate": "Bearer"},
    )


async def authenticate(request: Request, session: AsyncSession) -> Viewer:
    """The viewer of a bearer-token request, or 401 with a JSON reason."""
    token = bearer_token(request)
    if token is None:
        raise unauthenticated("send Authorization: Bearer <token> (create one with `tally token create`)")
    viewer = await viewer_for_token(session, token)
    if viewer is None:
        raise unauthenticated("unknown or revoked token")
    return viewer


def requires(capability: Capability) -> Callable[..., Awaitable[Viewer]]:
    """A dependency for REST endpoints: the viewer if its role has ``capability``, else 401/403."""

    async def viewer_with_capability(request: Request, session: SessionDep) -> Viewer:
        viewer = await authenticate(request, session)
        if not viewer.can(capability):
            raise HTTPException(
                403,
                detail={
                    "code": "FORBIDDEN",
                    "message": f"the {viewer.role} role may not {capability.value.replace('_', ' ')}",
                },
            )
        return viewer

    return viewer_with_capability
