// ledger.test.mjs - the ledger against a real PostgreSQL, through its RPC, with
// three replicas: every operation, its errors and idempotent retries, bad
// input that changes nothing, races between replicas, the sweeper, a replica
// killed in the middle of group commits. Every test ends with the audit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { freePort, sleep, startService, SOURCE, stopAll, waitUntil } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const SECRET = crypto.randomBytes(32).toString("hex");
let pg, db, range, replicas = [], rpc;
let seq = 0;
const idem = (tag = "op") => `${tag}-${process.pid}-${++seq}`;

function ledgerEnv(extra = {}) {
  return { FAREBOX_RPC_BIND: range, FAREBOX_DATABASE_URL: db.url, FAREBOX_KEY_HMAC_SECRET: SECRET,
    FAREBOX_LEDGER_SWEEP_MS: "200", FAREBOX_TOPUP_CREDIT_AFTER_S: "1", ...extra };
}

async function call(method, body = {}, key = undefined, opts = {}) {
  return rpc.call(method, body, { idem: key, deadlineMs: 10000, ...opts });
}

async function ok(method, body = {}, key = idem()) {
  const r = await call(method, body, key);
  assert.equal(r.status, "ok", `${method}: ${r.code}: ${r.message}`);
  return r.body;
}

async function audit() {
  const r = await call("ledger.audit", {});
  assert.equal(r.status, "ok", JSON.stringify(r));
  const failed = r.body.checks.filter((c) => !c.ok);
  assert.equal(r.body.ok, true, `audit failed: ${JSON.stringify(failed)}`);
  return r.body;
}

async function newAccount(micro = 0) {
  const { account_id } = await ok("ledger.open_account", { label: "test" });
  if (micro > 0) {
    await ok("ledger.credit", { account_id, amount_micro: micro, kind: "adjustment",
      source: { chain: "test", tx: `fund-${account_id}`, index: "0" } });
  }
  return account_id;
}

const hmac = (key) => crypto.createHmac("sha256", SECRET).update(key).digest("hex");

before(async () => {
  pg = await startPostgres();
  db = pg.createDatabase("ledger");
  const base = await freePort();
  range = `tcp://127.0.0.1:${base}-${base + 9}`;
  for (let i = 0; i < 3; i++) replicas.push(await startService("ledger", ledgerEnv({ FAREBOX_REPLICA: `ledger-${i}` })));
  rpc = new RpcClient(replicas.map((r) => r.endpoint));
});

after(async () => {
  rpc?.close();
  const failed = await stopAll(replicas);
  await pg?.stop();
  assert.deepEqual(failed, [], "every process exits 0");
});

test("accounts and credits: idempotent by key and by source", async () => {
  const k = idem("open");
  const a = await call("ledger.open_account", { label: "alice" }, k);
  const again = await call("ledger.open_account", { label: "alice" }, k);
  assert.equal(again.status, "ok");
  assert.equal(again.body.account_id, a.body.account_id);
  assert.equal(again.body.replayed, true);
  const conflict = await call("ledger.open_account", { label: "mallory" }, k);
  assert.equal(conflict.code, "idempotency_conflict");
  const account_id = a.body.account_id;

  const src = { chain: "eip155:84532", tx: `0x${crypto.randomBytes(32).toString("hex")}`, index: "3" };
  const c1 = await ok("ledger.credit", { account_id, amount_micro: 10_000_000, kind: "deposit", source: src });
  assert.equal(c1.balance_micro, 10_000_000);
  assert.equal(c1.duplicate, false);
  // the same deposit again, even under another idempotency key: credited once
  const c2 = await ok("ledger.credit", { account_id, amount_micro: 10_000_000, kind: "deposit", source: src });
  assert.equal(c2.duplicate, true);
  assert.equal(c2.credit_id, c1.credit_id);
  const c3 = await call("ledger.credit", { account_id, amount_micro: 9_000_000, kind: "deposit", source: src }, idem());
  assert.equal(c3.code, "idempotency_conflict");
  const bal = await ok("ledger.balance", { account_id });
  assert.equal(bal.balance_micro, 10_000_000);
  assert.equal(bal.available_micro, 10_000_000);
  await audit();
});

test("keys: minted once, looked up by HMAC, capped, restricted, revoked", async () => {
  const account_id = await newAccount(5_000_000);
  const k = idem("mint");
  const minted = await ok("ledger.mint_key", { account_id, label: "ci", spend_cap_micro: 1_000_000, models: ["gpt-4o-mini"] }, k);
  assert.match(minted.key, /^fbx_[1-9A-HJ-NP-Za-km-z]{40,}$/);
  assert.equal(minted.prefix, minted.key.slice(0, 12));
  assert.deepEqual(minted.models, ["gpt-4o-mini"]);
  // a retry returns the same key id, but the key itself only once: only its HMAC is stored
  const retry = await ok("ledger.mint_key", { account_id, label: "ci", spend_cap_micro: 1_000_000, models: ["gpt-4o-mini"] }, k);
  assert.equal(retry.key_id, minted.key_id);
  assert.equal(retry.key, undefined);
  assert.equal(retry.replayed, true);
  const dump = pg.psql(db.name, "SELECT encode(hmac, 'hex') || ' ' || prefix FROM api_keys");
  assert.ok(!dump.includes(minted.key), "the key is not stored");
  assert.ok(dump.includes(hmac(minted.key)), "its HMAC is");

  const look = await ok("ledger.lookup_key", { hmac: hmac(minted.key) });
  assert.equal(look.key_id, minted.key_id);
  assert.equal(look.account_id, account_id);
  assert.equal(look.status, "active");
  assert.equal(look.available_micro, 5_000_000);
  assert.equal((await call("ledger.lookup_key", { hmac: hmac("fbx_unknown") })).code, "key_not_found");
  // binary HMACs are accepted too
  const bin = await call("ledger.lookup_key", { hmac: Buffer.from(hmac(minted.key), "hex") });
  assert.equal(bin.body.key_id, minted.key_id);

  // the cap counts committed and held money
  const h1 = await ok("ledger.hold", { account_id, key_id: minted.key_id, amount_micro: 600_000, expires_in_ms: 60000 });
  const over = await call("ledger.hold", { account_id, key_id: minted.key_id, amount_micro: 600_000, expires_in_ms: 60000 }, idem());
  assert.equal(over.code, "spend_limit_exceeded");
  assert.equal(over.body.spend_cap_micro, 1_000_000);
  assert.equal(over.body.held_micro, 600_000);
  assert.equal(over.body.required_micro, 600_000);
  assert.equal(over.body.remaining_micro, 400_000);
  await ok("ledger.commit", { hold_id: h1.hold_id, amount_micro: 250_000 });
  const after1 = await ok("ledger.lookup_key", { hmac: hmac(minted.key) });
  assert.equal(after1.spent_micro, 250_000);
  assert.equal(after1.held_micro, 0);

  const upd = await ok("ledger.update_key", { key_id: minted.key_id, spend_cap_micro: null, models: null, label: "open" });
  assert.equal(upd.spend_cap_micro, null);
  assert.equal(upd.models, null);
  assert.equal(upd.label, "open");

  await ok("ledger.revoke_key", { key_id: minted.key_id });
  assert.equal((await ok("ledger.lookup_key", { hmac: hmac(minted.key) })).status, "revoked");
  const refused = await call("ledger.hold", { account_id, key_id: minted.key_id, amount_micro: 1, expires_in_ms: 60000 }, idem());
  assert.equal(refused.code, "key_revoked");
  const keys = await ok("ledger.keys", { account_id });
  assert.equal(keys.keys.length, 1);
  assert.equal(keys.keys[0].key, undefined);
  await audit();
});

test("holds: commit charges exactly, the rest returns; void returns all; retries are answered, not repeated", async () => {
  const account_id = await newAccount(3_000_000);
  const h = await ok("ledger.hold", { account_id, amount_micro: 2_000_000, expires_in_ms: 60000, memo: "call 1" });
  assert.equal(h.available_micro, 1_000_000);
  const ck = idem("commit");
  const c = await ok("ledger.commit", { hold_id: h.hold_id, amount_micro: 1_234_567 }, ck);
  assert.equal(c.committed_micro, 1_234_567);
  assert.equal(c.released_micro, 765_433);
  assert.equal(c.balance_micro, 3_000_000 - 1_234_567);
  const again = await ok("ledger.commit", { hold_id: h.hold_id, amount_micro: 1_234_567 }, ck);
  assert.equal(again.transfer_id, c.transfer_id);
  assert.equal(again.replayed, true);
  const twice = await call("ledger.commit", { hold_id: h.hold_id, amount_micro: 1 }, idem());
  assert.equal(twice.code, "hold_not_open");
  assert.equal(twice.body.state, "committed");

  const v = await ok("ledger.hold", { account_id, amount_micro: 500_000, expires_in_ms: 60000 });
  const voided = await ok("ledger.void", { hold_id: v.hold_id });
  assert.equal(voided.released_micro, 500_000);
  assert.equal((await call("ledger.commit", { hold_id: v.hold_id, amount_micro: 1 }, idem())).code, "hold_not_open");

  const zero = await ok("ledger.hold", { account_id, amount_micro: 100, expires_in_ms: 60000 });
  const z = await ok("ledger.commit", { hold_id: zero.hold_id, amount_micro: 0 });
  assert.equal(z.transfer_id, null);
  assert.equal(z.released_micro, 100);

  const bal = await ok("ledger.balance", { account_id });
  assert.equal(bal.balance_micro, 3_000_000 - 1_234_567);
  assert.equal(bal.held_micro, 0);
  const holds = await ok("ledger.holds", { account_id });
  assert.deepEqual(holds.holds.map((x) => x.state), ["committed", "voided", "committed"]);
  const hist = await ok("ledger.history", { account_id });
  assert.deepEqual(hist.postings.map((p) => p.amount_micro), [-1_234_567, 3_000_000]);
  await audit();
});

test("an expired hold cannot be committed, and the sweeper releases it", async () => {
  const account_id = await newAccount(1_000_000);
  const h = await ok("ledger.hold", { account_id, amount_micro: 700_000, expires_in_ms: 1000 });
  await sleep(1300);
  const late = await call("ledger.commit", { hold_id: h.hold_id, amount_micro: 700_000 }, idem());
  assert.equal(late.code, "hold_expired");
  await sleep(600); // the sweeper runs every 200 ms in this test
  const holds = await ok("ledger.holds", { account_id, state: "expired" });
  assert.equal(holds.holds.length, 1);
  const bal = await ok("ledger.balance", { account_id });
  assert.equal(bal.held_micro, 0);
  assert.equal(bal.balance_micro, 1_000_000);
  await audit();
});

