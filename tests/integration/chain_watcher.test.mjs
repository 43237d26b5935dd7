// chain_watcher.test.mjs - custodial deposit addresses and EVM deposits on
// anvil: addresses derived from the seed (checked against viem's HDKey and a
// SLIP-0010 computed here), made once, served by the admin API and
// fareboxctl; a USDC transfer credited after N confirmations and not before;
// anvil_reorg that drops a pending transfer (never credited) or replaces it
// with another (only the survivor credited); transfers made while the watcher
// is down credited after its restart; two watcher replicas crediting each
// transfer once; 1,000 watched addresses and 10,000 transfers all credited
// in batched eth_getLogs calls; a flaky provider (dropped connections, delays,
// 429 with Retry-After, block-range limits) and still every transfer credited
// once. Every test ends with the ledger's audit.
import { test, before, after } from "node:test";
import nodeHttp from "node:http";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { createWalletClient, http, encodeFunctionData, parseAbi, getAddress } from "viem";
import { HDKey, privateKeyToAccount } from "viem/accounts";
import { createKeyPairFromPrivateKeyBytes, getAddressFromPublicKey } from "@solana/kit";
import { bin, freePort, sleep, startService, waitUntil, stopAll } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { startChains, ethRpc, rpcProxy } from "../lib/chains.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const SECRET = crypto.randomBytes(32).toString("hex");
const SEED = crypto.randomBytes(32).toString("hex");
const ADMIN = crypto.randomBytes(24).toString("hex");
const NETWORK = "eip155:84532";
const CONFIRMATIONS = 3;
const erc20 = parseAbi(["function transfer(address,uint256) returns (bool)"]);
let pg, chains, evm, ledger, lp, wp, mp, watchers = [], edge, edgeUrl, led, wat;

function watcherEnv(replica) {
  return { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${wp}-${wp + 9}`, FAREBOX_REPLICA: replica,
    FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_DEPOSIT_SEED: SEED, FAREBOX_EVM_NETWORK: NETWORK,
    FAREBOX_EVM_RPC_URLS: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token, FAREBOX_EVM_CONFIRMATIONS: String(CONFIRMATIONS),
    FAREBOX_EVM_START_BLOCK: "0", FAREBOX_WATCH_POLL_MS: "100", FAREBOX_EVM_LOG_RANGE: "50",
    FAREBOX_SOLANA_NETWORK: "off", ...(replica === "watcher-0" && { FAREBOX_METRICS_LISTEN: `127.0.0.1:${mp}` }) };
}

before(async () => {
  pg = await startPostgres();
  const db = pg.createDatabase("watcher");
  chains = await startChains();
  evm = chains.evm;
  lp = await freePort();
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: SECRET });
  wp = await freePort();
  mp = await freePort();
  watchers.push(await startService("chain-watcher", watcherEnv("watcher-0")));
  const hp = await freePort();
  edge = await startService("edge", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${hp}`, FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`,
    FAREBOX_VERIFIER_ENDPOINT: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_CHAIN_WATCHER_ENDPOINT: `tcp://127.0.0.1:${wp}-${wp + 9}`, FAREBOX_ADMIN_TOKEN: ADMIN,
    FAREBOX_KEY_HMAC_SECRET: SECRET, FAREBOX_EVM_NETWORK: "off", FAREBOX_SOLANA_NETWORK: "off" });
  edgeUrl = `http://127.0.0.1:${hp}`;
  led = new RpcClient(`tcp://127.0.0.1:${lp}`);
  wat = new RpcClient(watchers[0].endpoint);
});

after(async () => {
  led?.close();
  wat?.close();
  const failed = await stopAll([edge, ...watchers, ledger]);
  await chains?.stop();
  await pg?.stop();
  assert.deepEqual(failed, [], "every process exits 0");
});

async function ok(client, method, body, opts) {
  const r = await client.call(method, body, { deadlineMs: 15000, ...opts });
  assert.equal(r.status, "ok", `${method}: ${r.code}: ${r.message}`);
  return r.body;
}

async function audit() {
  const r = await ok(led, "ledger.audit", {});
  assert.equal(r.ok, true, JSON.stringify(r.checks.filter((c) => !c.ok)));
}

async function account() {
  const a = await ok(led, "ledger.open_account", { label: "depositor" }, { idem: crypto.randomUUID() });
  const d = await ok(wat, "chain_watcher.deposit_address", { account_id: a.account_id });
  return { id: a.account_id, address: d.evm.address, solana: d.solana };
}

const balance = async (id) => (await ok(led, "ledger.balance", { account_id: id })).balance_micro;
const mine = (n) => ethRpc(evm.rpcUrl, "anvil_mine", [`0x${n.toString(16)}`]);
const head = async () => Number(await ethRpc(evm.rpcUrl, "eth_blockNumber"));

/** Sends `amount` micro-USDC from dev account `from` to `to`; resolves with the receipt. */
async function transfer(from, to, amount) {
  const a = evm.accounts[from];
  const hash = await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: a.address, to: evm.token,
    data: encodeFunctionData({ abi: erc20, functionName: "transfer", args: [to, BigInt(amount)] }) }]);
  let receipt = null;
  for (let i = 0; i < 100 && !receipt; i++) {
    receipt = await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [hash]);
    if (!receipt) await sleep(20);
  }
  assert.ok(receipt, `transfer ${hash} was not mined`);
  assert.equal(receipt.status, "0x1");
  return receipt;
}

