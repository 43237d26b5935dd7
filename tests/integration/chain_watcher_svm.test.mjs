// chain_watcher_svm.test.mjs - Solana deposits on surfpool: a token transfer
// into a deposit owner's associated token account is credited once (also with
// two watcher replicas, and after the watcher restarts); a failed transaction
// touching it is ignored; several transfers in one transaction are credited
// as one sum; farebox-sweep moves every deposit token account's balance to
// the treasury, the treasury paying the fee. Every test ends with the ledger's audit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import {
  address, appendTransactionMessageInstructions, createKeyPairSignerFromBytes, createSolanaRpc, createTransactionMessage,
  getBase58Encoder, getBase64EncodedWireTransaction, getSignatureFromTransaction, pipe,
  setTransactionMessageFeePayerSigner, setTransactionMessageLifetimeUsingBlockhash, signTransactionMessageWithSigners,
} from "@solana/kit";
import { TOKEN_PROGRAM_ADDRESS, findAssociatedTokenPda, getTransferCheckedInstruction } from "@solana-program/token";
import { spawnSync } from "node:child_process";
import { bin, freePort, sleep, startService, waitUntil, stopAll } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { startChains, rpcProxy } from "../lib/chains.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const SECRET = crypto.randomBytes(32).toString("hex");
const SEED = crypto.randomBytes(32).toString("hex");
let pg, chains, sol, solRpc, ledger, lp, wp, watchers = [], led, wat;

function watcherEnv(replica, extra = {}) {
  return { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${wp}-${wp + 9}`, FAREBOX_REPLICA: replica,
    FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_DEPOSIT_SEED: SEED, FAREBOX_EVM_NETWORK: "off",
    FAREBOX_SOLANA_NETWORK: sol.x402Network, FAREBOX_SOLANA_RPC_URLS: sol.rpcUrl, FAREBOX_SOLANA_MINT: sol.mint,
    FAREBOX_SOLANA_GENESIS_HASH: sol.genesisHash, // surfpool's own: checked exactly
    FAREBOX_SOLANA_COMMITMENT: "confirmed", FAREBOX_WATCH_POLL_MS: "200", ...extra };
}

before(async () => {
  pg = await startPostgres();
  const db = pg.createDatabase("watcher_svm");
  chains = await startChains({ solana: true, evm: false });
  sol = chains.solana;
  solRpc = createSolanaRpc(sol.rpcUrl);
  lp = await freePort();
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: SECRET });
  wp = await freePort();
  watchers.push(await startService("chain-watcher", watcherEnv("watcher-0")));
  led = new RpcClient(`tcp://127.0.0.1:${lp}`);
  wat = new RpcClient(watchers[0].endpoint);
});

after(async () => {
  led?.close();
  wat?.close();
  const failed = await stopAll([...watchers, ledger]);
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

async function solCall(method, params) {
  const r = await (await fetch(sol.rpcUrl, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) })).json();
  if (r.error) throw new Error(`${method}: ${JSON.stringify(r.error)}`);
  return r.result;
}

/** A funded account with its deposit token account opened (surfpool's cheatcode: no ATA program offline). */
async function account() {
  const a = await ok(led, "ledger.open_account", { label: "solana depositor" }, { idem: crypto.randomUUID() });
  const d = await ok(wat, "chain_watcher.deposit_address", { account_id: a.account_id });
  const [ata] = await findAssociatedTokenPda({ mint: address(sol.mint), owner: address(d.solana.address),
    tokenProgram: TOKEN_PROGRAM_ADDRESS });
  assert.equal(d.solana.token_account, ata);
  await solCall("surfnet_setTokenAccount", [d.solana.address, sol.mint, { amount: 0 }, TOKEN_PROGRAM_ADDRESS]);
  return { id: a.account_id, owner: d.solana.address, ata };
}