test("charges: drawn from an open hold one row each, all or nothing, kept by commit, void and expiry", async () => {
  const account_id = await newAccount(10_000_000);
  const { key_id } = await ok("ledger.mint_key", { account_id, label: "slices", spend_cap_micro: 5_000_000 });
  const h = await ok("ledger.hold", { account_id, key_id, amount_micro: 1_000_000, expires_in_ms: 60_000 });
  const k = idem("charge");
  const c = await ok("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 1000, ref: "call-1" },
    { amount_micro: 0, ref: "call-2" }, { amount_micro: 234, ref: "call-3" }] }, k);
  assert.equal(c.charged_micro, 1234);
  assert.equal(c.charges, 3);
  assert.equal(c.uncharged_micro, 1_000_000 - 1234);
  // a retry answers the same charges; the same key with other charges is refused
  assert.equal((await call("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 1000, ref: "call-1" },
    { amount_micro: 0, ref: "call-2" }, { amount_micro: 234, ref: "call-3" }] }, k)).body.replayed, true);
  assert.equal((await call("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 1 }] }, k)).code,
    "idempotency_conflict");
  let bal = await ok("ledger.balance", { account_id });
  assert.equal(bal.balance_micro, 10_000_000 - 1234);
  assert.equal(bal.held_micro, 1_000_000 - 1234);
  // more than the uncharged rest: refused whole, nothing changes
  const over = await call("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 500_000 },
    { amount_micro: 500_000 }] }, idem());
  assert.equal(over.code, "amount_exceeds_hold");
  assert.equal(over.body.held_micro, 1_000_000 - 1234);
  // bad charges: clear errors
  for (const charges of [[], [{ amount_micro: -1 }], [{ ref: "x" }], [{ amount_micro: 1, ref: "r".repeat(101) }],
    Array.from({ length: 1001 }, () => ({ amount_micro: 1 })), "x"]) {
    assert.equal((await call("ledger.charge", { hold_id: h.hold_id, charges }, idem())).code, "bad_request");
  }
  const rows = await ok("ledger.charges", { account_id });
  assert.deepEqual(rows.charges.map((r) => [r.ref, r.amount_micro, r.hold_id]),
    [["call-3", 234, h.hold_id], ["call-2", 0, h.hold_id], ["call-1", 1000, h.hold_id]]);
  assert.equal(rows.charges[1].transfer_id, null);
  // one write, one row (0021): its charges are numbered from the write's first id, in the order sent
  assert.deepEqual(rows.charges.map((r) => r.charge_id), [2, 1, 0].map((n) => c.first_charge_id + n));
  assert.equal(c.first_charge_id % 1000, 0);
  assert.equal(pg.psql(db.name, `SELECT count(*) || ':' || array_to_string(amounts, ',') || ':' || ` +
    `array_to_string(refs, ',') FROM charge_writes WHERE hold_id = ${h.hold_id} GROUP BY amounts, refs`),
    "1:1000,0,234:call-1,call-2,call-3");
  // pages of ledger.charges cut through a write
  const page1 = await ok("ledger.charges", { account_id, limit: 2 });
  assert.deepEqual(page1.charges.map((r) => r.ref), ["call-3", "call-2"]);
  const page2 = await ok("ledger.charges", { account_id, limit: 2, before_id: page1.next_before_id });
  assert.deepEqual(page2.charges.map((r) => r.ref), ["call-1"]);
  assert.equal(page2.next_before_id, null);
  assert.throws(() => pg.psql(db.name, `INSERT INTO charge_rows (hold_id, account_id, amount) VALUES (${h.hold_id}, ` +
    `${account_id}, 1)`), /immutable/, "charges are written as charge_writes rows only");
  assert.throws(() => pg.psql(db.name, `UPDATE charge_writes SET amounts = '{1,1,1}' WHERE hold_id = ${h.hold_id}`),
    /immutable/);
  for (const [first, amounts, refs] of [[1_000_000_000, "{-1}", "{x}"], [1_000_000_001, "{1}", "{x}"],
    [1_000_000_000, "{1,2}", "{x}"], [1_000_000_000, "{}", "{}"], [1_000_000_000, "{NULL}", "{x}"]]) {
    assert.throws(() => pg.psql(db.name, "INSERT INTO charge_writes (first_id, hold_id, account_id, amounts, refs) " +
      `VALUES (${first}, ${h.hold_id}, ${account_id}, '${amounts}', '${refs}')`), /charge_writes_shape/);
  }
  // the charges are counted at once, and move to revenue when the hold resolves
  const [open] = (await ok("ledger.holds", { account_id, state: "open" })).holds;
  assert.equal(open.charged_micro, 1234);
  assert.equal(open.posted_micro, 0);
  assert.equal(open.transfer_id, null);
  // commit on top of the charges; the hold ends with both
  const done = await ok("ledger.commit", { hold_id: h.hold_id, amount_micro: 66 });
  assert.equal(done.committed_micro, 1300);
  const [closed] = (await ok("ledger.holds", { account_id, limit: 1 })).holds;
  assert.equal(closed.posted_micro, 1234);
  assert.equal(closed.transfer_id, done.transfer_id);
  const moved = (await ok("ledger.history", { account_id })).postings.find((p) => p.transfer_id === done.transfer_id);
  assert.equal(moved.amount_micro, -1300, "the charges and the commit moved in one transfer");
  assert.equal(done.released_micro, 1_000_000 - 1300);
  assert.equal((await call("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 1 }] }, idem())).code,
    "hold_not_open");
  // void keeps the charges: the hold ends committed for them
  const h2 = await ok("ledger.hold", { account_id, key_id, amount_micro: 5000, expires_in_ms: 60_000 });
  await ok("ledger.charge", { hold_id: h2.hold_id, charges: [{ amount_micro: 700, ref: "a" }] });
  const v = await ok("ledger.void", { hold_id: h2.hold_id });
  assert.equal(v.released_micro, 4300);
  assert.equal(v.charged_micro, 700);
  const [view] = (await ok("ledger.holds", { account_id, limit: 1 })).holds;
  assert.equal(view.state, "committed");
  assert.equal(view.committed_micro, 700);
  // expiry keeps the charges and releases the rest
  const h3 = await ok("ledger.hold", { account_id, key_id, amount_micro: 9000, expires_in_ms: 1000 });
  await ok("ledger.charge", { hold_id: h3.hold_id, charges: [{ amount_micro: 1, ref: "b" }] });
  await sleep(1300);
  assert.equal((await call("ledger.charge", { hold_id: h3.hold_id, charges: [{ amount_micro: 1 }] }, idem())).code,
    "hold_expired");
  await sleep(600);
  bal = await ok("ledger.balance", { account_id });
  assert.equal(bal.held_micro, 0);
  assert.equal(bal.balance_micro, 10_000_000 - 1300 - 700 - 1);
  const [key] = (await ok("ledger.keys", { account_id })).keys;
  assert.equal(key.spent_micro, 1300 + 700 + 1);
  assert.equal(key.held_micro, 0);
  // a charge must follow its hold (account, key): the audit says so when one does not
  const checks = (await audit()).checks.map((x) => x.name);
  assert.ok(checks.includes("charges_follow_their_holds") && checks.includes("charges_match_postings"));
  const tamper = (set) => pg.psql(db.name, "ALTER TABLE charge_writes DISABLE TRIGGER charge_writes_immutable; " +
    `UPDATE charge_writes SET ${set} WHERE hold_id = ${h.hold_id} AND 'call-1' = ANY (refs); ` +
    "ALTER TABLE charge_writes ENABLE TRIGGER charge_writes_immutable");
  tamper("key_id = NULL");
  const bad = await call("ledger.audit", {});
  assert.equal(bad.body.ok, false);
  assert.deepEqual(bad.body.checks.filter((x) => !x.ok).map((x) => x.name), ["charges_follow_their_holds"]);
  tamper(`key_id = ${key_id}`);
  await audit();
  // a charge whose hold is missing (no foreign key: ledger_charge writes rows only for the hold it
  // locked), and holds are never deleted
  const move = (from, to) => pg.psql(db.name, "ALTER TABLE charge_writes DISABLE TRIGGER charge_writes_immutable; " +
    `UPDATE charge_writes SET hold_id = ${to} WHERE hold_id = ${from} AND 'call-1' = ANY (refs); ` +
    "ALTER TABLE charge_writes ENABLE TRIGGER charge_writes_immutable");
  move(h.hold_id, 999999999);
  const orphan = await call("ledger.audit", {});
  assert.ok(orphan.body.checks.filter((x) => !x.ok).map((x) => x.name).includes("charges_follow_their_holds"));
  move(999999999, h.hold_id);
  assert.throws(() => pg.psql(db.name, `DELETE FROM holds WHERE id = ${h.hold_id}`), /immutable/);
  await audit();
});

