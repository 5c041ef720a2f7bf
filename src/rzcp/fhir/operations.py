"""Operations that are POSTed: any other method at their address is a 405 naming POST.

Without this, `GET /fhir/Consent/$evaluate` reached the read route and was told that "$evaluate" is not
a valid FHIR id (a probe's), which names the wrong mistake."""

from __future__ import annotations

from fastapi import APIRouter

from rzcp.errors import MethodNotAllowed

_OTHER_METHODS = ["GET", "PUT", "PATCH", "DELETE"]


def post_only(router: APIRouter, path: str) -> None:
    """Answer the other methods at `path` with a 405 and `Allow: POST` (kept out of the OpenAPI document,
    which lists the POST)."""
    operation = path.rsplit("/", 1)[-1]

    async def not_posted() -> None:
        raise MethodNotAllowed(f"{operation} is an operation: POST it", headers={"Allow": "POST"})

    router.add_api_route(path, not_posted, methods=_OTHER_METHODS, include_in_schema=False)
