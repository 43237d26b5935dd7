// watch.mjs - the chain-watcher benchmark (see bench/watch/run). Baselines, side
// by side in each round: the same eth_getLogs calls by a bare client, and the
// same credits written by a bare client straight to the ledger.
//   node bench/watch/watch.mjs OUT_FILE
import fs from "node:fs";
import os from "node:os";
import crypto from "node:crypto";
import { createRequire } from "node:module";
import { freePort, sleep, startService } from "../../tests/lib/harness.mjs";
import { startPostgres } from "../../tests/lib/pg.mjs";
import { startChains, ethRpc } from "../../tests/lib/chains.mjs";
import { RpcClient } from "../../tests/lib/rpc.mjs";

// viem from the tests' packages (bench/ has no node_modules of its own)
const need = createRequire(new URL("../../tests/package.json", import.meta.url));
const { encodeFunctionData, parseAbi } = need("viem");
const OUT = process.argv[2];
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const ADDRESSES = Number(process.env.ADDRESSES ?? 1000);
const TRANSFERS = Number(process.env.TRANSFERS ?? 10000);
const EMPTY = Number(process.env.EMPTY ?? 5000);
const CONFIRMATIONS = Number(process.env.CONFIRMATIONS ?? 3);
const POLL_MS = Number(process.env.POLL_MS ?? 200);
const SAMPLES = Number(process.env.SAMPLES ?? 20);
const RANGE = 2000, PER_CALL = 1000;
const SEED = crypto.randomBytes(32).toString("hex");
const erc20 = parseAbi(["function transfer(address,uint256) returns (bool)"]);
const say = (m) => console.error(`farebox: ${m}`);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };

const pg = await startPostgres();
const db = pg.createDatabase("bench_watch");
const chains = await startChains();
const evm = chains.evm;
const lp = await freePort();
const ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
  FAREBOX_KEY_HMAC_SECRET: crypto.randomBytes(32).toString("hex") });
const led = new RpcClient(`tcp://127.0.0.1:${lp}`);
const wp = await freePort();
const env = (network, extra = {}) => ({ FAREBOX_RPC_BIND: `tcp://127.0.0.1:${wp}-${wp + 9}`,
  FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_DEPOSIT_SEED: SEED, FAREBOX_EVM_NETWORK: network,
  FAREBOX_EVM_RPC_URLS: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token, FAREBOX_EVM_CONFIRMATIONS: String(CONFIRMATIONS),
  FAREBOX_EVM_LOG_RANGE: String(RANGE), FAREBOX_EVM_ADDRESSES_PER_CALL: String(PER_CALL),
  FAREBOX_WATCH_POLL_MS: String(POLL_MS), FAREBOX_SOLANA_NETWORK: "off", ...extra });
async function ok(client, method, body, opts) {
  const r = await client.call(method, body, { deadlineMs: 30000, ...opts });
  if (r.status !== "ok") throw new Error(`${method}: ${r.code}: ${r.message}`);
  return r.body;
}

// the addresses, made by a watcher that is then stopped
say(`making ${ADDRESSES} deposit addresses`);
let maker = await startService("chain-watcher", env("off"));
let wat = new RpcClient(maker.endpoint);
const accounts = [];
for (let i = 0; i < ADDRESSES; i += 50) {
  accounts.push(...await Promise.all(Array.from({ length: Math.min(50, ADDRESSES - i) }, async () => {
    const a = await ok(led, "ledger.open_account", {}, { idem: crypto.randomUUID() });
    return { id: a.account_id, address: (await ok(wat, "chain_watcher.deposit_address", { account_id: a.account_id })).evm.address };
  })));
}
wat.close();
await maker.stop();

