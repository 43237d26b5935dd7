// run_script.test.mjs - ./scripts/run starts the whole system, answers
// /readyz, writes run.env, stops cleanly on SIGTERM, and keeps its Postgres
// data across restarts. It runs the binaries under test (FAREBOX_BIN) on free
// ports with a temporary state directory.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { BIN, SOURCE, Proc, freePort, freePortBlock, tmpDir, waitUntil } from "../lib/harness.mjs";

async function startRun(state, ports) {
  const p = new Proc(path.join(SOURCE, "scripts/run"), [], {
    name: "scripts/run",
    env: {
      FAREBOX_STATE_DIR: state,
      FAREBOX_RUN_BIN: BIN,
      FAREBOX_SKIP_INSTALL: "1",
      FAREBOX_HTTP_PORT: String(ports.http),
      FAREBOX_HTTPS_PORT: String(ports.https),
      FAREBOX_PG_PORT: String(ports.pg),
      FAREBOX_ANVIL_PORT: String(ports.anvil),
      FAREBOX_MOCK_PORT: String(ports.mock),
      FAREBOX_RPC_PORT_BASE: String(ports.rpc),
    },
  });
  await p.waitFor((e) => e.line.includes("farebox is running."), { timeoutMs: 240000, what: "the run banner" });
  return p;
}

