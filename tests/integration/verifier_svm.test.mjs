// verifier_svm.test.mjs - Solana "exact" payments made by the official x402
// client (@x402/svm) and by @solana/kit, verified and settled by farebox's
// verifier on surfpool through its RPC: tokens move on chain, farebox's fee
// payer pays the fee, every bad payment gets its own reason and settles
// nothing, and concurrent settles of one transaction over 3 replicas send it
// once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";
import { spawnSync } from "node:child_process";
import {
  address, appendTransactionMessageInstructions, createKeyPairFromBytes, createKeyPairSignerFromBytes, signBytes, createSolanaRpc,
  createTransactionMessage, getBase58Decoder, getBase58Encoder, getBase64EncodedWireTransaction, getBase64Encoder,
  getTransactionDecoder, getTransactionEncoder, partiallySignTransactionMessageWithSigners, pipe,
  setTransactionMessageFeePayer, setTransactionMessageLifetimeUsingBlockhash, AccountRole,
} from "@solana/kit";
import { getSetComputeUnitLimitInstruction, getSetComputeUnitPriceInstruction } from "@solana-program/compute-budget";
import { TOKEN_PROGRAM_ADDRESS, findAssociatedTokenPda, getTransferCheckedInstruction } from "@solana-program/token";
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { ExactSvmScheme } from "@x402/svm/exact/client";
import { bin, freePort, startService, stopAll, waitUntil, withOwnLedger } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { startChains } from "../lib/chains.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const SECRET = crypto.randomBytes(32).toString("hex");
const MEMO_PROGRAM = address("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
const SYSTEM_PROGRAM = address("11111111111111111111111111111111");
let pg, chains, ledger, verifiers = [], rpc, sol, solRpc, NETWORK, treasury;

function requirements(over = {}) {
  return { scheme: "exact", network: NETWORK, amount: "10000", asset: sol.mint, payTo: treasury,
    maxTimeoutSeconds: 60, extra: { feePayer: sol.payer.address }, ...over };
}

const signer = (wallet) => createKeyPairSignerFromBytes(getBase58Encoder().encode(wallet.secretKey));

/** A PAYMENT-SIGNATURE header made by the official client for these requirements. */
async function officialHeader(wallet, req = requirements()) {
  const client = new x402Client();
  client.register("solana:*", new ExactSvmScheme(await signer(wallet), { rpcUrl: sol.rpcUrl }));
  client.setSpendControls(false);
  const h = new x402HTTPClient(client);
  const payload = await h.createPaymentPayload({ x402Version: 2, resource: { url: "http://farebox.test/r", description: "", mimeType: "" }, accepts: [req] });
  return { header: h.encodePaymentSignatureHeader(payload)["PAYMENT-SIGNATURE"], payload };
}

/** A transaction built with @solana/kit the way the client builds it, with any part changed. */
async function kitPayload(wallet, { req = requirements(), amount = BigInt(req.amount), price = 1n, units = 20000,
  feePayer = req.extra.feePayer,
  blockhash, extra = [], memoAccounts = [], payTo = req.payTo, mint = req.asset, authority, fromPayTo = false, memoText = crypto.randomBytes(16).toString("hex") } = {}) {
  const payer = await signer(wallet);
  const [destination] = await findAssociatedTokenPda({ mint: address(mint), owner: address(payTo), tokenProgram: TOKEN_PROGRAM_ADDRESS });
  const [source] = fromPayTo ? [destination]
    : await findAssociatedTokenPda({ mint: address(mint), owner: payer.address, tokenProgram: TOKEN_PROGRAM_ADDRESS });
  const latest = blockhash ? { blockhash, lastValidBlockHeight: 1000000n } : (await solRpc.getLatestBlockhash().send()).value;
  const memo = { programAddress: MEMO_PROGRAM, accounts: memoAccounts, data: new TextEncoder().encode(memoText) };
  const msg = pipe(createTransactionMessage({ version: 0 }),
    (m) => setTransactionMessageFeePayer(address(feePayer), m),
    (m) => appendTransactionMessageInstructions([
      getSetComputeUnitLimitInstruction({ units }),
      getSetComputeUnitPriceInstruction({ microLamports: price }),
      getTransferCheckedInstruction({ source, mint: address(mint), destination, authority: authority ?? payer, amount, decimals: 6 },
        { programAddress: TOKEN_PROGRAM_ADDRESS }),
      memo, ...extra], m),
    (m) => setTransactionMessageLifetimeUsingBlockhash(latest, m));
  const tx = await partiallySignTransactionMessageWithSigners(msg);
  return { x402Version: 2, resource: { url: "http://farebox.test/r" }, accepted: req,
    payload: { transaction: getBase64EncodedWireTransaction(tx) } };
}

/** A payment whose message lists the fee payer's key a second time (in place of an account a memo
 * names), signed again by the wallet: the runtime refuses such a message, and checks made by account
 * index would not see the fee payer there. */
async function duplicateFeePayer(wallet) {
  const marker = address("Sysvar1nstructions1111111111111111111111111");
  const payload = await kitPayload(wallet, { memoAccounts: [{ address: marker, role: AccountRole.READONLY }] });
  const tx = getTransactionDecoder().decode(getBase64Encoder().encode(payload.payload.transaction));
  const msg = Uint8Array.from(tx.messageBytes);
  const mk = Buffer.from(getBase58Encoder().encode(marker));
  const at = msg.findIndex((_, i) => i + 32 <= msg.length && mk.equals(Buffer.from(msg.subarray(i, i + 32))));
  assert.ok(at > 0);
  msg.set(getBase58Encoder().encode(payload.accepted.extra.feePayer), at);
  const keys = await createKeyPairFromBytes(getBase58Encoder().encode(wallet.secretKey));
  const sigs = { ...tx.signatures, [wallet.address]: new Uint8Array(await signBytes(keys.privateKey, msg)) };
  const wire = getTransactionEncoder().encode({ messageBytes: msg, signatures: sigs });
  return { ...payload, payload: { transaction: Buffer.from(wire).toString("base64") } };
}

/** The same payload with one byte of the payer's signature flipped. */
function tamper(payload) {
  const tx = getTransactionDecoder().decode(getBase64Encoder().encode(payload.payload.transaction));
  const sigs = { ...tx.signatures };
  const [who] = Object.keys(sigs).filter((k) => sigs[k] && k !== payload.accepted.extra.feePayer);
  const bad = Uint8Array.from(sigs[who]);
  bad[5] ^= 1;
  sigs[who] = bad;
  const wire = getTransactionEncoder().encode({ ...tx, signatures: sigs });
  return { ...payload, payload: { transaction: Buffer.from(wire).toString("base64") } };
}

const tokens = async (owner) => {
  const [ata] = await findAssociatedTokenPda({ mint: address(sol.mint), owner: address(owner), tokenProgram: TOKEN_PROGRAM_ADDRESS });
  return BigInt((await solRpc.getTokenAccountBalance(ata).send()).value.amount);
};
const lamports = async (who) => (await solRpc.getBalance(address(who)).send()).value;

before(async () => {
  pg = await startPostgres();
  const db = pg.createDatabase("verifier_svm");
  chains = await startChains({ solana: true, evm: false });
  sol = chains.solana;
  NETWORK = sol.x402Network; // surfpool answers for "devnet": the official client knows only real cluster ids
  solRpc = createSolanaRpc(sol.rpcUrl);
  treasury = sol.wallets[2].address; // an owner whose associated token account exists
  const lp = await freePort();
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: SECRET });
  const base = await freePort();
  for (let i = 0; i < 3; i++) {
    verifiers.push(await startService("verifier", {
      FAREBOX_RPC_BIND: `tcp://127.0.0.1:${base}-${base + 9}`, FAREBOX_REPLICA: `verifier-${i}`,
      FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_EVM_NETWORK: "off",
      FAREBOX_SOLANA_NETWORK: NETWORK, FAREBOX_SOLANA_RPC_URLS: sol.rpcUrl, FAREBOX_SOLANA_MINT: sol.mint,
      FAREBOX_SOLANA_GENESIS_HASH: sol.genesisHash, // surfpool's own: checked exactly
      FAREBOX_SOLANA_FEE_PAYER_KEY: sol.payer.secretKey, FAREBOX_SETTLE_WAIT_MS: "15000" }));
  }
  rpc = new RpcClient(verifiers.map((v) => v.endpoint));
});