const balance = async (id) => (await ok(led, "ledger.balance", { account_id: id })).balance_micro;
const signers = new Map(); // one signer instance per wallet: @solana/kit refuses two for one address
const signer = async (wallet) => {
  if (!signers.has(wallet.address)) signers.set(wallet.address, await createKeyPairSignerFromBytes(getBase58Encoder().encode(wallet.secretKey)));
  return signers.get(wallet.address);
};

/** Sends a transaction of TransferChecked instructions [{wallet, to, amount}]; resolves with its signature
 *  once confirmed (failed ones too, when skipPreflight lets them land). */
async function send(transfers, { skipPreflight = false } = {}) {
  const payer = await signer(sol.wallets[transfers[0].wallet]);
  const ixs = [];
  for (const t of transfers) {
    const from = await signer(sol.wallets[t.wallet]);
    const [source] = await findAssociatedTokenPda({ mint: address(sol.mint), owner: from.address,
      tokenProgram: TOKEN_PROGRAM_ADDRESS });
    ixs.push(getTransferCheckedInstruction({ source, mint: address(sol.mint), destination: address(t.to),
      authority: from, amount: BigInt(t.amount), decimals: 6 }));
  }
  const { value: blockhash } = await solRpc.getLatestBlockhash({ commitment: "confirmed" }).send();
  const message = pipe(createTransactionMessage({ version: 0 }), (m) => setTransactionMessageFeePayerSigner(payer, m),
    (m) => setTransactionMessageLifetimeUsingBlockhash(blockhash, m), (m) => appendTransactionMessageInstructions(ixs, m));
  const tx = await signTransactionMessageWithSigners(message);
  const signature = getSignatureFromTransaction(tx);
  await solRpc.sendTransaction(getBase64EncodedWireTransaction(tx), { encoding: "base64", skipPreflight,
    preflightCommitment: "confirmed" }).send();
  await waitUntil(async () => {
    const { value } = await solRpc.getSignatureStatuses([signature]).send();
    return value[0] && ["confirmed", "finalized"].includes(value[0].confirmationStatus);
  }, { what: `transaction ${signature}` });
  const { value } = await solRpc.getSignatureStatuses([signature]).send();
  return { signature, err: value[0].err };
}

async function status(client = wat) {
  return (await ok(client, "chain_watcher.status", {})).solana;
}

test("a token transfer into a deposit token account is credited once", async () => {
  const a = await account();
  const { signature, err } = await send([{ wallet: 0, to: a.ata, amount: 1_250_000 }]);
  assert.equal(err, null);
  await waitUntil(async () => (await balance(a.id)) === 1_250_000, { timeoutMs: 20000, what: "the credit" });
  await sleep(1000); // more polls: nothing more
  assert.equal(await balance(a.id), 1_250_000);
  const hist = await ok(led, "ledger.history", { account_id: a.id });
  assert.equal(hist.postings.length, 1);
  assert.ok(hist.postings[0].ref.includes(signature), hist.postings[0].ref);
  const st = await status();
  assert.ok(st.credited >= 1 && st.watched >= 1, JSON.stringify(st));
  await audit();
});

test("a failed transaction touching a deposit account is ignored", async () => {
  const a = await account();
  const before = (await status()).skipped_failed;
  // more than the wallet holds: it lands (no preflight) and fails in the Token program
  const failed = await send([{ wallet: 1, to: a.ata, amount: 10n ** 15n }], { skipPreflight: true });
  assert.notEqual(failed.err, null);
  const good = await send([{ wallet: 1, to: a.ata, amount: 40_000 }]);
  assert.equal(good.err, null);
  await waitUntil(async () => (await balance(a.id)) === 40_000, { timeoutMs: 20000, what: "the good credit" });
  await waitUntil(async () => (await status()).skipped_failed > before, { what: "the failed transaction skipped" });
  await sleep(800);
  assert.equal(await balance(a.id), 40_000);
  assert.equal((await ok(led, "ledger.history", { account_id: a.id })).postings.length, 1);
  await audit();
});