async function watcherStatus(client = wat) {
  return (await ok(client, "chain_watcher.status", {})).evm;
}

/** Waits until the watcher's cursor reached block n (every deposit up to n credited). */
async function scannedTo(n, client = wat) {
  await waitUntil(async () => (await watcherStatus(client)).cursor >= n, { timeoutMs: 20000, what: `cursor at ${n}` });
}

/** SLIP-0010 ed25519, written here from the standard (node's HMAC-SHA512, @solana/kit's ed25519), to
 *  check the C derivation: the base58 address of the node at path (every index hardened). */
async function slip10(seedHex, path) {
  let I = crypto.createHmac("sha512", "ed25519 seed").update(Buffer.from(seedHex, "hex")).digest();
  for (const i of path) {
    const index = Buffer.alloc(4);
    index.writeUInt32BE((i | 0x80000000) >>> 0);
    I = crypto.createHmac("sha512", I.subarray(32)).update(Buffer.concat([Buffer.from([0]), I.subarray(0, 32), index])).digest();
  }
  const pair = await createKeyPairFromPrivateKeyBytes(new Uint8Array(I.subarray(0, 32)), true);
  return getAddressFromPublicKey(pair.publicKey);
}

test("deposit addresses derive from the seed, are made once, and show in the admin API and fareboxctl", async () => {
  const a = await account();
  const root = HDKey.fromMasterSeed(Buffer.from(SEED, "hex"));
  const child = root.derive(`m/44'/60'/0'/0/${a.id}`);
  assert.equal(a.address, getAddress(a.address)); // EIP-55 form
  assert.equal(a.address, privateKeyToAccount(`0x${Buffer.from(child.privateKey).toString("hex")}`).address);
  assert.equal(a.solana.address, await slip10(SEED, [44, 501, a.id, 0]));
  assert.equal(a.solana.path, `m/44'/501'/${a.id}'/0'`);
  assert.equal(a.solana.token_account, ""); // Solana is off for this watcher (chain_watcher_svm checks the ATA)
  // again: the same addresses, not made twice
  const again = await ok(wat, "chain_watcher.deposit_address", { account_id: a.id });
  assert.equal(again.evm.address, a.address);
  assert.equal(again.evm.created, false);
  const listed = await ok(led, "ledger.deposit_addresses", { account_id: a.id });
  assert.deepEqual(listed.addresses.map((d) => d.chain).sort(), ["evm", "solana"]);
  // the status shows the public branch only
  const st = await ok(wat, "chain_watcher.status", {});
  assert.equal(st.evm_xpub, root.derive("m/44'/60'/0'/0").publicExtendedKey);
  // bad input changes nothing
  const bad = await wat.call("chain_watcher.deposit_address", { account_id: -4 });
  assert.equal(bad.code, "bad_request");
  const missing = await wat.call("chain_watcher.deposit_address", { account_id: 999999 }, { deadlineMs: 15000 });
  assert.equal(missing.code, "account_not_found");
  // the admin API and fareboxctl
  const h = { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" };
  let r = await fetch(`${edgeUrl}/admin/accounts/${a.id}/deposit-addresses`, { method: "POST", headers: h, body: "{}" });
  assert.equal(r.status, 200);
  assert.equal((await r.json()).evm.address, a.address);
  r = await fetch(`${edgeUrl}/admin/accounts/${a.id}/deposit-addresses`, { headers: h });
  assert.equal((await r.json()).addresses.length, 2);
  r = await fetch(`${edgeUrl}/admin/accounts/999999/deposit-addresses`, { method: "POST", headers: h, body: "{}" });
  assert.equal(r.status, 404);
  const ctl = spawnSync(bin("fareboxctl"), ["account", "deposit-address", String(a.id)], { encoding: "utf8",
    env: { ...process.env, FAREBOX_URL: edgeUrl, FAREBOX_ADMIN_TOKEN: ADMIN } });
  assert.equal(ctl.status, 0, ctl.stderr);
  assert.equal(JSON.parse(ctl.stdout).evm.address, a.address);
  // a watcher holding only the two branch nodes (farebox-sweep keys), not the seed, makes the same addresses
  const keys = spawnSync(bin("farebox-sweep"), ["keys"], { encoding: "utf8", env: { PATH: process.env.PATH, FAREBOX_DEPOSIT_SEED: SEED } });
  assert.equal(keys.status, 0, keys.stderr);
  const branches = JSON.parse(keys.stdout);
  assert.equal(branches.evm_xpub, st.evm_xpub);
  const env = { ...watcherEnv("watcher-branches"), FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_DEPOSIT_SEED: "", FAREBOX_DEPOSIT_EVM_XPUB: branches.evm_xpub, FAREBOX_DEPOSIT_SOLANA_NODE: branches.solana_node,
    FAREBOX_EVM_NETWORK: "off" };
  delete env.FAREBOX_METRICS_LISTEN;
  const side = await startService("chain-watcher", env);
  const sideRpc = new RpcClient(side.endpoint);
  try {
    const b = await ok(led, "ledger.open_account", { label: "branches" }, { idem: crypto.randomUUID() });
    const made = await ok(sideRpc, "chain_watcher.deposit_address", { account_id: b.account_id });
    const child = root.derive(`m/44'/60'/0'/0/${b.account_id}`);
    assert.equal(made.evm.address, privateKeyToAccount(`0x${Buffer.from(child.privateKey).toString("hex")}`).address);
    assert.equal(made.solana.address, await slip10(SEED, [44, 501, b.account_id, 0]));
    assert.equal((await ok(wat, "chain_watcher.deposit_address", { account_id: b.account_id })).evm.created, false);
  } finally {
    sideRpc.close();
    assert.equal((await side.stop()).code, 0);
  }
  // the seed and the branches together, or one branch alone, stop the watcher with one line
  for (const bad of [{ FAREBOX_DEPOSIT_EVM_XPUB: branches.evm_xpub }, { FAREBOX_DEPOSIT_SEED: "", FAREBOX_DEPOSIT_EVM_XPUB: branches.evm_xpub }]) {
    const r = spawnSync(bin("farebox-chain-watcher"), [], { encoding: "utf8", env: { ...process.env, ...watcherEnv("bad"),
      FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`, FAREBOX_METRICS_LISTEN: "", ...bad } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /FAREBOX_DEPOSIT_/);
  }
  // a depth of 0 would name a block not there yet
  const zero = spawnSync(bin("farebox-chain-watcher"), [], { encoding: "utf8", env: { ...process.env,
    ...watcherEnv("bad"), FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`, FAREBOX_METRICS_LISTEN: "",
    FAREBOX_EVM_CONFIRMATIONS: "0" } });
  assert.equal(zero.status, 2, zero.stderr);
  assert.match(zero.stderr, /FAREBOX_EVM_CONFIRMATIONS: must be a block count \(1\.\.100000\)/);
  await audit();
});

test(`a transfer is credited after ${CONFIRMATIONS} confirmations and not before`, async () => {
  const a = await account();
  await scannedTo(await head() - CONFIRMATIONS + 1);
  const receipt = await transfer(1, a.address, 1_500_000);
  const block = Number(receipt.blockNumber);
  // 1 confirmation: pending, listed, not credited
  await waitUntil(async () => (await ok(wat, "chain_watcher.pending", { account_id: a.id })).pending.length === 1,
    { what: "the pending transfer" });
  const [p] = (await ok(wat, "chain_watcher.pending", { account_id: a.id })).pending;
  assert.equal(p.amount_micro, 1_500_000);
  assert.equal(p.tx, receipt.transactionHash);
  assert.equal(p.confirmations, 1);
  await mine(CONFIRMATIONS - 2); // CONFIRMATIONS - 1 confirmations
  await scannedTo(block - 1);
  await sleep(500);
  assert.equal(await balance(a.id), 0);
  await mine(1); // CONFIRMATIONS confirmations
  await waitUntil(async () => (await balance(a.id)) === 1_500_000, { what: "the credit" });
  await scannedTo(block);
  await waitUntil(async () => (await ok(wat, "chain_watcher.pending", { account_id: a.id })).pending.length === 0,
    { what: "the pending list to drop the credited transfer" });
  // credited once, from the deposits clearing account, with the source in history
  await mine(5);
  await scannedTo(block + 5);
  assert.equal(await balance(a.id), 1_500_000);
  const hist = await ok(led, "ledger.history", { account_id: a.id });
  assert.equal(hist.postings.length, 1);
  assert.equal(hist.postings[0].kind, "credit");
  // the Prometheus figures
  const metrics = await (await fetch(`http://127.0.0.1:${mp}/metrics`)).text();
  const value = (name) => Number(metrics.match(new RegExp(`^${name.replace(/[{}"=,]/g, (c) => `\\${c}`)} (\\S+)$`, "m"))?.[1]);
  assert.ok(value(`farebox_watch_evm_credits_total{network="${NETWORK}",result="credited"}`) >= 1, metrics);
  assert.ok(value(`farebox_watch_evm_cursor{network="${NETWORK}"}`) >= block, metrics);
  assert.ok(value(`farebox_watch_evm_lag_blocks{network="${NETWORK}"}`) >= 0, metrics);
  assert.ok(value(`farebox_watch_rpc_calls_total{network="${NETWORK}",endpoint="${evm.rpcUrl}"}`) > 0, metrics);
  assert.equal((await fetch(`http://127.0.0.1:${mp}/other`)).status, 404);
  assert.ok(hist.postings[0].ref.includes(receipt.transactionHash), hist.postings[0].ref);
  await audit();
});

test("anvil_reorg that drops a pending transfer: never credited", async () => {
  const a = await account();
  const receipt = await transfer(2, a.address, 700_000);
  await waitUntil(async () => (await ok(wat, "chain_watcher.pending", { account_id: a.id })).pending.length === 1,
    { what: "the pending transfer" });
  const reorgsBefore = (await watcherStatus()).reorgs;
  await ethRpc(evm.rpcUrl, "anvil_reorg", [1, []]); // the transfer's block replaced by an empty one
  assert.equal(await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [receipt.transactionHash]), null);
  await mine(CONFIRMATIONS + 2);
  await scannedTo(Number(receipt.blockNumber) + 2);
  assert.equal(await balance(a.id), 0);
  // the pending list is rebuilt at the end of each poll: the dropped transfer leaves it
  await waitUntil(async () => (await ok(wat, "chain_watcher.pending", { account_id: a.id })).pending.length === 0,
    { what: "the pending list without the dropped transfer" });
  assert.equal(await balance(a.id), 0);
  assert.ok((await watcherStatus()).reorgs > reorgsBefore, "the reorg was seen");
  await audit();
});

test("a reorg that replaces a pending transfer with another: only the survivor is credited", async () => {
  const a = await account();
  const first = await transfer(3, a.address, 900_000);
  await waitUntil(async () => (await ok(wat, "chain_watcher.pending", { account_id: a.id })).pending.length === 1,
    { what: "the pending transfer" });
  // the same block height, now holding a transfer of another amount from another account
  const other = evm.accounts[4];
  const wallet = createWalletClient({ account: privateKeyToAccount(other.privateKey), transport: http(evm.rpcUrl) });
  const nonce = Number(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [other.address, "latest"]));
  const raw = await wallet.signTransaction({ to: evm.token, nonce, gas: 100000n, maxFeePerGas: 20_000_000_000n,
    maxPriorityFeePerGas: 1_000_000_000n, chain: { id: 84532, name: "anvil", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [evm.rpcUrl] } } },
    data: encodeFunctionData({ abi: erc20, functionName: "transfer", args: [a.address, 250_000n] }) });
  await ethRpc(evm.rpcUrl, "anvil_reorg", [1, [[raw, 0]]]);
  assert.equal(await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [first.transactionHash]), null);
  await mine(CONFIRMATIONS + 1);
  await waitUntil(async () => (await balance(a.id)) === 250_000, { what: "the survivor's credit" });
  await scannedTo(Number(first.blockNumber) + 1);
  assert.equal(await balance(a.id), 250_000);
  await audit();
});