test("upgrade: holds charged before 0009 (each charge posted at once) resolve exactly after it; new charges move at resolution", async () => {
  // a database at 0008, made and recorded as the ledger makes it
  const old = pg.createDatabase("upgrade");
  const dir = path.join(SOURCE, "services/ledger/migrations");
  pg.psql(old.name, "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, " +
    "checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())");
  for (const f of fs.readdirSync(dir).filter((n) => /^\d{4}_.*\.sql$/.test(n)).sort()) {
    const version = Number(f.slice(0, 4));
    if (version > 8) continue;
    const sql = fs.readFileSync(path.join(dir, f), "utf8");
    pg.psql(old.name, sql);
    const sum = crypto.createHash("sha256").update(sql).digest("hex");
    pg.psql(old.name, `INSERT INTO schema_migrations (version, name, checksum) VALUES (${version}, ` +
      `'${f.slice(5, -4)}', '${sum}')`);
  }
  let n = 0;
  const apply = (method, args) => {
    const r = JSON.parse(pg.psql(old.name, `SELECT ledger_apply('${method}', 'upgrade-${++n}', '\\x00'::bytea, ` +
      `'${JSON.stringify(args)}'::jsonb)`));
    assert.equal(r.status, "ok", JSON.stringify(r));
    return r.body;
  };
  const { account_id } = apply("ledger.open_account", { label: "before 0009" });
  apply("ledger.credit", { account_id, amount_micro: 100_000, kind: "adjustment",
    source: { chain: "test", tx: "upgrade", index: "0" } });
  const { key_id } = apply("ledger.mint_key", { account_id, hmac: crypto.randomBytes(32).toString("hex"),
    prefix: "fbx_old", label: "old" });
  const hold = (amount_micro, expires_in_ms = 60_000) =>
    apply("ledger.hold", { account_id, key_id, amount_micro, expires_in_ms }).hold_id;
  const [h1, h2, h3] = [hold(10_000), hold(5_000), hold(3_000, 2_000)];
  apply("ledger.charge", { hold_id: h1, charges: [{ amount_micro: 300, ref: "o1" }, { amount_micro: 200, ref: "o2" }] });
  apply("ledger.charge", { hold_id: h2, charges: [{ amount_micro: 100, ref: "o3" }] });
  apply("ledger.charge", { hold_id: h3, charges: [{ amount_micro: 50, ref: "o4" }] });
  const stored = () => pg.psql(old.name, `SELECT balance || ' ' || held FROM accounts WHERE id = ${account_id}`);
  assert.equal(stored(), `${100_000 - 650} ${18_000 - 650}`, "0008 posted each charge at once");

  // the ledger migrates it to 0009 at start
  const port = await freePort();
  const led = await startService("ledger", { ...ledgerEnv({ FAREBOX_REPLICA: "upgrade" }),
    FAREBOX_RPC_BIND: `tcp://127.0.0.1:${port}`, FAREBOX_DATABASE_URL: old.url });
  const r = new RpcClient(`tcp://127.0.0.1:${port}`);
  const op = async (method, body) => {
    const x = await r.call(method, body, { idem: idem("upg"), deadlineMs: 10000 });
    assert.equal(x.status, "ok", `${method}: ${x.code}: ${x.message}`);
    return x.body;
  };
  try {
    assert.ok(Number(pg.psql(old.name, "SELECT max(version) FROM schema_migrations")) >= 9);
    assert.equal(pg.psql(old.name, `SELECT string_agg(posted || '/' || charged, ' ' ORDER BY id) FROM holds ` +
      `WHERE account_id = ${account_id}`), "500/500 100/100 50/50", "what 0008 posted stays posted");
    // a charge now stays the hold's until it resolves; every view counts it at once
    await op("ledger.charge", { hold_id: h1, charges: [{ amount_micro: 1000, ref: "n1" }] });
    await op("ledger.charge", { hold_id: h2, charges: [{ amount_micro: 40, ref: "n2" }] });
    assert.equal(stored(), `${100_000 - 650} ${18_000 - 650}`, "nothing posted by the new charges");
    // the charges kept as rows (before 0021) and the new writes' read as one list, newest first
    const listed = (await op("ledger.charges", { account_id })).charges;
    assert.deepEqual(listed.map((x) => `${x.ref}:${x.amount_micro}`), ["n2:40", "n1:1000", "o4:50", "o3:100",
      "o2:200", "o1:300"]);
    assert.ok(listed[1].charge_id > listed[2].charge_id && listed[1].charge_id % 1000 === 0);
    const older = await op("ledger.charges", { account_id, hold_id: h1, limit: 2 });
    assert.deepEqual(older.charges.map((x) => x.ref), ["n1", "o2"]);
    assert.deepEqual((await op("ledger.charges", { account_id, hold_id: h1, before_id: older.next_before_id }))
      .charges.map((x) => x.ref), ["o1"]);
    let bal = await op("ledger.balance", { account_id });
    assert.equal(bal.balance_micro, 100_000 - 1690);
    assert.equal(bal.held_micro, 18_000 - 1690);
    assert.equal(bal.available_micro, 100_000 - 18_000);
    assert.equal(bal.pending_charges_micro, 1040);
    let [key] = (await op("ledger.keys", { account_id })).keys;
    assert.equal(key.spent_micro, 1690);
    assert.equal(key.held_micro, 18_000 - 1690);
    const seen = await op("ledger.lookup_key", { hmac: pg.psql(old.name, `SELECT encode(hmac, 'hex') FROM api_keys WHERE id = ${key_id}`) });
    assert.equal(seen.balance_micro, 100_000 - 1690);
    assert.equal(seen.account_held_micro, 18_000 - 1690);
    // commit, void and expiry each move what the hold has not moved yet, once
    const c = await op("ledger.commit", { hold_id: h1, amount_micro: 5 });
    assert.equal(c.committed_micro, 1505);
    assert.equal(pg.psql(old.name, `SELECT -amount FROM postings WHERE transfer_id = ${c.transfer_id} ` +
      `AND account_id = ${account_id}`), "1005");
    const v = await op("ledger.void", { hold_id: h2 });
    assert.equal(v.charged_micro, 140);
    await sleep(2500); // h3 expires; the sweeper resolves it (its one charge moved before 0009)
    bal = await op("ledger.balance", { account_id });
    assert.equal(bal.balance_micro, 100_000 - 1505 - 140 - 50);
    assert.equal(bal.held_micro, 0);
    assert.equal(bal.pending_charges_micro, 0);
    assert.equal(stored(), `${100_000 - 1695} 0`);
    [key] = (await op("ledger.keys", { account_id })).keys;
    assert.equal(key.spent_micro, 1695);
    assert.equal(key.held_micro, 0);
    assert.equal(pg.psql(old.name, `SELECT string_agg(state || ':' || posted || '/' || charged, ' ' ORDER BY id) ` +
      `FROM holds WHERE account_id = ${account_id}`), "committed:1500/1500 committed:140/140 expired:50/50");
    const a = await r.call("ledger.audit", {}, { deadlineMs: 10000 });
    assert.equal(a.body.ok, true, JSON.stringify(a.body.checks.filter((x) => !x.ok)));
    assert.ok(a.body.checks.some((x) => x.name === "holds_posted_their_charges"));
  } finally {
    r.close();
    const { code } = await led.stop();
    assert.equal(code, 0, led.tail());
  }
});

test("a charge write locks its hold's row alone: it goes through while its account and key are locked elsewhere", async () => {
  const account_id = await newAccount(1_000_000);
  const { key_id } = await ok("ledger.mint_key", { account_id, label: "locks" });
  const h = await ok("ledger.hold", { account_id, key_id, amount_micro: 10_000, expires_in_ms: 60_000 });
  // another session holds the account's and the key's rows
  const locker = spawn(path.join(pg.bindir, "psql"), ["-X", "-q", "-t", "-A", pg.url(db.name)], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  locker.stdout.on("data", (d) => (out += d));
  locker.stdin.write(`BEGIN; SELECT 1 FROM accounts WHERE id = ${account_id} FOR UPDATE; ` +
    `SELECT 1 FROM api_keys WHERE id = ${key_id} FOR UPDATE; SELECT 'locked';\n`);
  const t0 = Date.now();
  while (!out.includes("locked")) {
    assert.ok(Date.now() - t0 < 10_000, "psql took the locks");
    await sleep(20);
  }
  try {
    const c = await call("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 5, ref: "locked" }] }, idem(),
      { deadlineMs: 3000 });
    assert.equal(c.status, "ok", `${c.code}: ${c.message}`);
    // a void moves money, so it waits for the account
    let settled = false;
    const v = call("ledger.void", { hold_id: h.hold_id }, idem(), { deadlineMs: 20_000 }).then((r) => ((settled = true), r));
    await sleep(500);
    assert.equal(settled, false, "the void waits for the account's row");
    locker.stdin.end("COMMIT;\n");
    assert.equal((await v).status, "ok");
  } finally {
    locker.stdin.end();
    await new Promise((resolve) => (locker.exitCode === null ? locker.on("exit", resolve) : resolve()));
  }
  const bal = await ok("ledger.balance", { account_id });
  assert.equal(bal.balance_micro, 1_000_000 - 5);
  await audit();
});

test("idempotent calls: claimed once, answered from the charge's transaction, 409 while leased, taken over after", async () => {
  const account_id = await newAccount(1_000_000);
  const { key_id } = await ok("ledger.mint_key", { account_id, label: "idem" });
  const scope = `key:${key_id}`;
  const hash = (s) => crypto.createHash("sha256").update(s).digest("hex");
  const claim = (idem_key, claim, body = "a", lease_ms = 60_000) => call("ledger.call_claim",
    { scope, idem_key, claim, request_hash: hash(body), lease_ms, keep_ms: 3_600_000 }, idem());

  const first = await claim("k1", "r1");
  assert.equal(first.status, "ok", `${first.code}: ${first.message}`);
  assert.equal(first.body.claimed, true);
  assert.equal((await claim("k1", "r1")).body.claimed, true, "the same serving asking again keeps its claim");
  const busy = await claim("k1", "r2");
  assert.equal(busy.code, "idempotency_in_progress");
  assert.ok(busy.body.retry_after_ms > 50_000 && busy.body.retry_after_ms <= 60_000);
  assert.equal((await claim("k1", "r2", "b")).code, "idempotency_key_mismatch");

  // charged with its answer: one transaction
  const h = await ok("ledger.hold", { account_id, key_id, amount_micro: 10_000, expires_in_ms: 60_000 });
  const answer = JSON.stringify({ id: "chatcmpl-1", text: "héllo" });
  const c = await ok("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 100, ref: "plain" },
    { amount_micro: 250, ref: "r1", call: { scope, idem_key: "k1", claim: "r1", status: 200,
      content_type: "application/json", answer, answer_bytes: Buffer.byteLength(answer) } }] });
  assert.equal(c.calls_resolved, 1);
  assert.equal(c.charged_micro, 350);
  const replay = await claim("k1", "r3");
  assert.equal(replay.body.claimed, false);
  assert.equal(replay.body.state, "done");
  assert.equal(replay.body.answer, answer);
  assert.equal(replay.body.status, 200);
  const rows = (await ok("ledger.charges", { account_id })).charges;
  assert.equal(rows.find((r) => r.ref === "r1").charge_id, replay.body.charge_id);
  assert.equal(replay.body.charge_id, c.first_charge_id + 1, "a call's charge is the one at its place in the write");
  // calls.charge_id has no foreign key since 0021 (charges are a view): the audit checks it
  pg.psql(db.name, `UPDATE calls SET charge_id = charge_id + 7 WHERE scope = '${scope}' AND idem_key = 'k1'`);
  const dangling = await call("ledger.audit", {});
  assert.deepEqual(dangling.body.checks.filter((x) => !x.ok).map((x) => x.name), ["calls_name_their_charges"]);
  pg.psql(db.name, `UPDATE calls SET charge_id = charge_id - 7 WHERE scope = '${scope}' AND idem_key = 'k1'`);
  await audit();
  assert.equal((await claim("k1", "r3", "other")).code, "idempotency_key_mismatch");

  // a short lease runs out with nothing stored: the next serving takes over, the stale one stores nothing
  assert.equal((await claim("k2", "s1", "a", 1000)).body.claimed, true);
  assert.equal((await claim("k2", "s2", "a", 1000)).code, "idempotency_in_progress");
  await sleep(1100);
  const over = await claim("k2", "s2");
  assert.equal(over.body.claimed, true);
  assert.equal(over.body.taken_over, true);
  const stale = await ok("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 5, ref: "s1",
    call: { scope, idem_key: "k2", claim: "s1", status: 200, content_type: "application/json", answer: "x",
      answer_bytes: 1 } }] });
  assert.equal(stale.calls_resolved, 0, "a lost claim is charged but stores nothing");
  assert.equal((await ok("ledger.call", { scope, idem_key: "k2" })).claim, "s2");

  // released (an unpaid end): free again; a charge without an answer releases too (the client left)
  assert.equal((await ok("ledger.call_release", { scope, idem_key: "k2", claim: "s2" })).released, true);
  assert.equal((await claim("k2", "s3")).body.claimed, true);
  await ok("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 7, ref: "s3",
    call: { scope, idem_key: "k2", claim: "s3" } }] });
  assert.equal((await call("ledger.call", { scope, idem_key: "k2" })).code, "call_not_found");

  // x402: linked to its authorization, done with its receipt; a release keeps a paid name (retry serves free)
  const auth = await ok("ledger.record_authorization", { network: "eip155:84532", payer: "0xabc",
    nonce: `0x${crypto.randomBytes(32).toString("hex")}`, amount_micro: 1000 });
  const xs = `x402:${hash("header")}`;
  const xclaim = (c) => call("ledger.call_claim", { scope: xs, claim: c, request_hash: hash("a"), lease_ms: 60_000,
    keep_ms: 3_600_000 }, idem());
  assert.equal((await xclaim("x1")).body.claimed, true);
  await ok("ledger.call_link", { scope: xs, claim: "x1", authorization_id: auth.authorization_id });
  await ok("ledger.call_release", { scope: xs, claim: "x1" });
  const again = await xclaim("x2");
  assert.equal(again.body.claimed, true);
  assert.equal(again.body.authorization_id, auth.authorization_id);
  assert.equal(again.body.authorization_state, "accepted");
  assert.equal((await call("ledger.call_done", { scope: xs, claim: "x1", status: 200, content_type: "a/b",
    answer_bytes: 0 }, idem())).code, "claim_lost");
  await ok("ledger.call_done", { scope: xs, claim: "x2", status: 200, content_type: "text/event-stream",
    answer: "data: [DONE]\n\n", answer_bytes: 14, receipt: "eyJ0eCI6MX0=" });
  const xr = await xclaim("x3");
  assert.equal(xr.body.claimed, false);
  assert.equal(xr.body.receipt, "eyJ0eCI6MX0=");
  assert.equal(xr.body.content_type, "text/event-stream");

  // bad input: clear errors, nothing changes
  for (const body of [{ scope: "", claim: "c", request_hash: hash("a"), lease_ms: 1000, keep_ms: 60_000 },
    { scope, claim: "c", request_hash: "XYZ", lease_ms: 1000, keep_ms: 60_000 },
    { scope, claim: "c", request_hash: hash("a"), lease_ms: 10, keep_ms: 60_000 },
    { scope, claim: "c", request_hash: hash("a"), lease_ms: 120_000, keep_ms: 60_000 },
    { scope, idem_key: "k".repeat(256), claim: "c", request_hash: hash("a"), lease_ms: 1000, keep_ms: 60_000 }]) {
    assert.equal((await call("ledger.call_claim", body, idem())).code, "bad_request", JSON.stringify(body).slice(0, 80));
  }
  assert.equal((await call("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 1,
    call: { scope, idem_key: "k9", claim: "c", status: 99, content_type: "x", answer_bytes: 0 } }] }, idem())).code,
  "bad_request");
  assert.equal((await call("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 1, call: "x" }] }, idem())).code,
    "bad_request");
  assert.equal((await ok("ledger.balance", { account_id })).balance_micro, 1_000_000 - 350 - 5 - 7);
  await ok("ledger.void", { hold_id: h.hold_id });
  await audit();
});

