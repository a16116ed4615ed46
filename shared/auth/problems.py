"""The answers a resource server gives a caller it refuses (RFC 6750 challenges in RFC 9457 problems)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from shared.errors import Problem

# Characters allowed inside an RFC 6750 error_description / scope quoted string.
NOT_QUOTABLE = re.compile(r"[^\x20\x21\x23-\x5B\x5D-\x7E]")


def _quoted(value: str) -> str:
    # A quoted-string in the challenge must not carry '"', '\' or non-ASCII (RFC 6750 section 3).
    return '"' + NOT_QUOTABLE.sub("?", value) + '"'


def safe_label(value: str) -> str:
    """An attacker-supplied label (alg, kid) fit to name in a detail or a log: no arbitrary bytes echoed."""
    return NOT_QUOTABLE.sub("?", value)[:32]


def invalid_token(detail: str) -> Problem:
    return Problem(
        401,
        "invalid-token",
        detail,
        title="Unauthorized",
        headers={
            "WWW-Authenticate": f'Bearer error="invalid_token", error_description={_quoted(detail)}'
        },
    )


def missing_token(detail: str = "A bearer access token is required.") -> Problem:
    # RFC 6750 section 3.1: no error code when the request carried no bearer credentials at all.
    return Problem(401, "missing-token", detail, title="Unauthorized", headers={"WWW-Authenticate": "Bearer"})


def insufficient_scope(required: Iterable[str], missing: Iterable[str]) -> Problem:
    required_list = sorted(required)
    missing_list = sorted(missing)
    detail = f"The access token lacks the scope(s): {' '.join(missing_list)}."
    return Problem(
        403,
        "insufficient-scope",
        detail,
        title="Forbidden",
        headers={
            "WWW-Authenticate": (
                f'Bearer error="insufficient_scope", error_description={_quoted(detail)}, '
                f"scope={_quoted(' '.join(required_list))}"
            )
        },
        required_scopes=required_list,
    )


def issuer_unavailable(retry_after: float) -> Problem:
    seconds = max(1, math.ceil(retry_after))
    return Problem(
        503,
        "issuer-unavailable",
        "The token issuer's signing keys cannot be fetched right now; try again later.",
        headers={"Retry-After": str(seconds)},
    )
