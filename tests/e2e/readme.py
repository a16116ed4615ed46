"""The README's runnable sections as steps, run with bash, and what each printed compared with the block under it.

The convention (README.md, "Walkthrough"): in the sections named, every ```sh block is a step, run in order in
one bash session (so variables carry from one block to the next, as in a terminal). A block preceded by an HTML
comment starting `<!-- not run` is left out. The fenced block right under a step (blank lines only between) is
what it prints:

- ```http: one or more answers of `curl -i`. Each is a status line, the headers that matter (`name: value`,
  compared case-insensitively by name) and the JSON body (a JSON pattern, below); headers not shown are not
  compared.
- ```text: lines, each compared with one printed line (`...` inside a line stands for any text); a line that is
  only `...` stands for any number of lines.

A JSON pattern is JSON in which `...` stands for what varies: as a value, any value; as an object member, any
further members (an object without it has exactly the members shown); as a list item, any number of items; inside
a string, any text. `$NAME` in an expected block is the value the shell variable NAME had after the step.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ELLIPSIS = "..."
NOT_RUN = "<!-- not run"
VARIABLE = re.compile(r"\$([A-Z][A-Z0-9_]*)")
UNFINISHED = -1  # the status of a step stopped at the time limit


@dataclass(frozen=True)
class Block:
    info: str
    line: int  # 1-based line of the opening fence
    body: str
    not_run: bool
    follows_block: bool  # only blank lines between the previous fence's end and this one


@dataclass(frozen=True)
class Step:
    line: int
    command: str
    expected: Block | None


def blocks(markdown: str, sections: tuple[str, ...]) -> list[Block]:
    """The fenced blocks of the level-2 sections whose titles start with one of `sections` (their subsections
    included)."""
    found: list[Block] = []
    in_scope = False
    previous = ""  # the last non-blank line outside a block
    after_block = False
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            in_scope = line[3:].startswith(sections)
        if line.startswith("```"):
            info, start, body = line[3:].strip(), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"README.md:{start}: the block is never closed"
            if in_scope:
                found.append(Block(info, start, "\n".join(body) + "\n", previous.startswith(NOT_RUN),
                                   after_block))
            previous, after_block = "```", True
        elif line.strip():
            previous, after_block = line.strip(), False
        i += 1
    return found


def steps(markdown: str, sections: tuple[str, ...]) -> list[Step]:
    found = blocks(markdown, sections)
    result = []
    for n, block in enumerate(found):
        if block.info != "sh" or block.not_run:
            continue
        following = found[n + 1] if n + 1 < len(found) else None
        expected = following if following and following.follows_block and following.info in ("http", "text") \
            else None
        result.append(Step(block.line, block.body, expected))
    return result


# --- running -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    output: str
    status: int
    variables: dict[str, str]


def run(steps_: list[Step], cwd: Path, env: Mapping[str, str], timeout: float = 150) -> list[Ran]:
    """Every step in one bash session, in `cwd`; what each printed (stdout and stderr), its exit status, and the
    variables its expected block names. If the time runs out, the last result is the unfinished step's."""
    marker = f"README-STEP-{uuid.uuid4().hex}"
    script = ["exec 2>&1"]
    scripts = cwd / ".readme-steps"
    scripts.mkdir(exist_ok=True)
    for n, step in enumerate(steps_):
        path = scripts / f"{n:02d}.sh"
        path.write_text(step.command)
        names = sorted(set(VARIABLE.findall(step.expected.body))) if step.expected else []
        script.append(f". {path} </dev/null")
        script.append(f"printf '\\n%s status=%d\\n' {marker} $?")
        script += [f"printf '%s var {name}=%s\\n' {marker} \"${{{name}-}}\"" for name in names]
    # Its own session, so that a step that never ends (or leaves something running) is stopped with its children.
    bash = subprocess.Popen(["bash", "-c", "\n".join(script)], cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        printed, _ = bash.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(bash.pid, signal.SIGKILL)
        printed, _ = bash.communicate()
        printed += f"\n(stopped after {timeout:.0f} s)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bash.pid, signal.SIGKILL)
    ran: list[Ran] = []
    output: list[str] = []
    variables: dict[str, str] = {}
    for line in printed.splitlines(keepends=True):
        if line.startswith(marker + " status="):
            text = "".join(output).removesuffix("\n")
            ran.append(Ran(text, int(line.split("=", 1)[1]), variables := {}))
            output = []
        elif line.startswith(marker + " var "):
            name, value = line.removeprefix(marker + " var ").rstrip("\n").split("=", 1)
            variables[name] = value
        else:
            output.append(line)
    if len(ran) < len(steps_):  # this step never finished: the steps after it did not run
        ran.append(Ran("".join(output), UNFINISHED, {}))
    return ran


# --- comparing -----------------------------------------------------------------------------------------------


class _Any:
    def __repr__(self) -> str:
        return ELLIPSIS


ANY = _Any()


@dataclass(frozen=True)
class Glob:
    text: str

    def matches(self, value: str) -> bool:
        return re.fullmatch(".*".join(map(re.escape, self.text.split(ELLIPSIS))), value, re.DOTALL) is not None


def parse_pattern(text: str) -> Any:
    """A JSON pattern (see the module's docstring): dicts (with the key ELLIPSIS for "more members"), lists
    (with ANY items for "any number of items"), ANY, Glob for strings with `...`, and plain JSON scalars."""
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        while i < len(text) and text[i].isspace():
            i += 1
        return i

    def value(i: int) -> tuple[Any, int]:
        i = skip(i)
        if text.startswith(ELLIPSIS, i):
            return ANY, i + 3
        if text.startswith("{", i):
            members: dict[str, Any] = {}
            i = skip(i + 1)
            while not text.startswith("}", i):
                if text.startswith(ELLIPSIS, i):
                    members[ELLIPSIS], i = ANY, i + 3
                else:
                    key, i = decoder.raw_decode(text, i)
                    i = skip(i)
                    if not text.startswith(":", i):
                        raise ValueError(f"':' expected at {text[i:i + 30]!r}")
                    members[key], i = value(i + 1)
                i = skip(i)
                if text.startswith(",", i):
                    i = skip(i + 1)
                elif not text.startswith("}", i):
                    raise ValueError(f"',' or '}}' expected at {text[i:i + 30]!r}")
            return members, i + 1
        if text.startswith("[", i):
            items: list[Any] = []
            i = skip(i + 1)
            while not text.startswith("]", i):
                item, i = value(i)
                items.append(item)
                i = skip(i)
                if text.startswith(",", i):
                    i = skip(i + 1)
                elif not text.startswith("]", i):
                    raise ValueError(f"',' or ']' expected at {text[i:i + 30]!r}")
            return items, i + 1
        scalar, i = decoder.raw_decode(text, i)
        if isinstance(scalar, str) and ELLIPSIS in scalar:
            return Glob(scalar), i
        return scalar, i

    pattern, end = value(0)
    if skip(end) != len(text):
        raise ValueError(f"text after the JSON pattern: {text[end:end + 30]!r}")
    return pattern


def mismatches(pattern: Any, actual: Any, where: str = "$") -> list[str]:
    """What in `actual` does not match `pattern`, each naming where (a JSONPath-like location)."""
    if pattern is ANY:
        return []
    if isinstance(pattern, Glob):
        return [] if isinstance(actual, str) and pattern.matches(actual) else \
            [f"{where}: {json.dumps(actual)} does not match {json.dumps(pattern.text)}"]
    if isinstance(pattern, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {json.dumps(actual)[:200]}"]
        found = [f"{where}: no member {key!r}" for key in pattern if key != ELLIPSIS and key not in actual]
        if ELLIPSIS not in pattern:
            found += [f"{where}: member {key!r} not shown (add it, or `...`)" for key in actual if key not in pattern]
        for key, sub in pattern.items():
            if key != ELLIPSIS and key in actual:
                found += mismatches(sub, actual[key], f"{where}.{key}")
        return found
    if isinstance(pattern, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {json.dumps(actual)[:200]}"]
        return [] if _list_matches(pattern, actual) else \
            [f"{where}: the list does not match: {json.dumps(actual)[:1500]}"]
    if pattern != actual or type(pattern) is not type(actual):
        return [f"{where}: expected {json.dumps(pattern)}, got {json.dumps(actual)[:200]}"]
    return []


def _list_matches(pattern: list[Any], actual: list[Any]) -> bool:
    if not pattern:
        return not actual
    if pattern[0] is ANY:
        return any(_list_matches(pattern[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and not mismatches(pattern[0], actual[0]) and _list_matches(pattern[1:], actual[1:])


STATUS_LINE = re.compile(r"HTTP/[0-9.]+ [0-9]{3}\b")


@dataclass(frozen=True)
class Answer:
    status_line: str
    headers: dict[str, str]
    body: str


def answers(output: str) -> tuple[str, list[Answer]]:
    """What `curl -i` printed, as answers; and any text before the first one (an error, say)."""
    starts = [m.start() for m in STATUS_LINE.finditer(output)]
    if not starts:
        return output, []
    found = []
    for start, end in zip(starts, [*starts[1:], len(output)], strict=True):
        head, _, body = output[start:end].replace("\r\n", "\n").partition("\n\n")
        status_line, *header_lines = head.split("\n")
        headers = {}
        for line in header_lines:
            name, _, header_value = line.partition(":")
            headers[name.strip().lower()] = header_value.strip()
        found.append(Answer(status_line.strip(), headers, body.strip()))
    return output[:starts[0]], found


def expected_answers(text: str) -> list[tuple[str, dict[str, str], str]]:
    """An ```http block: (status line, headers shown, body pattern text) per answer."""
    found: list[tuple[str, dict[str, str], str]] = []
    for line in text.splitlines():
        if STATUS_LINE.match(line):
            found.append((line.strip(), {}, ""))
        elif not found:
            raise ValueError(f"an http block starts with a status line, not {line!r}")
        elif not found[-1][2] and re.match(r"^[A-Za-z0-9-]+: ", line):
            name, _, header_value = line.partition(":")
            found[-1][1][name.strip().lower()] = header_value.strip()
        else:
            status, headers, body = found[-1]
            found[-1] = (status, headers, body + line + "\n")
    return found


def compare_http(expected: str, output: str) -> list[str]:
    before, got = answers(output)
    if before.strip():
        return [f"printed before any answer: {before.strip()[:500]}"]
    wanted = expected_answers(expected)
    if len(got) != len(wanted):
        return [f"{len(wanted)} answer(s) expected, {len(got)} printed: {[a.status_line for a in got]}"]
    found: list[str] = []
    for n, ((status, headers, body), answer) in enumerate(zip(wanted, got, strict=True), 1):
        where = f"answer {n}"
        if status.split(" ", 1)[1] != answer.status_line.split(" ", 1)[1]:
            found.append(f"{where}: {answer.status_line!r}, not {status!r}: {answer.body[:500]}")
            continue
        for name, header_value in headers.items():
            if name not in answer.headers:
                found.append(f"{where}: no {name} header")
            elif not Glob(header_value).matches(answer.headers[name]):
                found.append(f"{where}: {name}: {answer.headers[name]!r}, not {header_value!r}")
        if body.strip():
            try:
                actual = json.loads(answer.body)
            except ValueError:
                found.append(f"{where}: the body is not JSON: {answer.body[:500]}")
                continue
            found += mismatches(parse_pattern(body.strip()), actual, f"{where} $")
    return found


def compare_text(expected: str, output: str) -> list[str]:
    wanted = [line.rstrip() for line in expected.strip("\n").splitlines()]
    got = [line.rstrip() for line in output.strip("\n").splitlines()]
    if _lines_match(wanted, got):
        return []
    return ["the output does not match the lines shown:\n" + "\n".join(got)]


def _lines_match(wanted: list[str], got: list[str]) -> bool:
    if not wanted:
        return not got
    if wanted[0] == ELLIPSIS:
        return any(_lines_match(wanted[1:], got[k:]) for k in range(len(got) + 1))
    return bool(got) and Glob(wanted[0]).matches(got[0]) and _lines_match(wanted[1:], got[1:])


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """`$NAME` in an expected block, as the step left it."""
    return VARIABLE.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def check(step: Step, ran: Ran) -> list[str]:
    """What is wrong with a step's run, each naming its README line."""
    where = f"README.md:{step.line}"
    if ran.status == UNFINISHED:
        return [f"{where}: did not finish (nor did any step after it run); it printed:\n{ran.output[-1500:]}"]
    found = [] if ran.status == 0 else [f"exit status {ran.status}:\n{ran.output[-1500:]}"]
    if step.expected is not None and not found:
        expected = substitute(step.expected.body, ran.variables)
        found = compare_http(expected, ran.output) if step.expected.info == "http" \
            else compare_text(expected, ran.output)
    return [f"{where}: {problem}" for problem in found]
