"""The one cursor scheme: what it encodes comes back, and anything else is one 400."""

from __future__ import annotations

import pytest

from shared import pagination
from shared.errors import Problem


def test_a_cursor_gives_back_its_position() -> None:
    assert pagination.decode_int("seq", pagination.encode("seq", 42)) == 42
    assert pagination.decode_id("id", pagination.encode("id", "case_01HX")) == "case_01HX"
    assert pagination.decode_int("seq", None) is None


@pytest.mark.parametrize("cursor", [
    "", "%%%", "42", pagination.encode("id", 42), pagination.encode("seq", "x"), pagination.encode("seq", -1),
    pagination.encode("seq", 2**63), pagination.encode("seq", "١٢"), pagination.encode("seq", ""),
])
def test_anything_else_is_one_error(cursor: str) -> None:
    with pytest.raises(Problem) as refused:
        pagination.decode_int("seq", cursor)
    assert (refused.value.status, refused.value.slug) == (422, "validation-error")


def test_an_id_cursor_holds_only_an_id() -> None:
    with pytest.raises(Problem):
        pagination.decode_id("id", pagination.encode("id", "a b"))
