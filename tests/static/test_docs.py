"""What the documents state about the code and the files is true of them: every `refnet` command they show
exists with the options shown, and the pinned versions they list are the ones in the files. (What the prose
says is for its readers to judge, not for a test.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import typer.main
from typer.core import TyperGroup

from deploy.launcher.cli import app

from ._support import DOCKERFILE, KUBERNETES_VERSION, OPERATIONS_DOC, REPO, load_compose

DOC = OPERATIONS_DOC.read_text(encoding="utf-8")
DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "services").glob("*/README.md")])


def shown_commands(text: str) -> list[str]:
    """Each `refnet ...` a document shows: an inline code span, or a line of a code block, that starts with it
    (after an optional prompt or .venv/bin/); up to a pipe, a redirection or a comment. A shorthand for several
    (`refnet agency add|list`) is left out."""
    spans = re.findall(r"`(?:\.venv/bin/)?(refnet [^`]+)`", text)
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    lines = [m for block in blocks for m in re.findall(r"^\s*(?:\$ )?(?:\.venv/bin/)?(refnet .*)$", block, re.M)]
    commands = [re.split(r"\s(?:\||>|#|&&)", command)[0].strip() for command in spans + lines]
    return [command for command in commands if "|" not in command]


def problem(command: str, root: object) -> str | None:
    """None if the CLI has this command, with every --option it is shown with; else what is wrong."""
    words = command.split()[1:]
    current, path = root, ["refnet"]
    while words and isinstance(current, TyperGroup) and not words[0].startswith(("-", "<")):
        found = current.get_command(typer.Context(current), words[0])
        if found is None:
            return f"`{command}`: {' '.join(path)} has no command {words[0]!r}"
        current, path = found, [*path, words.pop(0)]
    if isinstance(current, TyperGroup) and current is not root and not words:
        return None  # a group named on its own, as in "the `refnet audit` commands"
    options = {name for param in getattr(current, "params", []) for name in getattr(param, "opts", [])}
    options |= {"--help"}
    for word in words:
        name = word.split("=", 1)[0]
        if name.startswith("--") and name not in options:
            return f"`{command}`: {' '.join(path)} has no option {name}"
    return None


CLI = typer.main.get_command(app)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_a_document_shows_exists(document: Path) -> None:
    commands = shown_commands(document.read_text(encoding="utf-8"))
    assert [p for p in (problem(c, CLI) for c in commands) if p] == []


def test_the_command_checker_sees_a_wrong_command_or_option() -> None:
    text = "Run `refnet keys rotate --retire-previous`, then\n```\n$ refnet topics ensure | tee x\n```\n"
    assert shown_commands(text) == ["refnet keys rotate --retire-previous", "refnet topics ensure"]
    assert problem("refnet keys rotate --retire-previous", CLI) is None
    assert problem("refnet keys rotate-everything", CLI)
    assert problem("refnet keys rotate --retire-everything", CLI)
    assert problem("refnet bootstrap platform --credentials-dir /x", CLI) is None
    assert problem("refnet audit", CLI) is None
    assert problem("refnet nothing", CLI)


def test_pinned_versions_in_the_doc_are_the_ones_in_the_files() -> None:
    line = next(p for p in DOC.split("\n\n") if p.startswith("Pinned versions:"))
    stated = set(re.findall(r"`([^`]+)`", line))
    compose_images = {svc["image"] for svc in load_compose()["services"].values() if "build" not in svc}
    dockerfile_bases = set(re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M))
    assert compose_images | dockerfile_bases <= stated, (compose_images | dockerfile_bases) - stated
    assert ".".join(KUBERNETES_VERSION.split(".")[:2]) in line
