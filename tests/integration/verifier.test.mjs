// verifier.test.mjs - EVM "exact" payments made by the official x402 client
// (@x402/evm) and by viem, verified and settled by farebox's verifier on anvil
// through its RPC: balances move on chain, AuthorizationUsed is emitted, every
// bad payment gets its own reason and settles nothing, and 100 concurrent
// settles of one authorization over 3 verifier replicas make one transaction.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { createWalletClient, createPublicClient, http, keccak256, toHex, encodeFunctionData, parseAbi } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { freePort, sleep, startService, stopAll, waitUntil, withOwnLedger } from "../lib/harness.mjs";
import nodeHttp from "node:http";
import { createRequire } from "node:module";
import { startPostgres } from "../lib/pg.mjs";
import { startChains, ethRpc, rpcProxy } from "../lib/chains.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const SECRET = crypto.randomBytes(32).toString("hex");
let pg, chains, ledger, verifiers = [], rpc, evm, treasury, tokenAbi;
const NETWORK = "eip155:84532";
const erc20 = parseAbi(["function balanceOf(address) view returns (uint256)",
  "function authorizationState(address,bytes32) view returns (bool)"]);

function requirements(over = {}) {
  return { scheme: "exact", network: NETWORK, amount: "10000", asset: evm.token, payTo: treasury,
    maxTimeoutSeconds: 60, extra: { name: "USDC", version: "2" }, ...over };
}

/** A PAYMENT-SIGNATURE header made by the official client for these requirements. */
async function officialHeader(account, req = requirements()) {
  const client = registerExactEvmScheme(new x402Client(), { signer: account });
  client.setSpendControls(false);
  const h = new x402HTTPClient(client);
  const payload = await h.createPaymentPayload({ x402Version: 2, resource: { url: "http://farebox.test/r", description: "", mimeType: "" }, accepts: [req] });
  return { header: h.encodePaymentSignatureHeader(payload)["PAYMENT-SIGNATURE"], payload };
}