after(async () => {
  rpc?.close();
  const failed = await stopAll([...verifiers, ledger]);
  await chains?.stop();
  await pg?.stop();
  assert.deepEqual(failed, [], "every process exits 0");
});

async function verify(body) {
  const r = await rpc.call("verifier.verify", body, { deadlineMs: 15000 });
  assert.equal(r.status, "ok", `${r.code}: ${r.message}`);
  return r.body;
}

async function settle(body) {
  const r = await rpc.call("verifier.settle", body, { deadlineMs: 30000 });
  assert.equal(r.status, "ok", `${r.code}: ${r.message}`);
  return r.body;
}

async function ledgerAudit() {
  const l = new RpcClient(ledger.endpoint);
  const r = await l.call("ledger.audit", {});
  l.close();
  assert.equal(r.body.ok, true, JSON.stringify(r.body.checks.filter((c) => !c.ok)));
}

test("supported lists the Solana network with farebox's fee payer", async () => {
  const r = await rpc.call("verifier.supported", {});
  const extra = { feePayer: sol.payer.address };
  assert.deepEqual(r.body.kinds, [{ x402Version: 2, scheme: "exact", network: NETWORK, extra },
    { x402Version: 1, scheme: "exact", network: "solana-devnet", extra }]);
  assert.deepEqual(r.body.signers["solana:*"], [sol.payer.address]);
});

