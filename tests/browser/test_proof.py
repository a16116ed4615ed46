"""The auditor's proof check (services/console/static/proof.js) in a real browser, no RefNet service running.

(a) The transparency-dev inclusion-proof vectors: every published probe, and every proof vector of
``proof/verify_test.go`` with the corruptions its verifier must reject, give the expected answer.
(b) A checkpoint signed by audit's own signing code over a tree built by audit's own Merkle code: every entry
verifies; each forgery or tampering is refused with its reason. The page is served from 127.0.0.1 (a secure
context, so WebCrypto is there) under the console's Content-Security-Policy.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from services.audit.domain import checkpoint_body
from services.audit.leaf import entry_json, leaf_bytes
from services.audit.merkle import append_plan, hash_leaf, inclusion_plan, proof_from_nodes, verify_inclusion
from services.audit.service.checkpoints import checkpoint_json
from services.audit.signing import CheckpointSigner, cosign, log_vkey
from tests.browser.harness import (
    HERE,
    REPO,
    PageServer,
    axe,
    console_errors,
    horizontal_overflow,
    json_script,
    phone_width,
    screenshot,
)
from tests.unit.audit.test_merkle_vectors import INCLUSION_VECTORS, LEAVES, ROOTS, corrupt_inclusion

PROOF_JS = REPO / "services" / "console" / "static" / "proof.js"
PROBES = json.loads((REPO / "tests" / "data" / "transparency_dev" / "inclusion_probes.json").read_text())["probes"]
ORIGIN = "refnet.test/audit"
SIZE = 7  # not a power of two: the proofs cross the tree's right border


@pytest.fixture
def proof_page(page: webdriver.Chrome, page_server: PageServer) -> webdriver.Chrome:
    page_server.add("/proof.js", PROOF_JS)
    page_server.add("/page.css", HERE / "pages" / "page.css")
    page.get(page_server.add("/proof.html", HERE / "pages" / "proof.html"))
    WebDriverWait(page, 10).until(lambda d: d.execute_script("return typeof RefNetProof") == "object",
                                  message=f"proof.js did not load: {console_errors(page)}")
    return page


def run(driver: webdriver.Chrome, body: str, *args: Any) -> Any:
    """Run ``body`` (JavaScript with ``args`` as ``args``, returning a promise) in the page; its result."""
    answer = driver.execute_async_script(
        "const done = arguments[arguments.length - 1]; const args = Array.from(arguments).slice(0, -1);"
        f"(async () => {{ {body} }})().then((value) => done({{value}}), (e) => done({{error: String(e)}}));",
        *args)
    assert "error" not in answer, answer["error"]
    return answer["value"]


def verify_all(driver: webdriver.Chrome, inputs: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    # As JSON text, parsed in the page: the driver would hand objects over with their keys sorted, hiding from
    # the test whether the script sorts them itself (RFC 8785) as it must for the API's entries.
    results: list[dict[str, Any]] = run(
        driver, "return Promise.all(JSON.parse(args[0]).map((i) => RefNetProof.verify(i)));", json.dumps(inputs))
    return results


def _hex(value: str | None) -> str:
    return base64.b64decode(value or "").hex()


# --- (a) transparency-dev -----------------------------------------------------------------------------------

VERIFY_INCLUSION = """
const H = RefNetProof.fromHex;
return Promise.all(args[0].map((c) =>
  RefNetProof.verifyInclusion(H(c.leaf), c.index, c.size, c.proof.map(H), H(c.root))));