// A reorg deeper than the confirmations (evm_revert to before a credited transfer) and the same signed
// transaction mined again in a later block, behind another transfer: its Transfer log has another index
// there, a new source. Credited once: the ledger refuses a transaction credited from another block
// (0031). Until stop 35 it was credited twice.
test("a credited transaction dropped by a reorg deeper than the confirmations and mined again in a later block: credited once", async () => {
  const a = await account();
  const other = evm.accounts[4];
  const wallet = createWalletClient({ account: privateKeyToAccount(other.privateKey), transport: http(evm.rpcUrl) });
  const nonce = Number(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [other.address, "latest"]));
  const raw = await wallet.signTransaction({ to: evm.token, nonce, gas: 100000n, maxFeePerGas: 50_000_000_000n,
    maxPriorityFeePerGas: 1_000_000_000n, chain: { id: 84532, name: "anvil", nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 }, rpcUrls: { default: { http: [evm.rpcUrl] } } },
    data: encodeFunctionData({ abi: erc20, functionName: "transfer", args: [a.address, 100_000n] }) });
  const snapshot = await ethRpc(evm.rpcUrl, "evm_snapshot", []);
  const hash = await ethRpc(evm.rpcUrl, "eth_sendRawTransaction", [raw]);
  const first = await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [hash]);
  await mine(CONFIRMATIONS + 1);
  await waitUntil(async () => (await balance(a.id)) === 100_000, { what: "the first credit" });
  await scannedTo(Number(first.blockNumber) + 1);
  const { cursor, conflicts } = await watcherStatus();
  // the deep reorg: a longer branch without it, up to the cursor, then it again behind another transfer
  await ethRpc(evm.rpcUrl, "evm_revert", [snapshot]);
  await mine(cursor - await head());
  await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
  try {
    await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: evm.accounts[5].address, to: evm.token,
      maxFeePerGas: "0x2540be4000", maxPriorityFeePerGas: "0x174876e800",
      data: encodeFunctionData({ abi: erc20, functionName: "transfer", args: ["0x000000000000000000000000000000000000dEaD", 1n] }) }]);
    await ethRpc(evm.rpcUrl, "eth_sendRawTransaction", [raw]);
    await ethRpc(evm.rpcUrl, "evm_mine", []);
  } finally {
    await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
  }
  const again = await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [hash]);
  assert.ok(Number(again.blockNumber) > cursor, "mined again above the cursor");
  assert.notEqual(again.logs[0].logIndex, first.logs[0].logIndex, "its log has another index");
  await mine(CONFIRMATIONS + 1);
  await scannedTo(Number(again.blockNumber));
  assert.equal(await balance(a.id), 100_000, "credited once");
  const s = await watcherStatus();
  assert.equal(s.conflicts, conflicts + 1, "the second sighting refused as credited before");
  assert.ok(s.deep_reorgs >= 1, "the deep reorg was seen");
  await audit();
});