/** A payload signed directly with viem's signTypedData, with any field overridden. */
async function viemPayload(account, { req = requirements(), auth = {}, domain = {}, sigHook } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const message = { from: account.address, to: req.payTo, value: BigInt(req.amount), validAfter: 0n,
    validBefore: BigInt(now + 60), nonce: toHex(crypto.randomBytes(32)), ...auth };
  let signature = await account.signTypedData({
    domain: { name: req.extra.name, version: req.extra.version, chainId: 84532, verifyingContract: req.asset, ...domain },
    types: { TransferWithAuthorization: [
      { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
      { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" }] },
    primaryType: "TransferWithAuthorization", message });
  if (sigHook) signature = sigHook(signature);
  return { x402Version: 2, resource: { url: "http://farebox.test/r" }, accepted: req, payload: { signature,
    authorization: { from: message.from, to: message.to, value: message.value.toString(),
      validAfter: message.validAfter.toString(), validBefore: message.validBefore.toString(), nonce: message.nonce } } };
}

const balance = (who) => ethRpc(evm.rpcUrl, "eth_call", [{ to: evm.token,
  data: encodeFunctionData({ abi: erc20, functionName: "balanceOf", args: [who] }) }, "latest"]).then(BigInt);

before(async () => {
  pg = await startPostgres();
  const db = pg.createDatabase("verifier");
  chains = await startChains();
  evm = chains.evm;
  treasury = evm.accounts[8].address;
  const lp = await freePort();
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: SECRET });
  const base = await freePort();
  for (let i = 0; i < 3; i++) {
    verifiers.push(await startService("verifier", {
      FAREBOX_RPC_BIND: `tcp://127.0.0.1:${base}-${base + 9}`, FAREBOX_REPLICA: `verifier-${i}`,
      FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_EVM_NETWORK: NETWORK,
      FAREBOX_EVM_RPC_URLS: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token,
      FAREBOX_SETTLEMENT_KEY: evm.deployer.privateKey, FAREBOX_SETTLE_WAIT_MS: "15000" }));
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

test("supported lists the configured network in v2 and v1 form, and the settlement wallet", async () => {
  const r = await rpc.call("verifier.supported", {});
  assert.deepEqual(r.body.kinds, [{ x402Version: 2, scheme: "exact", network: NETWORK },
    { x402Version: 1, scheme: "exact", network: "base-sepolia" }]);
  assert.deepEqual(r.body.signers["eip155:*"], [privateKeyToAccount(evm.deployer.privateKey).address]);
});

test("the official @x402/evm client's payment verifies, settles on anvil, and cannot be settled again", async () => {
  const payer = privateKeyToAccount(evm.accounts[0].privateKey);
  const { header, payload } = await officialHeader(payer);
  const v = await verify({ header, requirements: requirements() });
  assert.equal(v.isValid, true, JSON.stringify(v));
  assert.equal(v.payer, payer.address);

  const before = await balance(payer.address), tBefore = await balance(treasury);
  const s = await settle({ header, requirements: requirements() });
  assert.equal(s.success, true, JSON.stringify(s));
  assert.match(s.transaction, /^0x[0-9a-f]{64}$/);
  assert.equal(s.network, NETWORK);
  assert.equal(await balance(payer.address), before - 10000n);
  assert.equal(await balance(treasury), tBefore + 10000n);
  const receipt = await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [s.transaction]);
  assert.equal(receipt.status, "0x1");
  const usedTopic = keccak256(toHex("AuthorizationUsed(address,bytes32)"));
  const nonce = payload.payload.authorization.nonce;
  assert.ok(receipt.logs.some((l) => l.topics[0] === usedTopic && l.topics[2] === nonce), "AuthorizationUsed emitted");
  assert.equal(receipt.from.toLowerCase(), privateKeyToAccount(evm.deployer.privateKey).address.toLowerCase());

  // settling again answers the same transaction, and sends nothing new
  const again = await settle({ header, requirements: requirements() });
  assert.equal(again.success, true);
  assert.equal(again.transaction, s.transaction);
  assert.equal(await balance(payer.address), before - 10000n);
  // and the authorization is now used: verify refuses it
  const replay = await verify({ header, requirements: requirements() });
  assert.equal(replay.isValid, false);
  assert.equal(replay.invalidReason, "invalid_exact_evm_nonce_already_used");
  await ledgerAudit();
});

test("a viem signTypedData payload (decoded, not as a header) verifies and settles", async () => {
  const payer = privateKeyToAccount(evm.accounts[1].privateKey);
  const p = await viemPayload(payer);
  assert.equal((await verify({ payload: p, requirements: requirements() })).isValid, true);
  const s = await settle({ payload: p, requirements: requirements() });
  assert.equal(s.success, true, JSON.stringify(s));
  await ledgerAudit();
});

test("every bad payment gets its own reason and settles nothing", async () => {
  const payer = privateKeyToAccount(evm.accounts[2].privateKey);
  const broke = privateKeyToAccount(toHex(crypto.randomBytes(32))); // holds no tokens
  const now = Math.floor(Date.now() / 1000);
  const before = await balance(payer.address);
  const flipS = (sig) => {
    // s' = n - s and v flipped: the same signature in its high-s form
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
    const r = sig.slice(2, 66), s = BigInt("0x" + sig.slice(66, 130)), v = parseInt(sig.slice(130), 16);
    return "0x" + r + (n - s).toString(16).padStart(64, "0") + (v === 27 ? "1c" : "1b");
  };
  const cases = [
    ["wrong chain", await viemPayload(payer, { req: requirements({ network: "eip155:8453" }) }), requirements({ network: "eip155:8453" }), "invalid_network"],
    ["network differs from the requirements", await viemPayload(payer, { req: requirements({ network: "eip155:8453" }) }), requirements(), "invalid_exact_evm_network_mismatch"],
    ["wrong domain name", await viemPayload(payer, { domain: { name: "USD Coin" } }), requirements(), "invalid_exact_evm_signature"],
    ["wrong domain version", await viemPayload(payer, { domain: { version: "1" } }), requirements(), "invalid_exact_evm_signature"],
    ["signed for another chain id", await viemPayload(payer, { domain: { chainId: 8453 } }), requirements(), "invalid_exact_evm_signature"],
    ["expired", await viemPayload(payer, { auth: { validBefore: BigInt(now - 10) } }), requirements(), "invalid_exact_evm_payload_authorization_valid_before"],
    ["expires within the margin", await viemPayload(payer, { auth: { validBefore: BigInt(now + 2) } }), requirements(), "invalid_exact_evm_payload_authorization_valid_before"],
    ["not yet valid", await viemPayload(payer, { auth: { validAfter: BigInt(now + 600) } }), requirements(), "invalid_exact_evm_payload_authorization_valid_after"],
    ["wrong recipient", await viemPayload(payer, { req: requirements({ payTo: evm.accounts[7].address }) }), requirements(), "invalid_exact_evm_recipient_mismatch"],
    ["wrong amount", await viemPayload(payer, { req: requirements({ amount: "9999" }) }), requirements(), "invalid_exact_evm_payload_authorization_value_mismatch"],
    ["high-s signature", await viemPayload(payer, { sigHook: flipS }), requirements(), "invalid_exact_evm_signature"],
    ["signed by someone else", await viemPayload(broke, { auth: { from: payer.address } }), requirements(), "invalid_exact_evm_signature"],
    ["another token", await viemPayload(payer, { req: requirements({ asset: evm.accounts[6].address }) }), requirements({ asset: evm.accounts[6].address }), "invalid_exact_evm_asset_mismatch"],
    ["missing EIP-712 domain", await viemPayload(payer), requirements({ extra: {} }), "invalid_exact_evm_missing_eip712_domain"],
    ["payer without funds", await viemPayload(broke), requirements(), "invalid_exact_evm_insufficient_balance"],
    ["scheme is not exact", await viemPayload(payer, { req: requirements({ scheme: "upto" }) }), requirements({ scheme: "upto" }), "invalid_exact_evm_scheme"],
  ];
  for (const [name, payload, req, reason] of cases) {
    const v = await verify({ payload, requirements: req });
    assert.equal(v.isValid, false, `${name}: accepted`);
    assert.equal(v.invalidReason, reason, `${name}: ${v.invalidReason} (${v.invalidMessage})`);
    const s = await settle({ payload, requirements: req });
    assert.equal(s.success, false, `${name}: settled`);
    assert.equal(s.errorReason, reason, `${name} (settle): ${s.errorReason}`);
    assert.equal(s.transaction, "");
  }
  assert.equal(await balance(payer.address), before, "nothing moved");

  // undecodable input is refused before any check
  for (const header of ["not base64!", Buffer.from("not json").toString("base64"),
    Buffer.from(JSON.stringify({ x402Version: 2 })).toString("base64")]) {
    const r = await rpc.call("verifier.verify", { header, requirements: requirements() });
    if (r.status === "error") assert.equal(r.code, "bad_request");
    else assert.equal(r.body.invalidReason, "invalid_payload", JSON.stringify(r.body));
  }
  const noReq = await rpc.call("verifier.verify", { header: "abc" });
  assert.equal(noReq.code, "bad_request");
  await ledgerAudit();
});

test("100 concurrent settles of one authorization across 3 verifier replicas make one transaction", async () => {
  const payer = privateKeyToAccount(evm.accounts[3].privateKey);
  const p = await viemPayload(payer);
  const before = await balance(payer.address);
  const sender = privateKeyToAccount(evm.deployer.privateKey).address;
  const nonceBefore = BigInt(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [sender, "latest"]));
  const results = await Promise.all(Array.from({ length: 100 }, () =>
    rpc.call("verifier.settle", { payload: p, requirements: requirements() }, { deadlineMs: 30000 })));
  for (const r of results) assert.equal(r.status, "ok", `${r.code}: ${r.message}`);
  const hashes = new Set(results.map((r) => r.body.transaction));
  assert.equal(hashes.size, 1, `transactions: ${[...hashes].join(" ")}`);
  assert.ok(results.every((r) => r.body.success), JSON.stringify(results.find((r) => !r.body.success)?.body));
  assert.equal(new Set(results.map((r) => r.replica)).size, 3, "all three replicas took part");
  assert.equal(await balance(payer.address), before - 10000n, "paid once");
  await sleep(300);
  const nonceAfter = BigInt(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [sender, "latest"]));
  assert.equal(nonceAfter - nonceBefore, 1n, "one transaction from the settlement wallet");
  await ledgerAudit();
});

/** A Chat402-style signed-message proof made with viem's signMessage (EIP-191 personal_sign). */
async function messageProof(account, { requestId = `req_${crypto.randomUUID()}`, amount = 1000, timestamp = Date.now(), sign } = {}) {
  const signed = { requestId, amount, timestamp, ...sign };
  const message = `PromptPort Payment\nRequest ID: ${signed.requestId}\nAmount: ${signed.amount} USDC cents\nTimestamp: ${signed.timestamp}`;
  const signature = await account.signMessage({ message });
  return { from: account.address, amount, signature, timestamp, requestId, network: "ethereum" };
}

test("signed-message proofs (EIP-191): verified, stale or reused ones refused, each request id used once", async () => {
  const wallet = privateKeyToAccount(evm.accounts[4].privateKey);
  const other = privateKeyToAccount(evm.accounts[5].privateKey);
  const call = async (body) => {
    const r = await rpc.call("verifier.verify_message", body, { deadlineMs: 10000 });
    assert.equal(r.status, "ok", `${r.code}: ${r.message}`);
    return r.body;
  };
  const proof = await messageProof(wallet);
  const first = await call(proof);
  assert.equal(first.valid, true, JSON.stringify(first));
  assert.equal(first.signer, wallet.address);
  assert.equal(first.amount_micro, 10_000_000);
  assert.ok(first.authorization_id > 0);
  const again = await call(proof);
  assert.equal(again.valid, false);
  assert.equal(again.reason, "request_id_used");
  // request ids are per wallet: another wallet may use the same id
  assert.equal((await call(await messageProof(other, { requestId: proof.requestId }))).valid, true);

  const cases = [
    ["stale", await messageProof(wallet, { timestamp: Date.now() - 600_000 }), "message_expired"],
    ["from the future", await messageProof(wallet, { timestamp: Date.now() + 600_000 }), "message_from_future"],
    ["signed for another amount", await messageProof(wallet, { sign: { amount: 1 } }), "message_signer_mismatch"],
    ["signed by another wallet", { ...(await messageProof(other)), from: wallet.address }, "message_signer_mismatch"],
    ["garbled signature", { ...(await messageProof(wallet)), signature: "0x1234" }, "invalid_message_signature"],
    ["text sent differs", { ...(await messageProof(wallet)), message: "PromptPort Payment" }, "message_mismatch"],
  ];
  for (const [name, body, reason] of cases) {
    const r = await call(body);
    assert.equal(r.valid, false, `${name}: accepted`);
    assert.equal(r.reason, reason, `${name}: ${r.reason} (${r.message})`);
  }
  // a refused proof used nothing up: the same request id, signed properly, still works
  const fresh = await messageProof(wallet, { requestId: cases[0][1].requestId });
  assert.equal((await call(fresh)).valid, true);

  // consume: false checks without using the request id
  const peek = await messageProof(wallet);
  for (let i = 0; i < 2; i++) assert.equal((await call({ ...peek, consume: false })).valid, true);
  assert.equal((await call(peek)).valid, true);
  assert.equal((await call({ ...peek, consume: false })).reason, "request_id_used");

  // malformed proofs are bad requests
  for (const bad of [{ ...proof, requestId: "a\nAmount: 1" }, { ...proof, amount: -1 }, { ...proof, network: "dogecoin" },
    { ...proof, from: "0x12" }, { ...proof, timestamp: "soon" }, { ...proof, consume: "yes" }, {}]) {
    const r = await rpc.call("verifier.verify_message", bad);
    assert.equal(r.code, "bad_request", JSON.stringify(bad));
  }

  // 30 concurrent proofs with one request id over 3 replicas: one is accepted
  const race = await messageProof(wallet);
  const results = await Promise.all(Array.from({ length: 30 }, () => call(race)));
  assert.equal(results.filter((r) => r.valid).length, 1);
  assert.ok(results.filter((r) => !r.valid).every((r) => r.reason === "request_id_used"));
  await ledgerAudit();
});

test("an endpoint serving another chain id: verify and settle answer unavailable, nothing moves", async () => {
  // configured for Sepolia (a test chain: anvil's development key is allowed there), served Base Sepolia's
  const wrong = await startService("verifier", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_REPLICA: "verifier-wrong-chain", FAREBOX_LEDGER_ENDPOINT: ledger.endpoint,
    FAREBOX_EVM_NETWORK: "eip155:11155111", FAREBOX_EVM_RPC_URLS: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token,
    FAREBOX_SETTLEMENT_KEY: evm.deployer.privateKey, FAREBOX_SOLANA_NETWORK: "off" });
  const client = new RpcClient(wrong.endpoint);
  try {
    const payer = privateKeyToAccount(evm.accounts[4].privateKey);
    const req = requirements({ network: "eip155:11155111" });
    const p = await viemPayload(payer, { req, domain: { chainId: 11155111 } });
    const before = await balance(payer.address);
    for (const method of ["verifier.verify", "verifier.settle"]) {
      const r = await client.call(method, { payload: p, requirements: req }, { deadlineMs: 15000 });
      assert.equal(r.status, "error", `${method}: ${JSON.stringify(r.body)}`);
      assert.equal(r.code, "unavailable");
      assert.match(r.message, /serves chain id 84532, not 11155111/);
    }
    assert.equal(await balance(payer.address), before);
    assert.ok(wrong.lines.some((e) => e.json?.level === "error" && e.json.msg === "evm endpoint serves another chain"));
  } finally {
    client.close();
    assert.equal((await wrong.stop()).code, 0);
  }
});

// A transaction of anyone's can execute a payer's authorizations: when farebox's
// own settlement reverts because the nonce was used, the transaction that used
// it is found by its AuthorizationUsed event, and the payment stands if that
// execution moved the money to the payee. Only the Transfer right after that
// event is that execution's: a batch executing authorization 1 (V to the
// treasury) beside a 0-value self-transfer under authorization 2's nonce holds
// one Transfer to the treasury, which must confirm settlement 1 only. Taking any
// Transfer of the receipt confirmed both (and a topup paid by them was credited
// twice for one payment).
const BATCH_SOURCE = `// SPDX-License-Identifier: MIT
pragma solidity ^0.8.0;
contract Batch {
  function run(address t, bytes[] calldata calls) external {
    for (uint i = 0; i < calls.length; i++) { (bool ok, ) = t.call(calls[i]); require(ok, "call failed"); }
  }
}`;

test("one transaction executing two authorizations' nonces with one transfer to the payee confirms one settlement, not both", async () => {
  const solc = createRequire(import.meta.url)("solc");
  const out = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources: { "Batch.sol": { content: BATCH_SOURCE } },
    settings: { evmVersion: "cancun", outputSelection: { "*": { Batch: ["evm.bytecode.object"] } } } })));
  const deployer = evm.accounts[1].address;
  const deployed = await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: deployer, gas: "0x200000",
    data: "0x" + out.contracts["Batch.sol"].Batch.evm.bytecode.object }]);
  const batch = (await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [deployed])).contractAddress;
  assert.ok(batch, "the batch contract is deployed");

  const payer = privateKeyToAccount(evm.accounts[7].privateKey);
  const p1 = await viemPayload(payer), p2 = await viemPayload(payer, { auth: { validBefore: BigInt(Math.floor(Date.now() / 1000) + 600) } });
  const twa = parseAbi(["function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature)"]);
  const call = (a, signature) => encodeFunctionData({ abi: twa, functionName: "transferWithAuthorization",
    args: [a.from, a.to, BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce, signature] });
  // the payer's own 0-value transfer to itself under authorization 2's nonce
  const self0 = { from: payer.address, to: payer.address, value: 0n, validAfter: 0n,
    validBefore: BigInt(Math.floor(Date.now() / 1000) + 600), nonce: p2.payload.authorization.nonce };
  const selfSig = await payer.signTypedData({ domain: { name: requirements().extra.name,
    version: requirements().extra.version, chainId: 84532, verifyingContract: evm.token },
  types: { TransferWithAuthorization: [
    { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" }] },
  primaryType: "TransferWithAuthorization", message: self0 });
  const batchBatch = parseAbi(["function run(address t, bytes[] calls)"]);
  const data = encodeFunctionData({ abi: batchBatch, functionName: "run", args: [evm.token,
    [call(p1.payload.authorization, p1.payload.signature), call({ ...self0 }, selfSig)]] });

  const payerBefore = await balance(payer.address), treasuryBefore = await balance(treasury);
  await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
  let s1, s2;
  try {
    // both settlements sent, not mined; then the batch, with a higher tip, mined first in the same block
    s1 = settle({ payload: p1, requirements: requirements() });
    s2 = settle({ payload: p2, requirements: requirements() });
    await waitUntil(async () => Number((await ethRpc(evm.rpcUrl, "txpool_status", [])).pending) >= 2,
      { timeoutMs: 15000, what: "both settlements sent" });
    const tx = await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: deployer, to: batch, data, gas: "0x100000",
      maxPriorityFeePerGas: "0x174876e800", maxFeePerGas: "0x2540be4000" }]);
    await ethRpc(evm.rpcUrl, "evm_mine", []);
    assert.equal((await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [tx])).status, "0x1", "the batch went through");
  } finally {
    await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
  }
  const [r1, r2] = await Promise.all([s1, s2]);
  assert.equal(r1.success, true, JSON.stringify(r1));
  assert.equal(r2.success, false, JSON.stringify(r2));
  assert.equal(r2.errorReason, "invalid_exact_evm_nonce_already_used", JSON.stringify(r2));
  assert.equal(await balance(treasury) - treasuryBefore, BigInt(requirements().amount), "one payment reached the treasury");
  assert.equal(payerBefore - await balance(payer.address), BigInt(requirements().amount));
  await ledgerAudit();
});

