// chain_watcher.test.mjs - custodial deposit addresses and EVM deposits on
// anvil: addresses derived from the seed (checked against @scure/bip32 and
// SLIP-0010 computed here with @noble), made once, served by the admin API and
// fareboxctl; a USDC transfer credited after N confirmations and not before;
// anvil_reorg that drops a pending transfer (never credited) or replaces it
// with another (only the survivor credited); transfers made while the watcher
// is down credited after its restart; two watcher replicas crediting each
// transfer once. Every test ends with the ledger's audit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { createWalletClient, http, encodeFunctionData, parseAbi, getAddress } from "viem";
import { HDKey } from "@scure/bip32";
import { hmac } from "@noble/hashes/hmac";
import { sha512 } from "@noble/hashes/sha2";
import { ed25519 } from "@noble/curves/ed25519";
import { base58 } from "@scure/base";
import { privateKeyToAccount } from "viem/accounts";
import { bin, freePort, sleep, startService, waitUntil } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { startChains, ethRpc } from "../lib/chains.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const SECRET = crypto.randomBytes(32).toString("hex");
const SEED = crypto.randomBytes(32).toString("hex");
const ADMIN = crypto.randomBytes(24).toString("hex");
const NETWORK = "eip155:84532";
const CONFIRMATIONS = 3;
const erc20 = parseAbi(["function transfer(address,uint256) returns (bool)"]);
let pg, chains, evm, ledger, lp, wp, watchers = [], edge, edgeUrl, led, wat;

function watcherEnv(replica) {
  return { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${wp}-${wp + 9}`, FAREBOX_REPLICA: replica,
    FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_DEPOSIT_SEED: SEED, FAREBOX_EVM_NETWORK: NETWORK,
    FAREBOX_EVM_RPC_URLS: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token, FAREBOX_EVM_CONFIRMATIONS: String(CONFIRMATIONS),
    FAREBOX_EVM_START_BLOCK: "0", FAREBOX_WATCH_POLL_MS: "100", FAREBOX_EVM_LOG_RANGE: "50",
    FAREBOX_SOLANA_NETWORK: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", FAREBOX_SOLANA_MINT: chains.solana?.mint ?? "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU" };
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
  for (const p of [edge, ...watchers, ledger]) if (p && !p.stopped) {
    const { code } = await p.stop();
    assert.equal(code, 0, `${p.name} exited ${code}\n${p.tail()}`);
  }
  await chains?.stop();
  await pg?.stop();
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

/** SLIP-0010 ed25519, written here from the standard, to check the C derivation. */
function slip10(seedHex, path) {
  let I = hmac(sha512, new TextEncoder().encode("ed25519 seed"), Buffer.from(seedHex, "hex"));
  for (const i of path) {
    const data = Buffer.concat([Buffer.from([0]), Buffer.from(I.slice(0, 32)), Buffer.from([(i >>> 24) | 0x80, (i >>> 16) & 255, (i >>> 8) & 255, i & 255])]);
    I = hmac(sha512, I.slice(32), data);
  }
  return ed25519.getPublicKey(I.slice(0, 32));
}

test("deposit addresses derive from the seed, are made once, and show in the admin API and fareboxctl", async () => {
  const a = await account();
  const root = HDKey.fromMasterSeed(Buffer.from(SEED, "hex"));
  const child = root.derive(`m/44'/60'/0'/0/${a.id}`);
  assert.equal(a.address, getAddress(a.address)); // EIP-55 form
  assert.equal(a.address, privateKeyToAccount(`0x${Buffer.from(child.privateKey).toString("hex")}`).address);
  assert.equal(a.solana.address, base58.encode(slip10(SEED, [44, 501, a.id, 0])));
  assert.equal(a.solana.path, `m/44'/501'/${a.id}'/0'`);
  assert.ok(a.solana.token_account.length >= 32);
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
  assert.equal((await ok(wat, "chain_watcher.pending", { account_id: a.id })).pending.length, 0);
  // credited once, from the deposits clearing account, with the source in history
  await mine(5);
  await scannedTo(block + 5);
  assert.equal(await balance(a.id), 1_500_000);
  const hist = await ok(led, "ledger.history", { account_id: a.id });
  assert.equal(hist.postings.length, 1);
  assert.equal(hist.postings[0].kind, "credit");
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
  assert.equal((await ok(wat, "chain_watcher.pending", { account_id: a.id })).pending.length, 0);
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