test("transfers made while the watcher is down are credited after its restart", async () => {
  const a = await account();
  await scannedTo(await head() - CONFIRMATIONS + 1);
  const { code } = await watchers[0].stop();
  assert.equal(code, 0);
  wat.close();
  const amounts = [100_000, 200_000, 300_000, 400_000, 500_000];
  for (const [i, amt] of amounts.entries()) await transfer(5 + (i % 3), a.address, amt);
  await mine(CONFIRMATIONS + 60); // more blocks than one log range
  assert.equal(await balance(a.id), 0);
  watchers[0] = await startService("chain-watcher", watcherEnv("watcher-0"));
  wat = new RpcClient(watchers[0].endpoint);
  await waitUntil(async () => (await balance(a.id)) === 1_500_000, { timeoutMs: 30000, what: "the backfilled credits" });
  await audit();
});

test("two watcher replicas credit each transfer once", async () => {
  watchers.push(await startService("chain-watcher", watcherEnv("watcher-1")));
  const second = new RpcClient(watchers[1].endpoint);
  const creditedBefore = (await watcherStatus()).credited;
  try {
    const accounts = [await account(), await account(), await account()];
    let expected = 0;
    for (let i = 0; i < 12; i++) {
      const amt = 10_000 * (i + 1);
      expected += amt;
      await transfer(1 + (i % 8), accounts[i % 3].address, amt);
    }
    await mine(CONFIRMATIONS);
    const total = async () => (await Promise.all(accounts.map((x) => balance(x.id)))).reduce((s, b) => s + b, 0);
    await waitUntil(async () => (await total()) === expected, { timeoutMs: 30000, what: "every credit" });
    const h = await head();
    await scannedTo(h - CONFIRMATIONS + 1);
    await scannedTo(h - CONFIRMATIONS + 1, second);
    assert.equal(await total(), expected);
    let rows = 0;
    for (const x of accounts) rows += (await ok(led, "ledger.history", { account_id: x.id })).postings.length;
    assert.equal(rows, 12);
    const both = [await watcherStatus(), await watcherStatus(second)];
    assert.equal(both[0].credited - creditedBefore + both[1].credited, 12, JSON.stringify(both));
  } finally {
    second.close();
  }
  await audit();
});

