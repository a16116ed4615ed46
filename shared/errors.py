"""RFC 9457 problem details: the one shape every RefNet error takes.

Every error a client can see -- our own refusals, FastAPI's validation errors, unknown routes, and
unhandled exceptions -- leaves as ``application/problem+json``. A ``type`` is ``urn:refnet:problem:<slug>``;
clients match on the slug (CONTRACT.md: "a problem whose type ends with the failed guard").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_TYPE_PREFIX = "urn:refnet:problem:"
PROBLEM_MEDIA_TYPE = "application/problem+json"

log = structlog.get_logger("refnet.errors")


class Problem(Exception):
    """An error with a meaning for the client. Raise it anywhere; the handler turns it into a response.

    ``detail`` is shown to the caller, so it must never carry personal data: name ids and fields, not values.
    """

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    @property
    def type(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.slug

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


def not_found(what: str = "resource") -> Problem:
    """The answer to both "does not exist" and "exists but is not yours": existence must not leak."""
    return Problem(404, "not-found", f"No such {what}.", title="Not Found")


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path if request is not None else None),
        status_code=problem.status,
        headers=problem.headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Pydantic puts the offending input in each error; it may be personal data, so only loc and msg go out.
    return [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors]


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc.errors())
        fields = ", ".join(".".join(e["loc"]) for e in errors[:5])
        return problem_response(
            Problem(422, "validation-error", f"The request is not valid: {fields}.",
                    title="Unprocessable Content", errors=errors),
            request,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            exc.status_code, f"http-{exc.status_code}"
        )
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404:
            detail = "No such resource."
        return problem_response(
            Problem(exc.status_code, slug, detail, headers=getattr(exc, "headers", None) or {}), request
        )

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        # The traceback goes to the log (never values of the request); the client only gets the request id.
        log.exception("unhandled_error", request_id=request_id, path=request.scope.get("route") and
                      getattr(request.scope["route"], "path", None), exc_type=type(exc).__name__)
        return problem_response(
            Problem(500, "internal-error", "An internal error occurred; it has been logged.",
                    request_id=request_id),
            request,
        )