test("many short holds expire on every replica at once, each released exactly once", async () => {
  const account_id = await newAccount(10_000_000);
  await Promise.all(Array.from({ length: 120 }, () =>
    ok("ledger.hold", { account_id, amount_micro: 50_000, expires_in_ms: 1000 })));
  assert.equal((await ok("ledger.balance", { account_id })).held_micro, 6_000_000);
  await sleep(2000);
  const bal = await ok("ledger.balance", { account_id });
  assert.equal(bal.held_micro, 0);
  assert.equal(bal.available_micro, 10_000_000);
  const expired = await ok("ledger.holds", { account_id, state: "expired", limit: 500 });
  assert.equal(expired.holds.length, 120);
  await audit();
});

test("x402 authorizations: accepted once, then served, settled or failed", async () => {
  const nonce = `0x${crypto.randomBytes(32).toString("hex")}`;
  const auth = { network: "eip155:84532", payer: "0x1111111111111111111111111111111111111111", nonce,
    amount_micro: 10000, pay_to: "0x2222222222222222222222222222222222222222", resource: "/v1/chat/completions" };
  const k = idem("auth");
  const a = await ok("ledger.record_authorization", auth, k);
  assert.equal(a.state, "accepted");
  // the same call retried (same key) is answered again: the caller's reply may have been lost
  assert.equal((await ok("ledger.record_authorization", auth, k)).authorization_id, a.authorization_id);
  // a replay under another key is refused
  const replay = await call("ledger.record_authorization", auth, idem());
  assert.equal(replay.code, "authorization_used");
  assert.equal(replay.body.authorization_id, a.authorization_id);

  await ok("ledger.mark_served", { authorization_id: a.authorization_id });
  const settled = await ok("ledger.mark_settled", { authorization_id: a.authorization_id, settlement_tx: "0xfeed" });
  assert.equal(settled.state, "settled");
  assert.equal(settled.settlement_tx, "0xfeed");
  const bad = await call("ledger.mark_failed", { authorization_id: a.authorization_id, reason: "late" }, idem());
  assert.equal(bad.code, "invalid_state");
  const found = await ok("ledger.authorization", { network: auth.network, payer: auth.payer, nonce });
  assert.equal(found.state, "settled");

  const b = await ok("ledger.record_authorization", { ...auth, nonce: `${nonce}b` });
  const failed = await ok("ledger.mark_failed", { authorization_id: b.authorization_id, reason: "transfer reverted" });
  assert.equal(failed.state, "failed");
  assert.equal(failed.reason, "transfer reverted");

  // an authorization whose settlement has begun cannot be marked failed: the settlement's outcome decides
  const c = await ok("ledger.record_authorization", { ...auth, nonce: `${nonce}c` });
  const s = await ok("ledger.settlement_begin", { network: auth.network, payer: auth.payer, nonce: `${nonce}c`,
    amount_micro: auth.amount_micro, sender: "0x4444444444444444444444444444444444444444", evm: true,
    chain_nonce: 0, calldata: "0xe3ee160e" });
  assert.equal(s.authorization_id, c.authorization_id);
  const early = await call("ledger.mark_failed", { authorization_id: c.authorization_id, reason: "answer lost" }, idem());
  assert.equal(early.code, "settlement_exists");
  assert.equal(early.body.state, "accepted");
  for (const bad of [-1, 1.5, "12"]) {
    assert.equal((await call("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: `0x${"ab".repeat(32)}`,
      raw_tx: "0x02f8", last_valid_height: bad }, idem())).code, "bad_request", `last_valid_height ${bad}`);
  }
  const signed = await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: `0x${"ab".repeat(32)}`,
    raw_tx: "0x02f8", last_valid_height: 1234 });
  assert.equal(signed.last_valid_height, 1234, "kept with the first recorded transaction (0022)");
  const second = await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: `0x${"ef".repeat(32)}`,
    raw_tx: "0x02f9", last_valid_height: 99 });
  assert.equal(second.tx_hash, `0x${"ab".repeat(32)}`, "the first recorded transaction wins");
  assert.equal(second.last_valid_height, 1234);
  assert.equal((await call("ledger.mark_failed", { authorization_id: c.authorization_id }, idem())).code,
    "settlement_exists");
  const done = await ok("ledger.settlement_result", { settlement_id: s.settlement_id, state: "confirmed" });
  assert.equal(done.state, "confirmed");
  assert.equal((await ok("ledger.authorization", { network: auth.network, payer: auth.payer, nonce: `${nonce}c` })).state,
    "settled");
  // another authorization with the same payer and nonce (another recipient, or other calldata: another
  // signature) never gets this one's settlement: refused before anything is allocated
  const e = await ok("ledger.record_authorization", { ...auth, nonce: `${nonce}e` });
  const begin = (extra) => call("ledger.settlement_begin", { network: auth.network, payer: auth.payer,
    nonce: `${nonce}e`, amount_micro: auth.amount_micro, sender: "0x4444444444444444444444444444444444444444",
    evm: true, chain_nonce: 0, pay_to: auth.pay_to, calldata: "0xe3ee160e01", ...extra }, idem());
  const otherRecipient = await begin({ pay_to: "0x5555555555555555555555555555555555555555" });
  assert.equal(otherRecipient.code, "authorization_conflict");
  const se = await begin({ pay_to: auth.pay_to.toUpperCase().replace("0X", "0x") }); // the same recipient, any case
  assert.equal(se.status, "ok", JSON.stringify(se));
  assert.equal(se.body.authorization_id, e.authorization_id);
  assert.equal(se.body.created, true);
  assert.equal((await begin({})).body.settlement_id, se.body.settlement_id); // the same again: found
  for (const extra of [{ calldata: "0xe3ee160e02" }, { calldata: "0xe3ee160e02", existing_only: true }]) {
    const r = await begin(extra);
    assert.equal(r.code, "authorization_conflict", JSON.stringify(r));
  }
  assert.equal((await begin({ existing_only: true })).body.settlement_id, se.body.settlement_id);

  // one whose settlement failed is failed already; marking it so again answers as is
  const d = await ok("ledger.record_authorization", { ...auth, nonce: `${nonce}d` });
  const sd = await ok("ledger.settlement_begin", { network: auth.network, payer: auth.payer, nonce: `${nonce}d`,
    amount_micro: auth.amount_micro, sender: "0x4444444444444444444444444444444444444444", evm: true,
    chain_nonce: 0, calldata: "0xe3ee160e" });
  await ok("ledger.settlement_signed", { settlement_id: sd.settlement_id, tx_hash: `0x${"cd".repeat(32)}`, raw_tx: "0x02f8" });
  await ok("ledger.settlement_result", { settlement_id: sd.settlement_id, state: "failed", reason: "reverted" });
  assert.equal((await ok("ledger.mark_failed", { authorization_id: d.authorization_id, reason: "x" })).state, "failed");
  await audit();
});