// the transfers, packed into blocks, then empty blocks
say(`sending ${TRANSFERS} transfers`);
const start = Number(await ethRpc(evm.rpcUrl, "eth_blockNumber")) + 1;
const nonces = new Map();
for (let f = 0; f < 9; f++) nonces.set(f, Number(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [evm.accounts[f].address, "latest"])));
await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
for (let i = 0; i < TRANSFERS; i += 500) {
  const batch = [];
  for (let k = i; k < Math.min(TRANSFERS, i + 500); k++) {
    const f = k % 9, n = nonces.get(f);
    nonces.set(f, n + 1);
    batch.push({ jsonrpc: "2.0", id: k, method: "eth_sendTransaction", params: [{ from: evm.accounts[f].address, to: evm.token,
      gas: "0x186a0", nonce: `0x${n.toString(16)}`, data: encodeFunctionData({ abi: erc20, functionName: "transfer",
        args: [accounts[k % accounts.length].address, BigInt(1 + (k % 7))] }) }] });
  }
  const r = await (await fetch(evm.rpcUrl, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(batch) })).json();
  if (r.some((x) => x.error)) throw new Error(JSON.stringify(r.find((x) => x.error)));
}
for (let n = 0; n < 200; n++) {
  const pool = await ethRpc(evm.rpcUrl, "txpool_status");
  if (Number(pool.pending) === 0 && Number(pool.queued) === 0) break;
  await ethRpc(evm.rpcUrl, "anvil_mine", ["0x1"]);
}
await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
await ethRpc(evm.rpcUrl, "anvil_mine", [`0x${(EMPTY + CONFIRMATIONS).toString(16)}`]);
const head = Number(await ethRpc(evm.rpcUrl, "eth_blockNumber"));
const last = head - CONFIRMATIONS + 1;
const blocks = last - start + 1;
say(`${blocks} blocks to scan (${start}..${last})`);

/** A bare client: the same eth_getLogs calls (ranges of RANGE blocks, PER_CALL addresses each), parsed, nothing else. */
let seen = [];
async function rawScan() {
  const topics = accounts.map((a) => `0x${a.address.slice(2).toLowerCase().padStart(64, "0")}`);
  let logs = 0;
  seen = [];
  const t0 = performance.now();
  for (let from = start; from <= last; from += RANGE) {
    const to = Math.min(last, from + RANGE - 1);
    for (let i = 0; i < topics.length; i += PER_CALL) {
      const r = await ethRpc(evm.rpcUrl, "eth_getLogs", [{ fromBlock: `0x${from.toString(16)}`, toBlock: `0x${to.toString(16)}`,
        address: evm.token, topics: ["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef", null, topics.slice(i, i + PER_CALL)] }]);
      logs += r.length;
      seen.push(...r);
    }
  }
  const s = (performance.now() - t0) / 1000;
  if (logs !== TRANSFERS) throw new Error(`the bare client saw ${logs} transfers`);
  return { seconds: s, blocks_per_s: blocks / s, transfers_per_s: TRANSFERS / s };
}

/** The same credits written by a bare client straight to the ledger, 64 at a time (the ledger's share). */
async function rawCredits(round) {
  const byAddress = new Map(accounts.map((a) => [a.address.toLowerCase(), a.id]));
  const chain = `bench-raw-${round}-${Date.now() % 100000}`;
  const t0 = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < seen.length) {
      const l = seen[next++];
      const to = `0x${l.topics[2].slice(26)}`;
      await ok(led, "ledger.credit", { account_id: byAddress.get(to), amount_micro: Number(BigInt(l.data)), kind: "deposit",
        source: { chain, tx: l.transactionHash, index: Number(l.logIndex), block_hash: l.blockHash } },
      { idem: `${chain}:${l.transactionHash}:${l.logIndex}` });
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  const s = (performance.now() - t0) / 1000;
  return { seconds: s, transfers_per_s: TRANSFERS / s };
}

/** The watcher, started after the transfers on a network never scanned: until its cursor reaches the last block. */
async function watcherScan(round) {
  const network = `eip155:99${round}${Date.now() % 100000}`;
  const t0 = performance.now();
  const w = await startService("chain-watcher", env(network, { FAREBOX_EVM_START_BLOCK: String(start) }));
  const c = new RpcClient(w.endpoint);
  let st;
  for (;;) {
    st = (await ok(c, "chain_watcher.status", {})).evm;
    if (st.cursor >= last) break;
    await sleep(20);
  }
  const s = (performance.now() - t0) / 1000;
  c.close();
  await w.stop();
  if (st.credited !== TRANSFERS) throw new Error(`the watcher credited ${st.credited} of ${TRANSFERS}`);
  return { seconds: s, blocks_per_s: blocks / s, transfers_per_s: TRANSFERS / s, log_calls: st.log_calls };
}

const rows = [];
for (let r = 1; r <= ROUNDS; r++) {
  say(`backfill round ${r} of ${ROUNDS}`);
  const order = r % 2 ? ["watcher", "raw"] : ["raw", "watcher"];
  for (const who of order) {
    if (who === "watcher") {
      rows.push({ case: "backfill_watcher", round: r, r: await watcherScan(r) });
    } else {
      rows.push({ case: "backfill_raw_getlogs", round: r, r: await rawScan() });
      rows.push({ case: "backfill_raw_credits", round: r, r: await rawCredits(r) });
    }
  }
}

