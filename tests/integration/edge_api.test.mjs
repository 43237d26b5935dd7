// edge_api.test.mjs - the edge's catalog (/v1/models, /v1/pricing) read by the
// official openai and @anthropic-ai/sdk clients; the admin API (accounts,
// keys shown once, manual credits applied once, updates, revocation, history,
// audit) and its refusals; API keys on /v1/balance (Bearer and x-api-key, over
// HTTP/1.1 and h2c), revoked at once; a custom catalog file and bad ones;
// fareboxctl over the same admin API.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import http from "node:http";
import { spawnSync } from "node:child_process";
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { bin, freePort, startService, tmpDir, stopAll } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const ADMIN = crypto.randomBytes(24).toString("hex");
const HMAC = crypto.randomBytes(32).toString("hex");
let pg, ledger, verifier, edge, bare, custom, url, lp, vp, revokedKey;
const admin = { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" };

async function startEdge(env) {
  const port = await freePort();
  const p = await startService("edge", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${port}`, FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`,
    FAREBOX_VERIFIER_ENDPOINT: `tcp://127.0.0.1:${vp}`, ...env });
  p.url = `http://127.0.0.1:${port}`;
  return p;
}

async function call(method, p, body, headers = admin) {
  const r = await fetch(`${url}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null, headers: r.headers };
}

async function audit() {
  const l = new RpcClient(ledger.endpoint);
  const a = await l.call("ledger.audit", {});
  l.close();
  assert.equal(a.body.ok, true, JSON.stringify(a.body.checks.filter((c) => !c.ok)));
}

before(async () => {
  pg = await startPostgres();
  const db = pg.createDatabase("edge_api");
  lp = await freePort();
  vp = await freePort();
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: HMAC });
  verifier = await startService("verifier", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${vp}`,
    FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_EVM_NETWORK: "off", FAREBOX_SOLANA_NETWORK: "off" });
  edge = await startEdge({ FAREBOX_ADMIN_TOKEN: ADMIN, FAREBOX_KEY_HMAC_SECRET: HMAC });
  bare = await startEdge({});
  url = edge.url;
});

after(async () => {
  const failed = await stopAll([edge, bare, custom, verifier, ledger]);
  await pg?.stop();
  assert.deepEqual(failed, [], "every process exits 0");
});

test("the catalog through the official clients: /v1/models in both dialects, /v1/pricing", async () => {
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: "fbx_unused" });
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "claude-3-5-haiku-20241022", "claude-sonnet-4-20250514"]);
  const mini = (await openai.models.list()).data[0];
  assert.equal(mini.owned_by, "openai");
  assert.deepEqual(mini.aliases, ["openai/gpt-4o-mini"]);
  assert.deepEqual(mini.pricing, { input_micro_per_mtok: 150000, output_micro_per_mtok: 600000,
    cache_read_micro_per_mtok: 75000, cache_write_micro_per_mtok: 150000, cache_write_1h_micro_per_mtok: 300000,
    input_usd_per_mtok: "0.15", output_usd_per_mtok: "0.6", cache_read_usd_per_mtok: "0.075",
    cache_write_usd_per_mtok: "0.15", cache_write_1h_usd_per_mtok: "0.3" });
  assert.equal(mini.image_tokens, 48169); // 2833 + 8 tiles x 5667: the most one image costs it

  const anthropic = new Anthropic({ baseURL: url, apiKey: "fbx_unused" });
  const page = await anthropic.models.list();
  assert.deepEqual(page.data.map((m) => m.id), ids);
  assert.equal(page.data[3].display_name, "Claude Haiku 3.5");
  assert.equal(page.data[0].type, "model");

  const pricing = await (await fetch(`${url}/v1/pricing`)).json();
  assert.equal(pricing.currency, "USDC");
  assert.equal(pricing.decimals, 6);
  const sonnet = pricing.models.find((m) => m.id === "claude-sonnet-4-20250514");
  assert.equal(sonnet.output_micro_per_mtok, 15000000);
  assert.equal(sonnet.max_output_cost_micro, 960000); // 64000 tokens at $15 per million
  assert.equal(sonnet.provider, "anthropic");
  assert.equal(sonnet.image_tokens, 1600);
  assert.match(pricing.quote, /image_tokens per image/);
});