test("the official @x402/svm client's payment verifies, settles on surfpool, and cannot be used again", async () => {
  const wallet = sol.wallets[0];
  const { header } = await officialHeader(wallet);
  const v = await verify({ header, requirements: requirements() });
  assert.equal(v.isValid, true, JSON.stringify(v));
  assert.equal(v.payer, wallet.address);

  const before = await tokens(wallet.address), tBefore = await tokens(treasury);
  const solBefore = await lamports(wallet.address), feeBefore = await lamports(sol.payer.address);
  const s = await settle({ header, requirements: requirements() });
  assert.equal(s.success, true, JSON.stringify(s));
  assert.match(s.transaction, /^[1-9A-HJ-NP-Za-km-z]{64,88}$/);
  assert.equal(s.network, NETWORK);
  assert.equal(s.payer, wallet.address);
  assert.equal(await tokens(wallet.address), before - 10000n);
  assert.equal(await tokens(treasury), tBefore + 10000n);
  assert.equal(await lamports(wallet.address), solBefore, "the payer pays no fee");
  assert.ok(await lamports(sol.payer.address) < feeBefore, "farebox's fee payer paid the fee");
  const st = (await solRpc.getSignatureStatuses([s.transaction], { searchTransactionHistory: true }).send()).value[0];
  assert.equal(st.err, null);

  // settling again answers the same transaction and moves nothing
  const again = await settle({ header, requirements: requirements() });
  assert.equal(again.success, true, JSON.stringify(again));
  assert.equal(again.transaction, s.transaction);
  assert.equal(await tokens(wallet.address), before - 10000n);
  // verify knows it is used
  const replay = await verify({ header, requirements: requirements() });
  assert.equal(replay.isValid, false);
  assert.equal(replay.invalidReason, "duplicate_settlement");
  await ledgerAudit();
});

