"""The one exception the client raises for an answer RefNet refused: the RFC 9457 problem it carries."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_PREFIX = "urn:refnet:problem:"


class RefNetError(Exception):
    """RefNet answered with an error: ``status``, the problem's ``type`` slug (``consent-required``,
    ``invalid-transition``, ...), ``detail``, the per-field ``errors`` and the whole ``problem`` (for extensions
    such as ``current_state``).

    A refused token request is one too: ``type`` is then the OAuth 2.0 error code (``invalid_client``, ...) and
    ``detail`` its ``error_description``. RefNet's problems carry no personal data, so the message is safe to log.
    """

    def __init__(self, status: int, type: str, detail: str = "", *, title: str = "",
                 errors: list[dict[str, Any]] | None = None, problem: dict[str, Any] | None = None) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors = list(errors or [])
        self.problem = dict(problem or {})
        super().__init__(f"HTTP {status} {type}" + (f": {detail}" if detail else ""))

    @classmethod
    def from_response(cls, response: httpx.Response) -> RefNetError:
        """The problem of an error answer; an answer that is not a problem (a proxy's HTML page) keeps its status."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("type"), str):
            errors = body.get("errors")
            return cls(response.status_code, body["type"].removeprefix(PROBLEM_PREFIX), str(body.get("detail") or ""),
                       title=str(body.get("title") or ""), errors=errors if isinstance(errors, list) else None,
                       problem=body)
        if isinstance(body, dict) and isinstance(body.get("error"), str):  # OAuth 2.0 (RFC 6749 section 5.2)
            return cls(response.status_code, body["error"], str(body.get("error_description") or ""), problem=body)
        return cls(response.status_code, "http-error", response.reason_phrase)
