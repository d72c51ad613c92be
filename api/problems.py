"""RFC 9457 problem details for every error the account API gives (CONTRACT §7): its own
refusals, Starlette's (unknown path 404, wrong method 405), validation errors (422, each naming
its field), a body too large (413), and what no handler expected (500, details in the log)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from charging.errors import StoreError

log = logging.getLogger("chargeflow.api")

MEDIA_TYPE = "application/problem+json"
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Content too large",
          422: "Unprocessable content", 429: "Too many requests", 500: "Internal error",
          503: "Service unavailable"}


class ApiProblem(Exception):
    """An error answered as problem details: ``slug`` names its ``type``
    (``urn:chargeflow:problem:<slug>``)."""

    def __init__(self, status: int, slug: str, detail: str, *, headers: dict | None = None,
                 **extra):
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem(status: int, slug: str, detail: str, headers: dict | None = None,
            **extra) -> JSONResponse:
    body = {"type": f"urn:chargeflow:problem:{slug}", "title": TITLES.get(status, "Error"),
            "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict]:
    out = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        where, field = (loc[0], ".".join(loc[1:])) if loc else ("body", "")
        reason = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"in": where, "field": field or where, "reason": reason})
    return out


def problem_for(exc: Exception, method: str, path: str) -> JSONResponse:
    """The answer to what an endpoint raised: its own problem, 503 when the store cannot be
    reached, 500 (logged) for anything else."""
    if isinstance(exc, ApiProblem):
        return problem(exc.status, exc.slug, exc.detail, exc.headers, **exc.extra)
    if isinstance(exc, StoreError):
        log.warning("the account API cannot reach Redis: %s", exc)
        return problem(503, "store-unavailable", "the account store cannot be reached; "
                       "nothing was changed, try again", {"Retry-After": "1"})
    log.error("the account API failed on %s %s", method, path, exc_info=exc)
    return problem(500, "internal", "the request failed on the server; see its log")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def _own(request: Request, exc: ApiProblem):
        return problem_for(exc, request.method, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "")
        if exc.status_code == 404:
            detail = f"no such resource: {request.url.path}"
        elif exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "the body is not JSON text (UTF-8); send a JSON object"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return problem(exc.status_code, f"http-{exc.status_code}", detail,
                       getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = _field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors) or "invalid request"
        return problem(422, "invalid-request", detail, errors=errors)

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError):
        return problem_for(exc, request.method, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return problem_for(exc, request.method, request.url.path)


async def too_large(scope, receive, send, max_bytes: int) -> None:
    response = problem(413, "too-large", f"the request body is larger than {max_bytes} bytes")
    await response(scope, receive, send)
