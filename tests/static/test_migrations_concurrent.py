"""A migration after those already released builds an index on an existing table concurrently
(``shared.migrations.create_index_concurrently``): a plain CREATE INDEX holds a lock that blocks the table's
writes for the whole build, during a rolling upgrade. Indexes on a table the same migration creates are
exempt (it is empty). registry_0004 builds its index in its transaction; it is released, so left as is
(docs/operations.md, "Expand, then contract")."""

from __future__ import annotations

import re
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
# Released before this rule: editing an applied migration changes nothing where it already ran.
RELEASED = {
    "audit": 4, "intake": 5, "referral": 6, "registry": 6,
}


def plain_index_builds(source: str) -> list[str]:
    """Tables a migration indexes without CONCURRENTLY, other than ones it creates itself."""
    created = {t.lower() for t in re.findall(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)", source, re.I)}
    created |= {t.lower() for t in re.findall(r"create_table\(\s*[\"'](\w+)[\"']", source)}
    tables = re.findall(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)(?:IF\s+NOT\s+EXISTS\s+)?\w+\s+ON\s+\"?(\w+)",
                        source, re.I)
    tables += re.findall(r"op\.create_index\(\s*[\"']?\w*[\"']?\s*,\s*[\"'](\w+)[\"']", source)
    return sorted({t for t in tables if t.lower() not in created})


def test_the_check_sees_a_plain_build_and_lets_a_concurrent_one_pass() -> None:
    assert plain_index_builds('op.execute("CREATE INDEX ix_a ON cases (x)")') == ["cases"]
    assert plain_index_builds('op.create_index("ix_a", "cases", ["x"])') == ["cases"]
    assert plain_index_builds('create_index_concurrently("ix_a", "cases", "x")') == []
    assert plain_index_builds('op.execute("CREATE INDEX CONCURRENTLY ix_a ON cases (x)")') == []
    assert plain_index_builds('op.create_table("fresh", ...)\nop.create_index("ix_f", "fresh", ["x"])') == []
    released = (SERVICES / "registry" / "migrations" / "versions" / "0004_location_search_index.py").read_text()
    assert plain_index_builds(released) == ["locations"]


def test_migrations_after_the_released_ones_build_indexes_concurrently() -> None:
    for service, last_released in RELEASED.items():
        for path in sorted((SERVICES / service / "migrations" / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")):
            if int(path.name[:4]) <= last_released:
                continue
            assert not plain_index_builds(path.read_text(encoding="utf-8")), \
                f"{path.name}: use shared.migrations.create_index_concurrently on an existing table"