test("several transfers in one transaction are credited as their sum", async () => {
  const a = await account();
  const b = await account();
  const { err } = await send([{ wallet: 0, to: a.ata, amount: 300_000 }, { wallet: 1, to: a.ata, amount: 450_000 },
    { wallet: 0, to: b.ata, amount: 5_000 }]);
  assert.equal(err, null);
  await waitUntil(async () => (await balance(a.id)) === 750_000 && (await balance(b.id)) === 5_000,
    { timeoutMs: 20000, what: "the summed credit" });
  const hist = await ok(led, "ledger.history", { account_id: a.id });
  assert.equal(hist.postings.length, 1);
  assert.equal(hist.postings[0].amount_micro, 750_000);
  await audit();
});

test("transfers while the watcher is down, then two replicas handling two a poll: each credited once", async () => {
  const a = await account();
  assert.equal((await watchers[0].stop()).code, 0);
  wat.close();
  let expected = 0;
  for (let i = 0; i < 6; i++) {
    const amt = 10_000 * (i + 1);
    expected += amt;
    await send([{ wallet: i % 2, to: a.ata, amount: amt }]);
  }
  // two new transactions an account a poll (FAREBOX_SOLANA_SIGNATURES_MAX): the oldest first, the rest later
  const two = { FAREBOX_SOLANA_SIGNATURES_MAX: "2" };
  watchers[0] = await startService("chain-watcher", watcherEnv("watcher-0", two));
  watchers.push(await startService("chain-watcher", watcherEnv("watcher-1", two)));
  wat = new RpcClient(watchers[0].endpoint);
  const second = new RpcClient(watchers[1].endpoint);
  try {
    await waitUntil(async () => (await balance(a.id)) === expected, { timeoutMs: 30000, what: "every credit" });
    await sleep(1000);
    assert.equal(await balance(a.id), expected);
    assert.equal((await ok(led, "ledger.history", { account_id: a.id })).postings.length, 6);
    // the replicas share the accounts' cursors: whichever read a transaction first credited it, once
    const both = [await status(), await status(second)];
    assert.ok(both[0].transactions + both[1].transactions >= 6 && both.every((s) => s.last_error === ""),
      JSON.stringify(both));
    assert.ok(watchers.some((w) => w.lines.some((e) =>
      e.json?.msg === "more new signatures than one poll handles: the oldest are handled first")));
  } finally {
    second.close();
  }
  await audit();
});

test("an endpoint serving another cluster: nothing is scanned, and the status says why", async () => {
  const wrong = await startService("chain-watcher", watcherEnv("watcher-wrong-cluster",
    { FAREBOX_SOLANA_GENESIS_HASH: "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG" })); // devnet's
  const client = new RpcClient(wrong.endpoint);
  try {
    await wrong.waitForMsg("solana endpoint serves another cluster; nothing is scanned or credited");
    const s = await status(client);
    assert.match(s.last_error, /serves another cluster \(genesis hash [1-9A-HJ-NP-Za-km-z]{43,44}\): nothing is scanned/);
    assert.equal(s.watched, 0, "no deposit address read");
    assert.equal(s.transactions, 0);
  } finally {
    client.close();
    assert.equal((await wrong.stop()).code, 0);
  }
});