function readEnv(file) {
  return Object.fromEntries(fs.readFileSync(file, "utf8").split("\n").filter((l) => l && !l.startsWith("#"))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

function psql(url, sql) {
  const bindir = fs.readdirSync("/usr/lib/postgresql").map((v) => `/usr/lib/postgresql/${v}/bin`)
    .find((d) => fs.existsSync(`${d}/psql`));
  const r = spawnSync(`${bindir}/psql`, ["-X", "-q", "-t", "-A", url, "-c", sql], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test("./scripts/run starts everything, writes run.env, stops on SIGTERM and keeps its data", async () => {
  const state = tmpDir("run", { public: true });
  const rpc = await freePortBlock(40); // the four services' RPC port ranges
  const ports = { http: await freePort(), https: await freePort(), pg: await freePort(), anvil: await freePort(),
    mock: await freePort(), rpc };

  const first = await startRun(state, ports);
  let second;
  try {
  const env = readEnv(path.join(state, "run.env"));
  for (const k of ["FAREBOX_URL", "FAREBOX_ADMIN_TOKEN", "FAREBOX_EVM_RPC_URL", "FAREBOX_EVM_CHAIN_ID", "FAREBOX_EVM_TOKEN",
    "FAREBOX_SOLANA_RPC_URL", "FAREBOX_SOLANA_MINT", "FAREBOX_DATABASE_URL"]) {
    assert.ok(env[k], `run.env has ${k}`);
  }
  assert.equal(env.FAREBOX_URL, `http://127.0.0.1:${ports.http}`);
  assert.equal(env.FAREBOX_EVM_CHAIN_ID, "84532");
  assert.match(env.FAREBOX_EVM_TOKEN, /^0x[0-9a-fA-F]{40}$/);
  assert.match(env.FAREBOX_ADMIN_TOKEN, /^[0-9a-f]{64}$/);
  assert.equal(fs.statSync(path.join(state, "run.env")).mode & 0o077, 0, "run.env is private");

  const ready = await fetch(`${env.FAREBOX_URL}/readyz`);
  assert.equal(ready.status, 200);
  assert.equal((await ready.json()).ready, true);

  // the facilitator serves both dev chains, and wants run.env's token for settle
  const supported = await (await fetch(`${env.FAREBOX_FACILITATOR_URL}/supported`)).json();
  assert.deepEqual(supported.kinds.map((k) => k.network).filter((n) => !/^[a-z-]+$/.test(n)),
    ["eip155:84532", "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"]);
  const settle = (token) => fetch(`${env.FAREBOX_FACILITATOR_URL}/settle`, { method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: "{}" });
  assert.equal((await settle("wrong")).status, 401);
  assert.equal((await settle(env.FAREBOX_FACILITATOR_TOKEN)).status, 400);

  // run.env's admin token opens the admin API, and a minted key reads its balance
  const adminHeaders = { authorization: `Bearer ${env.FAREBOX_ADMIN_TOKEN}`, "content-type": "application/json" };
  const acct = await (await fetch(`${env.FAREBOX_URL}/admin/accounts`, { method: "POST", headers: adminHeaders,
    body: JSON.stringify({ label: "run" }) })).json();
  const minted = await (await fetch(`${env.FAREBOX_URL}/admin/accounts/${acct.account_id}/keys`, { method: "POST",
    headers: adminHeaders, body: "{}" })).json();
  const bal = await fetch(`${env.FAREBOX_URL}/v1/balance`, { headers: { authorization: `Bearer ${minted.key}` } });
  assert.equal(bal.status, 200);
  assert.equal((await bal.json()).available_micro, 0);

  // its deposit address on anvil: USDC sent there is credited after 2 confirmations
  const dep = await (await fetch(`${env.FAREBOX_URL}/admin/accounts/${acct.account_id}/deposit-addresses`,
    { method: "POST", headers: adminHeaders, body: "{}" })).json();
  assert.match(dep.evm.address, /^0x[0-9a-fA-F]{40}$/);
  const evmCall = async (method, params) => (await (await fetch(env.FAREBOX_EVM_RPC_URL, { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) })).json()).result;
  const [, sender] = await evmCall("eth_accounts", []);
  const data = "0xa9059cbb" + dep.evm.address.slice(2).toLowerCase().padStart(64, "0") + (2_000_000).toString(16).padStart(64, "0");
  await evmCall("eth_sendTransaction", [{ from: sender, to: env.FAREBOX_EVM_TOKEN, data }]);
  await evmCall("anvil_mine", ["0x1"]);
  await waitUntil(async () => (await (await fetch(`${env.FAREBOX_URL}/v1/balance`,
    { headers: { authorization: `Bearer ${minted.key}` } })).json()).available_micro === 2_000_000,
  { what: "the deposit's credit", timeoutMs: 20000 });

  // the demo key was funded through a topup and pays a call, as the banner prints it
  assert.match(env.FAREBOX_DEMO_KEY, /^fbx_/);
  assert.match(env.FAREBOX_DEMO_PAYER_KEY, /^0x[0-9a-f]{64}$/);
  const demoAuth = { authorization: `Bearer ${env.FAREBOX_DEMO_KEY}`, "content-type": "application/json" };
  const demoBal = await (await fetch(`${env.FAREBOX_URL}/v1/balance`, { headers: demoAuth })).json();
  assert.equal(demoBal.available_micro, 5000000);
  const banner = first.lines.map((e) => e.line).join("\n");
  assert.ok(banner.includes(env.FAREBOX_DEMO_KEY), "the banner prints the demo key");
  const demoCall = spawnSync("curl", ["-sS", `${env.FAREBOX_URL}/v1/chat/completions`, "-H", `Authorization: Bearer ${env.FAREBOX_DEMO_KEY}`,
    "-H", "content-type: application/json", "-d", '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'],
    { encoding: "utf8" });
  const answer = JSON.parse(demoCall.stdout);
  assert.match(answer.choices[0].message.content, /mock model/);
  // charged exactly the price of the reported usage (gpt-4o-mini: $0.15 / $0.60 per million tokens)
  const price = Math.ceil(answer.usage.prompt_tokens * 150000 / 1e6) + Math.ceil(answer.usage.completion_tokens * 600000 / 1e6);
  const afterCall = await (await fetch(`${env.FAREBOX_URL}/v1/balance`, { headers: demoAuth })).json();
  assert.equal(afterCall.balance_micro, 5000000 - price); // available also excludes the key's open prepaid slice
  assert.equal(afterCall.key_spent_micro, price);
  const unpaid = await fetch(`${env.FAREBOX_URL}/v1/chat/completions`, { method: "POST",
    headers: { "content-type": "application/json" }, body: '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}' });
  assert.equal(unpaid.status, 402);
  assert.ok(unpaid.headers.get("payment-required"));

  // the dev chains answer, with the test token deployed
  const code = await fetch(env.FAREBOX_EVM_RPC_URL, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_getCode", params: [env.FAREBOX_EVM_TOKEN, "latest"] }) });
  assert.ok((await code.json()).result.length > 100, "the token contract is deployed");

  // migrations were applied; leave a mark to find after the restart
  const migrations = fs.readdirSync(path.join(SOURCE, "services/ledger/migrations")).filter((f) => f.endsWith(".sql"));
  assert.equal(psql(env.FAREBOX_DATABASE_URL, "SELECT count(*) FROM schema_migrations"), String(migrations.length));
  psql(env.FAREBOX_DATABASE_URL, "CREATE TABLE run_test_mark (v text); INSERT INTO run_test_mark VALUES ('kept')");

  first.signal("SIGTERM");
  const { code: exit } = await first.exited;
  assert.equal(exit, 0, first.tail());
  assert.ok(first.lines.some((e) => e.line.includes("farebox: stopped")));
  // nothing is left listening
  await waitUntil(async () => {
    try {
      await fetch(`${env.FAREBOX_URL}/healthz`);
      return false;
    } catch {
      return true;
    }
  }, { what: "the edge to be gone", timeoutMs: 5000 });
  const pgUp = spawnSync("pg_isready", ["-h", "127.0.0.1", "-p", String(ports.pg)]);
  assert.notEqual(pgUp.status, 0, "postgres stopped");

  // the services exited cleanly (and, in the sanitizer build, without reports)
  for (const svc of ["ledger", "verifier", "chain-watcher", "edge"]) {
    const log = fs.readFileSync(path.join(state, "logs", `${svc}.log`), "utf8");
    assert.match(log, /"msg":"stopped","code":0/, `${svc} stopped cleanly`);
    assert.doesNotMatch(log, /Sanitizer/, `${svc} log has a sanitizer report`);
  }

  // second run: same state directory, the data is still there
  second = await startRun(state, ports);
    assert.equal(psql(env.FAREBOX_DATABASE_URL, "SELECT v FROM run_test_mark"), "kept");
    assert.equal((await fetch(`${env.FAREBOX_URL}/readyz`)).status, 200);
    const again = readEnv(path.join(state, "run.env"));
    assert.equal(again.FAREBOX_ADMIN_TOKEN, env.FAREBOX_ADMIN_TOKEN, "dev secrets are kept");
    assert.equal(again.FAREBOX_EVM_TOKEN, env.FAREBOX_EVM_TOKEN);
    assert.equal(again.FAREBOX_DEMO_KEY, env.FAREBOX_DEMO_KEY, "the demo key is kept");
    second.signal("SIGTERM");
    const r = await second.exited;
    assert.equal(r.code, 0);
    fs.rmSync(state, { recursive: true, force: true });
  } finally {
    // on any failure above, nothing is left running
    for (const p of [first, second]) if (p && p.exitCode === undefined && !p.exitSignal) {
      p.signal("SIGTERM");
      await p.exited;
    }
  }
});