test("every bad payment gets its own reason and settles nothing", async () => {
  const wallet = sol.wallets[1];
  const broke = { secretKey: sol.mintAuthority.secretKey, address: sol.mintAuthority.address }; // holds no tokens
  const before = await tokens(wallet.address), feeBefore = await lamports(sol.payer.address);
  const stranger = address(sol.wallets[0].address);
  const bigReq = requirements({ amount: "2000000000000" }); // more than the wallet holds
  const cases = [
    ["wrong amount", await kitPayload(wallet, { amount: 9999n }), requirements(), "invalid_exact_svm_payload_amount_mismatch"],
    ["wrong recipient", await kitPayload(wallet, { payTo: sol.wallets[0].address }), requirements(), "invalid_exact_svm_payload_recipient_mismatch"],
    ["another fee payer", await kitPayload(wallet, { req: requirements({ extra: { feePayer: stranger } }) }), requirements({ extra: { feePayer: stranger } }), "invalid_exact_svm_fee_payer_not_managed_by_facilitator"],
    ["fee payer differs from the requirements", await kitPayload(wallet, { feePayer: stranger }), requirements(), "invalid_exact_svm_fee_payer_mismatch"],
    ["tampered signature", tamper(await kitPayload(wallet)), requirements(), "invalid_exact_svm_payload_signature_invalid"],
    ["compute price too high", await kitPayload(wallet, { price: 10_000_000n }), requirements(), "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high"],
    // Solana charges the units asked at the price, paid by farebox's fee payer: 1,400,000 units at the highest
    // price would cost it 7,000,000 lamports, above FAREBOX_SOLANA_MAX_FEE_LAMPORTS (110,000)
    ["fee too high (the units asked)", await kitPayload(wallet, { price: 5_000_000n, units: 1_400_000 }), requirements(), "invalid_exact_svm_payload_transaction_fee_too_high"],
    ["fee just too high", await kitPayload(wallet, { price: 5_000_000n, units: 20_001 }), requirements(), "invalid_exact_svm_payload_transaction_fee_too_high"],
    ["unknown extra instruction", await kitPayload(wallet, { extra: [{ programAddress: SYSTEM_PROGRAM, accounts: [], data: new Uint8Array([2, 0, 0, 0]) }] }), requirements(), "invalid_exact_svm_payload_unknown_fifth_instruction"],
    ["fee payer named by an instruction", await kitPayload(wallet, { memoAccounts: [{ address: address(sol.payer.address), role: AccountRole.READONLY }] }), requirements(), "invalid_exact_svm_fee_payer_not_isolated"],
    ["fee payer's key listed twice", await duplicateFeePayer(wallet), requirements(), "invalid_exact_svm_payload_transaction_could_not_be_decoded"],
    // the token program takes a transfer to its own source as done: a delegate of payTo's account
    // would pay with payTo's own money, and payTo would receive nothing
    ["a transfer from payTo's own token account", await kitPayload(wallet, { fromPayTo: true }), requirements(), "invalid_exact_svm_payload_source_is_destination"],
    ["blockhash unknown to the chain", await kitPayload(wallet, { blockhash: "4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM" }), requirements(), "invalid_exact_svm_blockhash_expired"],
    ["payer without the tokens", await kitPayload(wallet, { req: bigReq }), bigReq, "invalid_exact_svm_transaction_simulation_failed"],
    ["payer without a token account", await kitPayload(broke), requirements(), "invalid_exact_svm_transaction_simulation_failed"],
    ["another mint", await kitPayload(wallet), requirements({ asset: sol.wallets[0].address }), "invalid_exact_svm_payload_mint_mismatch"],
    ["network differs from the requirements", await kitPayload(wallet), requirements({ network: "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp" }), "invalid_network"],
    ["no fee payer in the requirements", await kitPayload(wallet), requirements({ extra: {} }), "invalid_exact_svm_payload_missing_fee_payer"],
  ];
  for (const [name, payload, req, reason] of cases) {
    const v = await verify({ payload, requirements: req });
    assert.equal(v.isValid, false, `${name}: accepted`);
    assert.equal(v.invalidReason, reason, `${name}: ${v.invalidReason} (${v.invalidMessage})`);
    const s = await settle({ payload, requirements: req });
    assert.equal(s.success, false, `${name}: settled`);
    assert.equal(s.errorReason, reason, `${name} (settle): ${s.errorReason} (${s.errorMessage})`);
    assert.equal(s.transaction, "");
  }
  // at the fee cap exactly (20,000 units at 5 lamports, two signatures): valid
  const atCap = await verify({ payload: await kitPayload(wallet, { price: 5_000_000n, units: 20_000 }),
    requirements: requirements() });
  assert.equal(atCap.isValid, true, JSON.stringify(atCap));
  // a transaction in base64 without its padding: decoded, and simulated as farebox encodes it (the
  // node refuses unpadded text: the payment was answered unavailable)
  let padded; // one of three lengths in a row is not a multiple of 3 bytes: its base64 ends with "="
  for (let extra = 0; !padded?.payload.transaction.endsWith("="); extra++)
    padded = await kitPayload(wallet, { memoText: crypto.randomBytes(16).toString("hex") + "x".repeat(extra) });
  const unpadded = await verify({ payload: { ...padded, payload: { transaction: padded.payload.transaction.replace(/=+$/, "") } },
    requirements: requirements() });
  assert.equal(unpadded.isValid, true, JSON.stringify(unpadded));
  // undecodable transactions
  const good = await kitPayload(wallet);
  for (const transaction of ["AQID", "!!!", good.payload.transaction.slice(0, 40)]) {
    const v = await verify({ payload: { ...good, payload: { transaction } }, requirements: requirements() });
    assert.equal(v.invalidReason, "invalid_exact_svm_payload_transaction_could_not_be_decoded", transaction);
  }
  assert.equal(await tokens(wallet.address), before, "nothing moved");
  assert.equal(await lamports(sol.payer.address), feeBefore, "the fee payer paid nothing");
  await ledgerAudit();
});