test("a confirmed topup no edge credited is credited by the sweeper, once, with the edge's own source", async () => {
  const network = "eip155:84532";
  const payer = "0x6666666666666666666666666666666666666666";
  const account = await newAccount();
  async function confirmed(resource, amount) {
    const nonce = `0x${crypto.randomBytes(32).toString("hex")}`;
    const s = await ok("ledger.settlement_begin", { network, payer, nonce, amount_micro: amount, resource,
      sender: "0x4444444444444444444444444444444444444444", evm: true, chain_nonce: 0, calldata: "0xe3ee160e" });
    const tx = `0x${crypto.randomBytes(32).toString("hex")}`;
    await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: tx, raw_tx: "0x02f8" });
    await ok("ledger.settlement_result", { settlement_id: s.settlement_id, state: "confirmed" });
    return tx;
  }
  const balance = async () => (await ok("ledger.balance", { account_id: account })).balance_micro;
  // confirmed, and nobody asked for its credit: the sweeper credits it a second later
  const tx1 = await confirmed(`topup:account:${account}`, 1_500_000);
  assert.equal(await balance(), 0);
  await waitUntil(async () => (await balance()) === 1_500_000, { what: "the due topup credited" });
  // the edge coming back later gets the same credit (duplicate), nothing more
  const late = await ok("ledger.credit", { account_id: account, amount_micro: 1_500_000, kind: "topup",
    source: { chain: network, tx: tx1, index: "0" } });
  assert.equal(late.duplicate, true);
  // credited by its edge first: the sweeper adds nothing
  const tx2 = await confirmed(`topup:account:${account}`, 700_000);
  const first = await ok("ledger.credit", { account_id: account, amount_micro: 700_000, kind: "topup",
    source: { chain: network, tx: tx2, index: "0" } });
  assert.equal(first.duplicate, false);
  // a topup credit names its settlement: another name of the network (x402 v1's), a transaction no
  // settlement has, another amount or a payment that is not this account's topup are refused,
  // changing nothing (a v1 name was a second credit of the same payment once the sweeper came)
  const tx3 = await confirmed(`topup:account:${account}`, 300_000);
  const refused = async (args, code) => {
    const r = await call("ledger.credit", { account_id: account, kind: "topup", ...args }, idem("credit"));
    assert.equal(r.code, code, JSON.stringify(r));
  };
  await refused({ amount_micro: 300_000, source: { chain: "base-sepolia", tx: tx3, index: "0" } }, "settlement_not_found");
  await refused({ amount_micro: 300_000, source: { chain: network, tx: `0x${crypto.randomBytes(32).toString("hex")}`,
    index: "0" } }, "settlement_not_found");
  await refused({ amount_micro: 300_001, source: { chain: network, tx: tx3, index: "0" } }, "settlement_mismatch");
  const callTx = await confirmed("https://edge.example/v1/chat/completions", 900_000);
  await refused({ amount_micro: 900_000, source: { chain: network, tx: callTx, index: "0" } }, "settlement_mismatch");
  // the sweeper credits that topup once, under its own source (any refused credit would show here as more
  // money); a call's payment is no topup: never credited
  await waitUntil(async () => (await balance()) === 2_500_000, { what: "the refused topup credited by the sweeper" });
  await sleep(1600);
  assert.equal(await balance(), 2_500_000);
  assert.equal(Number(pg.psql(db.name, "SELECT count(*) FROM topup_credits_due")), 0);
  await audit();
});

// A settlement whose authorization another transaction executed is confirmed
// with settled_by naming it, and verifier.settle answers with that
// transaction: the edge asks for the topup's credit with it, the sweeper of
// uncredited topups with the settlement's own transaction. Both are the same
// payment: one credit, under the settlement's own transaction.
test("a topup settled by another transaction is credited once, under the settlement's own transaction, whichever of the two its credit names", async () => {
  const network = "eip155:84532";
  const payer = "0x7777777777777777777777777777777777777777";
  const account = await newAccount();
  const hex32 = () => `0x${crypto.randomBytes(32).toString("hex")}`;
  async function settledBy(amount) {
    const s = await ok("ledger.settlement_begin", { network, payer, nonce: hex32(), amount_micro: amount,
      resource: `topup:account:${account}`, sender: "0x4444444444444444444444444444444444444444", evm: true,
      chain_nonce: 0, calldata: "0xe3ee160e" });
    const own = hex32(), other = hex32();
    await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: own, raw_tx: "0x02f8" });
    await ok("ledger.settlement_result", { settlement_id: s.settlement_id, state: "confirmed", settled_by: other });
    return { own, other };
  }
  const balance = async () => (await ok("ledger.balance", { account_id: account })).balance_micro;
  const credit = (tx, amount) => ok("ledger.credit", { account_id: account, amount_micro: amount, kind: "topup",
    source: { chain: network, tx, index: "0" } });
  // the edge credits with the transaction settle answered (the other one)
  const a = await settledBy(1_000_000);
  const first = await credit(a.other, 1_000_000);
  assert.equal(first.duplicate, false);
  // the sweeper's turn comes (a second after the confirmation): nothing more
  await sleep(1600);
  assert.equal(await balance(), 1_000_000);
  assert.equal(Number(pg.psql(db.name, "SELECT count(*) FROM topup_credits_due")), 0);
  // either name of the payment is the same credit
  for (const tx of [a.own, a.other]) {
    const again = await credit(tx, 1_000_000);
    assert.equal(again.duplicate, true);
    assert.equal(again.credit_id, first.credit_id);
  }
  assert.equal(pg.psql(db.name, `SELECT source_tx FROM credits WHERE id = ${first.credit_id}`), a.own);
  // an edge that credits at once (ledger.topup_advance) with the other transaction: a plain credit of the
  // confirmed settlement, found by it (not settlement_not_found), and the sweeper adds nothing
  const b = await settledBy(400_000);
  const adv = await ok("ledger.topup_advance", { account_id: account, amount_micro: 400_000,
    source: { chain: network, tx: b.other, index: 0 }, advance_limit_micro: 1_000_000 });
  assert.equal(adv.duplicate, false, JSON.stringify(adv));
  await sleep(1600);
  assert.equal(await balance(), 1_400_000);
  assert.equal((await credit(b.own, 400_000)).duplicate, true);
  assert.equal(Number(pg.psql(db.name, "SELECT count(*) FROM topup_credits_due")), 0);
  await audit();
});

test("open settlements come to a tracker lowest wallet nonce first, however recently the head was touched", async () => {
  const network = "eip155:31337";
  const sender = "0x5656565656565656565656565656565656565656";
  const hex32 = () => `0x${crypto.randomBytes(32).toString("hex")}`;
  const ids = [];
  for (let i = 0; i < 4; i++) {
    const s = await ok("ledger.settlement_begin", { network, payer: "0x9999999999999999999999999999999999999999",
      nonce: hex32(), amount_micro: 1000, resource: "http://x/order", sender, evm: true, chain_nonce: 7,
      calldata: "0xe3ee160e" });
    await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: hex32(), raw_tx: "0x02f8" });
    ids.push([s.settlement_id, s.nonce]);
  }
  // the head (nonce 7) re-priced last: its row is the most recently updated
  pg.psql(db.name, `UPDATE settlements SET updated_at = now() - interval '1 second' WHERE id = ${ids[0][0]}`);
  pg.psql(db.name, `UPDATE settlements SET updated_at = now() - interval '1 minute' WHERE id IN (${ids.slice(1).map((x) => x[0]).join(",")})`);
  const open = await ok("ledger.open_settlements", { network, older_than_ms: 500, limit: 2 });
  assert.deepEqual(open.settlements.map((x) => x.nonce), [7, 8]);
  for (const [id] of ids) await ok("ledger.settlement_result", { settlement_id: id, state: "failed", reason: "test" });
  await audit();
});