/** Sends many token transfers in JSON-RPC batches with automine off, then mines them. */
async function bulkTransfers(list) {
  // nonces by hand: with automine off, anvil would give queued transactions of a sender the same one
  const nonces = new Map();
  for (const t of list) if (!nonces.has(t.from)) nonces.set(t.from,
    Number(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [evm.accounts[t.from].address, "latest"])));
  const next = (from) => {
    const n = nonces.get(from);
    nonces.set(from, n + 1);
    return `0x${n.toString(16)}`;
  };
  await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
  try {
    for (let i = 0; i < list.length; i += 500) {
      const batch = list.slice(i, i + 500).map((t, k) => ({ jsonrpc: "2.0", id: i + k, method: "eth_sendTransaction",
        params: [{ from: evm.accounts[t.from].address, to: evm.token, gas: "0x186a0", nonce: next(t.from),
          data: encodeFunctionData({ abi: erc20, functionName: "transfer", args: [t.to, BigInt(t.amount)] }) }] }));
      const r = await (await fetch(evm.rpcUrl, { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify(batch) })).json();
      const bad = r.filter((x) => x.error);
      assert.equal(bad.length, 0, JSON.stringify(bad[0]));
    }
    // each block takes what fits in its gas limit: mine until the pool is empty
    for (let n = 0; n < 100; n++) {
      const pool = await ethRpc(evm.rpcUrl, "txpool_status");
      if (Number(pool.pending) === 0 && Number(pool.queued) === 0) break;
      await mine(1);
    }
  } finally {
    await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
  }
}

test("1,000 watched addresses and 10,000 transfers: all credited once, in batched calls", async () => {
  const accounts = [];
  for (let i = 0; i < 1000; i += 50) accounts.push(...await Promise.all(Array.from({ length: 50 }, () => account())));
  const before = await watcherStatus();
  const list = [];
  const expected = new Map(accounts.map((a) => [a.id, 0]));
  for (let i = 0; i < 10000; i++) {
    const a = accounts[i % accounts.length];
    const amount = 1 + (i % 7);
    list.push({ from: i % 9, to: a.address, amount });
    expected.set(a.id, expected.get(a.id) + amount);
  }
  const start = await head();
  await bulkTransfers(list);
  await mine(CONFIRMATIONS);
  const end = await head();
  await waitUntil(async () => (await watcherStatus()).cursor >= end - CONFIRMATIONS + 1, { timeoutMs: 180000,
    intervalMs: 500, what: "the scan of the transfers' blocks" });
  for (const a of accounts) assert.equal(await balance(a.id), expected.get(a.id), `account ${a.id}`);
  const after = await watcherStatus();
  // batched: one eth_getLogs per 1,000 addresses and range of blocks (at most a block per range here,
  // as blocks arrive one by one while the watcher polls), never one per address or transfer
  const blocks = end - start;
  const calls = after.log_calls - before.log_calls;
  assert.ok(calls <= 2 * (blocks + 5) && calls < 200, `${calls} eth_getLogs calls for ${blocks} blocks`);
  const rows = (await Promise.all(accounts.slice(0, 20).map(async (a) =>
    (await ok(led, "ledger.history", { account_id: a.id, limit: 1000 })).postings.length))).reduce((s, n) => s + n, 0);
  assert.equal(rows, 20 * 10);
  await audit();
});

