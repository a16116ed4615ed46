"""An answer as a route declaring its response model sends it (issue #19: the models check the use cases)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel


async def through(model: type[BaseModel], view: Any) -> Any:
    """``view`` (a use case's JSON) as a FastAPI route with ``response_model=model`` answers it, parsed back.
    A field the model lacks raises ``fastapi.exceptions.ResponseValidationError``."""
    app = FastAPI()

    @app.get("/", response_model=model)
    async def answer() -> Any:
        return view

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        return (await client.get("/")).json()