// deposit-to-credit latency at the confirmation depth
say(`latency: ${SAMPLES} deposits at ${CONFIRMATIONS} confirmations, polling every ${POLL_MS} ms`);
const w = await startService("chain-watcher", env(`eip155:98${Date.now() % 100000}`, { FAREBOX_EVM_START_BLOCK: String(head) }));
const c = new RpcClient(w.endpoint);
const lat = [];
for (let i = 0; i < SAMPLES; i++) {
  const a = accounts[i];
  const before = (await ok(led, "ledger.balance", { account_id: a.id })).balance_micro;
  await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: evm.accounts[1].address, to: evm.token,
    data: encodeFunctionData({ abi: erc20, functionName: "transfer", args: [a.address, 1000n] }) }]);
  await sleep(Math.random() * POLL_MS);
  if (CONFIRMATIONS > 1) await ethRpc(evm.rpcUrl, "anvil_mine", [`0x${(CONFIRMATIONS - 1).toString(16)}`]);
  const t0 = performance.now();
  while ((await ok(led, "ledger.balance", { account_id: a.id })).balance_micro !== before + 1000) await sleep(2);
  lat.push((performance.now() - t0) * 1000);
}
c.close();
await w.stop();

led.close();
await ledger.stop();
await chains.stop();
await pg.stop();

const cases = {};
for (const name of ["backfill_watcher", "backfill_raw_getlogs", "backfill_raw_credits"]) {
  const rs = rows.filter((x) => x.case === name).map((x) => x.r);
  cases[name] = { rounds: rs.length, seconds: median(rs.map((x) => x.seconds)),
    ...(rs[0].blocks_per_s != null && { blocks_per_s: median(rs.map((x) => x.blocks_per_s)) }),
    transfers_per_s: median(rs.map((x) => x.transfers_per_s)), ...(rs[0].log_calls != null && { log_calls: rs[0].log_calls }) };
}
cases.deposit_to_credit = { samples: lat.length, confirmations: CONFIRMATIONS, poll_ms: POLL_MS,
  p50_us: median(lat), p99_us: pct(lat, 0.99), max_us: Math.max(...lat) };
const report = { benchmark: "watch", when: new Date().toISOString(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, load: os.loadavg() },
  setup: { addresses: ADDRESSES, transfers: TRANSFERS, blocks, range: RANGE, addresses_per_call: PER_CALL },
  cases, ratios: { backfill_time_vs_raw_getlogs: cases.backfill_watcher.seconds / cases.backfill_raw_getlogs.seconds,
    backfill_time_vs_raw_getlogs_plus_credits: cases.backfill_watcher.seconds /
      (cases.backfill_raw_getlogs.seconds + cases.backfill_raw_credits.seconds),
    latency_p50_vs_poll: cases.deposit_to_credit.p50_us / 1000 / POLL_MS }, rounds: rows };
fs.writeFileSync(OUT, JSON.stringify(report, null, 2) + "\n");
const f = (x) => Math.round(x).toLocaleString("en-US");
console.log(`watch: ${ADDRESSES} addresses, ${TRANSFERS} transfers over ${blocks} blocks`);
console.log(`  backfill  watcher ${f(cases.backfill_watcher.blocks_per_s)} blocks/s, ${f(cases.backfill_watcher.transfers_per_s)} transfers/s credited ` +
  `(${cases.backfill_watcher.seconds.toFixed(2)} s); bare eth_getLogs ${cases.backfill_raw_getlogs.seconds.toFixed(2)} s: ` +
  `${report.ratios.backfill_time_vs_raw_getlogs.toFixed(2)}x its time; bare eth_getLogs + the same credits straight to the ledger ` +
  `${(cases.backfill_raw_getlogs.seconds + cases.backfill_raw_credits.seconds).toFixed(2)} s: ` +
  `${report.ratios.backfill_time_vs_raw_getlogs_plus_credits.toFixed(2)}x`);
console.log(`  latency   deposit to credit at ${CONFIRMATIONS} confirmations, poll ${POLL_MS} ms: p50 ${(cases.deposit_to_credit.p50_us / 1000).toFixed(1)} ms, ` +
  `p99 ${(cases.deposit_to_credit.p99_us / 1000).toFixed(1)} ms`);