test("sweep: every deposit token account's balance moves to the treasury, which pays the fee; again, nothing", async () => {
  const treasury = sol.wallets[2];
  const [treasuryAta] = await findAssociatedTokenPda({ mint: address(sol.mint), owner: address(treasury.address),
    tokenProgram: TOKEN_PROGRAM_ADDRESS });
  const units = async (ata) => BigInt((await solRpc.getTokenAccountBalance(address(ata), { commitment: "confirmed" }).send()).value.amount);
  const owners = (await ok(led, "ledger.deposit_addresses", { chain: "solana" })).addresses;
  let total = 0n, funded = 0;
  for (const o of owners) {
    const [ata] = await findAssociatedTokenPda({ mint: address(sol.mint), owner: address(o.address), tokenProgram: TOKEN_PROGRAM_ADDRESS });
    const b = await units(ata).catch(() => 0n);
    total += b;
    if (b > 0n) funded++;
  }
  assert.ok(funded >= 4 && total > 0n, `${funded} funded`);
  const sweep = (args) => {
    const r = spawnSync(bin("farebox-sweep"), args, { encoding: "utf8", timeout: 300000, env: { ...process.env,
      FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_DEPOSIT_SEED: SEED, FAREBOX_SOLANA_NETWORK: sol.x402Network,
      FAREBOX_SOLANA_RPC_URL: sol.rpcUrl, FAREBOX_SOLANA_MINT: sol.mint, FAREBOX_SWEEP_SOLANA_PAYER_KEY: treasury.secretKey } });
    return { status: r.status, stderr: r.stderr, lines: r.stdout.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) };
  };
  const before = await units(treasuryAta);
  const lamportsBefore = (await solRpc.getBalance(address(treasury.address), { commitment: "confirmed" }).send()).value;
  const dry = sweep(["--dry-run", "--chain", "solana"]);
  assert.equal(dry.status, 0, `${dry.stderr}\n${JSON.stringify(dry.lines)}`);
  assert.equal(dry.lines.filter((l) => l.status === "would_sweep").length, funded);
  assert.equal(await units(treasuryAta), before);
  const real = sweep(["--chain", "solana"]);
  assert.equal(real.status, 0, `${real.stderr}\n${JSON.stringify(real.lines.filter((l) => l.status === "failed"))}`);
  assert.equal(real.lines.filter((l) => l.status === "swept").length, funded);
  assert.equal(await units(treasuryAta), before + total);
  const lamportsAfter = (await solRpc.getBalance(address(treasury.address), { commitment: "confirmed" }).send()).value;
  assert.ok(lamportsAfter < lamportsBefore, "the treasury paid the fees");
  const again = sweep(["--chain", "solana"]);
  assert.equal(again.status, 0, again.stderr);
  assert.ok(again.lines.every((l) => l.status === "nothing"), JSON.stringify(again.lines));
  assert.equal(await units(treasuryAta), before + total);
  await audit();
});

test("two endpoints, one serving another cluster: it is asked nothing but its genesis hash, and deposits are credited through the other", async () => {
  for (const w of watchers) assert.equal((await w.stop()).code, 0);
  wat.close();
  // the cluster's endpoint: answers its genesis hash and (until opened) fails everything else; the other
  // cluster's: devnet's genesis hash, anything else recorded and passed on
  let open = false;
  const otherCalls = [];
  const proxy = (handle) => rpcProxy(sol.rpcUrl, handle);
  const right = await proxy((call, answer, res) => {
    if (call.method === "getGenesisHash" || open) return false;
    res.writeHead(503).end();
    return true;
  });
  const other = await proxy((call, answer) => {
    if (call.method !== "getGenesisHash") {
      otherCalls.push(call.method);
      return false;
    }
    answer("EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG"); // devnet's
    return true;
  });
  try {
    const two = await startService("chain-watcher", watcherEnv("watcher-two-clusters",
      { FAREBOX_SOLANA_RPC_URLS: `${right.url},${other.url}`, FAREBOX_CHAIN_TIMEOUT_MS: "1000" }));
    watchers = [two];
    wat = new RpcClient(two.endpoint);
    const a = await account();
    const { err } = await send([{ wallet: 0, to: a.ata, amount: 700_000 }]);
    assert.equal(err, null);
    await two.waitForMsg("solana endpoint serves another cluster; it is not used");
    await sleep(1500); // several polls: the cluster's endpoint fails, the other is not used
    assert.equal(await balance(a.id), 0);
    open = true;
    await waitUntil(async () => (await balance(a.id)) === 700_000, { timeoutMs: 20000,
      what: "the deposit credited through the cluster's endpoint" });
    assert.deepEqual(otherCalls, [], "the other cluster's endpoint was asked nothing but its genesis hash");
  } finally {
    await right.close();
    await other.close();
  }
  await audit();
});
