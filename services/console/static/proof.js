/* RefNet: the auditor's proof, checked in the browser with WebCrypto alone (no library, nothing sent anywhere).
 *
 * An auditor trusts one thing: the log's verifier key (C2SP "vkey", GET /audit/public-key `vkey`, best compared
 * with one published out of band). Everything else -- the signed checkpoint, the entry, the inclusion proof --
 * comes from the audit service and is checked here, not believed:
 *   1. the key is a well-formed Ed25519 checkpoint key whose key id matches its name and key;
 *   2. the checkpoint (a C2SP signed note) carries a signature by that key, and Ed25519 verifies it;
 *   3. the signed body is a C2SP checkpoint of that log: origin, tree size, root hash;
 *   4. the entry's leaf hash is SHA-256(0x00 || RFC 8785 canonical JSON of the entry), as services/audit/leaf.py;
 *   5. the proof is for that entry's index and for the checkpoint's tree size;
 *   6. the root recomputed from the proof (RFC 9162 section 2.1.3.2) is the signed root.
 * Only signed values are compared: the unsigned `root_hash` / `tree_size` fields of the API's answers are ignored.
 *
 * Use (a plain script, CSP `script-src 'self'`, no inline script needed):
 *   RefNetProof.verify({
 *     publicKey,   // the vkey text "<origin>+<key id hex>+<base64(0x01 || 32-byte key)>"
 *     checkpoint,  // the signed note text, or GET /audit/checkpoint's answer (its `note` is read)
 *     entry,       // an entry as GET /audit/entries gives it, and/or
 *     leafHash,    // its leaf hash (hex), as GET /audit/proofs/inclusion gives `leaf_hash`
 *     index,       // the entry's index (number, decimal string or BigInt)
 *     treeSize,    // optional: the proof's tree size (`tree_size`); must be the checkpoint's
 *     proof,       // the proof's hashes, leaf upwards (hex strings: `path`)
 *   })
 * Ask for the proof at the checkpoint's size, GET /audit/proofs/inclusion?index=I&tree_size=<checkpoint tree_size>:
 * without tree_size the audit service answers for the log as it is now, which may have grown since it signed. -> Promise<{ok, code, reason, steps: [{code, ok, text}], checkpoint: {origin, treeSize, rootHash, keyId}}>
 *   RefNetProof.render(element, result, messages?)  // the result in plain words, into element
 * Or declaratively: <div data-refnet-proof="ID"> with <script type="application/json" id="ID"> holding the same
 * input; the optional data-refnet-proof-messages="ID2" names a JSON object of translated messages (see MESSAGES).
 * Lower level, for tests and tools: hashLeaf, hashChildren, rootFromInclusionProof, verifyInclusion,
 * canonicalJson, parseVerifierKey, parseSignedNote, parseCheckpointBody, fromHex, toHex, fromBase64.
 */