"""


def test_every_published_inclusion_probe(proof_page: webdriver.Chrome) -> None:
    cases = []
    for item in PROBES:
        probe = item["probe"]
        index = probe.get("leafIdx", probe.get("leafIndex"))
        # Sizes as decimal text: some probes hold 2**64 - 1, which a JavaScript number cannot.
        cases.append({"leaf": _hex(probe["leafHash"]), "index": str(index), "size": str(probe["treeSize"]),
                      "proof": [_hex(p) for p in probe["proof"] or []], "root": _hex(probe["root"])})
    answers = run(proof_page, VERIFY_INCLUSION, cases)
    wrong = [item["path"] for item, ok in zip(PROBES, answers, strict=True) if ok == item["probe"]["wantErr"]]
    assert not wrong, f"proof.js disagrees with these published probes: {wrong}"
    assert len(PROBES) == 98 and sum(answers) == sum(not item["probe"]["wantErr"] for item in PROBES) == 6


def test_every_inclusion_vector_and_each_corruption(proof_page: webdriver.Chrome) -> None:
    leaf_hashes = run(proof_page, "return Promise.all(args[0].map(async (leaf) => "
                                  "RefNetProof.toHex(await RefNetProof.hashLeaf(RefNetProof.fromHex(leaf)))));",
                      [leaf.hex() for leaf in LEAVES])
    assert leaf_hashes == [hash_leaf(leaf).hex() for leaf in LEAVES]  # SHA-256(0x00 || leaf)

    cases, expected, names = [], [], []
    for vector in INCLUSION_VECTORS[1:]:
        index, size, proof = vector["leaf"] - 1, vector["size"], [bytes.fromhex(p) for p in vector["proof"]]
        leaf_hash, root = hash_leaf(LEAVES[index]), ROOTS[size]
        variants = [("happy path", (leaf_hash, index, size, proof, root)),
                    *corrupt_inclusion(index, size, proof, root, leaf_hash)]
        for name, (leaf, i, n, path, r) in variants:
            cases.append({"leaf": leaf.hex(), "index": str(i), "size": str(n), "proof": [p.hex() for p in path],
                          "root": r.hex()})
            expected.append(name == "happy path")
            names.append(f"leaf {vector['leaf']} of {size}: {name}")
            assert verify_inclusion(leaf, i, n, path, r) is expected[-1]  # the Python verifier agrees
    answers = run(proof_page, VERIFY_INCLUSION, cases)
    wrong = [name for name, ok, want in zip(names, answers, expected, strict=True) if ok is not want]
    assert not wrong, f"proof.js got these wrong: {wrong}"
    assert sum(expected) == len(INCLUSION_VECTORS) - 1 and len(cases) == 82


# --- (b) audit's own signing and Merkle code ----------------------------------------------------------------


def _entry(index: int) -> dict[str, Any]:
    at = datetime(2026, 12, 3, 9, 30, tzinfo=UTC) + timedelta(seconds=index, microseconds=index * 1001)
    return entry_json(
        index=index, recorded_at=at, occurred_at=at - timedelta(seconds=1), action="case.read", outcome="allowed",
        agency="agy_unhcr", client_id="cli_unhcr", acting_user=f"usr-{index:04d}", purpose="protection",
        resource_type="case", resource_id=f"case-{index:04d}", case_id=f"case-{index:04d}",
        source_service="intake", event_id=str(uuid.UUID(int=index + 1)),
        # What RFC 8785 writes with care: escapes, non-ASCII, U+2028, key order, nested values.
        details={"zeta": "tab\t \"quoted\" back\\slash é ☂ \u2028 \x01", "alpha": [True, None, index, "ü"],
                 "Bravo": {"b": 1, "a": ""}},
    )


@dataclass
class Log:
    signer: CheckpointSigner
    entries: list[dict[str, Any]]
    nodes: dict[tuple[int, int], bytes]
    root: bytes
    checkpoint: dict[str, Any] = field(default_factory=dict)

    @property
    def vkey(self) -> str:
        return log_vkey(self.signer.origin, self.signer.public_key).text()

    def inclusion(self, index: int, size: int | None = None) -> dict[str, Any]:
        """What GET /audit/proofs/inclusion answers."""
        size = size or len(self.entries)
        return {"index": index, "tree_size": size, "leaf_hash": self.nodes[(0, index)].hex(), "root_hash": "",
                "path": [h.hex() for h in proof_from_nodes(inclusion_plan(index, size), self.nodes)]}

    def input(self, index: int) -> dict[str, Any]:
        """proof.js's input, from the audit API's answers as the console would pass them on."""
        proof = self.inclusion(index)
        return {"publicKey": self.vkey, "checkpoint": self.checkpoint, "entry": self.entries[index],
                "leafHash": proof["leaf_hash"], "index": proof["index"], "treeSize": proof["tree_size"],
                "proof": proof["path"]}


def _sign(signer: CheckpointSigner, body: str) -> dict[str, Any]:
    """What GET /audit/checkpoint answers (services/audit/service/checkpoints.py)."""
    lines = body.split("\n")
    row = SimpleNamespace(origin=signer.origin, tree_size=int(lines[1]), root_hash=base64.b64decode(lines[2]),
                          signed_at=datetime.now(UTC), body=body, key_id=signer.key_id, signature=signer.sign(body))
    answer = checkpoint_json(row)
    assert answer["note"] == signer.signed_note(body, row.signature)  # the C2SP signed note
    return answer


def build_log(entries: list[dict[str, Any]], signer: CheckpointSigner | None = None) -> Log:
    signer = signer or CheckpointSigner(Ed25519PrivateKey.generate(), ORIGIN)
    appended = append_plan(0, [], [hash_leaf(leaf_bytes(e)) for e in entries])
    log = Log(signer, entries, {(n.level, n.index): n.hash for n in appended.nodes}, appended.root)
    log.checkpoint = _sign(signer, checkpoint_body(signer.origin, len(entries), appended.root))
    return log


@pytest.fixture(scope="module")
def log() -> Log:
    return build_log([_entry(i) for i in range(SIZE)])


def test_every_entry_of_a_checkpoint_signed_by_audit_verifies(proof_page: webdriver.Chrome, log: Log) -> None:
    inputs = [log.input(i) for i in range(SIZE)]
    # The entry alone (its leaf hash computed in the browser) and the leaf hash alone verify as well.
    inputs += [{**log.input(2), "leafHash": None}, {**log.input(5), "entry": None}]
    # A witness's cosignature after the log's own line (as GET /audit/checkpoint gives it) changes nothing.
    witness_line = cosign(Ed25519PrivateKey.generate(), "witness.test", log.checkpoint["body"], 1_764_000_000)
    inputs.append({**log.input(4), "checkpoint": _with_note(log.checkpoint, log.checkpoint["note"] + witness_line
                                                            + "\n")})
    results = verify_all(proof_page, inputs)
    assert results[SIZE + 1]["steps"][3]["code"] == "leaf_given"  # says the entry itself was not checked
    assert "not checked" in results[SIZE + 1]["steps"][3]["text"]
    for result in results:
        assert result["ok"], result["reason"]
        assert result["code"] == "verified" and result["reason"] is None
        assert [s["ok"] for s in result["steps"]] == [True] * len(result["steps"])
        assert result["checkpoint"] == {"keyId": log.signer.key_id, "origin": ORIGIN, "treeSize": str(SIZE),
                                        "rootHash": log.root.hex()}
    assert [s["code"] for s in results[0]["steps"]] == [
        "key_ok", "signature_ok", "checkpoint_ok", "leaf_ok", "root_ok"]
    # The browser's RFC 8785 form of each entry is the leaf audit hashed.
    leaves = run(proof_page, "return JSON.parse(args[0]).map((e) => RefNetProof.canonicalJson(e));",
                 json.dumps(log.entries))
    assert [leaf.encode() for leaf in leaves] == [leaf_bytes(e) for e in log.entries]


def _flip(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _with_note(checkpoint: dict[str, Any], note: str) -> dict[str, Any]:
    return {**checkpoint, "note": note}


def _refusals(log: Log) -> dict[str, tuple[dict[str, Any] | None, str, str]]:
    """name -> (input, the code it is refused with, words its reason must hold)."""
    good = log.input(3)
    note = log.checkpoint["note"]
    body, line = note[:-1].rsplit("\n", 1)
    dash, name, stamp = line.split(" ")
    other = CheckpointSigner(Ed25519PrivateKey.generate(), ORIGIN)
    forged_entries = [*log.entries[:3], {**log.entries[3], "action": "case.update"}, *log.entries[4:]]
    forged = build_log(forged_entries, other)
    forged_stamp = forged.checkpoint["note"][:-1].rsplit(" ", 1)[1]
    smaller = log.inclusion(3, SIZE - 1)
    tampered_path = list(good["proof"])
    tampered_path[1] = f"{int(tampered_path[1][0], 16) ^ 0x8:x}" + tampered_path[1][1:]
    other_body = checkpoint_body("refnet.test/other", SIZE, log.root)
    other_stamp = base64.b64encode(bytes.fromhex(log.signer.key_id) + log.signer.sign(other_body)).decode()
    return {
        "a flipped signature byte": (
            {**good, "checkpoint": _with_note(log.checkpoint, f"{body}\n{dash} {name} {_flip(stamp, 4 + 10)}\n")},
            "signature_invalid", "does not verify"),
        "a wrong key": ({**good, "publicKey": log_vkey(ORIGIN, other.public_key).text()},
                        "not_signed_by_key", "no signature by the trusted key"),
        "a forged checkpoint under the trusted key's id": (
            {**forged.input(3), "publicKey": log.vkey, "checkpoint": _with_note(
                forged.checkpoint, forged.checkpoint["note"].replace(
                    forged_stamp, base64.b64encode(bytes.fromhex(log.signer.key_id)
                                                   + base64.b64decode(forged_stamp)[4:]).decode()))},
            "signature_invalid", "altered or not signed by this key"),
        "a wrong tree size (larger)": ({**good, "treeSize": SIZE + 1}, "tree_size_mismatch",
                                       f"a log of {SIZE + 1} entries, but the checkpoint is for {SIZE}"),
        "a wrong tree size (a proof for a smaller tree)": (
            {**good, "treeSize": smaller["tree_size"], "proof": smaller["path"]}, "tree_size_mismatch",
            f"a log of {SIZE - 1} entries"),
        "a proof for a smaller tree, its size left out": (
            {**good, "treeSize": None, "proof": smaller["path"]}, "root_mismatch", "is not the signed root"),
        "a tampered proof node": ({**good, "proof": tampered_path}, "root_mismatch",
                                  "the entry or the proof was altered"),
        "a proof node removed": ({**good, "proof": good["proof"][:-1]}, "proof_wrong_length", "the wrong number"),
        "a proof node added": ({**good, "proof": [*good["proof"], log.root.hex()]}, "proof_wrong_length",
                               "the wrong number"),
        "a tampered entry beside the server's leaf hash": (
            {**good, "entry": forged_entries[3]}, "leaf_mismatch", "does not hash to the leaf hash"),
        "a tampered entry alone": ({**good, "entry": forged_entries[3], "leafHash": None}, "root_mismatch",
                                   "is not the signed root"),
        "another entry's proof": ({**good, "index": 4, "proof": log.inclusion(4)["path"]}, "index_mismatch",
                                  "number 3 in the log, but the proof is for number 4"),
        "an index beyond the checkpoint": ({**good, "entry": None, "index": SIZE}, "index_out_of_range",
                                           f"not among the checkpoint's {SIZE} entries"),
        "a checkpoint of another log, signed with the trusted key": (
            {**good, "checkpoint": _with_note(log.checkpoint, f"{other_body}\n{dash} {name} {other_stamp}\n")},
            "origin_mismatch", "of the log refnet.test/other, not of refnet.test/audit"),
        # The API's unsigned fields are never believed: a server that rewrote the log and says so there is caught.
        "a rewritten log whose unsigned root and size fields agree with it": (
            {**forged.input(3), "publicKey": log.vkey, "checkpoint": {
                **log.checkpoint, "root_hash": forged.root.hex(), "body": forged.checkpoint["body"]}},
            "root_mismatch", "is not the signed root"),
        "no signature lines": ({**good, "checkpoint": _with_note(log.checkpoint, body + "\n")},
                               "checkpoint_malformed", "not a well-formed signed checkpoint"),
        "a key whose id does not match it": (
            {**good, "publicKey": log.vkey.replace(log.signer.key_id, "00000000")}, "key_malformed",
            "key id does not match"),
        "no key": ({**good, "publicKey": None}, "key_malformed", "not a well-formed checkpoint key"),
        "nothing": (None, "failed", "nothing to check was given"),
        "a proof that is not hex": ({**good, "proof": ["zz" * 32]}, "proof_malformed", "32-byte hex hashes"),
    }


def test_each_forgery_or_tampering_is_refused_with_its_reason(proof_page: webdriver.Chrome, log: Log) -> None:
    cases = _refusals(log)
    results = verify_all(proof_page, [case for case, _, _ in cases.values()])
    wrong = {}
    for (name, (_, code, words)), result in zip(cases.items(), results, strict=True):
        if result["ok"] or result["code"] != code or words not in result["reason"]:
            wrong[name] = (code, result["code"], result["reason"])
        elif not result["steps"] or result["steps"][-1]["ok"] or result["steps"][-1]["text"] != result["reason"]:
            wrong[name] = ("the failed step last", result["steps"])
    assert not wrong, json.dumps(wrong, indent=1, ensure_ascii=False)


def test_the_result_in_plain_words(proof_page: webdriver.Chrome, log: Log) -> None:
    refused = _refusals(log)["a tampered proof node"][0]
    run(proof_page, """
        const [good, bad] = await Promise.all([RefNetProof.verify(args[0]), RefNetProof.verify(args[1])]);
        RefNetProof.render(document.getElementById("verified"), good);
        RefNetProof.render(document.getElementById("refused"), bad);""", log.input(3), refused)
    verified = proof_page.find_element("id", "verified")
    assert verified.get_attribute("data-proof-state") == "verified"
    assert verified.find_element("css selector", "[role=status]").text.startswith("Verified: this entry is in the")
    steps = verified.find_elements("css selector", "ol li")
    assert len(steps) == 5 and all(s.text.startswith("\u2713") for s in steps)
    assert log.root.hex() in verified.text and ORIGIN in verified.text
    bad = proof_page.find_element("id", "refused")
    assert bad.get_attribute("data-proof-state") == "refused"
    assert bad.find_element("css selector", "[role=status]").text.startswith("Not verified: The root recomputed")
    assert bad.find_elements("css selector", "ol li")[-1].text.startswith("\u2717")
    axe(proof_page)
    screenshot(proof_page, "proof-view")
    with phone_width(proof_page):
        assert proof_page.execute_script("return [document.documentElement.clientWidth, window.innerWidth]") == [
            360, 360]
        assert horizontal_overflow(proof_page) == 0
        axe(proof_page)
        screenshot(proof_page, "proof-view-phone")
    assert console_errors(proof_page) == []


AUTO_PAGE = """<!doctype html>
<html lang="{lang}" dir="{dir}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Proof</title><link rel="stylesheet" href="/page.css"><script src="/proof.js"></script></head>
<body><main><h1>Proof</h1>{data}
<section id="proof" aria-label="Proof" data-refnet-proof="proof-input" {messages_attr}></section></main></body></html>
"""


def _auto_page(server: PageServer, path: str, proof_input: dict[str, Any], messages: dict[str, str] | None = None,
               lang: str = "en", direction: str = "ltr") -> str:
    data = json_script("proof-input", proof_input)
    if messages is not None:
        data += json_script("proof-messages", messages)
    return server.add(path, AUTO_PAGE.format(lang=lang, dir=direction, data=data, messages_attr=(
        'data-refnet-proof-messages="proof-messages"' if messages is not None else "")))


def _state(driver: webdriver.Chrome) -> str:
    element = driver.find_element("id", "proof")
    WebDriverWait(driver, 20).until(lambda d: element.get_attribute("data-proof-state") in ("verified", "refused"))
    return str(element.get_attribute("data-proof-state"))


def test_a_page_declares_the_proof_and_the_script_checks_it_under_the_csp(
        page: webdriver.Chrome, page_server: PageServer, log: Log) -> None:
    page_server.add("/proof.js", PROOF_JS)
    page_server.add("/page.css", HERE / "pages" / "page.css")
    # Data the server put in the page is text to the script, never markup.
    hostile = {**log.input(1), "leafHash": None, "entry": {**log.entries[1], "index": "<img src=x onerror=alert(1)>"}}
    for path, proof_input, want in (("/auto-good.html", log.input(1), "verified"),
                                    ("/auto-bad.html", hostile, "refused")):
        page.get(_auto_page(page_server, path, proof_input))
        assert _state(page) == want
    assert page.find_elements("css selector", "#proof img") == []
    assert "The entry is number <img src=x onerror=alert(1)> in the log" in page.find_element("id", "proof").text
    assert console_errors(page) == []  # nothing the Content-Security-Policy blocked, no exception

    # Messages in the page's language replace the English ones; right to left for Arabic.
    arabic = {"verified": "تم التحقق: هذا الإدخال موجود في سجل التدقيق.", "labelOrigin": "السجل"}
    page.get(_auto_page(page_server, "/auto-ar.html", log.input(6), arabic, lang="ar", direction="rtl"))
    assert _state(page) == "verified"
    assert page.find_element("css selector", "#proof [role=status]").text == arabic["verified"]
    axe(page)
    screenshot(page, "proof-view-ar")