test("a settlement whose nonce was taken gets a new one once (renonce), is signed again under it, and its topup stays one source", async () => {
  const network = "eip155:84532";
  const payer = "0x8888888888888888888888888888888888888888";
  const sender = "0x4545454545454545454545454545454545454545";
  const account = await newAccount();
  const hex32 = () => `0x${crypto.randomBytes(32).toString("hex")}`;
  const s = await ok("ledger.settlement_begin", { network, payer, nonce: hex32(), amount_micro: 250_000,
    resource: `topup:account:${account}`, sender, evm: true, chain_nonce: 40, calldata: "0xe3ee160e" });
  assert.equal(s.nonce, 40);
  const first = hex32(), second = hex32();
  await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: first, raw_tx: "0x02f801" });
  // bad input changes nothing
  const bad = await call("ledger.settlement_renonce", { settlement_id: s.settlement_id, tx_hash: first }, idem());
  assert.equal(bad.code, "bad_request");
  // a transaction that is not the settlement's current one: answered as it is
  const stale = await ok("ledger.settlement_renonce", { settlement_id: s.settlement_id, tx_hash: hex32(), chain_nonce: 41 });
  assert.equal(stale.renonced, false);
  assert.equal(stale.nonce, 40);
  // its nonce taken (the wallet's pending nonce is now 45): the next nonce, the settlement begun again
  const r = await ok("ledger.settlement_renonce", { settlement_id: s.settlement_id, tx_hash: first, chain_nonce: 45 });
  assert.equal(r.renonced, true);
  assert.equal(r.nonce, 45);
  assert.equal(r.state, "begun");
  assert.deepEqual(r.displaced, [first]);
  assert.equal(r.tx_hash, first, "the first transaction stays its name");
  // a result judged from the old transaction meanwhile is refused: the new nonce must be used first
  const judged = await call("ledger.settlement_result", { settlement_id: s.settlement_id, state: "confirmed" }, idem());
  assert.equal(judged.code, "invalid_state", JSON.stringify(judged));
  // a second replica doing the same: nothing more
  assert.equal((await ok("ledger.settlement_renonce", { settlement_id: s.settlement_id, tx_hash: first, chain_nonce: 45 })).renonced, false);
  // signed again: only with the new nonce
  const wrong = await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: second, raw_tx: "0x02f802", nonce: 44 });
  assert.equal(wrong.state, "begun");
  assert.equal(wrong.resigned_tx, null);
  const signed = await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: second, raw_tx: "0x02f802", nonce: 45 });
  assert.equal(signed.state, "signed");
  assert.equal(signed.resigned_tx, second);
  assert.equal(signed.resigned_raw, "0x02f802");
  // the wallet's next settlement gets the nonce after
  const next = await ok("ledger.settlement_begin", { network, payer, nonce: hex32(), amount_micro: 1000,
    resource: "http://x/next", sender, evm: true, chain_nonce: 0, calldata: "0xe3ee160e" });
  assert.equal(next.nonce, 46);
  // a topup is credited plainly once its settlement is confirmed (before that, only as an advance, whose
  // limit and reversal apply): refused meanwhile, nothing credited
  const early = await call("ledger.credit", { account_id: account, amount_micro: 250_000, kind: "topup",
    source: { chain: network, tx: second, index: "0" } }, idem("credit"));
  assert.equal(early.code, "settlement_not_confirmed", JSON.stringify(early));
  assert.equal((await ok("ledger.balance", { account_id: account })).balance_micro, 0);
  await ok("ledger.settlement_result", { settlement_id: s.settlement_id, state: "confirmed", settled_by: second });
  // credited with the re-signed transaction (settle answers with it): under the first one
  const c1 = await ok("ledger.credit", { account_id: account, amount_micro: 250_000, kind: "topup",
    source: { chain: network, tx: second, index: "0" } });
  assert.equal(c1.duplicate, false);
  assert.equal(pg.psql(db.name, `SELECT source_tx FROM credits WHERE id = ${c1.credit_id}`), first);
  await sleep(1600);
  assert.equal((await ok("ledger.balance", { account_id: account })).balance_micro, 250_000);
  assert.equal((await ok("ledger.credit", { account_id: account, amount_micro: 250_000, kind: "topup",
    source: { chain: network, tx: first, index: "0" } })).duplicate, true);
  const st = await ok("ledger.settlement", { settlement_id: s.settlement_id });
  assert.equal(st.state, "confirmed");
  assert.equal(st.settled_by, second);
  // re-priced at its own nonce (keep_nonce): no nonce allocated
  const s2 = await ok("ledger.settlement_begin", { network, payer, nonce: hex32(), amount_micro: 1000,
    resource: "http://x/repriced", sender, evm: true, chain_nonce: 0, calldata: "0xe3ee160e" });
  assert.equal(s2.nonce, 47);
  const cheap = hex32();
  await ok("ledger.settlement_signed", { settlement_id: s2.settlement_id, tx_hash: cheap, raw_tx: "0x02f803" });
  const kept = await ok("ledger.settlement_renonce", { settlement_id: s2.settlement_id, tx_hash: cheap, keep_nonce: true });
  assert.equal(kept.renonced, true);
  assert.equal(kept.nonce, 47);
  assert.deepEqual(kept.displaced, [cheap]);
  assert.equal((await ok("ledger.settlement_signed", { settlement_id: s2.settlement_id, tx_hash: hex32(), raw_tx: "0x02f804",
    nonce: 47 })).state, "signed");
  assert.equal((await ok("ledger.settlement_begin", { network, payer, nonce: hex32(), amount_micro: 1000,
    resource: "http://x/after", sender, evm: true, chain_nonce: 0, calldata: "0xe3ee160e" })).nonce, 48);
  await audit();
});

test("topup advances: credited before settlement within a limit, settled as is, reversed on failure (what is spent written off)", async () => {
  const network = "eip155:84532";
  const payer = "0x3333333333333333333333333333333333333333";
  // a topup payment recorded and signed as the verifier does (broadcast, not final)
  async function settlement(account, amount) {
    const nonce = `0x${crypto.randomBytes(32).toString("hex")}`;
    const s = await ok("ledger.settlement_begin", { network, payer, nonce, amount_micro: amount,
      resource: `topup:account:${account}`, sender: "0x4444444444444444444444444444444444444444", evm: true,
      chain_nonce: 0, calldata: "0xe3ee160e" });
    const tx = `0x${crypto.randomBytes(32).toString("hex")}`;
    await ok("ledger.settlement_signed", { settlement_id: s.settlement_id, tx_hash: tx, raw_tx: "0x02f8" });
    return { id: s.settlement_id, tx, amount };
  }
  const advance = (account, s, limit, key = idem("adv")) => call("ledger.topup_advance", { account_id: account,
    amount_micro: s.amount, source: { chain: network, tx: s.tx, index: "0" }, advance_limit_micro: limit }, key);
  const account = await newAccount();
  const losses = async () => Number(pg.psql(db.name, "SELECT coalesce(sum(balance), 0) FROM accounts WHERE code = 'topup_losses'"));
  const lossesBefore = await losses();

  const s1 = await settlement(account, 2000000);
  // refusals are answered as such (not as an unknown outcome), nothing moved
  const nobody = await advance(999999999, s1, 5000000);
  assert.equal(nobody.code, "account_not_found", JSON.stringify(nobody));
  const zero = await call("ledger.topup_advance", { account_id: account, amount_micro: 0,
    source: { chain: network, tx: s1.tx, index: "0" }, advance_limit_micro: 5000000 }, idem("adv"));
  assert.equal(zero.code, "bad_request", JSON.stringify(zero));
  const over = await advance(account, s1, 1999999);
  assert.equal(over.code, "advance_refused");
  assert.equal(over.body.limit_micro, 1999999);
  assert.equal((await ok("ledger.balance", { account_id: account })).balance_micro, 0);
  const k = idem("adv");
  const a1 = await advance(account, s1, 5000000, k);
  assert.equal(a1.status, "ok", JSON.stringify(a1));
  assert.equal(a1.body.duplicate, false);
  assert.equal(a1.body.settlement_state, "signed");
  assert.equal(a1.body.advance.state, "open");
  assert.equal(a1.body.available_micro, 2000000);
  assert.equal((await advance(account, s1, 5000000, k)).body.credit_id, a1.body.credit_id); // the same key: replayed
  const dup = await advance(account, s1, 5000000);
  assert.equal(dup.body.duplicate, true);
  assert.equal(dup.body.credit_id, a1.body.credit_id);
  // a second one passes the limit counted with the first
  const s2 = await settlement(account, 3500000);
  assert.equal((await advance(account, s2, 5000000)).code, "advance_refused");
  // another account's payment, another amount, an unknown transaction: refused
  const other = await newAccount();
  assert.equal((await advance(other, s2, 9000000)).code, "settlement_mismatch");
  assert.equal((await advance(account, { ...s2, amount: 1 }, 9000000)).code, "settlement_mismatch");
  assert.equal((await advance(account, { ...s2, tx: "0xnothing" }, 9000000)).code, "settlement_not_found");
  assert.equal((await ok("ledger.balance", { account_id: other })).balance_micro, 0);

  // the account spends 1.5 of its 2: the transfer then fails
  const h = await ok("ledger.hold", { account_id: account, amount_micro: 1500000, expires_in_ms: 60000 });
  await ok("ledger.commit", { hold_id: h.hold_id, amount_micro: 1500000 });
  await ok("ledger.settlement_result", { settlement_id: s1.id, state: "failed", reason: "reverted" });
  const [rev] = (await ok("ledger.advances", { account_id: account })).advances;
  assert.equal(rev.state, "reversed");
  assert.equal(rev.recovered_micro, 500000);
  assert.equal(rev.written_off_micro, 1500000);
  assert.ok(rev.reversal_transfer_id > 0);
  const bal = await ok("ledger.balance", { account_id: account });
  assert.equal(bal.balance_micro, 0);
  assert.equal(bal.available_micro, 0);
  assert.equal(await losses() - lossesBefore, -1500000);
  // a reversed advance: no more advances for this account; a failed settlement is not credited
  const again = await advance(account, s2, 9000000);
  assert.equal(again.code, "advance_refused");
  assert.equal(again.body.reason, "reversed_before");
  const s3 = await settlement(account, 1000);
  await ok("ledger.settlement_result", { settlement_id: s3.id, state: "failed", reason: "reverted" });
  assert.equal((await advance(other, s3, 9000000)).code, "settlement_mismatch");
  assert.equal((await advance(account, s3, 9000000)).code, "settlement_failed");

  // a confirmed transfer: the advance is settled, nothing moves; a late advance of a confirmed one is a plain credit
  const s4 = await settlement(other, 700000);
  assert.equal((await advance(other, s4, 700000)).body.advance.state, "open");
  await ok("ledger.settlement_result", { settlement_id: s4.id, state: "confirmed" });
  const [settled] = (await ok("ledger.advances", { account_id: other })).advances;
  assert.equal(settled.state, "settled");
  assert.equal(settled.recovered_micro, 0);
  assert.equal((await ok("ledger.balance", { account_id: other })).balance_micro, 700000);
  const s5 = await settlement(other, 100);
  await ok("ledger.settlement_result", { settlement_id: s5.id, state: "confirmed" });
  const plain = await advance(other, s5, 0);
  assert.equal(plain.status, "ok");
  assert.equal(plain.body.settlement_state, "confirmed");
  assert.equal(plain.body.advance, null);
  assert.equal((await ok("ledger.balance", { account_id: other })).balance_micro, 700100);
  // the settled path's credit of an advanced source is the same credit
  const credit = await ok("ledger.credit", { account_id: other, amount_micro: 700000, kind: "topup",
    source: { chain: network, tx: s4.tx, index: "0" } });
  assert.equal(credit.duplicate, true);
  assert.equal((await call("ledger.topup_advance", { account_id: other, amount_micro: 5,
    source: { chain: network, tx: s4.tx, index: "0" } }, idem())).code, "bad_request");
  // a reversal while the account's money is held (a prepaid slice open):
  // the held part is written off for now and taken back when the hold resolves
  const third = await newAccount();
  const s6 = await settlement(third, 3000000);
  assert.equal((await advance(third, s6, 5000000)).body.advance.state, "open");
  const spent = await ok("ledger.hold", { account_id: third, amount_micro: 500000, expires_in_ms: 60000 });
  await ok("ledger.commit", { hold_id: spent.hold_id, amount_micro: 500000 });
  const slice = await ok("ledger.hold", { account_id: third, amount_micro: 2000000, expires_in_ms: 60000 });
  // (it must still be open when the first slice commits below: its expiry leaves room for a slow machine)
  const slice2 = await ok("ledger.hold", { account_id: third, amount_micro: 400000, expires_in_ms: 6000 });
  const lossesMid = await losses();
  await ok("ledger.settlement_result", { settlement_id: s6.id, state: "failed", reason: "reverted" });
  let [r6] = (await ok("ledger.advances", { account_id: third })).advances;
  assert.equal(r6.recovered_micro, 100000); // available: 3 - 0.5 spent - 2.4 held
  assert.equal(r6.written_off_micro, 2900000);
  assert.equal(r6.recoverable_micro, 2400000);
  assert.equal(await losses() - lossesMid, -2900000);
  // the slice is charged 0.3 and committed: its other 1.7 comes back against the write-off
  await ok("ledger.charge", { hold_id: slice.hold_id, charges: [{ amount_micro: 300000, ref: "c1" }] });
  const c = await ok("ledger.commit", { hold_id: slice.hold_id, amount_micro: 0 });
  assert.equal(c.available_micro, 0);
  [r6] = (await ok("ledger.advances", { account_id: third })).advances;
  assert.equal(r6.recovered_later_micro, 1700000);
  assert.equal(r6.lost_micro, 1200000);
  // the second hold expires unused: all of it comes back; the loss is what was spent (0.5 + 0.3)
  await waitUntil(async () => (await ok("ledger.holds", { account_id: third, state: "expired" })).holds.length > 0,
    { timeoutMs: 30000, what: "the second slice expired" }); // the sweeper runs every 200 ms in this test
  [r6] = (await ok("ledger.advances", { account_id: third })).advances;
  assert.equal(r6.recovered_later_micro, 2100000);
  assert.equal(r6.lost_micro, 800000);
  assert.equal(await losses() - lossesMid, -800000);
  const b6 = await ok("ledger.balance", { account_id: third });
  assert.equal(b6.balance_micro, 0);
  assert.equal(b6.available_micro, 0);
  await audit();
  // money that comes after the reversal is not the advance's: a deposit, then a hold of it voided (0033)
  const deposit = (acct, amount) => ok("ledger.credit", { account_id: acct, amount_micro: amount, kind: "deposit",
    source: { chain: network, tx: `0x${crypto.randomBytes(32).toString("hex")}`, index: "0" } });
  await deposit(third, 500000);
  const later = await ok("ledger.hold", { account_id: third, amount_micro: 400000, expires_in_ms: 60000 });
  await ok("ledger.void", { hold_id: later.hold_id });
  assert.equal((await ok("ledger.balance", { account_id: third })).balance_micro, 500000, "the deposit stays");
  [r6] = (await ok("ledger.advances", { account_id: third })).advances;
  assert.equal(r6.recovered_later_micro, 2100000);
  // a hold already charged in full when the advance fails: nothing of it is recoverable (spent), so a
  // deposit after, and the hold's end, take nothing (0012 counted the charged hold as recoverable and
  // took the deposit)
  const fourth = await newAccount();
  const s7 = await settlement(fourth, 1000);
  assert.equal((await advance(fourth, s7, 1000)).body.advance.state, "open");
  const spentHold = await ok("ledger.hold", { account_id: fourth, amount_micro: 1000, expires_in_ms: 60000 });
  await ok("ledger.charge", { hold_id: spentHold.hold_id, charges: [{ amount_micro: 1000, ref: "all" }] });
  await ok("ledger.settlement_result", { settlement_id: s7.id, state: "failed", reason: "reverted" });
  const [r7] = (await ok("ledger.advances", { account_id: fourth })).advances;
  assert.deepEqual([r7.written_off_micro, r7.recoverable_micro], [1000, 0]);
  await deposit(fourth, 500);
  await ok("ledger.void", { hold_id: spentHold.hold_id });
  assert.equal((await ok("ledger.balance", { account_id: fourth })).balance_micro, 500, "the deposit stays");
  await audit();
  // a recovery the advance does not record is caught
  pg.psql(db.name, `UPDATE topup_advances SET recovered_later = recovered_later - 1 WHERE credit_id = ${r6.credit_id}`);
  assert.deepEqual((await call("ledger.audit", {})).body.checks.find((x) => x.name === "advances_follow_settlements").detail,
    [r6.credit_id]);
  pg.psql(db.name, `UPDATE topup_advances SET recovered_later = recovered_later + 1 WHERE credit_id = ${r6.credit_id}`);

  // the audit checks a reversal against its transfer
  const shift = (d) => pg.psql(db.name, `UPDATE topup_advances SET recovered = recovered + ${d}, ` +
    `written_off = written_off - ${d} WHERE credit_id = ${rev.credit_id}`);
  shift(1);
  const bad = await call("ledger.audit", {});
  assert.deepEqual(bad.body.checks.find((c) => c.name === "advances_follow_settlements").detail, [rev.credit_id]);
  shift(-1);
  await audit();
});