(function (global) {
  "use strict";

  const subtle = global.crypto && global.crypto.subtle;
  const HASH_SIZE = 32;
  const encoder = new TextEncoder();

  // Plain-words messages, {name} filled in. Translations replace any of them (same keys, same placeholders).
  const MESSAGES = {
    verified: "Verified: this entry is in the audit log, at the place the log's signed checkpoint commits to.",
    refused: "Not verified: {reason}",
    checking: "Checking the proof…",
    key_ok: "The trusted key is an Ed25519 checkpoint key of {origin} (key id {keyId}).",
    key_malformed: "The trusted key is not a well-formed checkpoint key: {problem}.",
    checkpoint_malformed: "The checkpoint is not a well-formed signed checkpoint: {problem}.",
    not_signed_by_key: "The checkpoint carries no signature by the trusted key {origin} (key id {keyId}).",
    signature_invalid: "The checkpoint's signature by {origin} (key id {keyId}) does not verify: the checkpoint was altered or not signed by this key.",
    signature_ok: "The checkpoint is signed by {origin} with the trusted key (Ed25519 signature verified).",
    origin_mismatch: "The checkpoint is of the log {found}, not of {origin}.",
    checkpoint_ok: "The signed checkpoint says the log holds {treeSize} entries, with root hash {root}.",
    entry_malformed: "The entry cannot be written as canonical JSON: {problem}.",
    leaf_malformed: "The leaf hash is not a 32-byte hex hash.",
    leaf_mismatch: "The entry does not hash to the leaf hash given with the proof.",
    leaf_missing: "Neither the entry nor its leaf hash was given.",
    leaf_ok: "The entry, written as canonical JSON (RFC 8785), has the leaf hash {leafHash}.",
    leaf_given: "The leaf hash given with the proof is {leafHash} (the entry itself was not given, so not checked).",
    index_malformed: "The entry's position in the log is not a whole number.",
    index_mismatch: "The entry is number {entryIndex} in the log, but the proof is for number {index}.",
    tree_size_malformed: "The proof's tree size is not a whole number.",
    tree_size_mismatch: "The proof is for a log of {proofSize} entries, but the checkpoint is for {treeSize}.",
    index_out_of_range: "Entry number {index} is not among the checkpoint's {treeSize} entries.",
    proof_malformed: "The proof is not a list of 32-byte hex hashes.",
    proof_wrong_length: "The proof has {length} hashes: the wrong number for entry {index} of {treeSize}.",
    root_mismatch: "The root recomputed from the entry and the {length} proof hashes ({computed}) is not the signed root ({root}): the entry or the proof was altered.",
    root_ok: "The root recomputed from the entry and the {length} proof hashes is the signed root.",
    no_webcrypto: "This browser offers no WebCrypto here (it needs a secure context: HTTPS or localhost).",
    failed: "The check could not run: {problem}.",
    labelOrigin: "Log",
    labelTreeSize: "Entries",
    labelRoot: "Root hash",
    labelKeyId: "Key id",
  };

  // --- bytes ----------------------------------------------------------------------------------------------

  function fromHex(text) {
    if (typeof text !== "string" || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return null;
    const out = new Uint8Array(text.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(text.substr(2 * i, 2), 16);
    return out;
  }

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Standard base64 with its padding, nothing else (atob alone would skip spaces).
  const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

  function fromBase64(text) {
    if (typeof text !== "string" || !BASE64.test(text)) return null;
    const raw = global.atob(text);
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }

  function equal(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  function isHash(value) {
    return value instanceof Uint8Array && value.length === HASH_SIZE;
  }

  // A hash given as bytes or hex.
  function hashBytes(value) {
    const bytes = typeof value === "string" ? fromHex(value) : value;
    return isHash(bytes) ? bytes : null;
  }

  // A size or index: a non-negative safe integer, BigInt, or canonical decimal text; null otherwise. BigInt
  // throughout, since the log's sizes may exceed 2**32 (JavaScript's bit operators stop there).
  function toBigInt(value) {
    if (typeof value === "bigint") return value >= 0n ? value : null;
    if (typeof value === "number") return Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : null;
    if (typeof value === "string" && /^(0|[1-9][0-9]*)$/.test(value)) return BigInt(value);
    return null;
  }

  async function sha256(bytes) {
    return new Uint8Array(await subtle.digest("SHA-256", bytes));
  }

  // --- RFC 9162 Merkle tree -------------------------------------------------------------------------------

  function hashLeaf(leaf) {
    return sha256(concat(Uint8Array.of(0), leaf));
  }

  function hashChildren(left, right) {
    return sha256(concat(Uint8Array.of(1), left, right));
  }

  // RFC 9162 section 2.1.3.2, steps 1 to 4: the root the proof leads to, or null if the proof cannot be one for
  // this index and size (index not below size, a hash not 32 bytes, too few or too many hashes).
  async function rootFromInclusionProof(leafHash, index, treeSize, proof) {
    const fnStart = toBigInt(index);
    const size = toBigInt(treeSize);
    if (fnStart === null || size === null || fnStart >= size || !isHash(leafHash)) return null;
    if (!Array.isArray(proof) || !proof.every(isHash)) return null;
    let fn = fnStart;
    let sn = size - 1n;
    let r = leafHash;
    for (const p of proof) {
      if (sn === 0n) return null; // more hashes than the path to the root
      if ((fn & 1n) === 1n || fn === sn) {
        r = await hashChildren(p, r);
        // A right-border node without a right sibling moves up unhashed.
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await hashChildren(r, p);
      }
      fn >>= 1n;
      sn >>= 1n;
    }
    return sn === 0n ? r : null;
  }

  // Whether proof puts leafHash at index in the tree of treeSize leaves whose root is root. Never throws.
  async function verifyInclusion(leafHash, index, treeSize, proof, root) {
    try {
      if (!isHash(root)) return false;
      const computed = await rootFromInclusionProof(leafHash, index, treeSize, proof);
      return computed !== null && equal(computed, root);
    } catch (e) {
      return false;
    }
  }

  // --- RFC 8785 canonical JSON: JavaScript's own JSON serialisation with object keys sorted by UTF-16 code
  // units, which is how RFC 8785 defines it. ------------------------------------------------------------------

  function canonicalJson(value) {
    if (value === null || typeof value === "boolean" || typeof value === "string") return JSON.stringify(value);
    if (typeof value === "number") {
      if (!Number.isFinite(value)) throw new Error("a number is not finite");
      return JSON.stringify(value);
    }
    if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
    if (typeof value === "object") {
      const keys = Object.keys(value).sort();
      return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalJson(value[k])).join(",") + "}";
    }
    throw new Error("a value is not JSON");
  }

  // --- C2SP signed note, checkpoint and verifier key --------------------------------------------------------

  const ED25519_TYPE = 0x01;

  async function keyHash(name, publicKey) {
    return (await sha256(concat(encoder.encode(name + "\n"), Uint8Array.of(ED25519_TYPE), publicKey))).slice(0, 4);
  }

  // "<name>+<key id hex>+<base64(0x01 || key)>" -> {name, keyId, publicKey}; throws Error(problem) otherwise.
  async function parseVerifierKey(text) {
    if (typeof text !== "string") throw new Error("it is not text");
    const first = text.indexOf("+");
    const second = first < 0 ? -1 : text.indexOf("+", first + 1);
    if (second < 0) throw new Error("it is not <name>+<key id>+<key>");
    const name = text.slice(0, first);
    const idText = text.slice(first + 1, second);
    const material = fromBase64(text.slice(second + 1).trim());
    if (!name || /\s|\+/.test(name)) throw new Error("its name is not one word");
    if (material === null) throw new Error("its key is not base64");
    if (material.length !== 33 || material[0] !== ED25519_TYPE) throw new Error("it is not an Ed25519 checkpoint key");
    const publicKey = material.slice(1);
    const keyId = await keyHash(name, publicKey);
    if (toHex(keyId) !== idText.toLowerCase()) throw new Error("its key id does not match its name and key");
    return { name, keyId, publicKey };
  }

  // A signed note: its text, a blank line, then lines "— <name> <base64(key id || signature)>".
  function parseSignedNote(note) {
    if (typeof note !== "string") throw new Error("it is not text");
    const split = note.lastIndexOf("\n\n");
    if (split < 0) throw new Error("it has no signature lines");
    const body = note.slice(0, split + 1);
    const block = note.slice(split + 2);
    if (!block.endsWith("\n")) throw new Error("its last signature line does not end in a newline");
    const signatures = block.slice(0, -1).split("\n").map((line) => {
      const parts = line.split(" ");
      const raw = parts.length === 3 && parts[0] === "\u2014" && parts[1] ? fromBase64(parts[2]) : null;
      if (raw === null || raw.length < 5) throw new Error("a signature line is not '\u2014 <name> <base64>'");
      return { name: parts[1], keyId: raw.slice(0, 4), signature: raw.slice(4) };
    });
    return { body, signatures };
  }

  // "<origin>\n<tree size>\n<base64 root>\n" and optional extension lines (services/audit/domain.py).
  function parseCheckpointBody(body) {
    const lines = body.split("\n");
    if (lines.length < 4 || lines[lines.length - 1] !== "") throw new Error("it is not three lines or more");
    const [origin, sizeText, rootText] = lines;
    if (!origin) throw new Error("it names no log");
    const treeSize = toBigInt(sizeText);
    if (treeSize === null) throw new Error("its tree size is not a whole number");
    const root = fromBase64(rootText);
    if (!isHash(root)) throw new Error("its root hash is not 32 bytes of base64");
    return { origin, treeSize, root };
  }

  async function verifyEd25519(publicKey, signature, message) {
    const key = await subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return subtle.verify({ name: "Ed25519" }, key, signature, message);
  }

  // --- the whole check --------------------------------------------------------------------------------------

  function format(template, params) {
    return String(template).replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
  }

  function short(bytes) {
    return toHex(bytes).slice(0, 16) + "…";
  }

  async function verify(input, messages) {
    const text = Object.assign({}, MESSAGES, messages || {});
    const steps = [];
    const summary = {};
    const pass = (code, params) => steps.push({ code, ok: true, text: format(text[code], params || {}) });
    const fail = (code, params) => {
      const reason = format(text[code], params || {});
      steps.push({ code, ok: false, text: reason });
      return { ok: false, code, reason, steps, checkpoint: summary };
    };
    try {
      if (!subtle) return fail("no_webcrypto");
      if (!input || typeof input !== "object") return fail("failed", { problem: "nothing to check was given" });

      let key;
      try { key = await parseVerifierKey(input.publicKey); }
      catch (e) { return fail("key_malformed", { problem: e.message }); }
      const who = { origin: key.name, keyId: toHex(key.keyId) };
      summary.keyId = who.keyId;
      pass("key_ok", who);

      let note;
      const noteText = input.checkpoint && typeof input.checkpoint === "object" ? input.checkpoint.note : input.checkpoint;
      try { note = parseSignedNote(noteText); }
      catch (e) { return fail("checkpoint_malformed", { problem: e.message }); }
      const mine = note.signatures.filter((s) => s.name === key.name && equal(s.keyId, key.keyId));
      if (mine.length === 0) return fail("not_signed_by_key", who);
      const body = encoder.encode(note.body);
      for (const line of mine) {
        // An Ed25519 signature is 64 bytes; any line claiming to be this key's must verify.
        if (line.signature.length !== 64 || !(await verifyEd25519(key.publicKey, line.signature, body))) {
          return fail("signature_invalid", who);
        }
      }
      pass("signature_ok", who);

      let checkpoint;
      try { checkpoint = parseCheckpointBody(note.body); }
      catch (e) { return fail("checkpoint_malformed", { problem: e.message }); }
      if (checkpoint.origin !== key.name) return fail("origin_mismatch", { found: checkpoint.origin, origin: key.name });
      const treeSize = checkpoint.treeSize;
      const root = checkpoint.root;
      Object.assign(summary, { origin: checkpoint.origin, treeSize: treeSize.toString(), rootHash: toHex(root) });
      pass("checkpoint_ok", { treeSize: treeSize.toString(), root: toHex(root) });

      let leafHash = null;
      if (input.entry !== undefined && input.entry !== null) {
        let leaf;
        try { leaf = encoder.encode(canonicalJson(input.entry)); }
        catch (e) { return fail("entry_malformed", { problem: e.message }); }
        leafHash = await hashLeaf(leaf);
      }
      if (input.leafHash !== undefined && input.leafHash !== null) {
        const given = hashBytes(input.leafHash);
        if (given === null) return fail("leaf_malformed");
        if (leafHash !== null && !equal(leafHash, given)) return fail("leaf_mismatch");
        leafHash = given;
      }
      if (leafHash === null) return fail("leaf_missing");
      const fromEntry = input.entry !== undefined && input.entry !== null;
      pass(fromEntry ? "leaf_ok" : "leaf_given", { leafHash: toHex(leafHash) });

      const index = toBigInt(input.index);
      if (index === null) return fail("index_malformed");
      if (input.entry && typeof input.entry === "object" && "index" in input.entry) {
        const entryIndex = toBigInt(input.entry.index);
        if (entryIndex !== index) return fail("index_mismatch", { entryIndex: String(input.entry.index), index });
      }
      if (input.treeSize !== undefined && input.treeSize !== null) {
        const proofSize = toBigInt(input.treeSize);
        if (proofSize === null) return fail("tree_size_malformed");
        if (proofSize !== treeSize) return fail("tree_size_mismatch", { proofSize, treeSize });
      }
      if (index >= treeSize) return fail("index_out_of_range", { index, treeSize });

      const proof = Array.isArray(input.proof) ? input.proof.map(hashBytes) : null;
      if (proof === null || proof.some((p) => p === null)) return fail("proof_malformed");
      const computed = await rootFromInclusionProof(leafHash, index, treeSize, proof);
      const where = { length: proof.length, index, treeSize };
      if (computed === null) return fail("proof_wrong_length", where);
      if (!equal(computed, root)) return fail("root_mismatch", { ...where, computed: short(computed), root: short(root) });
      pass("root_ok", where);
      return { ok: true, code: "verified", reason: null, steps, checkpoint: summary };
    } catch (e) {
      return fail("failed", { problem: e && e.message ? e.message : String(e) });
    }
  }

  // --- rendering: text nodes only (nothing given is ever parsed as HTML) -------------------------------------

  function el(tag, className, content) {
    const node = global.document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  // Write result into element: a verdict (role=status, so a screen reader hears it), the steps with ✓ or ✗, and
  // the signed checkpoint's values in full. element.dataset.proofState: checking | verified | refused.
  function render(element, result, messages) {
    const text = Object.assign({}, MESSAGES, messages || {});
    element.replaceChildren();
    const verdict = el("p", "refnet-proof-verdict");
    verdict.setAttribute("role", "status");
    verdict.dir = "auto"; // a message not yet translated still reads left to right in a right-to-left page
    element.appendChild(verdict);
    if (!result) {
      element.dataset.proofState = "checking";
      verdict.textContent = text.checking;
      return;
    }
    element.dataset.proofState = result.ok ? "verified" : "refused";
    verdict.textContent = result.ok ? text.verified : format(text.refused, { reason: result.reason });
    const list = el("ol", "refnet-proof-steps");
    for (const step of result.steps) {
      const item = el("li", step.ok ? "refnet-proof-step-ok" : "refnet-proof-step-failed");
      item.dir = "auto";
      const mark = el("span", "refnet-proof-mark", step.ok ? "\u2713 " : "\u2717 ");
      mark.setAttribute("aria-hidden", "true");
      item.append(mark, step.text);
      list.appendChild(item);
    }
    element.appendChild(list);
    const cp = result.checkpoint || {};
    if (cp.rootHash) {
      const facts = el("dl", "refnet-proof-checkpoint");
      for (const [label, value] of [[text.labelOrigin, cp.origin], [text.labelTreeSize, cp.treeSize],
        [text.labelRoot, cp.rootHash], [text.labelKeyId, cp.keyId]]) {
        const dd = el("dd");
        dd.appendChild(el("code", "", value));
        facts.append(el("dt", "", label), dd);
      }
      element.appendChild(facts);
    }
  }

  function readJson(id) {
    const node = id ? global.document.getElementById(id) : null;
    return node ? JSON.parse(node.textContent) : undefined;
  }

  // Every element with data-refnet-proof="<id of a JSON script>": verified and rendered on load.
  async function auto(root) {
    const elements = (root || global.document).querySelectorAll("[data-refnet-proof]");
    await Promise.all(Array.from(elements, async (element) => {
      let messages;
      try { messages = readJson(element.dataset.refnetProofMessages); } catch (e) { messages = undefined; }
      render(element, null, messages);
      let input;
      try { input = readJson(element.dataset.refnetProof); } catch (e) { input = undefined; }
      render(element, await verify(input, messages), messages);
    }));
  }

  global.RefNetProof = Object.freeze({
    MESSAGES: Object.freeze(Object.assign({}, MESSAGES)),
    verify, render, auto,
    hashLeaf, hashChildren, rootFromInclusionProof, verifyInclusion, canonicalJson,
    parseVerifierKey, parseSignedNote, parseCheckpointBody, fromHex, toHex, fromBase64,
  });

  if (global.document) {
    if (global.document.readyState === "loading") {
      global.document.addEventListener("DOMContentLoaded", () => { auto(); });
    } else {
      auto();
    }
  }
})(typeof window !== "undefined" ? window : globalThis);
