"""RFC 9457 problem details: the one shape every RefNet error takes.

Every error a client can see -- our own refusals, FastAPI's validation errors, unknown routes, and
unhandled exceptions -- leaves as ``application/problem+json``. A ``type`` is ``urn:refnet:problem:<slug>``;
clients match on the slug (docs/contract.md: "a problem whose type ends with the failed guard").
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from asyncpg.exceptions import PostgresError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import dependency_unreachable

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


#: A 900 KiB array of wrong items is 150,000 errors (29 MB of answer): the first few say what is wrong.
MAX_LISTED_ERRORS = 20


def _validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Pydantic puts the offending input in each error; it may be personal data, so only loc and msg go out.
    return [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in errors[:MAX_LISTED_ERRORS]]


RETRY_AFTER_OUTAGE_SECONDS = 2


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _database_error(exc: BaseException) -> bool:
    return any(isinstance(e, DBAPIError | PostgresError) for e in _chain(exc))


def _sqlstate(exc: BaseException) -> str | None:
    for e in _chain(exc):
        code = getattr(e, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def invalid(loc: Sequence[str], msg: str, *, detail: str | None = None) -> Problem:
    """The 422 a request gets when one value is wrong, shaped as FastAPI's own validation answer: ``loc`` is
    where (``["query", "cursor"]``, ``["body", "person", "phone"]``); ``msg`` says what is wrong, never the value."""
    return Problem(422, "validation-error", detail or f"The request is not valid: {'.'.join(loc)}.",
                   title="Unprocessable Content", errors=[{"loc": list(loc), "msg": msg}])


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        all_errors = exc.errors()
        errors = _validation_errors(all_errors)
        fields = ", ".join(".".join(e["loc"]) for e in errors[:5])
        more = f" ({len(all_errors) - len(errors)} more errors not listed)" if len(all_errors) > len(errors) else ""
        return problem_response(
            Problem(422, "validation-error", f"The request is not valid: {fields}.{more}",
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

    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        if not dependency_unreachable(exc):
            raise exc  # a bug after all: the last-resort handler below answers 500 and logs it
        # An outage (the database restarting, a connection cut), not a bug: tell the client to come back.
        request_id = getattr(request.state, "request_id", None)
        log.warning("dependency_unavailable", request_id=request_id, exc_type=type(exc).__name__)
        return problem_response(
            Problem(503, "dependency-unavailable",
                    "A system this service depends on is unreachable right now; try again shortly.",
                    headers={"Retry-After": str(RETRY_AFTER_OUTAGE_SECONDS)}, request_id=request_id),
            request,
        )

    # Answered inside the app: Starlette re-raises whatever reaches the last-resort handler, and the server
    # then logs it as a crash with a traceback (SQL and all) -- thousands of them while PostgreSQL restarts.
    for kind in (DBAPIError, PostgresError, ConnectionError):
        app.add_exception_handler(kind, _outage)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        if dependency_unreachable(exc):  # an outage that surfaced wrapped in something else
            return await _outage(request, exc)
        request_id = getattr(request.state, "request_id", None)
        route = request.scope.get("route") and getattr(request.scope["route"], "path", None)
        # The traceback goes to the log (never values of the request); the client only gets the request id.
        if _database_error(exc):
            # A database error's message quotes values ("invalid input syntax ...: <value>", "DETAIL: Key
            # (...)=(<value>)") and its statement's parameters: log where it failed and its SQLSTATE only.
            log.error("unhandled_error", request_id=request_id, path=route, exc_type=type(exc).__name__,
                      sqlstate=_sqlstate(exc), stack="".join(traceback.format_tb(exc.__traceback__)))
        else:
            log.exception("unhandled_error", request_id=request_id, path=route, exc_type=type(exc).__name__)
        return problem_response(
            Problem(500, "internal-error", "An internal error occurred; it has been logged.",
                    request_id=request_id),
            request,
        )


# --- the problem contract in OpenAPI ----------------------------------------------------------------------

#: RFC 9457 problem details as every RefNet error body takes them (extension members are allowed).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. Clients match on the `type` slug; `errors` lists invalid fields.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "pattern": "^urn:refnet:problem:[a-z0-9-]+$",
                 "description": "What went wrong, as a stable slug to match on (the last segment).",
                 "examples": ["urn:refnet:problem:consent-missing"]},
        "title": {"type": "string", "description": "The HTTP status's phrase.", "examples": ["Conflict"]},
        "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status code.",
                   "examples": [409]},
        "detail": {"type": "string", "description": "What happened, for a person to read; ids and field names, "
                   "never personal data.",
                   "examples": ["The case's consent does not cover this recipient and purpose."]},
        "instance": {"type": "string", "description": "The request path the problem is about.",
                     "examples": ["/referrals"]},
        "errors": {
            "type": "array",
            "maxItems": MAX_LISTED_ERRORS,
            "description": "Each invalid input: where it is and what is wrong with it.",
            "examples": [[{"loc": ["body", "case_id"], "msg": "Field required"}]],
            "items": {
                "type": "object",
                "required": ["loc", "msg"],
                "properties": {"loc": {"type": "array", "items": {"type": "string"}},
                               "msg": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

#: What each error status means wherever the operation's shape makes it possible.
PROBLEM_DESCRIPTIONS: dict[str, str] = {
    "400": "A malformed header (`X-Acting-User`, `X-Purpose`) or a body that cannot be parsed.",
    "401": "No valid access token; `WWW-Authenticate` (RFC 6750) says why.",
    "403": "The token lacks a scope this operation needs (`insufficient-scope`), or the agency may not act.",
    "404": "No such resource, or not one the caller may see: existence does not leak.",
    "413": "The request body is over the size limit (1 MiB).",
    "422": "The request is not valid; `errors` lists each invalid field as `{loc, msg}`.",
    "503": "A dependency (the token issuer's keys, a key or a service this one needs) is unavailable; retry.",
}


def add_problem_responses(document: dict[str, Any]) -> dict[str, Any]:
    """Declare in an OpenAPI document the problem responses each operation can give, as integrators see them.

    From each operation's shape: a secured one can answer 400 (bad ``X-Acting-User``), 401, 403 and 503 (no
    issuer keys); one with a path id 404; one with parameters or a body 422 (replacing FastAPI's own
    validation-error shape, which RefNet never sends); one with a body 400 and 413. Statuses a route declares
    itself (``responses={409: {"description": ...}}``) get the problem content unless they name their own.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "delete", "patch"):
                continue
            parameters = operation.get("parameters", [])
            statuses: set[str] = set()
            if operation.get("security"):
                statuses |= {"400", "401", "403", "503"}
            if any(p.get("in") == "path" for p in parameters):
                statuses.add("404")
            body_types = operation.get("requestBody", {}).get("content", {})
            if parameters or "application/json" in body_types:  # what FastAPI validates
                statuses.add("422")
            if "requestBody" in operation:
                statuses |= {"400", "413"}
            responses = operation.setdefault("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {})
            if validation.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            for status in statuses:
                responses.setdefault(status, {"description": PROBLEM_DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status[0] in "45" and not response.get("content"):
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            if "401" in statuses:
                responses["401"].setdefault("headers", {"WWW-Authenticate": {
                    "description": "RFC 6750 challenge", "required": True, "schema": {"type": "string"}}})
            operation["responses"] = dict(sorted(responses.items()))
    # FastAPI's validation-error schemas, now referenced by no operation.
    if "/HTTPValidationError" not in json.dumps(document.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return document