test("bad input answers a clear error and changes nothing", async () => {
  const account_id = await newAccount(1_000_000);
  const before = pg.psql(db.name, "SELECT (SELECT count(*) FROM postings) || '/' || (SELECT count(*) FROM holds) || '/' || (SELECT count(*) FROM operations) || '/' || (SELECT sum(balance) FROM accounts)");
  const h = await ok("ledger.hold", { account_id, amount_micro: 100_000, expires_in_ms: 60000 });
  const snapshot = pg.psql(db.name, "SELECT (SELECT count(*) FROM postings) || '/' || (SELECT count(*) FROM holds) || '/' || (SELECT count(*) FROM operations) || '/' || (SELECT sum(balance) FROM accounts) || '/' || (SELECT sum(held) FROM accounts)");
  assert.notEqual(before, snapshot);
  const cases = [
    ["ledger.hold", { account_id, amount_micro: 0, expires_in_ms: 60000 }, "bad_request", /amount_micro/],
    ["ledger.hold", { account_id, amount_micro: -5, expires_in_ms: 60000 }, "bad_request", /amount_micro/],
    ["ledger.hold", { account_id, amount_micro: 2 ** 62, expires_in_ms: 60000 }, "bad_request", /amount_micro/],
    ["ledger.hold", { account_id, amount_micro: 1.5, expires_in_ms: 60000 }, "bad_request", /integer/],
    ["ledger.hold", { account_id, amount_micro: "100", expires_in_ms: 60000 }, "bad_request", /integer/],
    ["ledger.hold", { account_id, amount_micro: 100 }, "bad_request", /expires_in_ms is required/],
    ["ledger.hold", { account_id, amount_micro: 100, expires_in_ms: 10 }, "bad_request", /expires_in_ms/],
    ["ledger.hold", { account_id: 999999999, amount_micro: 100, expires_in_ms: 60000 }, "account_not_found", /999999999/],
    ["ledger.hold", { account_id: 1, amount_micro: 100, expires_in_ms: 60000 }, "account_not_found", /caller account/],
    ["ledger.hold", { account_id, amount_micro: 5_000_000, expires_in_ms: 60000 }, "insufficient_balance", /available/],
    ["ledger.hold", { account_id, amount_micro: 1, expires_in_ms: 60000, memo: "x".repeat(600) }, "bad_request", /memo/],
    ["ledger.commit", { hold_id: h.hold_id, amount_micro: 100_001 }, "amount_exceeds_hold", /more than the hold/],
    ["ledger.commit", { hold_id: h.hold_id, amount_micro: -1 }, "bad_request", /amount_micro/],
    ["ledger.commit", { hold_id: 987654321, amount_micro: 1 }, "hold_not_found", /987654321/],
    ["ledger.void", { hold_id: "one" }, "bad_request", /hold_id/],
    ["ledger.credit", { account_id, amount_micro: 1, kind: "gift", source: { chain: "x", tx: "y", index: "0" } }, "bad_request", /kind/],
    ["ledger.credit", { account_id, amount_micro: 1, kind: "deposit", source: { chain: "x" } }, "bad_request", /source/],
    ["ledger.credit", { account_id, amount_micro: 2 ** 53, kind: "deposit", source: { chain: "x", tx: "y", index: "0" } }, "bad_request", /amount_micro/],
    ["ledger.mint_key", { account_id, models: "all" }, "bad_request", /models/],
    ["ledger.mint_key", { account_id, spend_cap_micro: -1 }, "bad_request", /spend_cap_micro/],
    ["ledger.record_authorization", { network: "eip155:1", nonce: "n", amount_micro: 0 }, "bad_request", /amount_micro/],
    ["ledger.mark_settled", { authorization_id: 1 }, "bad_request", /settlement_tx is required/],
    ["ledger.lookup_key", { hmac: "abc" }, "bad_request", /hmac/],
  ];
  for (const [method, body, code, re] of cases) {
    const r = await call(method, body, idem());
    assert.equal(r.code, code, `${method} ${JSON.stringify(body).slice(0, 80)}: ${r.code} ${r.message}`);
    assert.match(r.message, re);
  }
  // a write without an idempotency key is refused before it reaches the database
  const noKey = await rpc.call("ledger.hold", { account_id, amount_micro: 1, expires_in_ms: 60000 });
  assert.equal(noKey.code, "bad_request");
  assert.match(noKey.message, /idempotency key/);
  const unknown = await call("ledger.transfer_all_the_money", {}, idem());
  assert.equal(unknown.code, "unknown_method");

  const afterAll = pg.psql(db.name, "SELECT (SELECT count(*) FROM postings) || '/' || (SELECT count(*) FROM holds) || '/' || (SELECT count(*) FROM operations) || '/' || (SELECT sum(balance) FROM accounts) || '/' || (SELECT sum(held) FROM accounts)");
  assert.equal(afterAll, snapshot, "refused operations changed nothing");
  await ok("ledger.void", { hold_id: h.hold_id });
  await audit();
});

test("a chain-watcher's cursor: block 0 recorded (a watch from the genesis block), then moved only forward", async () => {
  const network = "eip155:31337-cursor";
  const at0 = await ok("ledger.advance_cursor", { network, block: 0, hash: "0xgenesis" });
  assert.equal(at0.block, 0);
  assert.equal((await ok("ledger.advance_cursor", { network, block: 5, hash: "0x5" })).block, 5);
  assert.equal((await ok("ledger.advance_cursor", { network, block: 3, hash: "0x3" })).block, 5, "never back");
  for (const block of [-1, 1.5, "7"]) {
    const r = await call("ledger.advance_cursor", { network, block }, idem());
    assert.equal(r.code, "bad_request", `${block}: ${r.code}`);
  }
  assert.equal((await ok("ledger.advance_cursor", { network, block: 5 })).block, 5);
});

