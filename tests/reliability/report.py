"""The reliability report: every suite adds what it injected, what it checked and its figures; the session writes
`docs/reliability.md` when `make reliability` asks for it (REFNET_RELIABILITY_REPORT names the file)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

FULL = os.environ.get("REFNET_RELIABILITY") == "full"
"""`make reliability` runs the full sizes; `make test` runs the same checks at a smaller scale."""


def scale(full: int, short: int) -> int:
    return full if FULL else short


@dataclass
class Finding:
    section: str
    injected: str
    checked: str
    figures: dict[str, int | float | str]
    failures: int


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, section: str, *, injected: str, checked: str, figures: dict[str, int | float | str],
            failures: int = 0) -> None:
        self.findings.append(Finding(section, injected, checked, figures, failures))

    def render(self) -> str:
        lines = [
            "# Reliability report",
            "",
            "Written by `make reliability` (tests/reliability/); do not edit by hand. "
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores, {platform.system()} "
            f"{platform.machine()}, Python {platform.python_version()}, scale: {'full' if FULL else 'short'}.",
            "",
            "| section | injected | checked | figures | failures |",
            "|---|---|---|---|---|",
        ]
        for f in self.findings:
            figures = ", ".join(f"{k}: {v}" for k, v in f.figures.items())
            lines.append(f"| {f.section} | {f.injected} | {f.checked} | {figures} | {f.failures} |")
        total = sum(f.failures for f in self.findings)
        lines += ["", f"Total failures: {total}.", ""]
        return "\n".join(lines)

    def write(self) -> None:
        target = os.environ.get("REFNET_RELIABILITY_REPORT")
        if target and self.findings:
            Path(target).write_text(self.render())


REPORT = Report()
