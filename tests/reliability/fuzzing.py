"""Schemathesis against a running service: every operation of its OpenAPI document, fuzzed over HTTP.

Each operation is called with requests generated from its schema, valid ones (positive) and invalid ones
(negative), with a token of a demo agency that holds the operation's scopes and with no token at all. Every
response is checked with schemathesis' checks:

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
    no_token_holder: list[str] = field(default_factory=list)  # secured operations no demo agency holds scopes for

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
    those scopes (or None when no demo agency holds them)."""
    schema = schemathesis.openapi.from_dict(document)
    result = FuzzResult()
    session = requests.Session()
    started = time.monotonic()

    for outcome in schema.get_all_operations():
        assert isinstance(outcome, Ok), f"schemathesis cannot read an operation: {outcome}"
        operation = outcome.ok()
        result.operations += 1
        spec = operation.definition.raw
        scopes = tuple(sorted({s for requirement in spec.get("security") or [] for ss in requirement.values()
                               for s in ss}))
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
