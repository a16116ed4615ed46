"""The committed contract documents are exactly what the code produces now, and producing them is stable.

So a payload model, a route, or the list of event types cannot change without the documents changing in the
same commit: the fix for a failure here is `refnet contract export` (then review and commit the diff).
"""

from __future__ import annotations

from pathlib import Path

from deploy import contract

HOW_TO_FIX = "the contract documents differ from the code: run `refnet contract export` and commit the result"


def test_committed_documents_equal_a_fresh_rendering(rendered: dict[Path, str]) -> None:
    found = contract.drift(contract.REPO, rendered)
    assert not found.changed, f"{HOW_TO_FIX}\nout of date or missing: {', '.join(map(str, found.changed))}"
    assert not found.stale, f"{HOW_TO_FIX}\nno longer generated: {', '.join(map(str, found.stale))}"


def test_every_kind_of_document_is_rendered(rendered: dict[Path, str]) -> None:
    paths = set(rendered)
    assert contract.ASYNCAPI_FILE in paths and contract.EVENTS_GUIDE in paths
    assert {path for path in paths if path.parent == contract.OPENAPI_DIR} == {
        contract.OPENAPI_DIR / f"{service}.json" for service in ("registry", "intake", "referral", "audit")}
    assert len([path for path in paths if path.parent == contract.EVENTS_DIR]) == len(contract.contract.ALL_TYPES)


def test_rendering_twice_gives_the_same_bytes(rendered: dict[Path, str]) -> None:
    assert contract.render() == rendered


def test_drift_names_a_changed_a_missing_and_a_stale_file(tmp_path: Path, rendered: dict[Path, str]) -> None:
    for path, text in rendered.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    assert not contract.drift(tmp_path, rendered)

    changed = contract.schema_path("case.registered.v1")
    (tmp_path / changed).write_text((tmp_path / changed).read_text() + " ", encoding="utf-8")
    missing = contract.OPENAPI_DIR / "audit.json"
    (tmp_path / missing).unlink()
    stale = contract.schema_path("case.vanished.v1")
    (tmp_path / stale).write_text("{}", encoding="utf-8")

    found = contract.drift(tmp_path, rendered)
    assert found.changed == sorted([changed, missing])
    assert found.stale == [stale]


def test_export_writes_everything_then_nothing(tmp_path: Path, rendered: dict[Path, str]) -> None:
    stale = tmp_path / contract.schema_path("case.vanished.v1")
    stale.parent.mkdir(parents=True)
    stale.write_text("{}", encoding="utf-8")

    first = contract.export(tmp_path)
    assert set(first.changed) == set(rendered)
    assert first.stale == [contract.schema_path("case.vanished.v1")] and not stale.exists()
    assert not contract.export(tmp_path)
    assert (tmp_path / contract.ASYNCAPI_FILE).read_text(encoding="utf-8") == rendered[contract.ASYNCAPI_FILE]