test("postings and transfers cannot be changed, even by hand", () => {
  for (const sql of ["UPDATE postings SET amount = amount + 1", "DELETE FROM postings", "DELETE FROM transfers",
    "TRUNCATE postings CASCADE"]) {
    assert.throws(() => pg.psql(db.name, sql), /immutable/);
  }
  assert.throws(() => pg.psql(db.name, "UPDATE accounts SET balance = -5 WHERE kind = 'caller'"), /available_not_negative/);
});

test("race: 200 concurrent holds on an account that covers 50, across 3 replicas: exactly 50 succeed", async () => {
  const account_id = await newAccount(50 * 1000);
  const results = await Promise.all(Array.from({ length: 200 }, () =>
    call("ledger.hold", { account_id, amount_micro: 1000, expires_in_ms: 60000 }, idem("race"))));
  const okCount = results.filter((r) => r.status === "ok").length;
  const refused = results.filter((r) => r.code === "insufficient_balance");
  assert.equal(okCount, 50);
  assert.equal(refused.length, 150);
  for (const r of refused) assert.equal(r.body.deficit_micro, 1000 - r.body.balance_micro);
  const replicasUsed = new Set(results.map((r) => r.replica));
  assert.equal(replicasUsed.size, 3, "the calls spread over the three replicas");
  const bal = await ok("ledger.balance", { account_id });
  assert.equal(bal.available_micro, 0);
  assert.equal(bal.held_micro, 50_000);
  await audit();
});

test("race: 100 concurrent record_authorization of one authorization across 3 replicas: exactly 1 succeeds", async () => {
  const auth = { network: "eip155:84532", payer: "0x3333333333333333333333333333333333333333",
    nonce: `0x${crypto.randomBytes(32).toString("hex")}`, amount_micro: 5000 };
  const results = await Promise.all(Array.from({ length: 100 }, () => call("ledger.record_authorization", auth, idem("dup"))));
  assert.equal(results.filter((r) => r.status === "ok").length, 1);
  assert.equal(results.filter((r) => r.code === "authorization_used").length, 99);
  assert.equal(new Set(results.map((r) => r.replica)).size, 3);
  assert.equal(pg.psql(db.name, `SELECT count(*) FROM authorizations WHERE nonce = '${auth.nonce}'`), "1");
  // 50 concurrent copies of one hold request (one idempotency key): one hold
  const account_id = await newAccount(1_000_000);
  const k = idem("same");
  const copies = await Promise.all(Array.from({ length: 50 }, () =>
    call("ledger.hold", { account_id, amount_micro: 10_000, expires_in_ms: 60000 }, k)));
  assert.ok(copies.every((r) => r.status === "ok"), JSON.stringify(copies.find((r) => r.status !== "ok")));
  assert.equal(new Set(copies.map((r) => r.body.hold_id)).size, 1);
  assert.equal((await ok("ledger.balance", { account_id })).held_micro, 10_000);
  await audit();
});

test("race: 60 concurrent copies of each of 5 charge writes across 3 replicas: each charged once, every copy answered alike", async () => {
  // A charge write alone in its batch takes no lock before it (0013): copies of one write
  // meet at the hold's row and at the idempotency record; the loser runs again as a replay.
  const account_id = await newAccount(10_000_000);
  const { key_id } = await ok("ledger.mint_key", { account_id, label: "dup-charges" });
  const h = await ok("ledger.hold", { account_id, key_id, amount_micro: 1_000_000, expires_in_ms: 60_000 });
  const writes = Array.from({ length: 5 }, (_, i) => ({ key: idem("dup-charge"),
    charges: [{ amount_micro: 1000 + i, ref: `dup-${i}-a` }, { amount_micro: 7, ref: `dup-${i}-b` }] }));
  const copies = await Promise.all(writes.flatMap((w) => Array.from({ length: 60 }, () =>
    call("ledger.charge", { hold_id: h.hold_id, charges: w.charges }, w.key))));
  assert.ok(copies.every((r) => r.status === "ok"), JSON.stringify(copies.find((r) => r.status !== "ok")));
  assert.equal(new Set(copies.map((r) => r.replica)).size, 3, "the copies spread over the three replicas");
  for (let i = 0; i < 5; i++) {
    const mine = copies.slice(i * 60, i * 60 + 60);
    assert.equal(mine.filter((r) => !r.body.replayed).length, 1, "one copy applied, the others replayed");
    assert.equal(new Set(mine.map((r) => r.body.first_charge_id)).size, 1);
    assert.ok(mine.every((r) => r.body.charged_micro === 1007 + i && r.body.charges === 2));
  }
  const total = 5 * 1007 + 10;
  const [open] = (await ok("ledger.holds", { account_id, state: "open" })).holds;
  assert.equal(open.charged_micro, total);
  assert.equal(pg.psql(db.name, `SELECT count(*) || ':' || sum(amount) FROM charges WHERE hold_id = ${h.hold_id}`),
    `10:${total}`);
  // a write whose key another transaction records while it runs (deterministic: that
  // transaction holds its record uncommitted for a second): it is undone whole and
  // answered again, here as the conflict it is
  const held = idem("held-key");
  const reruns = () => replicas.reduce((n, r) => n + r.lines.filter((l) => JSON.stringify(l).includes("40001")).length, 0);
  const before = reruns();
  const session = spawn(path.join(pg.bindir, "psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1", db.url, "-c",
    `BEGIN; INSERT INTO operations (idem_key, method, fingerprint, result) VALUES ('${held}', 'ledger.charge', ` +
    `'\\x00', '{"status":"ok","body":{}}'); SELECT pg_sleep(1); COMMIT;`], { stdio: "ignore" });
  const sessionDone = new Promise((resolve) => session.on("exit", resolve));
  await sleep(300);
  const late = await call("ledger.charge", { hold_id: h.hold_id, charges: [{ amount_micro: 99, ref: "late" }] }, held);
  assert.equal(await sessionDone, 0);
  assert.equal(late.code, "idempotency_conflict");
  assert.ok(reruns() > before, "the write ran again after the record it met");
  assert.equal((await ok("ledger.holds", { account_id, state: "open" })).holds[0].charged_micro, total);
  // the same key for another hold is refused; a hold's rules still hold in the table itself
  const h2 = await ok("ledger.hold", { account_id, key_id, amount_micro: 5000, expires_in_ms: 60_000 });
  assert.equal((await call("ledger.charge", { hold_id: h2.hold_id, charges: writes[0].charges }, writes[0].key)).code,
    "idempotency_conflict");
  assert.throws(() => pg.psql(db.name, `UPDATE holds SET charged = amount + 1 WHERE id = ${h2.hold_id}`),
    /holds_consistent/);
  assert.throws(() => pg.psql(db.name, `UPDATE holds SET state = 'committed' WHERE id = ${h2.hold_id}`),
    /holds_consistent/);
  await ok("ledger.void", { hold_id: h2.hold_id });
  const done = await ok("ledger.commit", { hold_id: h.hold_id, amount_micro: 0 });
  assert.equal(done.committed_micro, total);
  assert.equal((await ok("ledger.balance", { account_id })).balance_micro, 10_000_000 - total);
  await audit();
});

test("crash: kill -9 a replica in the middle of group commits; retries with the same keys apply everything once", async () => {
  const accounts = [];
  for (let i = 0; i < 16; i++) accounts.push(await newAccount());
  const ops = []; // every operation, with its key, in the order each worker runs them
  const acked = new Map();
  let killed = false, cutOff = 0;
  const runOp = async (op) => {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await rpc.call(op.method, op.body(), { idem: op.key, deadlineMs: 1500, timeoutMs: 2000 });
        if (r.status === "ok") {
          acked.set(op.key, r.body);
          return r.body;
        }
        if (r.code !== "unavailable" && r.code !== "deadline_exceeded") throw new Error(`${op.method}: ${r.code} ${r.message}`);
      } catch (e) {
        if (!/no reply/.test(e.message)) throw e;
      }
      if (attempt > 40) throw new Error(`${op.key} never answered`);
      cutOff++;
      await sleep(100);
    }
  };
  // 16 workers, one per account: credit, hold, commit, over and over
  const workers = accounts.map(async (account_id, w) => {
    for (let i = 0; i < 25; i++) {
      const credit = { method: "ledger.credit", key: `crash-c-${w}-${i}`,
        body: () => ({ account_id, amount_micro: 1000 + i, kind: "deposit", source: { chain: "crash", tx: `${w}-${i}`, index: "0" } }) };
      ops.push(credit);
      await runOp(credit);
      const hold = { method: "ledger.hold", key: `crash-h-${w}-${i}`, body: () => ({ account_id, amount_micro: 900, expires_in_ms: 120000 }) };
      ops.push(hold);
      const h = await runOp(hold);
      const commit = { method: "ledger.commit", key: `crash-m-${w}-${i}`, body: () => ({ hold_id: h.hold_id, amount_micro: 700 }) };
      ops.push(commit);
      await runOp(commit);
      if (w === 0 && i === 8 && !killed) {
        killed = true;
        replicas[1].signal("SIGKILL");
      }
    }
  });
  await Promise.all(workers);
  assert.ok(killed);
  assert.ok(cutOff > 0, "some calls were in flight on the killed replica");
  await replicas[1].exited;
  // the killed replica comes back; every operation is asked once more with its own key
  replicas[1] = await startService("ledger", ledgerEnv({ FAREBOX_REPLICA: "ledger-1b" }));
  for (const op of ops) {
    const r = await rpc.call(op.method, op.body(), { idem: op.key, deadlineMs: 5000 });
    assert.equal(r.status, "ok", `${op.key}: ${r.code} ${r.message}`);
    assert.equal(r.body.replayed ?? r.body.duplicate, true, `${op.key} was applied again`);
  }
  // exactly once each: credits, holds, commits
  for (const [w, account_id] of accounts.entries()) {
    const bal = await ok("ledger.balance", { account_id });
    let expect = 0;
    for (let i = 0; i < 25; i++) expect += 1000 + i - 700;
    assert.equal(bal.balance_micro, expect, `account of worker ${w}`);
    assert.equal(bal.held_micro, 0);
  }
  assert.equal(pg.psql(db.name, "SELECT count(*) FROM credits WHERE source_chain = 'crash'"), "400");
  assert.equal(pg.psql(db.name, "SELECT count(*) FROM operations WHERE idem_key LIKE 'crash-%'"), "1200");
  assert.equal(pg.psql(db.name, "SELECT count(*) FROM holds h JOIN operations o ON o.idem_key LIKE 'crash-h-%' AND (o.result->'body'->>'hold_id')::bigint = h.id"), "400");
  await audit();
});
