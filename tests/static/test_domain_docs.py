"""docs/domain.md and docs/contract.md say where each rule is enforced and tested: every file, function and
test they name must exist, and every rule or section the code cites ("DOMAIN.md rule 6",
`CONTRACT.md "Referral states"`, or the same with docs/domain.md / docs/contract.md) must be in them -- so
neither side can drift silently. Each checker returns its problems; the last tests show each one sees a
breakage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._support import REPO

DOMAIN_DOC = REPO / "docs" / "domain.md"
CONTRACT_DOC = REPO / "docs" / "contract.md"
DOCS = {"domain": DOMAIN_DOC, "contract": CONTRACT_DOC}
# Where citations of the two documents live (this file cites made-up ones on purpose, so it is left out).
CITING_DIRS = ("services", "shared", "deploy", "tests", "docs")
CITING_FILES = ("README.md",)
CITING_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".json", ""}
THIS_FILE = Path(__file__).resolve()

# The sections and rule numbers of the design's DOMAIN.md, which the code cites and the lead re-points by
# search-and-replace: each must stay a heading of docs/domain.md.
DOMAIN_SECTIONS = (
    "Who uses it", "The SOP referral pathways", "Rules the software enforces (not just records)",
    "The case record (HTCDS-aligned)", "Consent record", "Service taxonomy (registry codes)",
    "Performance indicators auditors and donors ask for",
)
DOMAIN_RULES = range(1, 11)

# --- references from the documents to the code -----------------------------------------------------------

_SPAN = re.compile(r"`([^`\n]+)`")
_PATH_ROOTS = ("services/", "shared/", "tests/", "deploy/", "docs/", "examples/", "bench/", "requirements/")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_./-]+")
# "`services/intake/domain.py` `check_override_request`": a file, then a name defined in it.
_PATH_THEN_NAME = re.compile(r"`([A-Za-z0-9_./-]+\.py)`[ \t]+`([A-Za-z_][A-Za-z0-9_.]*)`")


def defines(source: str, name: str) -> bool:
    """Does ``source`` define ``name`` (a def, a class, or an assignment, at any depth)?"""
    word = re.escape(name)
    return re.search(rf"^[ \t]*(?:async[ \t]+def|def|class)[ \t]+{word}\b|^[ \t]*{word}[ \t]*(?::[^=\n]*)?=",
                     source, flags=re.M) is not None


def reference_problems(text: str, root: Path = REPO) -> list[str]:
    """Every `path`, `path::name` (``Class.method`` for a method) and `path` `name` in ``text`` that does not
    exist under ``root``."""
    problems: list[str] = []

    def check_name(path: str, dotted: str) -> None:
        source = (root / path).read_text(encoding="utf-8")
        for part in dotted.split("."):
            if not defines(source, part):
                problems.append(f"`{path}::{dotted}`: {path} defines no {part!r}")

    for span in _SPAN.findall(text):
        path, _, name = span.partition("::")
        if not path.startswith(_PATH_ROOTS) or not _PLAIN_PATH.fullmatch(path):
            continue  # not a repository path (a topic, a header, a path with a placeholder ...)
        target = root / path
        if not target.exists():
            problems.append(f"`{span}`: no such file or directory {path}")
        elif name:
            if not target.is_file():
                problems.append(f"`{span}`: {path} is not a file")
            else:
                check_name(path, name)
    for path, name in _PATH_THEN_NAME.findall(text):
        if path.startswith(_PATH_ROOTS) and (root / path).is_file():
            check_name(path, name)
    return problems


# --- headings, rules and citations ---------------------------------------------------------------------------

_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*$", re.M)
_RULE_HEADING = re.compile(r"Rule (\d+)\.")


def headings(text: str) -> list[str]:
    return _HEADING.findall(text)


def rules(text: str) -> set[int]:
    return {int(m[1]) for title in headings(text) if (m := _RULE_HEADING.match(title))}


def heading_resolves(cited: str, titles: list[str]) -> bool:
    """A cited section is a heading, or the start of one up to punctuation ("The case record" for "The case
    record (HTCDS-aligned)", "Bodies" for "Bodies, by example")."""
    want = cited.strip().casefold()
    for title in (t.casefold() for t in titles):
        if title == want or (title.startswith(want) and not title[len(want)].isalnum()):
            return True
    return False


_DOC = r"(?P<doc>DOMAIN\.md|CONTRACT\.md|docs/domain\.md|docs/contract\.md)"
_RULE_CITE = re.compile(_DOC + r",?[ \t]+rules?[ \t]+(?P<numbers>\d+(?:(?:[ \t]*,[ \t]*|[ \t]+and[ \t]+)\d+)*)")
_SECTION_CITE = re.compile(_DOC + r"(?:'s)?,?[ \t]+\"(?P<title>[^\"\n]+)\"")


def _which(doc: str) -> str:
    return "domain" if doc.lower().endswith("domain.md") else "contract"


def citations(text: str) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """(document, rule number) and (document, section title) cited in ``text``."""
    cited_rules = [(_which(m["doc"]), int(n)) for m in _RULE_CITE.finditer(text)
                   for n in re.findall(r"\d+", m["numbers"])]
    cited_sections = [(_which(m["doc"]), m["title"]) for m in _SECTION_CITE.finditer(text)]
    return cited_rules, cited_sections


def citation_problems(text: str, where: str, docs: dict[str, str]) -> list[str]:
    """The citations in ``text`` that name no rule or section of ``docs`` (``{"domain": ..., "contract": ...}``)."""
    problems = []
    cited_rules, cited_sections = citations(text)
    for doc, number in cited_rules:
        if number not in rules(docs[doc]):
            problems.append(f"{where}: cites {doc}.md rule {number}, which docs/{doc}.md does not have")
    for doc, title in cited_sections:
        if not heading_resolves(title, headings(docs[doc])):
            problems.append(f"{where}: cites {doc}.md \"{title}\", which is no heading of docs/{doc}.md")
    return problems


def citing_files() -> list[Path]:
    found = [REPO / name for name in CITING_FILES]
    for folder in CITING_DIRS:
        for path in sorted((REPO / folder).rglob("*")):
            if (path.is_file() and path.suffix in CITING_SUFFIXES and path.resolve() != THIS_FILE
                    and "__pycache__" not in path.parts):
                found.append(path)
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


# --- the documents as they are --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DOCS))
def test_every_file_function_and_test_a_document_names_exists(name: str) -> None:
    assert reference_problems(DOCS[name].read_text(encoding="utf-8")) == []


def test_the_domain_document_keeps_every_rule_and_section() -> None:
    text = DOMAIN_DOC.read_text(encoding="utf-8")
    assert set(DOMAIN_RULES) <= rules(text)
    assert [s for s in DOMAIN_SECTIONS if s not in headings(text)] == []


def test_every_citation_in_the_code_resolves_to_the_documents() -> None:
    docs = {name: path.read_text(encoding="utf-8") for name, path in DOCS.items()}
    problems = []
    count = 0
    for path in citing_files():
        text = _read(path)
        cited_rules, cited_sections = citations(text)
        count += len(cited_rules) + len(cited_sections)
        problems += citation_problems(text, str(path.relative_to(REPO)), docs)
    assert problems == []
    assert count > 0  # the scan sees the citations that are there (today's code cites both documents)


def test_links_between_the_documents_reach_a_heading() -> None:
    for path in DOCS.values():
        for target, anchor in re.findall(r"\]\(((?:domain|contract)\.md)#([a-z0-9-]+)\)", path.read_text("utf-8")):
            titles = headings((path.parent / target).read_text(encoding="utf-8"))
            slugs = {re.sub(r"[^a-z0-9 -]", "", t.casefold()).replace(" ", "-") for t in titles}
            assert anchor in slugs, f"{path.name}: {target}#{anchor}"


# --- the checkers see a breakage ------------------------------------------------------------------------------


def test_the_reference_checker_sees_a_missing_file_function_or_test() -> None:
    assert reference_problems("`services/intake/domain.py::check_override_request`, `shared/consent.py`") == []
    assert reference_problems("`services/intake/domain.py` `check_override_request`") == []
    assert reference_problems("`services/referral/service/referrals.py::Referrals.create`") == []
    assert reference_problems("`refnet.delivery.<agency_id>`, `docs/openapi/<service>.json`, `X-Purpose`") == []
    assert reference_problems("`services/intake/nothing.py`")
    assert reference_problems("`services/intake/domain.py::check_nothing`")
    assert reference_problems("`services/intake/domain.py` `check_nothing`")
    assert reference_problems("`services/referral/service/referrals.py::Referrals.fly`")
    assert reference_problems("`tests/unit/intake/test_domain.py::test_that_was_renamed`")


def test_the_citation_checker_reads_both_forms_and_sees_a_missing_rule_or_section() -> None:
    docs = {"domain": "## Service taxonomy (registry codes)\n### Rule 1. No consent\n### Rule 4. Children\n",
            "contract": "## Referral states\n### Open states\n## Bodies, by example\n"}
    good = ('(DOMAIN.md rules 1 and 4) (docs/domain.md rule 4) DOMAIN.md "Service taxonomy" '
            'CONTRACT.md, "Open states" (docs/contract.md "Referral states") CONTRACT.md "Bodies"')
    assert citations(good) == (
        [("domain", 1), ("domain", 4), ("domain", 4)],
        [("domain", "Service taxonomy"), ("contract", "Open states"), ("contract", "Referral states"),
         ("contract", "Bodies")])
    assert citation_problems(good, "x", docs) == []
    assert citation_problems("DOMAIN.md rules 1, 2 and 4", "x", docs) == [
        "x: cites domain.md rule 2, which docs/domain.md does not have"]
    assert citation_problems('docs/contract.md "Referral state machine"', "x", docs)
    assert citation_problems('CONTRACT.md "Open"', "x", docs) == []  # a prefix ending at a word boundary ...
    assert citation_problems('CONTRACT.md "Referral stat"', "x", docs)  # ... never inside a word