test("a seller memo is required exactly", async () => {
  const wallet = sol.wallets[1];
  const req = requirements({ extra: { feePayer: sol.payer.address, memo: "order-42" } });
  const { header } = await officialHeader(wallet, req);
  assert.equal((await verify({ header, requirements: req })).isValid, true);
  const other = requirements({ extra: { feePayer: sol.payer.address, memo: "order-43" } });
  const v = await verify({ header, requirements: other });
  assert.equal(v.invalidReason, "invalid_exact_svm_payload_memo_mismatch");
});

test("30 concurrent settles of one transaction across 3 verifier replicas send it once", async () => {
  const wallet = sol.wallets[1];
  const p = await kitPayload(wallet);
  const before = await tokens(wallet.address);
  const results = await Promise.all(Array.from({ length: 30 }, () =>
    rpc.call("verifier.settle", { payload: p, requirements: requirements() }, { deadlineMs: 30000 })));
  for (const r of results) assert.equal(r.status, "ok", `${r.code}: ${r.message}`);
  const sigs = new Set(results.map((r) => r.body.transaction));
  assert.equal(sigs.size, 1, `transactions: ${[...sigs].join(" ")}`);
  assert.ok(results.every((r) => r.body.success), JSON.stringify(results.find((r) => !r.body.success)?.body));
  assert.equal(new Set(results.map((r) => r.replica)).size, 3, "all three replicas took part");
  assert.equal(await tokens(wallet.address), before - 10000n, "paid once");
  await ledgerAudit();
});

