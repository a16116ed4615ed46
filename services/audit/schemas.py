"""audit's request models (its answers are the documented JSON shapes the use cases return)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.text import Line


class CosignatureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cosignature: Line = Field(max_length=512, description="the C2SP tlog-cosignature line, '\u2014 <name> <base64>'")
