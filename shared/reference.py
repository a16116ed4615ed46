"""Reference data every service speaks: the service taxonomy and the country codes.

The taxonomy is RefNet's own (docs/domain.md "Service taxonomy"; the registry publishes it at ``GET /taxonomy``
with its labels); the countries are ISO 3166-1 alpha-2's officially assigned codes, from pycountry (the ISO
list as Debian's iso-codes keeps it), never a list of our own.
"""

from __future__ import annotations

import pycountry

#: Service taxonomy codes with their labels, by language.
TAXONOMY: dict[str, dict[str, str]] = {
    "shelter": {"en": "Shelter and safe accommodation", "fr": "Hébergement sûr"},
    "safety_security": {"en": "Safety and security", "fr": "Sûreté et sécurité"},
    "food_nfi_cash": {"en": "Food, non-food items and cash", "fr": "Vivres, articles non alimentaires et espèces"},
    "wash": {"en": "Water, sanitation and hygiene", "fr": "Eau, assainissement et hygiène"},
    "health.medical": {"en": "Medical care", "fr": "Soins médicaux"},
    "health.srh": {"en": "Sexual and reproductive health", "fr": "Santé sexuelle et reproductive"},
    "mhpss": {"en": "Mental health and psychosocial support", "fr": "Santé mentale et soutien psychosocial"},
    "legal.counselling": {"en": "Legal counselling", "fr": "Conseil juridique"},
    "legal.representation": {"en": "Legal representation", "fr": "Représentation juridique"},
    "protection.rsd": {"en": "Asylum and refugee status determination",
                       "fr": "Asile et détermination du statut de réfugié"},
    "protection.resettlement": {"en": "Resettlement", "fr": "Réinstallation"},
    "avrr": {"en": "Assisted voluntary return and reintegration",
             "fr": "Aide au retour volontaire et à la réintégration"},
    "reintegration.livelihood": {"en": "Livelihood support", "fr": "Moyens de subsistance"},
    "reintegration.education": {"en": "Education and training", "fr": "Éducation et formation"},
    "family_tracing": {"en": "Family tracing", "fr": "Recherche familiale"},
    "child_protection.bia_bid": {"en": "Best-interests assessment and determination",
                                 "fr": "Évaluation et détermination de l'intérêt supérieur"},
    "child_protection.guardianship": {"en": "Guardianship", "fr": "Tutelle"},
    "law_enforcement_liaison": {"en": "Law-enforcement liaison", "fr": "Liaison avec les forces de l'ordre"},
    "interpretation": {"en": "Interpretation", "fr": "Interprétation"},
    "case_management": {"en": "Case management", "fr": "Gestion de cas"},
}
TAXONOMY_CODES: frozenset[str] = frozenset(TAXONOMY)

#: ISO 3166-1 alpha-2, the officially assigned codes (no user-assigned or reserved ones).
COUNTRIES: frozenset[str] = frozenset(country.alpha_2 for country in pycountry.countries)


def is_taxonomy_code(code: str) -> bool:
    return code in TAXONOMY


def is_taxonomy_prefix(prefix: str) -> bool:
    """A search term for taxonomy: a code, or the part before its dot (health covers health.*)."""
    return any(code == prefix or code.startswith(prefix + ".") for code in TAXONOMY)


def is_country(code: str) -> bool:
    return code in COUNTRIES