// With several endpoints each one's chain id is asked on its own
// (fb_jsonrpc_check): the per-call check sees only the endpoint that answers.
// The first endpoint here says it serves mainnet (and would pass every other
// call on to anvil): without the check it answers every call, and each verify
// is refused as unavailable.
test("several endpoints: each one's chain id is checked on its own, one serving another chain is never used", async () => {
  const asked = [];
  const mainnet = (call, answer) => {
    asked.push(call.method);
    if (call.method !== "eth_chainId") return false;
    answer("0x1");
    return true;
  };
  const liar = await rpcProxy(evm.rpcUrl, mainnet), liar2 = await rpcProxy(evm.rpcUrl, mainnet);
  try {
    await twoEndpoints(liar, liar2, asked);
  } finally {
    await liar.close();
    await liar2.close();
  }
  await ledgerAudit();
});

async function twoEndpoints(liar, liar2, asked) {
  const env = { FAREBOX_LEDGER_ENDPOINT: ledger.endpoint, FAREBOX_EVM_NETWORK: NETWORK, FAREBOX_EVM_TOKEN: evm.token,
    FAREBOX_SETTLEMENT_KEY: evm.deployer.privateKey, FAREBOX_SOLANA_NETWORK: "off" };
  const two = await startService("verifier", { ...env, FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_REPLICA: "verifier-two-endpoints", FAREBOX_EVM_RPC_URLS: `${liar.url},${evm.rpcUrl}` });
  const client = new RpcClient(two.endpoint);
  try {
    const payer = privateKeyToAccount(evm.accounts[6].privateKey);
    const before = await balance(payer.address);
    const p = await viemPayload(payer);
    const v = await client.call("verifier.verify", { payload: p, requirements: requirements() }, { deadlineMs: 15000 });
    assert.equal(v.body?.isValid, true, `${v.code}: ${v.message} ${JSON.stringify(v.body)}`);
    const s = await client.call("verifier.settle", { payload: p, requirements: requirements() }, { deadlineMs: 40000 });
    assert.equal(s.body?.success, true, `${s.code}: ${s.message} ${JSON.stringify(s.body)}`);
    assert.equal(await balance(payer.address), before - BigInt(requirements().amount));
    assert.deepEqual([...new Set(asked)], ["eth_chainId"], "the other chain's endpoint is asked nothing else");
    assert.ok(two.lines.some((e) => e.json?.msg === "chain endpoint failed its check; it is not used" &&
      /serves chain id 1, not 84532/.test(e.json.why)));
  } finally {
    client.close();
    assert.equal((await two.stop()).code, 0);
  }
  // every endpoint on another chain: a call is refused as unavailable, saying why
  const none = await startService("verifier", { ...env, FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_REPLICA: "verifier-no-endpoint", FAREBOX_EVM_RPC_URLS: `${liar.url},${liar2.url}` });
  const c2 = new RpcClient(none.endpoint);
  try {
    const p = await viemPayload(privateKeyToAccount(evm.accounts[6].privateKey));
    const r = await c2.call("verifier.verify", { payload: p, requirements: requirements() }, { deadlineMs: 15000 });
    assert.equal(r.code, "unavailable", JSON.stringify(r));
    assert.match(r.message, /passed its check.*serves chain id 1, not 84532/);
  } finally {
    c2.close();
    assert.equal((await none.stop()).code, 0);
  }
}

