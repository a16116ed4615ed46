"""Leak scan (issue #8, part 5): personal data stays inside intake's encrypted store.

A fresh stack runs every SOP scenario (tests/e2e/scenarios.py) with people whose every personal field carries a
random marker, then the whole installation is searched for the marker, its case variants, its base64 and UTF-16
forms, and every other personal value of those people (phone numbers, birth dates, e-mail addresses), and the
trafficking facts each case holds (exploitation types, means of control, ...: docs/domain.md, sealed under the case key
with the names, so erasure destroys them too):

- every record of every topic, DLQs included: key, headers and value;
- every log file the stack wrote (services, PostgreSQL, broker);
- a plain-text ``pg_dump`` of every database, intake's included (its personal data is encrypted, so its dump must
  not show it either);
- the raw bytes of PostgreSQL's data directory: every table file and the write-ahead log, which holds each row
  as it was written.

Zero hits anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deploy.launcher.infra import POSTGRES_BIN_PATH
from tests.e2e.network import Network, eventually
from tests.e2e.scenarios import ALL_SCENARIOS, People
from tests.reliability.report import Report


@dataclass(frozen=True)
class Needle:
    text: bytes
    any_case: bool


# Every scenario's case carries these screening facts. Their values are enumerations (no marker fits in them),
# so the names are the markers: stored or sent in clear -- a JSON key in a column, a column of its own, an event
# field -- they show; sealed, they do not. Listed here, not imported, so that the code cannot shrink the check.
TRAFFICKING_FACTS = ("identified_by", "country_of_exploitation", "exploitation_types", "means_of_control",
                     "recruiter_relation", "migration_status", "risk_level")


def needles(people: People) -> dict[str, Needle]:
    """What to look for, by name: the marker in several forms, and every personal value as written."""
    marker = people.marker
    assert marker
    found = {
        "marker, any case": Needle(marker.encode(), any_case=True),
        "marker, UTF-16LE, any case": Needle(marker.encode("utf-16-le"), any_case=True),
        "marker, UTF-16BE, any case": Needle(marker.encode("utf-16-be"), any_case=True),
    }
    for shift in range(3):  # base64 of the marker at each of the three alignments it can have in a longer text
        encoded = base64.b64encode(b"\0" * shift + marker.encode())[4 if shift else 0:-4]
        found[f"marker, base64 (offset {shift})"] = Needle(encoded, any_case=False)
    for value in people.needles():
        if marker not in value:  # the birth dates and phone numbers
            found[f"personal value {value!r}"] = Needle(value.encode(), any_case=False)
    for name in TRAFFICKING_FACTS:
        found[f"trafficking fact {name!r} in clear"] = Needle(name.encode(), any_case=False)
    return found


class Scan:
    def __init__(self, people: People) -> None:
        self.needles = needles(people)
        self.hits: list[str] = []
        self.counts: Counter[str] = Counter()

    def search(self, where: str, data: bytes) -> None:
        self.counts["bytes"] += len(data)
        lowered = data.lower()  # ASCII case folding; the marker is ASCII letters and digits (so is its UTF-16)
        self.hits += [f"{name} in {where}" for name, needle in self.needles.items()
                      if (needle.text.lower() in lowered if needle.any_case else needle.text in data)]


async def scan_topics(net: Network, scan: Scan) -> None:
    """Every partition of every topic, from its first record to its end, with one reader."""
    admin = AIOKafkaAdminClient(bootstrap_servers=net.bootstrap)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if not t.startswith("__"))
    finally:
        await admin.close()
    reader = AIOKafkaConsumer(bootstrap_servers=net.bootstrap, group_id=None, enable_auto_commit=False,
                              auto_offset_reset="earliest")
    await reader.start()
    try:
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or {0})]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for tp, records in (await reader.getmany(*pending, timeout_ms=500)).items():
                for record in records:
                    scan.counts["records"] += 1
                    where = f"{tp.topic}@{record.offset}"
                    scan.search(f"{where} key", record.key or b"")
                    scan.search(f"{where} value", record.value or b"")
                    for name, value in record.headers:
                        scan.search(f"{where} header {name}", name.encode() + b"=" + bytes(value or b""))
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
        assert not pending, f"could not read to the end of {pending}"
    finally:
        await reader.stop()
    scan.counts["topics"] = len(topics)


def scan_logs(net: Network, scan: Scan) -> None:
    for path in sorted(p for p in net.logs.rglob("*") if p.is_file()):
        scan.counts["log files"] += 1
        scan.search(str(path.relative_to(net.home)), path.read_bytes())


def scan_databases(net: Network, scan: Scan) -> list[str]:
    server = f"postgresql://postgres@127.0.0.1:{net.env['REFNET_PG_PORT']}"
    listed = subprocess.run([str(POSTGRES_BIN_PATH / "psql"), "-qAt", "-c",
                             "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
                             f"{server}/postgres"], capture_output=True, check=True, text=True)
    databases = listed.stdout.split()
    for database in databases:
        dump = subprocess.run([str(POSTGRES_BIN_PATH / "pg_dump"), "--no-owner", f"{server}/{database}"],
                              capture_output=True, check=True)
        scan.counts["databases"] += 1
        scan.search(f"pg_dump of {database}", dump.stdout)
    return databases


def scan_data_directory(net: Network, scan: Scan) -> None:
    """PostgreSQL's files as they lie on disk: tables, indexes, TOAST, the write-ahead log."""
    data_dir: Path = net.home / "pgdata"
    # Everything written so far reaches the table files (the WAL has it already).
    checkpoint = subprocess.run([str(POSTGRES_BIN_PATH / "psql"), "-qAt", "-c", "CHECKPOINT",
                                 f"postgresql://postgres@127.0.0.1:{net.env['REFNET_PG_PORT']}/postgres"],
                                capture_output=True, text=True)
    assert checkpoint.returncode == 0, checkpoint.stderr
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # a live server's temporary file, gone since the listing
        scan.counts["data files"] += 1
        scan.search(f"pgdata/{path.relative_to(data_dir)}", data)


