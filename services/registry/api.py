"""registry's HTTP routes: parse, authorise, call the service layer, shape the response."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