/** An HTTP JSON-RPC proxy to `target` that misbehaves: drops, delays, 429s, and refuses wide log ranges. */
async function flakyProxy(target, { maxRange = 8 } = {}) {
  const counts = { dropped: 0, delayed: 0, limited: 0, refused: 0, passed: 0 };
  let n = 0;
  const server = nodeHttp.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks).toString();
    let call;
    try {
      call = JSON.parse(body);
    } catch {
      call = {};
    }
    // a fixed rotation, so that every run meets every fault: of 12 requests, one dropped, one 429, one delayed
    const turn = n++ % 12;
    if (turn === 3) {
      counts.dropped++;
      return req.socket.destroy();
    }
    if (turn === 7) {
      counts.limited++;
      res.writeHead(429, { "retry-after": "1", "content-type": "text/plain" });
      return res.end("slow down");
    }
    if (turn === 10) {
      counts.delayed++;
      await sleep(300);
    }
    if (call.method === "eth_getLogs") {
      const f = call.params?.[0] ?? {};
      if (Number(f.toBlock) - Number(f.fromBlock) + 1 > maxRange) {
        counts.refused++;
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(JSON.stringify({ jsonrpc: "2.0", id: call.id, error: { code: -32005,
          message: `query exceeds max block range ${maxRange}` } }));
      }
    }
    counts.passed++;
    try {
      const up = await fetch(target, { method: "POST", headers: { "content-type": "application/json" }, body });
      const text = await up.text();
      res.writeHead(up.status, { "content-type": "application/json" });
      res.end(text);
    } catch {
      res.destroy();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, counts,
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }) };
}

test("a flaky provider (drops, delays, 429, range limits): every transfer still credited once", async () => {
  for (const w of watchers) assert.equal((await w.stop()).code, 0);
  wat.close();
  const proxies = [await flakyProxy(evm.rpcUrl), await flakyProxy(evm.rpcUrl)];
  let flaky;
  try {
    flaky = await startService("chain-watcher", { ...watcherEnv("watcher-flaky"),
      FAREBOX_EVM_RPC_URLS: proxies.map((p) => p.url).join(","), FAREBOX_CHAIN_TIMEOUT_MS: "1000",
      FAREBOX_EVM_LOG_RANGE: "64" });
    watchers = [flaky];
    wat = new RpcClient(flaky.endpoint);
    const accounts = [await account(), await account(), await account()];
    let expected = 0;
    const sent = [];
    for (let i = 0; i < 30; i++) {
      const amt = 1000 * (i + 1);
      expected += amt;
      sent.push(await transfer(1 + (i % 8), accounts[i % 3].address, amt));
      if (i % 5 === 4) await mine(7); // spread over more blocks than one refused range
    }
    await mine(CONFIRMATIONS);
    const total = async () => (await Promise.all(accounts.map((x) => balance(x.id)))).reduce((s, b) => s + b, 0);
    try {
      await waitUntil(async () => (await total()) === expected, { timeoutMs: 90000, intervalMs: 250,
        what: "every credit through the flaky provider" });
    } catch (e) {
      const refs = [];
      for (const x of accounts) refs.push(...(await ok(led, "ledger.history", { account_id: x.id })).postings.map((p) => p.ref));
      const missing = sent.filter((r) => !refs.some((ref) => ref.includes(r.transactionHash)))
        .map((r) => `${Number(r.blockNumber)}:${r.transactionHash.slice(0, 10)}`);
      throw new Error(`${e.message}: ${await total()} of ${expected}; missing ${missing.join(" ")}; watcher ${JSON.stringify(await watcherStatus())}; ` +
        `proxies ${JSON.stringify(proxies.map((p) => p.counts))}\n${flaky.tail(30)}`);
    }
    let rows = 0;
    for (const x of accounts) rows += (await ok(led, "ledger.history", { account_id: x.id })).postings.length;
    assert.equal(rows, 30);
    const st = await watcherStatus();
    assert.ok(st.range_shrinks > 0, JSON.stringify(st));
    // each provider's own head is followed
    await waitUntil(async () => (await watcherStatus()).providers.every((p) => p.head >= st.confirmed),
      { what: "both providers' heads" });
    assert.deepEqual((await watcherStatus()).providers.map((p) => p.url), proxies.map((p) => p.url));
    const seen = proxies.map((p) => p.counts);
    assert.ok(seen.some((c) => c.dropped > 0) && seen.some((c) => c.limited > 0) && seen.some((c) => c.refused > 0),
      JSON.stringify(seen));
  } finally {
    for (const p of proxies) await p.close();
  }
  await audit();
});

