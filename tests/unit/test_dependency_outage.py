"""An outage of the database is a 503 with Retry-After that a client retries, not a 500 that reads as a bug.

tests/reliability/test_faults_under_load.py restarts the real PostgreSQL under load; here, each shape the
failure takes on its way up (a refused socket, asyncpg's shutdown error, SQLAlchemy's invalidated connection).
"""

from __future__ import annotations

from typing import TypeVar

import asyncpg.exceptions
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError, IntegrityError

from shared import consumer
from shared.db import dependency_unreachable
from shared.errors import install_problem_handlers

E = TypeVar("E", bound=BaseException)


def _wrapped(orig: BaseException, *, invalidated: bool) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, orig, connection_invalidated=invalidated)


def _caused(exc: E, cause: BaseException) -> E:
    exc.__cause__ = cause
    return exc


def _as_sqlalchemy_raises(driver_error: BaseException) -> DBAPIError:
    # What a new connection to a PostgreSQL that is starting up raises through SQLAlchemy: a DBAPIError that
    # is not marked as a disconnect, caused by the dialect's adapter error, caused by asyncpg's.
    adapter = _caused(Exception("adapter"), driver_error)
    return _caused(_wrapped(adapter, invalidated=False), adapter)


OUTAGES = {
    "refused": ConnectionRefusedError(111, "Connection refused"),
    "reset": ConnectionResetError(104, "Connection reset by peer"),
    "admin shutdown": asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    "starting up": asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    "connection lost mid-query": _wrapped(Exception("connection was closed in the middle of operation"),
                                          invalidated=True),
    "driver error caused by a refused socket": _caused(RuntimeError("adapter"), ConnectionRefusedError()),
    "database starting up, through SQLAlchemy": _as_sqlalchemy_raises(
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
}
BUGS = {
    "plain bug": RuntimeError("boom"),
    "constraint violated": IntegrityError("INSERT", {}, Exception("duplicate key")),
    "driver error on a live connection": _wrapped(Exception("syntax error"), invalidated=False),
}


@pytest.mark.parametrize("name", sorted(OUTAGES))
def test_outages_are_recognised(name: str) -> None:
    assert dependency_unreachable(OUTAGES[name])


@pytest.mark.parametrize("name", sorted(BUGS))
def test_bugs_are_not_mistaken_for_outages(name: str) -> None:
    assert not dependency_unreachable(BUGS[name])


@pytest.mark.parametrize("name", sorted(OUTAGES))
def test_a_consumer_waits_out_an_outage_instead_of_dead_lettering(name: str) -> None:
    # Before, "the database system is starting up" counted as the event's failure: five quick attempts, then
    # the dead-letter topic -- a PostgreSQL restart lost events from the audit log and intake's read model.
    assert consumer._infrastructure_error(OUTAGES[name])


def _app(exc: BaseException) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/thing")
    async def thing() -> None:
        raise exc

    return app


async def _get(exc: BaseException, *, raise_app_exceptions: bool = False) -> httpx.Response:
    # Starlette re-raises after its last-resort handler answered (the server logs it as a crash); the client
    # only sees the answer.
    transport = httpx.ASGITransport(app=_app(exc), raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/thing")


async def test_an_outage_answers_503_problem_with_retry_after() -> None:
    response = await _get(OUTAGES["connection lost mid-query"])
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "2"
    body = response.json()
    assert body["type"] == "urn:refnet:problem:dependency-unavailable"
    assert "SELECT" not in response.text  # the failed statement (and its parameters) stay in the server


# As the driver and SQLAlchemy raise them (an outage wrapped in a foreign exception still gets its 503, from the
# last-resort handler, but the server logs that one as a crash too).
AS_RAISED = sorted(set(OUTAGES) - {"driver error caused by a refused socket"})


@pytest.mark.parametrize("name", AS_RAISED)
async def test_an_outage_is_answered_inside_the_app_not_logged_as_a_crash(name: str) -> None:
    # raise_app_exceptions: had the exception left the app, the server would log a traceback per request.
    response = await _get(OUTAGES[name], raise_app_exceptions=True)
    assert response.status_code == 503


async def test_a_bug_still_answers_500() -> None:
    response = await _get(BUGS["plain bug"])
    assert response.status_code == 500
    assert response.json()["type"] == "urn:refnet:problem:internal-error"
