"""Schemathesis against a running service: every operation of its OpenAPI document, fuzzed over HTTP.

Each operation is called with requests generated from its schema, valid ones (positive) and invalid ones
(negative), with a token that holds the operation's scopes -- a demo agency's, or a person's where only people hold
them -- and with no token at all. Every response is checked with schemathesis' checks:

- ``not_a_server_error``: no 5xx, whatever the input;
- ``status_code_conformance``: the status is one the document declares for the operation;
- ``content_type_conformance``, ``response_schema_conformance``, ``response_headers_conformance``: the body and
  headers are what the document says for that status (the problem responses included, shared/errors.py).

``negative_data_rejection`` is not among them: an unknown query parameter is ignored, as HTTP APIs usually do,
and schemathesis counts it as invalid input that should have been refused.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks as openapi_checks

CHECKS = [
    not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.response_headers_conformance,
]


@dataclass
class FuzzResult:
    operations: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # one per (operation, kind of failure, status)
    seconds: float = 0.0
    unsatisfiable: int = 0  # runs for which no input of the kind asked exists (say, invalid values of a free string)
    no_token_holder: list[str] = field(default_factory=list)  # secured operations no token at hand holds scopes for

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def fuzz(
    base_url: str,
    document: dict[str, Any],
    token_for: Callable[[tuple[str, ...]], str | None],
    *,
    examples_with_token: int,
    examples_without_token: int,
    derandomize: bool,
) -> FuzzResult:
    """Fuzz every operation of ``document`` at ``base_url``. ``token_for(scopes)`` gives a bearer token holding
    those scopes (or None when no demo agency nor person holds them)."""
    schema = schemathesis.openapi.from_dict(document)
    result = FuzzResult()
    session = requests.Session()
    started = time.monotonic()

    for outcome in schema.get_all_operations():
        assert isinstance(outcome, Ok), f"schemathesis cannot read an operation: {outcome}"
        operation = outcome.ok()
        result.operations += 1
        spec = operation.definition.raw
        # Several requirements are alternatives (any one is enough): a token holding the first will do.
        requirements = spec.get("security") or []
        scopes = tuple(sorted({s for ss in requirements[0].values() for s in ss})) if requirements else ()
        secured = bool(spec.get("security"))
        has_input = bool(spec.get("parameters") or spec.get("requestBody"))
        runs: list[tuple[GenerationMode, int, bool]] = [(GenerationMode.POSITIVE, examples_with_token, secured)]
        if has_input:
            runs.append((GenerationMode.NEGATIVE, examples_with_token, secured))
        if secured:
            runs += [(GenerationMode.POSITIVE, examples_without_token, False)]
            if has_input:
                runs.append((GenerationMode.NEGATIVE, examples_without_token, False))
        for mode, examples, with_token in runs:
            if examples <= 0:
                continue
            token = token_for(scopes) if with_token else None
            if with_token and token is None:
                result.no_token_holder.append(operation.label)
                continue
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                _run(operation, mode, examples, headers, base_url, session, result, derandomize)
            except Unsatisfiable:
                result.unsatisfiable += 1
    result.seconds = time.monotonic() - started
    return result


def _run(operation: Any, mode: GenerationMode, examples: int, headers: dict[str, str], base_url: str,
         session: requests.Session, result: FuzzResult, derandomize: bool) -> None:
    label = operation.label

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        try:
            response = case.call(base_url=base_url, session=session, headers=headers, timeout=30)
        except requests.RequestException as exc:
            result.failures[f"{label} {type(exc).__name__}"] = (
                f"no answer ({type(exc).__name__}): the service may have crashed\n"
                f"{case.as_curl_command(headers=headers)}")
            return
        result.requests += 1
        result.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                key = f"{label} {type(failure).__name__} {response.status_code}"
                result.failures.setdefault(key, f"{failure}\n{case.as_curl_command(headers=headers)}\n"
                                                f"-> {response.text[:500]}")

    call()


# --- edge values, parameter by parameter ----------------------------------------------------------------------
# Schemathesis draws values at random from a parameter's schema and rarely lands on the few that break a service:
# an integer one past BIGINT, a time whose UTC form falls outside years 1-9999, a NUL. These are tried on every
# query and path parameter of every operation, deterministically, each with the others at a plain value.

INTEGER_EDGES: tuple[str, ...] = ("-1", "0", str(2**31), str(2**53 + 1), str(2**63 - 1), str(2**63),
                                  "9999999999999999999", str(10**30), "1e3", "0x10")
DATETIME_EDGES: tuple[str, ...] = (
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
    "2024-02-30T00:00:00Z", "2024-01-01T00:00:00+24:00", "2024-01-01T24:00:00Z", "-0001-01-01T00:00:00Z",
    "99999-01-01T00:00:00Z", "2024-01-01T00:00:00",
)
STRING_EDGES: tuple[str, ...] = (
    "\x00", "a\x00b", "\x01\x07\x1b\x7f", "line\nbreak", "\u202e\u200b", "\ud7ff\ufffd", "9999999999999999999",
    "-1", "%00", "../..", "x" * 4096, "\u00e9" * 2048,
)


@dataclass(frozen=True)
class EdgeCase:
    operation: str  # "GET /audit/entries"
    method: str
    path: str  # with the path parameters filled in, percent-encoded
    params: dict[str, str]
    parameter: str
    value: str


def _edges_for(schema: dict[str, Any]) -> tuple[str, ...]:
    types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", []) if isinstance(s, dict)}
    formats = {schema.get("format")} | {s.get("format") for s in schema.get("anyOf", []) if isinstance(s, dict)}
    if "date-time" in formats:
        return DATETIME_EDGES + STRING_EDGES[:4]
    if "integer" in types or "number" in types:
        return INTEGER_EDGES + STRING_EDGES[:2]
    return STRING_EDGES + INTEGER_EDGES[4:7]


def _plain(schema: dict[str, Any]) -> str:
    """A value the parameter accepts, to hold the others still while one is probed."""
    for candidate in (schema, *[s for s in schema.get("anyOf", []) if isinstance(s, dict)]):
        if "default" in candidate and candidate["default"] is not None:
            return str(candidate["default"]).lower() if isinstance(candidate["default"], bool) else str(
                candidate["default"])
        if "enum" in candidate:
            return str(candidate["enum"][0])
        if candidate.get("type") in ("integer", "number"):
            return str(candidate.get("minimum", 1))
        if candidate.get("format") == "date-time":
            return "2024-01-01T00:00:00Z"
    return "x1"


def edge_cases(document: dict[str, Any]) -> list[EdgeCase]:
    """Every query and path parameter of every operation in ``document``, with each of its edge values."""
    cases: list[EdgeCase] = []
    for path, item in document.get("paths", {}).items():
        for method, spec in item.items():
            if method not in ("get", "post", "put", "patch", "delete") or spec.get("requestBody"):
                continue  # bodies are the fuzzer's and the pathological-body test's
            parameters = [p for p in spec.get("parameters", []) if p.get("in") in ("query", "path")]
            plain = {p["name"]: _plain(p.get("schema", {})) for p in parameters}
            for probed in parameters:
                for value in _edges_for(probed.get("schema", {})):
                    values = {**plain, probed["name"]: value}
                    path_values = {p["name"]: values[p["name"]] for p in parameters if p["in"] == "path"}
                    query = {p["name"]: values[p["name"]] for p in parameters
                             if p["in"] == "query" and (p.get("required") or p is probed)}
                    filled = path
                    for name, v in path_values.items():
                        filled = filled.replace("{" + name + "}", quote(v, safe=""))
                    cases.append(EdgeCase(f"{method.upper()} {path}", method.upper(), filled, query,
                                          probed["name"], value))
    return cases


def edge_failure(case: EdgeCase, status: int, content_type: str) -> str | None:
    """What is wrong with the answer to ``case``, or None: a 5xx, or a 4xx that is not a problem document."""
    shown = case.value if len(case.value) <= 40 else case.value[:20] + f"...({len(case.value)} chars)"
    if status >= 500:
        return f"{case.operation}: {case.parameter}={shown!r} -> {status}"
    if 400 <= status < 500 and not content_type.startswith("application/problem+json"):
        return f"{case.operation}: {case.parameter}={shown!r} -> {status} without a problem document"
    return None