test("sweep: a dry run moves nothing; the sweep moves every deposit to the treasury once; again, nothing", async () => {
  const treasury = evm.accounts[8].address;
  const tokenBalance = async (who) => BigInt(await ethRpc(evm.rpcUrl, "eth_call", [{ to: evm.token,
    data: "0x70a08231" + who.slice(2).toLowerCase().padStart(64, "0") }, "latest"]));
  const deposits = (await ok(led, "ledger.deposit_addresses", { chain: "evm", limit: 5000 })).addresses;
  let total = 0n, funded = 0;
  for (const d of deposits) {
    const b = await tokenBalance(d.address);
    total += b;
    if (b > 0n) funded++;
  }
  assert.ok(funded > 0 && total > 0n, `${funded} funded deposit addresses`);
  const sweep = (args) => {
    const r = spawnSync(bin("farebox-sweep"), args, { encoding: "utf8", timeout: 600000, env: { ...process.env,
      FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_DEPOSIT_SEED: SEED, FAREBOX_EVM_NETWORK: NETWORK,
      FAREBOX_EVM_RPC_URL: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token, FAREBOX_SETTLEMENT_KEY: evm.deployer.privateKey,
      FAREBOX_SWEEP_EVM_TO: treasury } });
    return { status: r.status, stderr: r.stderr, lines: r.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) };
  };
  const before = await tokenBalance(treasury);
  const dry = sweep(["--dry-run", "--chain", "evm"]);
  assert.equal(dry.status, 0, `${dry.stderr}\n${JSON.stringify(dry.lines.filter((l) => !["would_sweep", "nothing"].includes(l.status)).slice(0, 3))}`);
  const would = dry.lines.filter((l) => l.status === "would_sweep");
  assert.equal(would.length, funded);
  assert.equal(would.reduce((s, l) => s + BigInt(l.amount_micro), 0n), total);
  assert.equal(await tokenBalance(treasury), before);
  const real = sweep(["--chain", "evm"]);
  assert.equal(real.status, 0, `${real.stderr}\n${JSON.stringify(real.lines.filter((l) => l.status !== "swept" && l.status !== "nothing").slice(0, 3))}`);
  assert.equal(real.lines.filter((l) => l.status === "swept").length, funded);
  assert.equal(await tokenBalance(treasury), before + total);
  for (const d of deposits.slice(0, 50)) assert.equal(await tokenBalance(d.address), 0n);
  const again = sweep(["--chain", "evm"]);
  assert.equal(again.status, 0, again.stderr);
  assert.ok(again.lines.every((l) => l.status === "nothing"), JSON.stringify(again.lines.find((l) => l.status !== "nothing")));
  assert.equal(await tokenBalance(treasury), before + total);
  // a usage error and a missing seed stop it with exit 2
  assert.equal(spawnSync(bin("farebox-sweep"), ["--bogus"]).status, 2);
  assert.equal(spawnSync(bin("farebox-sweep"), [], { env: { PATH: process.env.PATH } }).status, 2);
  await audit();
});

test("confirmation by the chain's \"safe\" block: credited once the safe block reaches the transfer", async () => {
  for (const w of watchers) assert.equal((await w.stop()).code, 0);
  wat.close();
  const safe = await startService("chain-watcher", { ...watcherEnv("watcher-safe"), FAREBOX_EVM_CONFIRMATIONS: "safe" });
  watchers = [safe];
  wat = new RpcClient(safe.endpoint);
  const a = await account();
  const receipt = await transfer(2, a.address, 123_000);
  const block = Number(receipt.blockNumber);
  // anvil's safe block is 32 below its head
  await mine(30);
  await waitUntil(async () => (await watcherStatus()).confirmed === block - 2, { what: "the safe block two below" });
  await scannedTo(block - 2);
  await sleep(400);
  assert.equal(await balance(a.id), 0);
  await mine(2);
  await waitUntil(async () => (await balance(a.id)) === 123_000, { what: "the credit at the safe block" });
  await audit();
});

test("an endpoint serving another chain: nothing is scanned or credited, and it shows", async () => {
  for (const w of watchers) assert.equal((await w.stop()).code, 0);
  wat.close();
  const wrong = await startService("chain-watcher", { ...watcherEnv("watcher-wrong"), FAREBOX_EVM_NETWORK: "eip155:1",
    FAREBOX_METRICS_LISTEN: `127.0.0.1:${mp}` });
  watchers = [wrong];
  wat = new RpcClient(wrong.endpoint);
  const a = await account();
  await transfer(2, a.address, 77_000);
  await mine(CONFIRMATIONS + 2);
  await waitUntil(async () => {
    const s = await watcherStatus();
    return s.chain_id_seen === 84532 && s.errors >= 2;
  }, { what: "the chain id checked on several polls" });
  const s = await watcherStatus();
  assert.equal(s.cursor, -1, "nothing scanned");
  assert.match(s.last_error, /chain id 84532, not 1/);
  assert.equal(await balance(a.id), 0);
  const metrics = await (await fetch(`http://127.0.0.1:${mp}/metrics`)).text();
  assert.match(metrics, /^farebox_watch_evm_chain_mismatch\{network="eip155:1"\} 1$/m);
  assert.ok(wrong.lines.some((e) => e.json?.level === "error" && /another chain/.test(e.json.msg)));
  await audit();
});

