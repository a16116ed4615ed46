"""The README runs as printed: its walkthrough, "connecting a case system", "people" and "auditing" sections,
against the stack as `make run` starts it (the e2e session's stack).

The commands run in a directory laid out like the checkout a reader runs them from (`.venv`, `examples/` and
the stack's `.refnet/`), with the reader's environment: no REFNET_* settings, only the URLs of the first block
moved to the ports this stack chose. The convention the README's blocks follow is in tests/e2e/readme.py.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.e2e import readme
from tests.e2e.network import REPO, Network

SECTIONS = ("Walkthrough", "Connecting a case system", "People", "Auditing")
#: `make run`'s default addresses, as the README's first block sets them.
DEFAULT_URLS = {"registry": "http://127.0.0.1:8001", "intake": "http://127.0.0.1:8002",
                "referral": "http://127.0.0.1:8003", "audit": "http://127.0.0.1:8004"}


def readers_checkout(network: Network) -> Path:
    """The stack's home is `<dir>/.refnet`: `<dir>` gets the rest of what a checkout has that the README uses."""
    checkout = network.home.parent
    venv = Path(sys.prefix) if sys.prefix != sys.base_prefix else REPO / ".venv"
    for name, target in ((".venv", venv), ("examples", REPO / "examples")):
        if not (checkout / name).exists():
            (checkout / name).symlink_to(target)
    return checkout


def readers_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("REFNET_")} | {
        "COLUMNS": "120"}


def at_stack_ports(steps: list[readme.Step], network: Network) -> list[readme.Step]:
    """The same steps, `make run`'s default URLs replaced by this stack's (commands and expected blocks)."""

    def moved(text: str) -> str:
        for service, url in DEFAULT_URLS.items():
            text = text.replace(url, network.url(service))
        return text

    return [readme.Step(step.line, moved(step.command),
                        step.expected and readme.Block(step.expected.info, step.expected.line,
                                                       moved(step.expected.body), False, True))
            for step in steps]


def test_the_readme_runs_as_printed(network: Network) -> None:
    steps = readme.steps((REPO / "README.md").read_text(), SECTIONS)
    first = steps[0].command
    assert all(f"{name.upper()}={url}" in first for name, url in DEFAULT_URLS.items()), \
        "the walkthrough's first block sets REGISTRY, INTAKE, REFERRAL and AUDIT to make run's addresses"
    ran = readme.run(at_stack_ports(steps, network), readers_checkout(network), readers_environment())
    problems = [problem for step, result in zip(steps, ran, strict=False) for problem in readme.check(step, result)]
    assert not problems, "\n\n".join(problems)


def test_every_call_shows_its_status_and_takes_a_fresh_idempotency_key() -> None:
    """What one pass cannot show: a fixed Idempotency-Key works once and is refused on a reader's second pass
    (`idempotency-key-reused`), and `curl -s` alone hides the status the text talks about."""
    steps = readme.steps((REPO / "README.md").read_text(), SECTIONS)
    commands = "\n".join(step.command for step in steps)
    assert re.findall(r"\bcurl (?!-sSi )\S+", commands) == [], "every curl shows its status line: curl -sSi ..."
    assert re.findall(r"Idempotency-Key: [^$\"]+", commands) == [], "Idempotency-Key: $(new_key) or a saved one"


# --- the comparison itself, without a stack: each kind of difference is caught ----------------------------------

ANSWER = ("HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-request-id: 1\r\n\r\n"
          '{"id":"case-1f2e","status":"active","person":{"given_name":"A"},"history":[{"to":"requested"},'
          '{"to":"received"}]}')


@pytest.mark.parametrize(("expected", "problem"), [
    ('HTTP/1.1 201 Created\n{"id": "case-...", "status": "active", "person": {...}, "history": [...]}', None),
    ('HTTP/1.1 201 Created\ncontent-type: application/json\n{"status": "active", ...}', None),
    ('HTTP/1.1 201 Created\n{"history": [..., {"to": "received"}], ...}', None),
    ('HTTP/1.1 200 OK\n{...}', "'HTTP/1.1 201 Created', not 'HTTP/1.1 200 OK'"),
    ('HTTP/1.1 201 Created\ncontent-type: application/problem+json\n{...}', "content-type"),
    ('HTTP/1.1 201 Created\n{"status": "requested", ...}', "$.status: expected \"requested\""),
    ('HTTP/1.1 201 Created\n{"id": "ref-...", ...}', "does not match \"ref-...\""),
    ('HTTP/1.1 201 Created\n{"status": "active", "person": {...}, "history": [...]}', "member 'id' not shown"),
    ('HTTP/1.1 201 Created\n{"consent": {...}, ...}', "no member 'consent'"),
    ('HTTP/1.1 201 Created\n{"history": [{"to": "requested"}], ...}', "the list does not match"),
    ('HTTP/1.1 201 Created\n{"person": {"given_name": "A", "phone": ...}, ...}', "no member 'phone'"),
    ('HTTP/1.1 201 Created\n{...}\nHTTP/1.1 201 Created\n{...}', "2 answer(s) expected, 1 printed"),
])
def test_an_http_block_is_compared_with_what_curl_printed(expected: str, problem: str | None) -> None:
    found = readme.compare_http(expected, ANSWER)
    if problem is None:
        assert found == []
    else:
        assert any(problem in line for line in found), found


def test_a_text_block_is_compared_line_by_line() -> None:
    printed = "tree size 75, root d974, signed 2026-12-03\nthe log is consistent\n"
    assert readme.compare_text("...\nthe log is consistent\n", printed) == []
    assert readme.compare_text("tree size ..., root ..., signed ...\nthe log is consistent\n", printed) == []
    assert readme.compare_text("the log is consistent\n", printed)  # a line not shown needs `...`
    assert readme.compare_text("...\nthe log was rewritten\n", printed)


def test_steps_skip_blocks_not_run_and_take_the_block_right_under_as_output() -> None:
    markdown = "\n".join([
        "## Walkthrough", "", "```sh", "echo one", "```", "", "```http", "HTTP/1.1 200 OK", "```", "",
        "Prose.", "", "```text", "not an output", "```", "<!-- not run: needs a cluster -->", "```sh",
        "kubectl apply", "```", "```sh", "echo two", "```", "Prose.", "```text", "two", "```",
        "## Layout", "```sh", "echo elsewhere", "```", ""])
    steps = readme.steps(markdown, ("Walkthrough",))
    assert [(s.command, s.expected and s.expected.info) for s in steps] == [("echo one\n", "http"),
                                                                           ("echo two\n", None)]


def test_variables_carry_from_one_step_to_the_next(tmp_path: Path) -> None:
    steps = [readme.Step(1, "ID=case-42\nprintf 'HTTP/1.1 200 OK\\r\\n\\r\\n{\"id\": \"%s\"}' \"$ID\"\n",
                         readme.Block("http", 2, 'HTTP/1.1 200 OK\n{"id": "$ID"}\n', False, True)),
             readme.Step(3, "echo \"$ID\"; false\n", None)]
    first, second = readme.run(steps, tmp_path, {"PATH": os.environ["PATH"]})
    assert readme.check(steps[0], first) == []
    assert (second.output.strip(), second.status) == ("case-42", 1)
    assert readme.check(steps[1], second) == ["README.md:3: exit status 1:\ncase-42\n"]