test("FAREBOX_VERIFY_CHAIN_CHECKS=false: a verify that records the payment (the edge's) records it, without asking the chain; any verify of a recorded one is refused", async () => {
  const offline = await startService("verifier", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_REPLICA: "verifier-no-chain-checks", FAREBOX_LEDGER_ENDPOINT: ledger.endpoint,
    FAREBOX_EVM_NETWORK: NETWORK, FAREBOX_EVM_RPC_URLS: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token,
    FAREBOX_SOLANA_NETWORK: "off", FAREBOX_VERIFY_CHAIN_CHECKS: "false" });
  const client = new RpcClient(offline.endpoint);
  try {
    const payer = privateKeyToAccount(evm.accounts[5].privateKey);
    const p = await viemPayload(payer);
    const r = await client.call("verifier.verify", { payload: p, requirements: requirements(), record: true,
      resource: "http://farebox.test/r" }, { deadlineMs: 15000 });
    assert.equal(r.status, "ok", `${r.code}: ${r.message}`);
    assert.equal(r.body.isValid, true, JSON.stringify(r.body));
    assert.ok(r.body.authorizationId > 0, JSON.stringify(r.body));
    // recorded: the same payment again is used
    const again = await client.call("verifier.verify", { payload: p, requirements: requirements(), record: true,
      resource: "http://farebox.test/r" }, { deadlineMs: 15000 });
    assert.equal(again.body.isValid, false);
    assert.equal(again.body.invalidReason, "invalid_exact_evm_nonce_already_used");
    // a plain verify (the facilitator's) asks the ledger too, though not the chain
    const plain = await client.call("verifier.verify", { payload: p, requirements: requirements() },
      { deadlineMs: 15000 });
    assert.equal(plain.body.isValid, false, JSON.stringify(plain.body));
    assert.equal(plain.body.invalidReason, "invalid_exact_evm_nonce_already_used");
    const fresh = await client.call("verifier.verify", { payload: await viemPayload(payer), requirements: requirements() },
      { deadlineMs: 15000 });
    assert.equal(fresh.body.isValid, true, JSON.stringify(fresh.body));
  } finally {
    client.close();
    assert.equal((await offline.stop()).code, 0);
  }
  await ledgerAudit();
});