// A watcher starting on a network the ledger has no cursor for (FAREBOX_EVM_START_BLOCK=latest) writes its
// start first: restarted before any range went through (its endpoint refused eth_getLogs), it starts there
// again, and the deposit made meanwhile is credited. Until stop 35 the start reached the ledger only with
// the first scanned range, and the restart began at the new head: that deposit was never credited.
test("a watcher starting at the latest block records its start first: restarted before any range passed, it misses nothing", async () => {
  const db = pg.createDatabase("watcher_start");
  const ownLp = await freePort();
  const own = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${ownLp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: SECRET, FAREBOX_REPLICA: "ledger-start" });
  const ownLed = new RpcClient(own.endpoint);
  const refusing = await rpcProxy(evm.rpcUrl, (call, answer, res) => {
    if (call.method !== "eth_getLogs") return false;
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: call.id,
      error: { code: -32601, message: "method eth_getLogs not allowed" } }));
    return true;
  });
  const start = async (urls, replica) => startService("chain-watcher", { ...watcherEnv(replica),
    FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`, FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${ownLp}`,
    FAREBOX_EVM_RPC_URLS: urls, FAREBOX_EVM_START_BLOCK: "latest", FAREBOX_METRICS_LISTEN: "" });
  let w = await start(refusing.url, "watcher-start-1");
  try {
    const ownWat = new RpcClient(w.endpoint);
    const opened = await ok(ownLed, "ledger.open_account", { label: "late" }, { idem: crypto.randomUUID() });
    const address = (await ok(ownWat, "chain_watcher.deposit_address", { account_id: opened.account_id })).evm.address;
    ownWat.close();
    await waitUntil(async () => (await ok(ownLed, "ledger.watch_cursor", { network: NETWORK })).block !== null,
      { what: "the start in the ledger" });
    const started = (await ok(ownLed, "ledger.watch_cursor", { network: NETWORK })).block;
    const receipt = await transfer(2, address, 250_000);
    assert.ok(Number(receipt.blockNumber) > started);
    await mine(CONFIRMATIONS + 5);
    await sleep(1000); // polls whose ranges fail
    assert.equal((await ok(ownLed, "ledger.watch_cursor", { network: NETWORK })).block, started, "no range passed");
    assert.equal((await w.stop()).code, 0);
    // the endpoint fixed, the watcher started again: from where it started, not from the new head
    w = await start(evm.rpcUrl, "watcher-start-2");
    await waitUntil(async () => (await ok(ownLed, "ledger.balance", { account_id: opened.account_id })).balance_micro === 250_000,
      { what: "the deposit made while no range passed" });
    const a = await ok(ownLed, "ledger.audit", {});
    assert.equal(a.ok, true, JSON.stringify(a.checks.filter((c) => !c.ok)));
  } finally {
    ownLed.close();
    await refusing.close();
    assert.deepEqual(await stopAll([w, own]), []);
  }
});

test("two endpoints, one serving another chain: that one is never used (no range passed as empty), the deposit is credited through the other", async () => {
  for (const w of watchers) assert.equal((await w.stop()).code, 0);
  wat.close();
  // the right chain's endpoint: answers its chain id, and (until opened) fails everything else; the other
  // chain's: chain id 1, no logs for any range, everything else from the right chain (heights overlap)
  let open = false;
  const proxy = (handle) => rpcProxy(evm.rpcUrl, handle);
  const right = await proxy((call, answer, res) => {
    if (call.method === "eth_chainId" || open) return false;
    res.writeHead(503).end();
    return true;
  });
  const other = await proxy((call, answer) => {
    if (call.method === "eth_chainId") return answer("0x1"), true;
    if (call.method === "eth_getLogs") return answer([]), true;
    if (call.method === "eth_blockNumber") return answer("0x3"), true; // its chain is shorter: not our head
    return false;
  });
  try {
    const two = await startService("chain-watcher", { ...watcherEnv("watcher-two-chains"),
      FAREBOX_EVM_RPC_URLS: `${right.url},${other.url}`, FAREBOX_CHAIN_TIMEOUT_MS: "1000" });
    watchers = [two];
    wat = new RpcClient(two.endpoint);
    const a = await account();
    const block = Number((await transfer(3, a.address, 55_000)).blockNumber);
    await mine(CONFIRMATIONS + 2);
    await waitUntil(async () => (await watcherStatus()).providers[1].chain_id === 1,
      { what: "the other chain's endpoint found out" });
    assert.ok(two.lines.some((e) => e.json?.level === "error" && /another chain; it is not used/.test(e.json.msg)));
    await sleep(1500); // several polls: the right endpoint fails, the other is not used
    const s = await watcherStatus();
    assert.deepEqual(s.providers.map((p) => p.chain_id), [84532, 1]);
    assert.ok(s.cursor < block, `no range passed through the other chain's endpoint (cursor ${s.cursor}, block ${block})`);
    assert.equal(await balance(a.id), 0);
    open = true;
    await waitUntil(async () => (await balance(a.id)) === 55_000, { what: "the deposit credited through the right endpoint" });
  } finally {
    await right.close();
    await other.close();
  }
  await audit();
});
