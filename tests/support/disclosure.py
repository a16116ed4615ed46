"""An attacker's audit of published statistics: what can be worked out about each suppressed cell.

The attacker holds every document an oversight agency may ask for (each month and each quarter of a range),
knows how the figures add up (a total is the sum of each of its breakdowns; a quarter is the sum of its
months) and that counts are never negative. Everything published becomes a constant; every suppressed
figure an unknown. For each unknown the audit asks an exact linear program (rational simplex, no floats):
can it be 0, can it be 11 or more? A cell that could not be 0 but must be under 11 -- or must be exactly
anything -- is recovered. Written from the documents' meaning, not from the code that suppressed them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

K = 11
PATHWAY_SUMS = (("decisions", ("accepted", "rejected")),
                ("acknowledged", ("acknowledged_within_deadline", "acknowledged_late")))
QUARTER_MONTHS = {"Q1": ("01", "02", "03"), "Q2": ("04", "05", "06"), "Q3": ("07", "08", "09"),
                  "Q4": ("10", "11", "12")}

Var = tuple[str, ...]  # (period, cell...)


def figures(document: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """Every count of a /stats document by its place in it (rates and medians left out: they are ratios
    or order statistics of published counts only)."""
    period = document["period"]["label"]
    referrals = document["referrals"]
    found: dict[tuple[str, ...], Any] = {(period, "total"): referrals["total"],
                                         (period, "with_consent"): referrals["with_consent"],
                                         (period, "without_consent"): referrals["without_consent"]}
    for group in ("by_pathway", "by_sending_agency", "by_receiving_agency"):
        for key, value in referrals[group].items():
            found[(period, group, key)] = value
    for pathway, row in document["by_pathway"].items():
        for name in ("decisions", "accepted", "rejected", "acknowledged", "acknowledged_within_deadline",
                     "acknowledged_late", "overdue"):
            found[(period, pathway, name)] = row[name]
    return found


def equations(documents: Iterable[Mapping[str, Any]]) -> tuple[dict[Var, Any], list[tuple[Var, list[Var]]]]:
    """All figures, and every "total = sum of parts" a reader knows holds among them."""
    values: dict[Var, Any] = {}
    sums: list[tuple[Var, list[Var]]] = []
    periods = []
    for document in documents:
        found = figures(document)
        values.update(found)
        period = document["period"]["label"]
        periods.append(period)
        total = (period, "total")
        for group in ("by_pathway", "by_sending_agency", "by_receiving_agency"):
            sums.append((total, [(period, group, key) for key in document["referrals"][group]]))
        sums.append((total, [(period, "with_consent"), (period, "without_consent")]))
        for pathway in document["by_pathway"]:
            for whole, parts in PATHWAY_SUMS:
                sums.append(((period, pathway, whole), [(period, pathway, p) for p in parts]))
    for period in periods:
        if "-Q" not in period:
            continue
        year, quarter = period.split("-")
        months = [f"{year}-{m}" for m in QUARTER_MONTHS[quarter]]
        if not all(m in periods for m in months):
            continue
        for var in [v for v in values if v[0] == period]:
            sums.append((var, [(m, *var[1:]) for m in months]))
    return values, sums


@dataclass
class Finding:
    cell: Var
    can_be_zero: bool
    can_be_eleven_or_more: bool
    can_be_small: bool  # some value from 1 to 10

    @property
    def recovered(self) -> bool:
        # Protected: the published figures allow both 0 and 11 or more, or they prove it is 11 or more
        # (then it was never a small cell). Anything else narrows a small cell down.
        if self.can_be_zero and self.can_be_eleven_or_more:
            return False
        return self.can_be_small or self.can_be_zero


def audit(documents: Iterable[Mapping[str, Any]], *, known: Mapping[Var, int] | None = None) -> list[Finding]:
    """Every suppressed figure, with what the published ones allow it to be. ``known``: suppressed figures to
    treat as known to the attacker (a stronger attacker; used to keep the programs small)."""
    values, sums = equations(documents)
    constants = {v: int(x) for v, x in values.items() if isinstance(x, int)} | dict(known or {})
    unknowns = sorted(v for v in values if v not in constants)
    rows: list[tuple[dict[Var, int], int]] = []  # sum(coefficient * unknown) == rhs
    for whole, parts in sums:
        coefficients: dict[Var, int] = {}
        rhs = 0
        for var, sign in [(whole, 1)] + [(p, -1) for p in parts]:
            if var in constants:
                rhs -= sign * constants[var]
            else:
                coefficients[var] = coefficients.get(var, 0) + sign
        coefficients = {v: c for v, c in coefficients.items() if c}
        if coefficients:
            rows.append((coefficients, rhs))
        else:
            assert rhs == 0, f"published figures do not add up: {whole}"
    findings = []
    for component_vars, component_rows in _components(unknowns, rows):
        for var in component_vars:
            zero = _feasible(component_vars, component_rows, var, lower=0, upper=0)
            large = _feasible(component_vars, component_rows, var, lower=K, upper=None)
            # Asked only when it matters (each program costs): 0 and 11+ both possible protect it anyway.
            small = not (zero and large) and _feasible(component_vars, component_rows, var, lower=1, upper=K - 1)
            findings.append(Finding(var, can_be_zero=zero, can_be_eleven_or_more=large, can_be_small=small))
    return findings


def _components(unknowns: list[Var], rows: list[tuple[dict[Var, int], int]]
                ) -> list[tuple[list[Var], list[tuple[dict[Var, int], int]]]]:
    parent = {v: v for v in unknowns}

    def find(v: Var) -> Var:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for coefficients, _ in rows:
        first, *rest = coefficients
        for other in rest:
            parent[find(other)] = find(first)
    groups: dict[Var, tuple[list[Var], list[tuple[dict[Var, int], int]]]] = {}
    for v in unknowns:
        groups.setdefault(find(v), ([], []))[0].append(v)
    for row in rows:
        groups[find(next(iter(row[0])))][1].append(row)
    return list(groups.values())


def _feasible(variables: list[Var], rows: list[tuple[dict[Var, int], int]], var: Var, *,
              lower: int, upper: int | None) -> bool:
    """Is there x >= 0 with every row holding and lower <= x[var] <= upper? (Phase one of the simplex.)"""
    index = {v: i for i, v in enumerate(variables)}
    n = len(variables) + (1 if upper is not None else 0)  # a slack for the upper bound
    matrix: list[list[Fraction]] = []
    rhs: list[Fraction] = []
    for coefficients, b in rows:
        row = [Fraction(0)] * n
        for v, c in coefficients.items():
            row[index[v]] = Fraction(c)
        # Shift var by its lower bound: var = lower + y, y >= 0.
        b -= coefficients.get(var, 0) * lower
        matrix.append(row)
        rhs.append(Fraction(b))
    if upper is not None:  # y + slack = upper - lower
        row = [Fraction(0)] * n
        row[index[var]] = Fraction(1)
        row[-1] = Fraction(1)
        matrix.append(row)
        rhs.append(Fraction(upper - lower))
    return _phase_one(matrix, rhs)


def _phase_one(matrix: list[list[Fraction]], rhs: list[Fraction]) -> bool:
    m = len(matrix)
    if m == 0:
        return True
    n = len(matrix[0])
    tableau = []
    for i, (row, b) in enumerate(zip(matrix, rhs, strict=True)):
        sign = -1 if b < 0 else 1
        artificial = [Fraction(0)] * m
        artificial[i] = Fraction(1)
        tableau.append([sign * a for a in row] + artificial + [sign * b])
    basis = [n + i for i in range(m)]
    width = n + m
    # Reduced costs of minimising the sum of artificials.
    cost = [-sum((tableau[i][j] for i in range(m)), Fraction(0)) for j in range(width)]
    for i in range(m):
        cost[n + i] = Fraction(0)
    value = -sum((tableau[i][-1] for i in range(m)), Fraction(0))
    while True:
        entering = next((j for j in range(width) if cost[j] < 0), None)  # Bland: no cycling
        if entering is None:
            return value == 0
        best: tuple[Fraction, int, int] | None = None
        for i in range(m):
            a = tableau[i][entering]
            if a > 0:
                candidate = (tableau[i][-1] / a, basis[i], i)
                if best is None or candidate < best:
                    best = candidate
        if best is None:  # unbounded below cannot happen for a sum of artificials >= 0
            return value == 0
        pivot_row = best[2]
        pivot = tableau[pivot_row][entering]
        tableau[pivot_row] = [a / pivot if a else a for a in tableau[pivot_row]]
        prow = tableau[pivot_row]
        for i in range(m):
            factor = tableau[i][entering]
            if i != pivot_row and factor:
                tableau[i] = [a - factor * p if p else a for a, p in zip(tableau[i], prow, strict=True)]
        factor = cost[entering]
        cost = [c - factor * p if p else c for c, p in zip(cost, prow[:-1], strict=True)]
        value -= factor * prow[-1]
        basis[pivot_row] = entering