// An endpoint behind the one a settlement was checked on (a lagging node, or
// another behind a load balancer) answers isBlockhashValid false for a
// blockhash it has not seen, while the transaction can still land. The
// tracker does not take that for expiry until the endpoint's block height has
// passed the height recorded with the transaction (the settling endpoint's,
// plus a margin). Here a JSON-RPC proxy in front of surfpool drops the
// settlement's sends (so it never lands), then denies its blockhash, then
// reports a height past the recorded one.
test("a settlement whose blockhash an endpoint does not know is not judged expired before its last valid height", async () => {
  const lie = { dropSend: true, blockhashUnknown: false, height: null, genesis: null };
  const proxy = await lyingProxy(lie);
  // its own ledger: the other verifiers' trackers (on surfpool itself) would send the transaction
  const env = { FAREBOX_EVM_NETWORK: "off", FAREBOX_SOLANA_NETWORK: NETWORK,
    FAREBOX_SOLANA_RPC_URLS: `http://127.0.0.1:${proxy.address().port}`, FAREBOX_SOLANA_MINT: sol.mint,
    FAREBOX_SOLANA_GENESIS_HASH: sol.genesisHash,
    FAREBOX_SOLANA_FEE_PAYER_KEY: sol.payer.secretKey, FAREBOX_SETTLE_WAIT_MS: "1500" };
  try {
    await withOwnLedger(pg.createDatabase("svm_lagging"), SECRET, "lagging", env, async ({ l, v, verifier: ver }) => {
      const wallet = sol.wallets[1];
      const before = await tokens(wallet.address);
      const height = BigInt(await solRpc.getBlockHeight({ commitment: "processed" }).send());
      const s = (await v.call("verifier.settle", { payload: await kitPayload(wallet), requirements: requirements() },
        { deadlineMs: 30000 })).body;
      assert.equal(s.success, false, JSON.stringify(s));
      assert.equal(s.errorReason, "settlement_pending");
      const key = { network: NETWORK, payer: wallet.address, nonce: s.transaction };
      const auth = (await l.call("ledger.authorization", key)).body;
      const settlement = async () => (await l.call("ledger.settlement", { authorization_id: auth.authorization_id })).body;
      const st = await settlement();
      assert.equal(st.state, "signed");
      assert.ok(BigInt(st.last_valid_height) >= height + 300n, `recorded ${st.last_valid_height}, height was ${height}`);
      // the endpoint no longer knows the blockhash: three tracker rounds later the settlement is still open
      lie.blockhashUnknown = true;
      const seen = () => ver.lines.filter((e) => e.json?.msg === "settlement's blockhash unknown to the endpoint before its last valid height").length;
      for (let i = 0; i < 100 && seen() < 3; i++) await new Promise((r) => setTimeout(r, 200));
      assert.ok(seen() >= 3, "the tracker looked at it");
      assert.equal((await settlement()).state, "signed", "not judged expired");
      // past its last valid height: expired, failed, nothing moved
      lie.height = Number(st.last_valid_height) + 1;
      let end;
      for (let i = 0; i < 100; i++) {
        end = await settlement();
        if (end.state !== "signed") break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(end.state, "failed", JSON.stringify(end));
      assert.equal(end.reason, "invalid_exact_svm_blockhash_expired");
      assert.equal((await l.call("ledger.authorization", key)).body.state, "failed");
      assert.equal(await tokens(wallet.address), before, "nothing moved");
    });
  } finally {
    proxy.close();
  }
});

// A replica that stops between beginning a settlement and recording its signed transaction leaves
// it begun, nothing sent. The transaction went with the settlement (its calldata): a tracker records
// it signed with the height it cannot land after and sends it, and it is judged as any other — here
// one lands (the payer pays once, as for the call it began for), and one is never let through by the
// endpoint and expires (failed, nothing moved). The replica's stop is played through the ledger.
test("a Solana settlement begun by a replica that stopped before signing is recorded, sent and judged by a tracker", async () => {
  const lie = { dropSend: false, blockhashUnknown: false, height: null, genesis: null };
  const proxy = await lyingProxy(lie);
  const env = { FAREBOX_EVM_NETWORK: "off", FAREBOX_SOLANA_NETWORK: NETWORK,
    FAREBOX_SOLANA_RPC_URLS: `http://127.0.0.1:${proxy.address().port}`, FAREBOX_SOLANA_MINT: sol.mint,
    FAREBOX_SOLANA_GENESIS_HASH: sol.genesisHash,
    FAREBOX_SOLANA_FEE_PAYER_KEY: sol.payer.secretKey, FAREBOX_SETTLE_WAIT_MS: "1500" };
  const feePayer = await createKeyPairFromBytes(getBase58Encoder().encode(sol.payer.secretKey));
  // what the settling replica had begun with: the payer's transaction with the fee payer's signature
  const begun = async (l, wallet) => {
    const payload = await kitPayload(wallet);
    const tx = getTransactionDecoder().decode(getBase64Encoder().encode(payload.payload.transaction));
    const sig = await signBytes(feePayer.privateKey, tx.messageBytes);
    const wire = getTransactionEncoder().encode({ ...tx, signatures: { ...tx.signatures, [sol.payer.address]: sig } });
    const key = { network: NETWORK, payer: wallet.address, nonce: getBase58Decoder().decode(sig) };
    const r = await l.call("ledger.settlement_begin", { ...key, amount_micro: 10000, pay_to: treasury,
      resource: "http://farebox.test/r", sender: sol.payer.address, evm: false,
      calldata: Buffer.from(wire).toString("base64") }, { idem: `svm-unsigned:${key.nonce}` });
    assert.equal(r.status, "ok", `${r.code}: ${r.message}`);
    assert.equal(r.body.state, "begun");
    assert.equal(r.body.tx_hash, null);
    return { key, id: r.body.settlement_id };
  };
  const until = async (l, id, pred, what) => {
    let st;
    for (let i = 0; i < 150; i++) {
      st = (await l.call("ledger.settlement", { settlement_id: id })).body;
      if (pred(st)) return st;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.fail(`${what}: ${JSON.stringify(st)}`);
  };
  try {
    await withOwnLedger(pg.createDatabase("svm_unsigned"), SECRET, "unsigned", env, async ({ l, verifier: ver }) => {
      // one the endpoint lets through: recorded, sent, confirmed; the tokens moved once
      const wallet = sol.wallets[1];
      const before = await tokens(wallet.address), paidBefore = await tokens(treasury);
      const height = BigInt(await solRpc.getBlockHeight({ commitment: "processed" }).send());
      const a = await begun(l, wallet);
      const signed = await until(l, a.id, (s) => s.state !== "begun", "recorded by the tracker");
      assert.equal(signed.tx_hash, a.key.nonce, "its id is the fee payer's signature");
      assert.ok(BigInt(signed.last_valid_height) >= height + 300n, `last valid ${signed.last_valid_height}, height was ${height}`);
      const done = await until(l, a.id, (s) => s.state === "confirmed" || s.state === "failed", "judged");
      assert.equal(done.state, "confirmed", JSON.stringify(done));
      assert.equal((await l.call("ledger.authorization", a.key)).body.state, "settled");
      assert.equal(await tokens(wallet.address), before - 10000n);
      assert.equal(await tokens(treasury), paidBefore + 10000n);
      assert.ok(ver.lines.some((e) => e.json?.msg?.startsWith("unsigned settlement found")), "the tracker says so");
      // one the endpoint never lets through: sent in vain, expired past its last valid height, failed
      lie.dropSend = true;
      const wallet2 = sol.wallets[0];
      const before2 = await tokens(wallet2.address);
      const b = await begun(l, wallet2);
      const signed2 = await until(l, b.id, (s) => s.state !== "begun", "recorded by the tracker");
      lie.height = Number(signed2.last_valid_height) + 1;
      lie.blockhashUnknown = true;
      const end = await until(l, b.id, (s) => s.state !== "signed", "judged expired");
      assert.equal(end.state, "failed", JSON.stringify(end));
      assert.equal(end.reason, "invalid_exact_svm_blockhash_expired");
      assert.equal((await l.call("ledger.authorization", b.key)).body.state, "failed");
      assert.equal(await tokens(wallet2.address), before2, "nothing moved");
    });
  } finally {
    proxy.close();
  }
});

// A proxy in front of surfpool that can lie: the send dropped (the transaction known by its id), the
// blockhash unknown, the height given, the genesis hash of another cluster.
async function lyingProxy(lie) {
  const proxy = http.createServer((req, res) => {
    let data = "";
    req.on("data", (c) => { data += c; });
    req.on("end", async () => {
      const call = JSON.parse(data);
      const answer = (result) => res.end(JSON.stringify({ jsonrpc: "2.0", id: call.id, result }));
      if (call.method === "sendTransaction" && lie.dropSend) {
        const wire = Buffer.from(call.params[0], "base64");
        return answer(getBase58Decoder().decode(wire.subarray(1, 65)));
      }
      if (call.method === "getGenesisHash" && lie.genesis) return answer(lie.genesis);
      if (call.method === "isBlockhashValid" && lie.blockhashUnknown) return answer({ context: { slot: 1 }, value: false });
      if (call.method === "getBlockHeight" && lie.height !== null) return answer(lie.height);
      const r = await fetch(sol.rpcUrl, { method: "POST", headers: { "content-type": "application/json" }, body: data });
      res.end(await r.text());
    });
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  return proxy;
}

test("an endpoint serving another cluster: verify and settle answer unavailable, a pending settlement is left alone until the cluster is right", async () => {
  // the hash expected, given or (mainnet's id) implied, is checked at start: mainnet cannot be borrowed
  const DEVNET_GENESIS = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG";
  for (const [net, hash, why] of [["solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", DEVNET_GENESIS, /mainnet's id names mainnet's genesis hash/],
    [NETWORK, "not-base58-0OIl", /not a base58 genesis hash/]]) {
    for (const service of ["farebox-verifier", "farebox-chain-watcher"]) {
      const r = spawnSync(bin(service), [], { encoding: "utf8", timeout: 10000, env: { ...process.env,
        FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`, FAREBOX_METRICS_LISTEN: "", FAREBOX_EVM_NETWORK: "off",
        FAREBOX_SOLANA_NETWORK: net, FAREBOX_SOLANA_GENESIS_HASH: hash } });
      assert.equal(r.status, 2, `${service}: ${r.stderr}`);
      assert.match(r.stderr, /FAREBOX_SOLANA_GENESIS_HASH/);
      assert.match(r.stderr, why);
    }
  }
  const honest = { dropSend: true, blockhashUnknown: false, height: null, genesis: null };
  const lying = { dropSend: true, blockhashUnknown: true, height: null, genesis: DEVNET_GENESIS };
  const [pa, pb] = [await lyingProxy(honest), await lyingProxy(lying)];
  const env = (proxy) => ({ FAREBOX_EVM_NETWORK: "off", FAREBOX_SOLANA_NETWORK: NETWORK,
    FAREBOX_SOLANA_RPC_URLS: `http://127.0.0.1:${proxy.address().port}`, FAREBOX_SOLANA_MINT: sol.mint,
    FAREBOX_SOLANA_GENESIS_HASH: sol.genesisHash, FAREBOX_SOLANA_FEE_PAYER_KEY: sol.payer.secretKey,
    FAREBOX_SETTLE_WAIT_MS: "1500" });
  let other;
  try {
    await withOwnLedger(pg.createDatabase("svm_cluster"), SECRET, "cluster", env(pa), async ({ l, v, ledger: own }) => {
      // a settlement left pending (its send dropped) through an endpoint of the right cluster
      const wallet = sol.wallets[1];
      const before = await tokens(wallet.address);
      const s = (await v.call("verifier.settle", { payload: await kitPayload(wallet), requirements: requirements() },
        { deadlineMs: 30000 })).body;
      assert.equal(s.errorReason, "settlement_pending", JSON.stringify(s));
      const key = { network: NETWORK, payer: wallet.address, nonce: s.transaction };
      const auth = (await l.call("ledger.authorization", key)).body;
      const settlement = async () => (await l.call("ledger.settlement", { authorization_id: auth.authorization_id })).body;
      const st = await settlement();
      assert.equal(st.state, "signed");
      // a verifier whose endpoint answers devnet's genesis hash (and, were it believed, a blockhash
      // unknown past the settlement's last valid height: a failed settlement)
      lying.height = Number(st.last_valid_height) + 1;
      other = await startService("verifier", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
        FAREBOX_REPLICA: "verifier-wrong-cluster", FAREBOX_LEDGER_ENDPOINT: own.endpoint, ...env(pb) });
      const ov = new RpcClient(other.endpoint);
      try {
        for (const method of ["verifier.verify", "verifier.settle"]) {
          const r = await ov.call(method, { payload: await kitPayload(sol.wallets[0]), requirements: requirements() },
            { deadlineMs: 15000 });
          assert.equal(r.status, "error", `${method}: ${JSON.stringify(r.body)}`);
          assert.equal(r.code, "unavailable");
          assert.match(r.message, new RegExp(`serves another cluster: its genesis hash is ${DEVNET_GENESIS}, not ${sol.genesisHash}'s`));
        }
        await other.waitForMsg("solana endpoint serves another cluster; pending settlements are left alone", { timeoutMs: 15000 });
        await new Promise((r) => setTimeout(r, 3500)); // another tracker round
        assert.equal((await settlement()).state, "signed", "not judged on another cluster's word");
        // the endpoint right again: the tracker believes it, and the settlement has expired
        lying.genesis = null;
        await waitUntil(async () => (await settlement()).state !== "signed", { timeoutMs: 20000, what: "the settlement judged" });
        const end = await settlement();
        assert.equal(end.state, "failed", JSON.stringify(end));
        assert.equal(end.reason, "invalid_exact_svm_blockhash_expired");
        assert.equal(await tokens(wallet.address), before, "nothing moved");
      } finally {
        ov.close();
        assert.equal((await other.stop()).code, 0);
      }
    });
  } finally {
    pa.close();
    pb.close();
  }
});

test("signed-message proofs (ed25519): a Solana wallet's proof verifies once, in base58 or base64", async () => {
  const wallet = sol.wallets[0];
  const keys = await createKeyPairFromBytes(getBase58Encoder().encode(wallet.secretKey));
  const proof = async (encoding, over = {}) => {
    const p = { from: wallet.address, amount: 250, timestamp: Date.now(), requestId: `req_${crypto.randomUUID()}`, network: "solana", ...over };
    const text = `PromptPort Payment\nRequest ID: ${p.requestId}\nAmount: ${p.amount} USDC cents\nTimestamp: ${p.timestamp}`;
    const sig = new Uint8Array(await signBytes(keys.privateKey, new TextEncoder().encode(text)));
    return { ...p, signature: encoding === "base58" ? getBase58Decoder().decode(sig) : Buffer.from(sig).toString("base64") };
  };
  const call = async (body) => (await rpc.call("verifier.verify_message", body, { deadlineMs: 10000 })).body;
  for (const encoding of ["base58", "base64"]) {
    const p = await proof(encoding);
    const r = await call(p);
    assert.equal(r.valid, true, JSON.stringify(r));
    assert.equal(r.signer, wallet.address);
    assert.equal(r.amount_micro, 2_500_000);
    assert.equal((await call(p)).reason, "request_id_used");
  }
  assert.equal((await call({ ...(await proof("base58")), from: sol.wallets[1].address })).reason, "message_signer_mismatch");
  assert.equal((await call({ ...(await proof("base58")), amount: 251 })).reason, "message_signer_mismatch");
  assert.equal((await call(await proof("base58", { timestamp: Date.now() - 3_600_000 }))).reason, "message_expired");
  await ledgerAudit();
});