// FAREBOX_EVM_SETTLE_CONFIRMATIONS: a settlement's verdict waits until its
// block is that deep. Here with 3: a settlement mined at once (anvil's
// automine) with no block after it is still pending when settle's wait ends;
// a reorg (anvil's evm_revert) then takes its block away, and the payment
// moves only when the transaction is mined again. The tracker, sending it
// again, confirms it once two more blocks are on top. With one confirmation
// (the default) settle would have answered success for the block the reorg
// undid. Its own ledger: the file's other verifiers (one confirmation) would
// confirm it from their trackers.
test("FAREBOX_EVM_SETTLE_CONFIRMATIONS: a settlement stands only once its block is that deep; a reorg before that undoes nothing recorded", async () => {
  const env = { FAREBOX_EVM_NETWORK: NETWORK, FAREBOX_EVM_RPC_URLS: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token,
    FAREBOX_SETTLEMENT_KEY: evm.deployer.privateKey, FAREBOX_SOLANA_NETWORK: "off", FAREBOX_SETTLE_WAIT_MS: "3000",
    FAREBOX_EVM_SETTLE_CONFIRMATIONS: "3" };
  await withOwnLedger(pg.createDatabase("verifier_depth"), SECRET, "depth", env, async ({ l, v, verifier: ver }) => {
    const payer = privateKeyToAccount(evm.accounts[5].privateKey);
    const before = await balance(payer.address), tBefore = await balance(treasury);
    const p = await viemPayload(payer);
    const snap = await ethRpc(evm.rpcUrl, "evm_snapshot", []);
    const first = (await v.call("verifier.settle", { payload: p, requirements: requirements() }, { deadlineMs: 30000 })).body;
    assert.equal(first.success, false, JSON.stringify(first));
    assert.equal(first.errorReason, "settlement_pending");
    assert.match(first.errorMessage, /1 of 3 confirmations/);
    const tx = first.transaction;
    assert.equal((await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [tx])).status, "0x1", "mined, one block deep");
    const key = { network: NETWORK, payer: payer.address.toLowerCase(), nonce: p.payload.authorization.nonce };
    const auth = (await l.call("ledger.authorization", key)).body;
    const settlement = async () => (await l.call("ledger.settlement", { authorization_id: auth.authorization_id })).body;
    assert.equal((await settlement()).state, "signed", "not recorded confirmed");
    // a reorg takes its block away: the transfer is gone, and nothing was recorded of it
    await ethRpc(evm.rpcUrl, "evm_revert", [snap]);
    assert.equal(await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [tx]), null);
    assert.equal(await balance(payer.address), before);
    // mined again (the tracker sends it again), then two blocks on top: confirmed
    let receipt = null;
    for (let i = 0; i < 40 && !receipt; i++) {
      await sleep(500);
      receipt = await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [tx]);
      if (!receipt && i % 4 === 3) await ethRpc(evm.rpcUrl, "evm_mine", []); // in case the pool kept it
    }
    assert.ok(receipt, "mined again");
    await sleep(7000); // tracker rounds while it is one block deep: still open
    assert.equal((await settlement()).state, "signed");
    assert.ok(ver.lines.some((e) => e.json?.msg === "pending settlement not confirmed deep enough yet"));
    await ethRpc(evm.rpcUrl, "evm_mine", []);
    await ethRpc(evm.rpcUrl, "evm_mine", []);
    let st;
    for (let i = 0; i < 60; i++) {
      st = await settlement();
      if (st.state !== "signed") break;
      await sleep(250);
    }
    assert.equal(st.state, "confirmed", JSON.stringify(st));
    assert.equal((await l.call("ledger.authorization", key)).body.state, "settled");
    const again = (await v.call("verifier.settle", { payload: p, requirements: requirements() }, { deadlineMs: 30000 })).body;
    assert.equal(again.success, true, JSON.stringify(again));
    assert.equal(again.transaction, tx);
    assert.equal(await balance(payer.address), before - 10000n, "paid once");
    assert.equal(await balance(treasury), tBefore + 10000n);
  });
});

