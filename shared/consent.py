"""The consent rule both intake (every read, every clearance) and referral (every consent event) apply:
does a consent version's provisions permit a purpose, to a recipient, for every data category? Pure.

Provisions are as intake stores them and ``consent.granted`` carries them: ``purpose``,
``recipient_agency`` (None: any agency), ``data_categories`` and ``decision`` (``permit`` or ``deny``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _matches(provision: Mapping[str, Any], purpose: str, recipient: str, category: str) -> bool:
    return (
        provision["purpose"] == purpose
        and provision.get("recipient_agency") in (None, recipient)
        and category in provision["data_categories"]
    )


def provisions_permit(provisions: Sequence[Mapping[str, Any]], *, purpose: str, recipient: str,
                      categories: Iterable[str]) -> bool:
    """Every category needs a matching permit and no matching deny (deny wins); no category, no permission."""
    wanted = set(categories)
    if not wanted:
        return False
    for category in wanted:
        relevant = [p for p in provisions if _matches(p, purpose, recipient, category)]
        if not any(p["decision"] == "permit" for p in relevant):
            return False
        if any(p["decision"] == "deny" for p in relevant):
            return False
    return True