test("admin API: accounts, keys shown once, credits applied once, balance through the key, revocation", async () => {
  const acct = await call("POST", "/admin/accounts", { label: "acme" });
  assert.equal(acct.status, 201, JSON.stringify(acct.body));
  const id = acct.body.account_id;
  assert.equal(acct.body.label, "acme");

  const minted = await call("POST", `/admin/accounts/${id}/keys`, { label: "ci", spend_cap_micro: 5000000,
    models: ["gpt-4o-mini"] });
  assert.equal(minted.status, 201, JSON.stringify(minted.body));
  const key = minted.body.key;
  assert.match(key, /^fbx_[1-9A-HJ-NP-Za-km-z]{40,}$/);
  revokedKey = key;
  const keys = await call("GET", `/admin/accounts/${id}/keys`);
  assert.equal(keys.status, 200);
  assert.equal(keys.body.keys.length, 1);
  assert.equal(keys.body.keys[0].key, undefined, "a key is shown once");
  assert.equal(keys.body.keys[0].prefix, key.slice(0, 12));
  assert.equal(JSON.stringify(keys.body).includes(key), false);
  assert.equal(keys.body.next_after_id, null);
  // HEAD is GET without the body
  const head = await fetch(`${url}/admin/accounts/${id}/keys`, { method: "HEAD", headers: admin });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");

  // a mint retried with its Idempotency-Key answers the same key, without the secret: it is shown once
  const paged = (await call("POST", "/admin/accounts", { label: "paged" })).body.account_id;
  const idem = { ...admin, "idempotency-key": `mint-${paged}` };
  const first = await call("POST", `/admin/accounts/${paged}/keys`, { label: "k1" }, idem);
  assert.equal(first.status, 201);
  assert.match(first.body.key, /^fbx_/);
  const replay = await call("POST", `/admin/accounts/${paged}/keys`, { label: "k1" }, idem);
  assert.equal(replay.status, 201, JSON.stringify(replay.body));
  assert.equal(replay.body.replayed, true);
  assert.equal(replay.body.key_id, first.body.key_id);
  assert.equal(replay.body.key, null);
  assert.match(replay.body.key_note, new RegExp(`shown only once.*revoke key ${first.body.key_id}`));
  // keys in pages, oldest first
  for (const label of ["k2", "k3"]) assert.equal((await call("POST", `/admin/accounts/${paged}/keys`, { label })).status, 201);
  const page1 = await call("GET", `/admin/accounts/${paged}/keys?limit=2`);
  assert.deepEqual(page1.body.keys.map((k) => k.label), ["k1", "k2"]);
  assert.equal(page1.body.next_after_id, page1.body.keys[1].key_id);
  const page2 = await call("GET", `/admin/accounts/${paged}/keys?limit=2&after_id=${page1.body.next_after_id}`);
  assert.deepEqual(page2.body.keys.map((k) => k.label), ["k3"]);
  assert.equal(page2.body.next_after_id, null);
  const adv = await call("GET", `/admin/accounts/${paged}/advances?limit=5&before_id=99`);
  assert.equal(adv.status, 200, JSON.stringify(adv.body));
  assert.deepEqual(adv.body, { advances: [], next_before_id: null });

  // a manual credit, once per reference, and once per Idempotency-Key
  const credit = await call("POST", `/admin/accounts/${id}/credits`, { amount_micro: 2500000, reference: "wire-42" },
    { ...admin, "idempotency-key": "credit-wire-42" });
  assert.equal(credit.status, 201, JSON.stringify(credit.body));
  assert.equal(credit.body.balance_micro, 2500000);
  const again = await call("POST", `/admin/accounts/${id}/credits`, { amount_micro: 2500000, reference: "wire-42" });
  assert.equal(again.status, 201);
  assert.equal(again.body.duplicate, true);
  const retry = await call("POST", `/admin/accounts/${id}/credits`, { amount_micro: 2500000, reference: "wire-42" },
    { ...admin, "idempotency-key": "credit-wire-42" });
  assert.equal(retry.body.replayed, true);
  // an Idempotency-Key of the longest accepted size (128 characters) works the same
  const longKey = "k".repeat(128);
  const other = (await call("POST", "/admin/accounts", { label: "long-key" })).body.account_id;
  const long1 = await call("POST", `/admin/accounts/${other}/credits`, { amount_micro: 1, reference: "wire-long" },
    { ...admin, "idempotency-key": longKey });
  assert.equal(long1.status, 201, JSON.stringify(long1.body));
  const long2 = await call("POST", `/admin/accounts/${other}/credits`, { amount_micro: 1, reference: "wire-long" },
    { ...admin, "idempotency-key": longKey });
  assert.equal(long2.body.replayed, true, JSON.stringify(long2.body));
  const conflict = await call("POST", `/admin/accounts/${id}/credits`, { amount_micro: 7, reference: "wire-42" });
  assert.equal(conflict.status, 409);
  assert.equal(conflict.body.error.code, "idempotency_conflict");
  const acctView = await call("GET", `/admin/accounts/${id}`);
  assert.equal(acctView.body.balance_micro, 2500000);
  assert.equal(acctView.body.available_micro, 2500000);

  // the key's balance: Bearer and x-api-key, HTTP/1.1 and h2c
  for (const headers of [{ authorization: `Bearer ${key}` }, { "x-api-key": key }]) {
    const b = await fetch(`${url}/v1/balance`, { headers });
    assert.equal(b.status, 200);
    const j = await b.json();
    assert.equal(j.account_id, id);
    assert.equal(j.balance_micro, 2500000);
    assert.equal(j.available_micro, 2500000);
    assert.equal(j.available_usd, "2.5");
    assert.equal(j.spend_cap_micro, 5000000);
    assert.deepEqual(j.models, ["gpt-4o-mini"]);
    assert.match(b.headers.get("x-request-id"), /^req_/);
  }
  const h2 = spawnSync("curl", ["-sS", "--http2-prior-knowledge", "-H", `authorization: Bearer ${key}`,
    "-w", "\n%{http_version} %{http_code}", `${url}/v1/balance`], { encoding: "utf8" });
  const [h2body, h2status] = h2.stdout.trim().split("\n");
  assert.equal(h2status, "2 200");
  assert.equal(JSON.parse(h2body).balance_micro, 2500000);

  // history and holds, with query parameters
  const hist = await call("GET", `/admin/accounts/${id}/history?limit=10`);
  assert.equal(hist.status, 200);
  assert.equal(hist.body.postings.length, 1);
  assert.equal(hist.body.postings[0].amount_micro, 2500000);
  const holds = await call("GET", `/admin/accounts/${id}/holds?state=open&limit=5`);
  assert.equal(holds.status, 200);
  assert.deepEqual(holds.body.holds, []);

  // update, then revoke: the key stops at once
  const upd = await call("PATCH", `/admin/keys/${minted.body.key_id}`, { spend_cap_micro: null, label: "ci-2" });
  assert.equal(upd.status, 200, JSON.stringify(upd.body));
  assert.equal(upd.body.spend_cap_micro, null);
  assert.equal(upd.body.label, "ci-2");
  const rev = await call("DELETE", `/admin/keys/${minted.body.key_id}`);
  assert.equal(rev.status, 200);
  assert.equal(rev.body.status, "revoked");
  const gone = await fetch(`${url}/v1/balance`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(gone.status, 401);
  assert.equal((await gone.json()).error.code, "key_revoked");
  await audit();
});

test("refusals: no token, wrong token, admin off, bad ids, bodies and queries, unknown keys", async () => {
  const none = await call("POST", "/admin/accounts", {}, { "content-type": "application/json" });
  assert.equal(none.status, 401);
  assert.equal(none.body.error.code, "invalid_admin_token");
  assert.equal(none.headers.get("www-authenticate"), "Bearer");
  const wrong = await call("GET", "/admin/audit", undefined, { authorization: `Bearer ${ADMIN}x` });
  assert.equal(wrong.status, 401);
  const off = await fetch(`${bare.url}/admin/audit`, { headers: admin });
  assert.equal(off.status, 403);
  assert.equal((await off.json()).error.code, "admin_disabled");

  const cases = [
    ["GET", "/admin/accounts/0", undefined, 404, "not_found"],
    ["GET", "/admin/accounts/abc", undefined, 404, "not_found"],
    ["GET", "/admin/accounts/999999", undefined, 404, "account_not_found"],
    ["GET", "/admin/nothing", undefined, 404, "not_found"],
    ["PUT", "/admin/accounts", undefined, 405, "method_not_allowed"],
    ["POST", "/admin/accounts", { colour: "red" }, 400, "invalid_request"],
    ["POST", "/admin/accounts", [1, 2], 400, "invalid_request"],
    ["POST", "/admin/accounts", { label: 7 }, 400, "invalid_request"],
    ["GET", "/admin/accounts/1/history?limit=abc", undefined, 400, "invalid_request"],
    ["GET", "/admin/accounts/1/history?colour=red", undefined, 400, "invalid_request"],
    ["GET", "/admin/accounts/1/holds?state=bogus", undefined, 400, "invalid_request"],
    ["GET", "/admin/accounts/1/keys?before_id=3", undefined, 400, "invalid_request"],
    ["GET", "/admin/accounts/1/advances?after_id=3", undefined, 400, "invalid_request"],
    ["HEAD", "/admin/accounts", undefined, 405, null],
    ["POST", "/admin/accounts/1/credits", { amount_micro: 5 }, 400, "invalid_request"],
    ["POST", "/admin/accounts/1/credits", { amount_micro: -5, reference: "neg" }, 400, "invalid_request"],
    // a key's allowlist: models of the catalog (ids or aliases), each once — a typo would lock the key out
    ["POST", "/admin/accounts/1/keys", { models: ["gpt-4o-mini", "gpt-4o-mnii"] }, 400, "invalid_request"],
    ["POST", "/admin/accounts/1/keys", { models: ["gpt-4o-mini", "gpt-4o-mini"] }, 400, "invalid_request"],
    ["PATCH", "/admin/keys/1", { models: ["no-such-model"] }, 400, "invalid_request"],
  ];
  for (const [method, p, body, status, code] of cases) {
    const r = await call(method, p, body);
    assert.equal(r.status, status, `${method} ${p}: ${JSON.stringify(r.body)}`);
    if (code) assert.equal(r.body.error.code, code, `${method} ${p}`);
  }
  const raw = await fetch(`${url}/admin/accounts`, { method: "POST", headers: admin, body: "{nope" });
  assert.equal(raw.status, 400);
  const badIdem = await call("POST", "/admin/accounts", {}, { ...admin, "idempotency-key": "has space" });
  assert.equal(badIdem.status, 400);

  // a well-formed key that was never minted: one character changed
  const unknown = revokedKey.slice(0, -1) + (revokedKey.endsWith("z") ? "y" : "z");
  for (const headers of [{}, { authorization: "Bearer nope" }, { "x-api-key": unknown }]) {
    const r = await fetch(`${url}/v1/balance`, { headers });
    assert.equal(r.status, 401);
    assert.equal((await r.json()).error.code, "invalid_key");
  }
  const noSecret = await fetch(`${bare.url}/v1/balance`, { headers: { "x-api-key": unknown } });
  assert.equal(noSecret.status, 503);
  await audit();
});

test("a catalog file replaces the built-in one; a bad one stops the edge with one line", async () => {
  const dir = tmpDir("catalog");
  const file = path.join(dir, "catalog.json");
  fs.writeFileSync(file, JSON.stringify({ models: [{ id: "house-model", provider: "openai", upstream: "gpt-4o-mini",
    aliases: ["acme/house"], input_price: 1, output_price: 3, context_tokens: 1000, max_output_tokens: 100 }] }));
  custom = await startEdge({ FAREBOX_CATALOG_FILE: file });
  const models = await (await fetch(`${custom.url}/v1/models`)).json();
  assert.deepEqual(models.data.map((m) => m.id), ["house-model"]);
  assert.deepEqual(models.data[0].pricing, { input_micro_per_mtok: 1, output_micro_per_mtok: 3,
    cache_read_micro_per_mtok: 1, cache_write_micro_per_mtok: 1, cache_write_1h_micro_per_mtok: 2,
    input_usd_per_mtok: "0.000001", output_usd_per_mtok: "0.000003", cache_read_usd_per_mtok: "0.000001",
    cache_write_usd_per_mtok: "0.000001", cache_write_1h_usd_per_mtok: "0.000002" });
  assert.equal(models.data[0].image_tokens, null); // not said: an image makes the call's input its whole context

  fs.writeFileSync(file, JSON.stringify({ models: [{ id: "x", provider: "openai", input_price: 1.5 }] }));
  for (const [value, re] of [[file, /FAREBOX_CATALOG_FILE: .*model "x": input_price must be an integer/],
    [path.join(dir, "missing.json"), /FAREBOX_CATALOG_FILE: cannot read/]]) {
    const r = spawnSync(bin("farebox-edge"), [], { encoding: "utf8",
      env: { ...process.env, FAREBOX_CATALOG_FILE: value, FAREBOX_HTTP_LISTEN: "127.0.0.1:0" } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  // catalog routes: a key variable that is not set, or a base URL libcurl cannot parse, stops the edge
  const route = (extra) => ({ routes: [{ name: "house", provider: "openai", base_url: "http://127.0.0.1:9", ...extra }],
    models: [{ id: "m", provider: "openai", route: "house", input_price: 1, output_price: 1, context_tokens: 10,
      max_output_tokens: 5 }] });
  for (const [doc, re] of [
    [route({ api_key_env: "FBT_NOT_SET_ANYWHERE" }), /route "house": its api_key_env names a variable that is not set/],
    [route({ base_url: "http://[::1" }), /route "house": base_url is not a URL libcurl can use/],
    [route({ fallback: "elsewhere" }), /route "house": fallback "elsewhere" is not a route/]]) {
    fs.writeFileSync(file, JSON.stringify(doc));
    const r = spawnSync(bin("farebox-edge"), [], { encoding: "utf8",
      env: { ...process.env, FAREBOX_CATALOG_FILE: file, FAREBOX_HTTP_LISTEN: "127.0.0.1:0" } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  // a provider URL libcurl cannot parse is refused at start, not on every call
  const badUrl = spawnSync(bin("farebox-edge"), [], { encoding: "utf8",
    env: { ...process.env, FAREBOX_OPENAI_BASE_URL: "http://api example.com", FAREBOX_HTTP_LISTEN: "127.0.0.1:0" } });
  assert.equal(badUrl.status, 2, badUrl.stderr);
  assert.match(badUrl.stderr, /FAREBOX_OPENAI_BASE_URL.*not a URL libcurl can use/);
  assert.equal(badUrl.stderr.trim().split("\n").length, 1, badUrl.stderr);
  const short = spawnSync(bin("farebox-edge"), [], { encoding: "utf8",
    env: { ...process.env, FAREBOX_ADMIN_TOKEN: "tooshort" } });
  assert.equal(short.status, 2);
  assert.match(short.stderr, /FAREBOX_ADMIN_TOKEN must be at least 16/);
  assert.doesNotMatch(short.stderr, /tooshort/);
});

test("fareboxctl drives the admin API with run.env's variables", () => {
  const ctl = (args, env = { FAREBOX_URL: url, FAREBOX_ADMIN_TOKEN: ADMIN }) => {
    const r = spawnSync(bin("fareboxctl"), args, { encoding: "utf8", env: { ...process.env, ...env } });
    return { status: r.status, json: r.stdout.trim() ? JSON.parse(r.stdout) : null, stderr: r.stderr };
  };
  const acct = ctl(["account", "create", "ops"]);
  assert.equal(acct.status, 0, acct.stderr);
  const id = String(acct.json.account_id);
  const key = ctl(["key", "mint", id, "--label", "cli", "--cap", "900", "--models", "gpt-4o-mini,gpt-4o"]);
  assert.equal(key.status, 0, key.stderr);
  assert.match(key.json.key, /^fbx_/);
  assert.deepEqual(key.json.models, ["gpt-4o", "gpt-4o-mini"]); // the ledger keeps the allowlist sorted
  assert.equal(key.json.spend_cap_micro, 900);
  assert.equal(ctl(["credit", id, "1500", "cli-ref-1"]).json.balance_micro, 1500);
  assert.equal(ctl(["account", "show", id]).json.available_micro, 1500);
  assert.equal(ctl(["account", "history", id, "5"]).json.postings.length, 1);
  assert.deepEqual(ctl(["account", "charges", id, "5"]).json.charges, []);
  assert.deepEqual(ctl(["account", "advances", id]).json.advances, []);
  assert.deepEqual(ctl(["account", "holds", id, "open"]).json.holds, []);
  const kid = String(key.json.key_id);
  assert.equal(ctl(["key", "cap", kid, "none"]).json.spend_cap_micro, null);
  assert.equal(ctl(["key", "models", kid, "all"]).json.models, null);
  assert.equal(ctl(["key", "list", id]).json.keys.length, 1);
  // pages: --limit, --before / --after, --state, --hold; the first argument may stand alone as before
  assert.equal(ctl(["key", "mint", id, "--label", "second"]).status, 0);
  const firstKey = ctl(["key", "list", id, "--limit", "1"]).json;
  assert.deepEqual(firstKey.keys.map((k) => k.label), ["cli"]);
  assert.deepEqual(ctl(["key", "list", id, "--after", String(firstKey.next_after_id)]).json.keys.map((k) => k.label),
    ["second"]);
  assert.equal(ctl(["credit", id, "2500", "cli-ref-2"]).status, 0);
  const newest = ctl(["account", "history", id, "--limit", "1"]).json;
  assert.equal(newest.postings[0].amount_micro, 2500);
  const older = ctl(["account", "history", id, "--before", String(newest.next_before_id), "--limit", "5"]).json;
  assert.deepEqual(older.postings.map((p) => p.amount_micro), [1500]);
  assert.deepEqual(ctl(["account", "holds", id, "open", "--limit", "2"]).json.holds, []);
  assert.deepEqual(ctl(["account", "holds", id, "--state", "committed", "--before", "9"]).json.holds, []);
  assert.deepEqual(ctl(["account", "charges", id, "--hold", "1", "--limit", "3"]).json.charges, []);
  assert.deepEqual(ctl(["account", "advances", id, "--before", "5", "--limit", "2"]).json.advances, []);
  for (const bad of [["key", "list", id, "--before", "3"], ["key", "list", id, "7"], ["account", "history", id, "--limit"],
    ["account", "history", id, "5", "6"], ["account", "holds", id, "--state", "OPEN"], ["account", "advances", id, "3"],
    ["account", "charges", id, "--limit", "x"]])
    assert.equal(ctl(bad).status, 2, bad.join(" "));
  assert.equal(ctl(["key", "revoke", kid]).json.status, "revoked");
  assert.equal(ctl(["audit"]).json.ok, true);

  const missing = ctl(["account", "show", "999999"]);
  assert.equal(missing.status, 1);
  assert.equal(missing.json.error.code, "account_not_found");
  assert.equal(ctl(["key", "cap", kid, "lots"]).status, 2);
  // text that is not UTF-8, and a model list naming no model: refused here, nothing sent
  const latin = spawnSync("sh", ["-c", `"$0" account create "$(printf 'bad\\377')"`, bin("fareboxctl")],
    { encoding: "utf8", env: { ...process.env, FAREBOX_URL: url, FAREBOX_ADMIN_TOKEN: ADMIN } });
  assert.equal(latin.status, 2, latin.stdout + latin.stderr);
  assert.match(latin.stderr, /not UTF-8/);
  for (const list of ["", ","]) assert.equal(ctl(["key", "models", kid, list]).status, 2, JSON.stringify(list));
  assert.equal(ctl(["key", "mint", id, "--models", ""]).status, 2);
  assert.equal(ctl(["key", "list", id]).json.keys.length, 2, "no key minted");
  assert.equal(ctl(["nonsense"]).status, 2);
  const noEnv = ctl(["audit"], { FAREBOX_URL: "", FAREBOX_ADMIN_TOKEN: "" });
  assert.equal(noEnv.status, 2);
  assert.match(noEnv.stderr, /FAREBOX_URL and FAREBOX_ADMIN_TOKEN are required/);
  const file = path.join(tmpDir("ctl"), "token");
  fs.writeFileSync(file, `${ADMIN}\n`);
  assert.equal(ctl(["audit"], { FAREBOX_URL: url, FAREBOX_ADMIN_TOKEN: "", FAREBOX_ADMIN_TOKEN_FILE: file }).status, 0);
  // read as the edge reads it: trailing spaces and newlines cut, and not both the variable and the file
  fs.writeFileSync(file, `${ADMIN}  \n\n`);
  assert.equal(ctl(["audit"], { FAREBOX_URL: url, FAREBOX_ADMIN_TOKEN: "", FAREBOX_ADMIN_TOKEN_FILE: file }).status, 0);
  const both = ctl(["audit"], { FAREBOX_URL: url, FAREBOX_ADMIN_TOKEN: ADMIN, FAREBOX_ADMIN_TOKEN_FILE: file });
  assert.equal(both.status, 2);
  assert.match(both.stderr, /not both/);
});

test("SIGTERM with FAREBOX_STOP_DELAY_MS: health checks fail at once, everything else is served until the delay ends", async () => {
  const p = await startEdge({ FAREBOX_ADMIN_TOKEN: ADMIN, FAREBOX_KEY_HMAC_SECRET: HMAC, FAREBOX_STOP_DELAY_MS: "1500" });
  // each request on a connection of its own: the listener must still take new ones
  const get = (path, headers = {}) => new Promise((resolve, reject) => {
    const u = new URL(path, p.url);
    http.get(u, { agent: false, headers }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
    }).on("error", reject);
  });
  const { account_id: id } = await (await fetch(`${p.url}/admin/accounts`, { method: "POST", headers: admin,
    body: JSON.stringify({ label: "stop-delay" }) })).json();
  const { key } = await (await fetch(`${p.url}/admin/accounts/${id}/keys`, { method: "POST", headers: admin,
    body: "{}" })).json();
  assert.equal((await get("/healthz")).status, 200);
  assert.equal((await get("/readyz")).status, 200);

  const t0 = Date.now();
  p.signal("SIGTERM");
  await p.waitForMsg("stopping: health checks fail first", { timeoutMs: 5000 });
  const health = await get("/healthz");
  assert.equal(health.status, 503);
  assert.equal(health.body.status, "stopping");
  assert.deepEqual(await get("/readyz"), { status: 503, body: { ready: false, stopping: true } });
  // still serving, on new connections too: the catalog, a key's balance (through the ledger), admin
  assert.equal((await get("/v1/models")).status, 200);
  const balance = await get("/v1/balance", { authorization: `Bearer ${key}` });
  assert.equal(balance.status, 200, JSON.stringify(balance.body));
  assert.equal(balance.body.balance_micro, 0);
  assert.equal((await get(`/admin/accounts/${id}`, admin)).status, 200);
  assert.ok(Date.now() - t0 < 1500, "all of it within the delay");

  // then the stop proper: no new connection, and a clean exit
  const { code } = await p.exited;
  assert.equal(code, 0);
  assert.ok(Date.now() - t0 >= 1500, `not before the delay (${Date.now() - t0} ms)`);
  await assert.rejects(get("/healthz"), /ECONNREFUSED/);
  await audit();
});

test("FAREBOX_HTTP_IDLE_TIMEOUT_MS: an idle keep-alive connection lives that long, and no longer", async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const get = (agent, target) => new Promise((resolve, reject) => {
    const req = http.get(`${target}/healthz`, { agent }, (res) => {
      const socket = res.socket; // given back to the agent (and detached) at the end
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode, socket, reused: req.reusedSocket }));
    });
    req.on("error", reject);
  });
  for (const [idle, open] of [[1500, false], [6000, true]]) {
    const p = await startEdge({ FAREBOX_HTTP_IDLE_TIMEOUT_MS: String(idle) });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(agent, p.url);
      assert.equal(first.status, 200);
      let closedAfter = null;
      const t0 = Date.now();
      first.socket.on("close", () => (closedAfter = Date.now() - t0));
      await sleep(3000);
      if (open) {
        assert.equal(closedAfter, null, `idle ${idle} ms: still open after 3 s`);
        const second = await get(agent, p.url);
        assert.equal(second.status, 200);
        assert.equal(second.reused, true, "the second request went on the same connection");
      } else {
        assert.ok(closedAfter !== null && closedAfter >= 1300, `idle ${idle} ms: closed by the edge at ${closedAfter} ms`);
      }
    } finally {
      agent.destroy();
      p.signal("SIGTERM");
    }
    assert.equal((await p.exited).code, 0);
  }
});