// FAREBOX_EVM_TIP_MAX_WEI caps the tip a node suggests: the tip is what the
// settlement wallet pays on top of the base fee, so a node (or a proxy in
// front of one) suggesting 100 gwei must not make farebox offer it. Here a
// JSON-RPC proxy in front of anvil answers eth_maxPriorityFeePerGas with 100
// gwei; the settlement's transaction offers the 2 gwei ceiling, and is mined.
test("FAREBOX_EVM_TIP_MAX_WEI: a node's suggested tip above the ceiling is capped at the first signing", async () => {
  const suggested = 100_000_000_000n, ceiling = 2_000_000_000n;
  let asked = 0;
  const proxy = nodeHttp.createServer((req, res) => {
    let data = "";
    req.on("data", (c) => { data += c; });
    req.on("end", async () => {
      const call = JSON.parse(data);
      if (call.method === "eth_maxPriorityFeePerGas") {
        asked++;
        return res.end(JSON.stringify({ jsonrpc: "2.0", id: call.id, result: `0x${suggested.toString(16)}` }));
      }
      const r = await fetch(evm.rpcUrl, { method: "POST", headers: { "content-type": "application/json" }, body: data });
      res.end(await r.text());
    });
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  const env = { FAREBOX_EVM_NETWORK: NETWORK, FAREBOX_EVM_RPC_URLS: `http://127.0.0.1:${proxy.address().port}`,
    FAREBOX_EVM_TOKEN: evm.token, FAREBOX_SETTLEMENT_KEY: evm.deployer.privateKey, FAREBOX_SOLANA_NETWORK: "off",
    FAREBOX_EVM_TIP_MAX_WEI: ceiling.toString() };
  try {
    await withOwnLedger(pg.createDatabase("verifier_tip"), SECRET, "tip", env, async ({ v }) => {
      const payer = privateKeyToAccount(evm.accounts[6].privateKey);
      const before = await balance(payer.address);
      const p = await viemPayload(payer);
      const r = (await v.call("verifier.settle", { payload: p, requirements: requirements() }, { deadlineMs: 30000 })).body;
      assert.equal(r.success, true, JSON.stringify(r));
      assert.ok(asked >= 1, "the node was asked for a tip");
      const tx = await ethRpc(evm.rpcUrl, "eth_getTransactionByHash", [r.transaction]);
      assert.equal(BigInt(tx.maxPriorityFeePerGas), ceiling, "the suggestion capped");
      assert.ok(BigInt(tx.maxFeePerGas) < suggested, `max fee ${BigInt(tx.maxFeePerGas)}`);
      assert.equal(await balance(payer.address), before - 10000n);
    });
  } finally {
    proxy.close();
  }
});