@pytest.fixture(scope="module")
def scanned_network(e2e_stack: Network) -> Network:
    """The e2e session's stack (started with SCENARIO_ENV, as the scenarios need): its worker runs this file after
    the e2e files, so the scan also covers everything they put on it -- and costs no stack boot of its own."""
    return e2e_stack


async def read_marked_case(net: Network, case_ids: list[str], marker: str) -> bytes:
    """The control: the marked data went in, and its owner can read it back through intake."""
    async with httpx.AsyncClient(timeout=30) as http:
        for case_id in case_ids:
            for name in ("iom", "unhcr", "shelter", "legalaid", "clinic"):
                got = await http.get(net.url("intake") + f"/cases/{case_id}", headers=net.headers(name))
                if got.status_code == 200 and marker in got.text:
                    return got.content
    return b""


async def test_no_marked_personal_value_leaves_intakes_encrypted_store(
        scanned_network: Network, report: Report) -> None:
    net = scanned_network
    marker = "ZQ" + uuid.uuid4().hex[:10].upper()
    people = People.marked(marker)
    # Right after start-up referral's read model of the directory is still filling; the scenarios (run together
    # here, to be quick) take the directory as loaded.
    async with httpx.AsyncClient(timeout=30) as http:
        loaded = await eventually(lambda: http.get(
            net.url("referral") + "/referrals/suggestions", headers=net.headers("unhcr"),
            params={"service_type": "shelter", "country": "IT"}), lambda r: bool(r.json().get("items")), seconds=60)
        assert loaded.json().get("items"), loaded.text
    started = time.monotonic()
    outcomes = await asyncio.gather(*(scenario(net, people) for scenario in ALL_SCENARIOS))
    scenarios_took = time.monotonic() - started
    await asyncio.sleep(3)  # what the scenarios caused downstream (audit ingest, DLQ, webhooks) settles

    # The control: what the scan looks for is there, in the place it belongs (a case read by its owner).
    control = Scan(people)
    control.search("intake's answer to the case's owner",
                   await read_marked_case(net, [c for o in outcomes for c in o.case_ids], marker))
    assert control.hits, "no case readable with the marker: the scan below would prove nothing"
    missed = [name for name in TRAFFICKING_FACTS if not any(f"{name!r}" in hit for hit in control.hits)]
    assert not missed, f"the owner's answer lacks {missed}: the scan would not see them leak"
    scan = Scan(people)
    started = time.monotonic()
    await scan_topics(net, scan)
    scan_logs(net, scan)
    databases = scan_databases(net, scan)
    scan_data_directory(net, scan)
    scan_took = time.monotonic() - started
    report.add("leak scan",
               injected=f"the {len(ALL_SCENARIOS)} SOP scenarios with a marker in every personal field "
                        f"({len(scan.needles)} needles: the marker in any case, UTF-16, base64; phone numbers, "
                        "birth dates)",
               checked="every topic record (key, headers, value, DLQs too), every log file, a pg_dump of every "
                       "database (intake's included), PostgreSQL's data files and WAL",
               figures={"cases": sum(len(o.case_ids) for o in outcomes), "topics": scan.counts["topics"],
                        "records": scan.counts["records"], "log files": scan.counts["log files"],
                        "databases": len(databases), "data files": scan.counts["data files"],
                        "MB scanned": round(scan.counts["bytes"] / 1e6, 1), "hits": len(scan.hits),
                        "seconds (scenarios, scan)": f"{scenarios_took:.0f}, {scan_took:.0f}"},
               failures=len(scan.hits))
    assert "refnet_intake" in databases and scan.counts["records"] > 0 and scan.counts["log files"] >= 4
    assert not scan.hits, "\n".join(scan.hits[:50])
