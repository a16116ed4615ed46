"""A failed statement must not carry what it was given into an error, a log line or an answer: values are
personal data (a NUL byte in a referral reason once gave a 500 whose logged traceback held the reason)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine
from shared.errors import install_problem_handlers
from shared.observability import configure_logging


@pytest.fixture
async def engine(new_database: Callable[[str], str]) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(new_database("quiet"), pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE notes (id int PRIMARY KEY, body text UNIQUE)"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_failed_statement_does_not_name_its_parameters(engine: AsyncEngine) -> None:
    marker = f"PARAM-{uuid.uuid4().hex}"
    with pytest.raises(DBAPIError) as failed:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT CAST(:note AS text), 1 / 0"), {"note": marker})
    assert "division by zero" in str(failed.value)
    assert marker not in str(failed.value)


async def test_an_unhandled_database_error_logs_neither_values_nor_parameters(
        engine: AsyncEngine, capsys: pytest.CaptureFixture[str]) -> None:
    marker = f"NOTE-{uuid.uuid4().hex}"
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO notes VALUES (1, :body)"), {"body": marker})
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/notes")
    async def add_note() -> None:
        # A bug: the same note again. PostgreSQL's DETAIL quotes it ("Key (body)=(...) already exists").
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO notes VALUES (2, :body)"), {"body": marker})

    configure_logging("INFO", json_logs=True)
    capsys.readouterr()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://test") as client:
        response = await client.post("/notes")
    logged = capsys.readouterr().err
    assert response.status_code == 500
    assert marker not in response.text
    assert "unhandled_error" in logged and "23505" in logged  # what failed, and where, is still there
    assert "add_note" in logged
    assert marker not in logged
