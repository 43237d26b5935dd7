// x402_paid.test.mjs - pay-per-call on the paid routes with x402: a call
// without credentials gets 402 and a PAYMENT-REQUIRED quote for both
// networks (the call's ceiling); the official @x402/fetch client with
// @x402/evm pays a chat completion on anvil and with @x402/svm one on
// surfpool: 200, PAYMENT-RESPONSE, the tokens moved on chain by exactly the
// quote. A stream carries PAYMENT-RESPONSE in its headers. The same payment
// header replayed, and 50 concurrent copies of a fresh one: one call served,
// one transfer. A call whose provider fails is not settled. /v1/topup: an
// x402 payment credits the key's account once (a retry answers the same
// credit; a call's payment cannot be reused), and the key then pays calls.
// With Idempotency-Key: a retry gets the kept answer; a stream its client left
// after paying is not served again for the same payment.
// Ends with the ledger's audit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";
import { encodeFunctionData, parseAbi } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { address, createKeyPairSignerFromBytes, createSolanaRpc, getBase58Encoder } from "@solana/kit";
import { TOKEN_PROGRAM_ADDRESS, findAssociatedTokenPda } from "@solana-program/token";
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { ExactSvmScheme } from "@x402/svm/exact/client";
import { wrapFetchWithPayment } from "@x402/fetch";
import { Proc, bin, freePort, sleep, startService, stopAll } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { startChains, ethRpc } from "../lib/chains.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const ADMIN = crypto.randomBytes(24).toString("hex");
const HMAC = crypto.randomBytes(32).toString("hex");
let pg, db, chains, evm, sol, solRpc, ledger, verifier, verifierEnv, edge, edgeEnv, mock, url, ledgerRpc, evmTreasury, solTreasury;
const erc20 = parseAbi(["function balanceOf(address) view returns (uint256)"]);
const balance = (who) => ethRpc(evm.rpcUrl, "eth_call", [{ to: evm.token,
  data: encodeFunctionData({ abi: erc20, functionName: "balanceOf", args: [who] }) }, "latest"]).then(BigInt);
const tokens = async (owner) => {
  const [ata] = await findAssociatedTokenPda({ mint: address(sol.mint), owner: address(owner), tokenProgram: TOKEN_PROGRAM_ADDRESS });
  return BigInt((await solRpc.getTokenAccountBalance(ata).send()).value.amount);
};
const json = { "content-type": "application/json" };
const chat = (content, extra = {}) => JSON.stringify({ model: "gpt-4o-mini", max_tokens: 8,
  messages: [{ role: "user", content }], ...extra });

function evmClient(i) {
  const client = registerExactEvmScheme(new x402Client(), { signer: privateKeyToAccount(evm.accounts[i].privateKey) });
  client.setSpendControls(false);
  return client;
}

async function quoteOf(body, path = "/v1/chat/completions", headers = json) {
  const r = await fetch(`${url}${path}`, { method: "POST", headers, body });
  assert.equal(r.status, 402);
  return { r, required: JSON.parse(Buffer.from(r.headers.get("payment-required"), "base64").toString()),
    body: await r.json() };
}

/** A PAYMENT-SIGNATURE header made by the official client for this call's quote. */
async function paymentHeader(client, body) {
  const { required } = await quoteOf(body);
  const h = new x402HTTPClient(client);
  const payload = await h.createPaymentPayload(required);
  return h.encodePaymentSignatureHeader(payload)["PAYMENT-SIGNATURE"];
}

async function audit() {
  const a = await ledgerRpc.call("ledger.audit", {});
  assert.equal(a.body.ok, true, JSON.stringify(a.body.checks.filter((c) => !c.ok)));
}

before(async () => {
  pg = await startPostgres();
  db = pg.createDatabase("x402_paid");
  chains = await startChains({ solana: true });
  evm = chains.evm;
  sol = chains.solana;
  solRpc = createSolanaRpc(sol.rpcUrl);
  evmTreasury = evm.accounts[8].address;
  solTreasury = sol.wallets[2].address; // an owner whose associated token account exists
  const lp = await freePort(), vp = await freePort(), mp = await freePort(), hp = await freePort();
  mock = new Proc(bin("farebox-mock-model"), [], { env: { FAREBOX_MOCK_LISTEN: `127.0.0.1:${mp}` }, name: "mock" });
  await mock.waitForMsg("mock model listening");
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: HMAC });
  verifierEnv = { FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_EVM_NETWORK: evm.network,
    FAREBOX_EVM_RPC_URLS: evm.rpcUrl, FAREBOX_EVM_TOKEN: evm.token, FAREBOX_SETTLEMENT_KEY: evm.deployer.privateKey,
    FAREBOX_SOLANA_NETWORK: sol.x402Network, FAREBOX_SOLANA_RPC_URLS: sol.rpcUrl, FAREBOX_SOLANA_MINT: sol.mint,
    FAREBOX_SOLANA_GENESIS_HASH: sol.genesisHash, FAREBOX_SOLANA_FEE_PAYER_KEY: sol.payer.secretKey,
    FAREBOX_SETTLE_WAIT_MS: "15000" };
  verifier = await startService("verifier", { ...verifierEnv, FAREBOX_RPC_BIND: `tcp://127.0.0.1:${vp}` });
  edgeEnv = { FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`,
    FAREBOX_VERIFIER_ENDPOINT: `tcp://127.0.0.1:${vp}`, FAREBOX_MOCK_MODEL_URL: `http://127.0.0.1:${mp}`,
    FAREBOX_PAY_TO_EVM: evmTreasury, FAREBOX_PAY_TO_SOLANA: solTreasury, FAREBOX_ADMIN_TOKEN: ADMIN,
    FAREBOX_KEY_HMAC_SECRET: HMAC };
  edge = await startService("edge", { ...edgeEnv, FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${hp}` });
  url = `http://127.0.0.1:${hp}`;
  ledgerRpc = new RpcClient(ledger.endpoint);
});

after(async () => {
  ledgerRpc?.close();
  const failed = await stopAll([edge, verifier, ledger, mock]);
  await chains?.stop();
  await pg?.stop();
  assert.deepEqual(failed, [], "every process exits 0");
});

test("no credentials: 402 with a quote for both networks, the call's ceiling", async () => {
  const body = chat("quote me");
  const { required, body: err } = await quoteOf(body);
  assert.equal(required.x402Version, 2);
  assert.equal(required.resource.url, `${url}/v1/chat/completions`);
  assert.deepEqual(required.accepts.map((a) => a.network).sort(), [evm.network, sol.x402Network].sort());
  // ceil(body bytes x 0.15 USD/Mtok) + ceil(8 tokens x 0.60 USD/Mtok), in micro-USDC
  const ceiling = Math.ceil(Buffer.byteLength(body) * 150000 / 1e6) + Math.ceil(8 * 600000 / 1e6);
  for (const a of required.accepts) assert.equal(a.amount, String(ceiling));
  const e = required.accepts.find((a) => a.network === evm.network);
  assert.equal(e.payTo, evmTreasury);
  assert.equal(e.asset, evm.token);
  assert.deepEqual(e.extra, { name: "USDC", version: "2" });
  const s = required.accepts.find((a) => a.network === sol.x402Network);
  assert.equal(s.payTo, solTreasury);
  assert.equal(s.extra.feePayer, sol.payer.address);
  assert.equal(err.error.code, "payment_required");
  assert.equal(err.error.accepts.length, 2);
  // an image by URL (the provider fetches it and bills it by its pixels, not the body's bytes): the body's
  // other bytes, plus the model's image_tokens (GPT-4o mini: 48,169) per image
  const quoted = (inputTokens) => String(Math.ceil(inputTokens * 150000 / 1e6) + Math.ceil(8 * 600000 / 1e6));
  const withParts = (...parts) => JSON.stringify({ model: "gpt-4o-mini", max_tokens: 8, messages: [{ role: "user",
    content: [{ type: "text", text: "what is this?" }, ...parts] }] });
  const urlPart = { type: "image_url", image_url: { url: "https://example.com/a.png" } };
  const byUrl = withParts(urlPart);
  assert.equal((await quoteOf(byUrl)).required.accepts[0].amount,
    quoted(Buffer.byteLength(byUrl) - "https://example.com/a.png".length + 48169));
  // so is an image sent inline (its data's bytes are not its tokens), and a URL spelled with JSON escapes
  // (the provider reads the URL as it reads)
  const data = "data:image/png;base64,iVBORw0KGgo=";
  const inline = withParts({ type: "image_url", image_url: { url: data, detail: "high" } });
  assert.equal((await quoteOf(inline)).required.accepts[0].amount,
    quoted(Buffer.byteLength(inline) - data.length + 48169));
  const escaped = byUrl.replace('"url":"https', '"\\u0075rl":"\\u0068ttps');
  assert.notEqual(escaped, byUrl);
  assert.equal((await quoteOf(escaped)).required.accepts[0].amount,
    quoted(Buffer.byteLength(escaped) - "https://example.com/a.png".length + 48169));
  // three images would cost more than the whole context: the context it is; audio (or a part with more than
  // an image in it) beside an image: the whole context too
  const whole = quoted(128000);
  for (const b of [withParts(urlPart, urlPart, urlPart),
    withParts(urlPart, { type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }),
    withParts({ ...urlPart, image_url: { ...urlPart.image_url, extra: 1 } })])
    assert.equal((await quoteOf(b)).required.accepts[0].amount, whole, b);
  // an Anthropic image block on a Claude model, through /v1/messages: 1,600 tokens an image
  const claudeImage = JSON.stringify({ model: "claude-3-5-haiku-20241022", max_tokens: 8, messages: [{ role: "user",
    content: [{ type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } }] }] });
  const anthropicHeaders = { ...json, "anthropic-version": "2023-06-01" };
  assert.equal((await quoteOf(claudeImage, "/v1/messages", anthropicHeaders)).required.accepts[0].amount,
    String(Math.ceil((Buffer.byteLength(claudeImage) - 12 + 1600) * 800000 / 1e6) + Math.ceil(8 * 4000000 / 1e6)));
  const both = chat("quote me", { max_completion_tokens: 4, max_tokens: 30 });
  assert.equal((await quoteOf(both)).required.accepts[0].amount,
    String(Math.ceil(Buffer.byteLength(both) * 150000 / 1e6) + Math.ceil(30 * 600000 / 1e6)));
  // tools on an Anthropic model: 400 tokens more input, the tool prompt that provider adds (not on an
  // OpenAI model, nor without tools)
  const tools = [{ type: "function", function: { name: "f", parameters: { type: "object" } } }];
  const claude = (extra) => JSON.stringify({ model: "claude-3-5-haiku-20241022", max_tokens: 8,
    messages: [{ role: "user", content: "quote me" }], ...extra });
  for (const [b, extraInput] of [[claude({ tools }), 400], [claude({}), 0]])
    assert.equal((await quoteOf(b)).required.accepts[0].amount,
      String(Math.ceil((Buffer.byteLength(b) + extraInput) * 800000 / 1e6) + Math.ceil(8 * 4000000 / 1e6)), b);
  const gptTools = chat("quote me", { tools });
  assert.equal((await quoteOf(gptTools)).required.accepts[0].amount,
    String(Math.ceil(Buffer.byteLength(gptTools) * 150000 / 1e6) + Math.ceil(8 * 600000 / 1e6)));
});

test("@x402/fetch with @x402/evm pays a chat completion on anvil, and a stream", async () => {
  const payer = privateKeyToAccount(evm.accounts[0].privateKey);
  const paidFetch = wrapFetchWithPayment(fetch, evmClient(0));
  const body = chat("pay me [mock:tokens=5]");
  const { required } = await quoteOf(body);
  const amount = BigInt(required.accepts[0].amount);
  const before = await balance(payer.address), tBefore = await balance(evmTreasury);
  const r = await paidFetch(`${url}/v1/chat/completions`, { method: "POST", headers: json, body });
  assert.equal(r.status, 200, await r.clone().text());
  const doc = await r.json();
  assert.equal(doc.choices[0].message.content, "The mock model says hello ");
  const receipt = JSON.parse(Buffer.from(r.headers.get("payment-response"), "base64").toString());
  assert.equal(receipt.success, true);
  assert.equal(receipt.network, evm.network);
  assert.equal(receipt.payer, payer.address);
  assert.equal((await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [receipt.transaction])).status, "0x1");
  assert.equal(await balance(payer.address), before - amount);
  assert.equal(await balance(evmTreasury), tBefore + amount);

  const sbody = chat("stream [mock:tokens=3]", { stream: true });
  const s = await paidFetch(`${url}/v1/chat/completions`, { method: "POST", headers: json, body: sbody });
  assert.equal(s.status, 200);
  assert.equal(s.headers.get("content-type"), "text/event-stream");
  assert.equal(JSON.parse(Buffer.from(s.headers.get("payment-response"), "base64").toString()).success, true);
  const text = await s.text();
  assert.match(text, /"content":"The "/);
  assert.ok(text.trimEnd().endsWith("data: [DONE]"));
  await audit();
});

test("one payment buys one call: a replay, and 50 concurrent copies of a fresh header", async () => {
  const payer = privateKeyToAccount(evm.accounts[1].privateKey);
  const body = chat("once");
  const header = await paymentHeader(evmClient(1), body);
  const before = await balance(payer.address);
  const send = () => fetch(`${url}/v1/chat/completions`, { method: "POST",
    headers: { ...json, "payment-signature": header }, body });
  const first = await send();
  assert.equal(first.status, 200, await first.clone().text());
  const amount = before - await balance(payer.address);
  assert.ok(amount > 0n);
  const replay = await send();
  assert.equal(replay.status, 402);
  assert.equal((await replay.json()).error.code, "payment_invalid");
  assert.ok(replay.headers.get("payment-required"), "a refused payment gets a fresh quote");

  const fresh = await paymentHeader(evmClient(1), body);
  const mid = await balance(payer.address);
  const results = await Promise.all(Array.from({ length: 50 }, () => fetch(`${url}/v1/chat/completions`,
    { method: "POST", headers: { ...json, "payment-signature": fresh }, body })));
  const statuses = results.map((r) => r.status);
  assert.equal(statuses.filter((s) => s === 200).length, 1, JSON.stringify(statuses));
  assert.equal(statuses.filter((s) => s === 402).length, 49);
  assert.equal(await balance(payer.address), mid - amount, "one transfer");
  await audit();
});

test("@x402/fetch with @x402/svm pays a chat completion on surfpool", async () => {
  const wallet = sol.wallets[0];
  const signer = await createKeyPairSignerFromBytes(getBase58Encoder().encode(wallet.secretKey));
  const client = new x402Client();
  client.register("solana:*", new ExactSvmScheme(signer, { rpcUrl: sol.rpcUrl }));
  client.setSpendControls(false);
  const paidFetch = wrapFetchWithPayment(fetch, client);
  const body = chat("solana [mock:tokens=2]");
  const { required } = await quoteOf(body);
  const amount = BigInt(required.accepts[0].amount);
  const before = await tokens(wallet.address), tBefore = await tokens(solTreasury);
  const r = await paidFetch(`${url}/v1/chat/completions`, { method: "POST", headers: json, body });
  assert.equal(r.status, 200, await r.clone().text());
  assert.equal((await r.json()).choices[0].message.content, "The mock ");
  const receipt = JSON.parse(Buffer.from(r.headers.get("payment-response"), "base64").toString());
  assert.equal(receipt.network, sol.x402Network);
  assert.equal(receipt.payer, wallet.address);
  assert.equal(await tokens(wallet.address), before - amount);
  assert.equal(await tokens(solTreasury), tBefore + amount);
  await audit();
});

test("a call whose provider fails is not settled, and its payment cannot be used again", async () => {
  const payer = privateKeyToAccount(evm.accounts[2].privateKey);
  const body = chat("[mock:fail=500]");
  const header = await paymentHeader(evmClient(2), body);
  const before = await balance(payer.address);
  const r = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { ...json, "payment-signature": header }, body });
  assert.equal(r.status, 502);
  assert.equal((await r.json()).error.code, "upstream_error");
  assert.equal(await balance(payer.address), before, "nothing moved");
  const again = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { ...json, "payment-signature": header }, body });
  assert.equal(again.status, 402);
  // a header that is not a payment
  const junk = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { ...json, "payment-signature": "bm90IGpzb24=" }, body });
  assert.equal(junk.status, 402);
  assert.equal((await junk.json()).error.code, "payment_invalid");
  // a payment naming a reserved resource (topups are paid through /v1/topup): refused for good, 402
  // payment_invalid, not 503 as if it might pass later
  const reserved = (h) => {
    const p = JSON.parse(Buffer.from(h, "base64").toString());
    p.resource = { ...(p.resource ?? {}), url: "topup:account:1" };
    return Buffer.from(JSON.stringify(p)).toString("base64");
  };
  const named = await fetch(`${url}/v1/chat/completions`, { method: "POST",
    headers: { ...json, "payment-signature": reserved(await paymentHeader(evmClient(2), chat("reserved"))) }, body: chat("reserved") });
  assert.equal(named.status, 402);
  assert.match((await named.json()).error.message, /invalid_payload: .*reserved/);
  await audit();
});

test("/v1/topup: an x402 payment credits the key's account once; the key then pays calls", async () => {
  const admin = { authorization: `Bearer ${ADMIN}`, ...json };
  const acct = await (await fetch(`${url}/admin/accounts`, { method: "POST", headers: admin, body: "{}" })).json();
  const minted = await (await fetch(`${url}/admin/accounts/${acct.account_id}/keys`, { method: "POST", headers: admin,
    body: "{}" })).json();
  const auth = { authorization: `Bearer ${minted.key}`, ...json };
  const body = JSON.stringify({ amount_micro: 250000 });
  const topup = (headers) => fetch(`${url}/v1/topup`, { method: "POST", headers: { ...auth, ...headers }, body });

  const unpaid = await topup({});
  assert.equal(unpaid.status, 402);
  const required = JSON.parse(Buffer.from(unpaid.headers.get("payment-required"), "base64").toString());
  assert.ok(required.accepts.every((a) => a.amount === "250000"));
  assert.equal((await topup({ "content-type": "text/plain" }).then((r) => r.status)), 402);
  const bad = await fetch(`${url}/v1/topup`, { method: "POST", headers: auth, body: JSON.stringify({ amount_micro: 0 }) });
  assert.equal(bad.status, 400);
  // a payment naming the reserved resource itself: refused for good (402), not 503
  const forged = new x402HTTPClient(evmClient(3));
  const fp = await forged.createPaymentPayload(required);
  fp.resource = { ...(fp.resource ?? {}), url: `topup:account:${acct.account_id}` };
  const selfNamed = await topup({ "payment-signature": Buffer.from(JSON.stringify(fp)).toString("base64") });
  assert.equal(selfNamed.status, 402, await selfNamed.clone().text());
  assert.match((await selfNamed.json()).error.message, /invalid_payload: .*reserved/);

  // the official client pays the quote; the account is credited once
  const payer = privateKeyToAccount(evm.accounts[3].privateKey);
  const before = await balance(payer.address);
  const h = new x402HTTPClient(evmClient(3));
  const header = h.encodePaymentSignatureHeader(await h.createPaymentPayload(required))["PAYMENT-SIGNATURE"];
  const r = await topup({ "payment-signature": header });
  assert.equal(r.status, 200, await r.clone().text());
  const credited = await r.json();
  assert.equal(credited.amount_micro, 250000);
  assert.equal(credited.duplicate, false);
  assert.equal(credited.available_micro, 250000);
  assert.equal(JSON.parse(Buffer.from(r.headers.get("payment-response"), "base64").toString()).success, true);
  assert.equal(await balance(payer.address), before - 250000n);
  // the same request again (a lost answer): the same credit, nothing moves
  const again = await topup({ "payment-signature": header });
  assert.equal(again.status, 200);
  assert.equal((await again.json()).duplicate, true);
  assert.equal(await balance(payer.address), before - 250000n);
  const bal = await (await fetch(`${url}/v1/balance`, { headers: auth })).json();
  assert.equal(bal.available_micro, 250000);

  // the same with x402 v1 (X-PAYMENT, the network named "base-sepolia"): credited once, under the
  // settlement's own source (CAIP-2), so the ledger's sweeper of uncredited topups finds it credited (a
  // credit under the v1 name had the sweeper credit the same payment a second time)
  const v1Payer = privateKeyToAccount(evm.accounts[7].privateKey);
  const v1Before = await balance(v1Payer.address);
  const v2 = await new x402HTTPClient(evmClient(7)).createPaymentPayload(
    { ...required, accepts: required.accepts.filter((a) => a.network === evm.network) });
  const xPayment = Buffer.from(JSON.stringify({ x402Version: 1, scheme: "exact", network: "base-sepolia",
    payload: v2.payload })).toString("base64");
  const v1 = await topup({ "x-payment": xPayment });
  assert.equal(v1.status, 200, await v1.clone().text());
  assert.equal((await v1.json()).available_micro, 500000);
  assert.equal(JSON.parse(Buffer.from(v1.headers.get("x-payment-response"), "base64").toString()).network, "base-sepolia");
  assert.equal(await balance(v1Payer.address), v1Before - 250000n);
  assert.equal(pg.psql(db.name, "SELECT string_agg(DISTINCT source_chain, ',') FROM credits WHERE kind = 'topup'"),
    evm.network);
  assert.equal(pg.psql(db.name, "SELECT ledger_credit_due_topups(100, 0)"), "0", "the sweeper credits nothing more");
  assert.equal((await (await fetch(`${url}/v1/balance`, { headers: auth })).json()).available_micro, 500000);

  // a payment made for a call cannot top up
  const callBody = chat("for a call");
  const callHeader = await paymentHeader(evmClient(4), callBody);
  assert.equal((await fetch(`${url}/v1/chat/completions`, { method: "POST",
    headers: { ...json, "payment-signature": callHeader }, body: callBody })).status, 200);
  const reuse = await fetch(`${url}/v1/topup`, { method: "POST", headers: { ...auth, "payment-signature": callHeader },
    body: JSON.stringify({ amount_micro: Number(JSON.parse(Buffer.from(callHeader, "base64").toString()).accepted.amount) }) });
  assert.equal(reuse.status, 402);
  assert.equal((await reuse.json()).error.code, "payment_invalid");

  // a Solana payment tops up the same way (its credit's key, a hash: a signature is 88 characters)
  const svm = new x402Client();
  svm.register("solana:*", new ExactSvmScheme(await createKeyPairSignerFromBytes(
    getBase58Encoder().encode(sol.wallets[0].secretKey)), { rpcUrl: sol.rpcUrl }));
  svm.setSpendControls(false);
  const solRequired = { ...required, accepts: required.accepts.filter((a) => a.network === sol.x402Network) };
  const sh = new x402HTTPClient(svm);
  const solHeader = sh.encodePaymentSignatureHeader(await sh.createPaymentPayload(solRequired))["PAYMENT-SIGNATURE"];
  const tBefore = await tokens(solTreasury);
  const solCredit = await topup({ "payment-signature": solHeader });
  assert.equal(solCredit.status, 200, await solCredit.clone().text());
  assert.equal((await solCredit.json()).available_micro, 750000);
  assert.equal((await (await topup({ "payment-signature": solHeader })).json()).duplicate, true);
  assert.equal(await tokens(solTreasury), tBefore + 250000n);

  // the topped-up key pays a call from its balance
  const paid = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: auth, body: chat("on balance") });
  assert.equal(paid.status, 200);
  const after = await (await fetch(`${url}/v1/balance`, { headers: auth })).json();
  assert.ok(after.available_micro < 750000 && after.available_micro > 0);
  await audit();
});

test("/v1/topup credited at once (FAREBOX_TOPUP_ADVANCE_MAX_MICRO): spendable before the transfer is final, taken back when it fails", async () => {
  const port = await freePort();
  const fast = await startService("edge", { ...edgeEnv, FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${port}`, FAREBOX_TOPUP_ADVANCE_MAX_MICRO: "3000000" });
  const furl = `http://127.0.0.1:${port}`;
  const admin = { authorization: `Bearer ${ADMIN}`, ...json };
  try {
    const acct = await (await fetch(`${furl}/admin/accounts`, { method: "POST", headers: admin, body: "{}" })).json();
    const minted = await (await fetch(`${furl}/admin/accounts/${acct.account_id}/keys`, { method: "POST",
      headers: admin, body: "{}" })).json();
    const auth = { authorization: `Bearer ${minted.key}`, ...json };
    const topup = async (i, amount, header) => {
      const body = JSON.stringify({ amount_micro: amount });
      if (!header) {
        const q = await fetch(`${furl}/v1/topup`, { method: "POST", headers: auth, body });
        const required = JSON.parse(Buffer.from(q.headers.get("payment-required"), "base64").toString());
        const h = new x402HTTPClient(evmClient(i));
        header = h.encodePaymentSignatureHeader(await h.createPaymentPayload(required))["PAYMENT-SIGNATURE"];
      }
      const r = await fetch(`${furl}/v1/topup`, { method: "POST", headers: { ...auth, "payment-signature": header }, body });
      return { r, header, doc: await r.json() };
    };
    const ledgerBalance = async () => (await ledgerRpc.call("ledger.balance", { account_id: acct.account_id })).body;

    // anvil mines at once: credited (as an advance if the receipt was not there yet); the same
    // request again finds the receipt: the same credit, confirmed, with its PAYMENT-RESPONSE
    const first = await topup(5, 100000);
    assert.equal(first.r.status, 200, JSON.stringify(first.doc));
    const plain = await topup(5, 100000, first.header);
    assert.equal(plain.r.status, 200, JSON.stringify(plain.doc));
    assert.equal(plain.doc.credit_id, first.doc.credit_id);
    assert.equal(plain.doc.settlement, "confirmed");
    assert.ok(plain.r.headers.get("payment-response"));

    await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
    try {
      // broadcast, not mined: credited at once, without a receipt yet
      const payer = evm.accounts[6].address;
      const before = await balance(payer);
      const adv = await topup(6, 2000000);
      assert.equal(adv.r.status, 200, JSON.stringify(adv.doc));
      assert.equal(adv.doc.settlement, "pending");
      assert.match(adv.doc.transaction, /^0x[0-9a-f]{64}$/);
      assert.equal(adv.doc.available_micro, 2100000);
      assert.equal(adv.r.headers.get("payment-response"), null);
      assert.equal(await balance(payer), before); // nothing moved on chain yet
      const again = await topup(6, 2000000, adv.header);
      assert.equal(again.doc.duplicate, true);
      assert.equal(again.doc.credit_id, adv.doc.credit_id);
      // over the limit (2 + 1.5 > 3): this one waits for its transfer
      const over = await topup(7, 1500000);
      assert.equal(over.r.status, 202, JSON.stringify(over.doc));
      assert.equal(over.doc.state, "pending");
      assert.match(over.doc.message, /limit/);
      // the advance pays a call at once
      const call = await fetch(`${furl}/v1/chat/completions`, { method: "POST", headers: auth, body: chat("advanced") });
      assert.equal(call.status, 200);
      await sleep(1500); // the call's slice closes: its charge moved
      const spent = await ledgerBalance();
      assert.ok(spent.available_micro < 2100000 && spent.available_micro > 2000000);

      // the payer empties its wallet first (a higher tip): the settlement reverts when mined
      const drain = encodeFunctionData({ abi: parseAbi(["function transfer(address,uint256) returns (bool)"]),
        functionName: "transfer", args: [evm.accounts[1].address, before] });
      await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: payer, to: evm.token, data: drain, gas: "0x30000",
        maxPriorityFeePerGas: "0x174876e800", maxFeePerGas: "0x2540be4000" }]);
      await ethRpc(evm.rpcUrl, "evm_mine", []);
      const failed = await topup(6, 2000000, adv.header);
      assert.equal(failed.r.status, 402, JSON.stringify(failed.doc));
      assert.equal(failed.doc.error.code, "payment_invalid");
      const [taken] = (await ledgerRpc.call("ledger.advances", { account_id: acct.account_id })).body.advances;
      assert.equal(taken.state, "reversed");
      assert.equal(taken.recovered_micro, 2000000);
      assert.equal(taken.written_off_micro, 0);
      assert.equal((await ledgerBalance()).available_micro, spent.available_micro - 2000000);
      // the one that waited was mined in the same block: its retry credits it plainly
      const later = await topup(7, 1500000, over.header);
      assert.equal(later.r.status, 200, JSON.stringify(later.doc));
      assert.equal(later.doc.settlement, "confirmed");
      // no more advances for an account whose advance was taken back
      const refused = await topup(5, 1000);
      assert.equal(refused.r.status, 202, JSON.stringify(refused.doc));
      assert.match(refused.doc.message, /reversed/);
      await ethRpc(evm.rpcUrl, "evm_mine", []);
      assert.equal((await topup(5, 1000, refused.header)).doc.settlement, "confirmed");
    } finally {
      await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
    }
    // Solana: settle answers once the transaction is sent; this account gets no advance (202) unless the
    // transfer is already confirmed; the same request again credits it once it is
    const wallet = sol.wallets[0];
    const svm = new x402Client();
    svm.register("solana:*", new ExactSvmScheme(await createKeyPairSignerFromBytes(
      getBase58Encoder().encode(wallet.secretKey)), { rpcUrl: sol.rpcUrl }));
    svm.setSpendControls(false);
    const body = JSON.stringify({ amount_micro: 50000 });
    const q = await fetch(`${furl}/v1/topup`, { method: "POST", headers: auth, body });
    const required = JSON.parse(Buffer.from(q.headers.get("payment-required"), "base64").toString());
    required.accepts = required.accepts.filter((a) => a.network === sol.x402Network);
    const h = new x402HTTPClient(svm);
    const header = h.encodePaymentSignatureHeader(await h.createPaymentPayload(required))["PAYMENT-SIGNATURE"];
    const tBefore = await tokens(solTreasury), aBefore = (await ledgerBalance()).available_micro;
    let solTopup;
    for (let i = 0; i < 40; i++) {
      const r = await fetch(`${furl}/v1/topup`, { method: "POST", headers: { ...auth, "payment-signature": header }, body });
      solTopup = { status: r.status, doc: await r.json() };
      assert.ok([200, 202].includes(r.status), JSON.stringify(solTopup));
      if (r.status === 200 && solTopup.doc.settlement === "confirmed") break;
      await sleep(250);
    }
    assert.equal(solTopup.doc.settlement, "confirmed", JSON.stringify(solTopup));
    assert.equal(await tokens(solTreasury), tBefore + 50000n);
    assert.equal((await ledgerBalance()).available_micro, aBefore + 50000);
    const m = await (await fetch(`${furl}/metrics`)).text();
    const advanced = Number(/farebox_edge_money_topup_advanced_micro_total (\d+)/.exec(m)[1]);
    assert.ok(advanced === 2000000 || advanced === 2100000, String(advanced));
    await audit();
  } finally {
    assert.deepEqual(await stopAll([fast]), []);
  }
});

test("FAREBOX_X402_SETTLE=broadcast: a call is served once its transfer is sent; the tracker follows it to its receipt", async () => {
  // a verifier whose tracker looks at a settlement 4 s after its broadcast, and an edge serving on broadcast
  const vport = await freePort(), port = await freePort();
  const quick = await startService("verifier", { ...verifierEnv, FAREBOX_RPC_BIND: `tcp://127.0.0.1:${vport}`,
    FAREBOX_SETTLE_WAIT_MS: "1000" });
  const fast = await startService("edge", { ...edgeEnv, FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${port}`, FAREBOX_VERIFIER_ENDPOINT: `tcp://127.0.0.1:${vport}`,
    FAREBOX_X402_SETTLE: "broadcast" });
  const furl = `http://127.0.0.1:${port}`;
  const header = async (i, body) => {
    const q = await fetch(`${furl}/v1/chat/completions`, { method: "POST", headers: json, body });
    const required = JSON.parse(Buffer.from(q.headers.get("payment-required"), "base64").toString());
    const h = new x402HTTPClient(evmClient(i));
    const payload = await h.createPaymentPayload(required);
    return { value: h.encodePaymentSignatureHeader(payload)["PAYMENT-SIGNATURE"], amount: BigInt(payload.accepted.amount),
      nonce: payload.payload.authorization.nonce };
  };
  const state = async (i, nonce) => (await ledgerRpc.call("ledger.authorization", { network: evm.network,
    payer: evm.accounts[i].address.toLowerCase(), nonce })).body?.state;
  const send = (h, body, extra = {}) => fetch(`${furl}/v1/chat/completions`, { method: "POST",
    headers: { ...json, "payment-signature": h.value, ...extra }, body });
  const unpaidKey = { "idempotency-key": "broadcast-unpaid-1" };
  try {
    await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
    let paid, failed, failedHeader;
    try {
      const payer = evm.accounts[5].address, before = await balance(payer);
      const body = chat("sent [mock:tokens=3]");
      const h = await header(5, body);
      const r = await send(h, body);
      assert.equal(r.status, 200, await r.clone().text());
      const receipt = JSON.parse(Buffer.from(r.headers.get("payment-response"), "base64").toString());
      assert.equal(receipt.success, true);
      assert.match(receipt.transaction, /^0x[0-9a-f]{64}$/);
      assert.equal(await balance(payer), before, "served before the transfer was mined");
      assert.equal((await send(h, body)).status, 402, "the payment is used");
      // a stream carries the transaction in its headers too
      const sbody = chat("sent stream [mock:tokens=3]", { stream: true });
      const sh = await header(5, sbody);
      const sr = await send(sh, sbody);
      assert.equal(sr.status, 200);
      assert.ok(sr.headers.get("payment-response"));
      await sr.text();
      // another payer empties its wallet first (a higher tip): its call was served, its transfer fails
      const loser = evm.accounts[4].address;
      const fbody = chat("unpaid");
      const fh = await header(4, fbody);
      assert.equal((await send(fh, fbody, unpaidKey)).status, 200);
      // retried with its Idempotency-Key while its transfer is pending: the kept answer (kept just after it
      // was sent: 409 until then)
      let kept;
      for (let i = 0; i < 100; i++) {
        kept = await send(fh, fbody, unpaidKey);
        if (kept.status !== 409) break;
        await sleep(100);
      }
      assert.equal(kept.status, 200);
      assert.equal(kept.headers.get("idempotent-replayed"), "true");
      const drain = encodeFunctionData({ abi: parseAbi(["function transfer(address,uint256) returns (bool)"]),
        functionName: "transfer", args: [evm.accounts[1].address, await balance(loser)] });
      await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: loser, to: evm.token, data: drain, gas: "0x30000",
        maxPriorityFeePerGas: "0x174876e800", maxFeePerGas: "0x2540be4000" }]);
      await ethRpc(evm.rpcUrl, "evm_mine", []);
      assert.equal(await balance(payer), before - h.amount - sh.amount);
      paid = [h.nonce, sh.nonce];
      failed = fh.nonce;
      failedHeader = fh.value;
    } finally {
      await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
    }
    // the tracker records both verdicts
    for (let i = 0; i < 60 && (await state(4, failed)) !== "failed"; i++) await sleep(500);
    assert.equal(await state(4, failed), "failed");
    for (const n of paid) assert.equal(await state(5, n), "settled");
    // once its transfer failed, the kept answer is not given for that payment again
    const again = await send({ value: failedHeader }, chat("unpaid"), unpaidKey);
    assert.equal(again.status, 402);
    assert.equal((await again.json()).error.code, "payment_invalid");
    await audit();
  } finally {
    assert.deepEqual(await stopAll([fast, quick]), []);
  }
});

test("a payment settled by a serving that died is served again after its authorization's time window ended", async () => {
  // the official client signs validBefore = now + the quote's maxTimeoutSeconds (here 12 s); a retry comes
  // after the verifier's margin (6 s) has eaten the rest: the payment settled within its window is still
  // the call's (its settlement found, not made again), not refused as expired
  const payer = privateKeyToAccount(evm.accounts[2].privateKey);
  const body = chat("late [mock:tokens=3]");
  const { required } = await quoteOf(body);
  const h = new x402HTTPClient(evmClient(2));
  const payload = await h.createPaymentPayload({ ...required,
    accepts: required.accepts.filter((a) => a.network === evm.network).map((a) => ({ ...a, maxTimeoutSeconds: 12 })) });
  const header = h.encodePaymentSignatureHeader(payload)["PAYMENT-SIGNATURE"];
  const requirements = JSON.parse(Buffer.from(header, "base64").toString()).accepted;
  const sha = (x) => crypto.createHash("sha256").update(x).digest("hex");
  const name = { scope: `x402:${sha(header)}`, idem_key: "x402-late-1", claim: "late-serving" };
  const claimed = await ledgerRpc.call("ledger.call_claim", { ...name, request_hash: sha(`chat\n${body}`),
    lease_ms: 1000, keep_ms: 600_000 }, { idem: "late-claim" });
  assert.equal(claimed.body.claimed, true, JSON.stringify(claimed));
  const verifierRpc = new RpcClient(verifier.endpoint);
  try {
    const v = await verifierRpc.call("verifier.verify", { header, requirements, record: true,
      resource: `${url}/v1/chat/completions` }, { deadlineMs: 15000 });
    assert.equal(v.body.isValid, true, JSON.stringify(v.body));
    await ledgerRpc.call("ledger.call_link", { ...name, authorization_id: v.body.authorizationId }, { idem: "late-link" });
    const before = await balance(payer.address);
    const st = await verifierRpc.call("verifier.settle", { header, requirements },
      { idem: `x402-settle:${v.body.authorizationId}`, deadlineMs: 30000 });
    assert.equal(st.body.success, true, JSON.stringify(st.body));
    const paid = before - await balance(payer.address);
    assert.ok(paid > 0n);
    const validBefore = Number(payload.payload.authorization.validBefore);
    await sleep(Math.max(0, (validBefore - 6) * 1000 - Date.now()) + 1500);
    // a new payment past its window is refused as before
    const fresh = await verifierRpc.call("verifier.verify", { header, requirements }, { deadlineMs: 15000 });
    assert.equal(fresh.body.isValid, false);
    const retry = await fetch(`${url}/v1/chat/completions`, { method: "POST",
      headers: { ...json, "payment-signature": header, "idempotency-key": "x402-late-1" }, body });
    assert.equal(retry.status, 200, await retry.clone().text());
    const receipt = JSON.parse(Buffer.from(retry.headers.get("payment-response"), "base64").toString());
    assert.equal(receipt.transaction, st.body.transaction, "the settlement found, not made again");
    assert.equal(await balance(payer.address), before - paid, "paid once");
  } finally {
    verifierRpc.close();
  }
  await audit();
});

test("Idempotency-Key with x402: a retry of a paid call gets its kept answer; a payment settled by a serving that died is served again, never paid twice", async () => {
  const payer = privateKeyToAccount(evm.accounts[2].privateKey);
  const body = chat("kept [mock:tokens=4]");
  const header = await paymentHeader(evmClient(2), body);
  const send = (h, key) => fetch(`${url}/v1/chat/completions`, { method: "POST",
    headers: { ...json, "payment-signature": h, ...(key ? { "idempotency-key": key } : {}) }, body });
  const before = await balance(payer.address);
  const first = await send(header, "x402-kept-1");
  assert.equal(first.status, 200, await first.clone().text());
  const text = await first.text();
  const amount = before - await balance(payer.address);
  assert.ok(amount > 0n);
  // the same payment and key: the kept answer and receipt, no new transfer (the answer is kept just after
  // it is sent: a retry sent before that gets 409 idempotency_in_progress, as the SDKs expect)
  let again;
  for (let i = 0; i < 100; i++) {
    again = await send(header, "x402-kept-1");
    if (again.status !== 409) break;
    assert.equal((await again.json()).error.code, "idempotency_in_progress");
    await sleep(100);
  }
  assert.equal(again.status, 200);
  assert.equal(again.headers.get("idempotent-replayed"), "true");
  assert.equal(await again.text(), text);
  assert.equal(again.headers.get("payment-response"), first.headers.get("payment-response"));
  // without the key (or with another), the payment is used: refused as before
  assert.equal((await send(header)).status, 402);
  assert.equal((await send(header, "x402-other")).status, 402);
  // the same payment and key for another body: 422
  const other = await fetch(`${url}/v1/chat/completions`, { method: "POST",
    headers: { ...json, "payment-signature": header, "idempotency-key": "x402-kept-1" }, body: chat("other") });
  assert.equal(other.status, 422);
  assert.equal(await balance(payer.address), before - amount);

  // a serving that accepted and settled the payment, then died before it answered (played here through the
  // RPCs the edge uses, with a 1 s lease): the retry after the lease is served without paying again
  const sha = (s) => crypto.createHash("sha256").update(s).digest("hex");
  const verifierRpc = new RpcClient(verifier.endpoint);
  // a try that claimed the name, had the payment verified, linked and settled, then died: what it paid
  const died = async (body, key) => {
    const h = await paymentHeader(evmClient(2), body);
    const requirements = JSON.parse(Buffer.from(h, "base64").toString()).accepted;
    const name = { scope: `x402:${sha(h)}`, idem_key: key, claim: `dead-serving-${key}` };
    const claimed = await ledgerRpc.call("ledger.call_claim", { ...name, request_hash: sha(`chat\n${body}`),
      lease_ms: 1000, keep_ms: 600_000 }, { idem: `died-claim-${key}` });
    assert.equal(claimed.body.claimed, true, JSON.stringify(claimed));
    const v = await verifierRpc.call("verifier.verify", { header: h, requirements, record: true,
      resource: `${url}/v1/chat/completions` }, { deadlineMs: 15000 });
    assert.equal(v.body.isValid, true, JSON.stringify(v.body));
    await ledgerRpc.call("ledger.call_link", { ...name, authorization_id: v.body.authorizationId },
      { idem: `died-link-${key}` });
    const mid = await balance(payer.address);
    const st = await verifierRpc.call("verifier.settle", { header: h, requirements },
      { idem: `x402-settle:${v.body.authorizationId}`, deadlineMs: 30000 });
    assert.equal(st.body.success, true, JSON.stringify(st.body));
    const paid = mid - await balance(payer.address);
    assert.ok(paid > 0n);
    await sleep(1100);
    return { header: h, st, mid, paid };
  };
  const body2 = chat("died [mock:tokens=3]");
  try {
    const { header: header2, st, mid, paid } = await died(body2, "x402-died-1");
    const retry = await fetch(`${url}/v1/chat/completions`, { method: "POST",
      headers: { ...json, "payment-signature": header2, "idempotency-key": "x402-died-1" }, body: body2 });
    assert.equal(retry.status, 200, await retry.clone().text());
    const receipt = JSON.parse(Buffer.from(retry.headers.get("payment-response"), "base64").toString());
    assert.equal(receipt.transaction, st.body.transaction, "the settlement found, not made again");
    assert.match(await retry.text(), /The mock model/);
    assert.equal(await balance(payer.address), mid - paid, "paid once");
    // and now kept (just after it was sent: 409 until then): one more retry is a replay
    let third;
    for (let i = 0; i < 100; i++) {
      third = await fetch(`${url}/v1/chat/completions`, { method: "POST",
        headers: { ...json, "payment-signature": header2, "idempotency-key": "x402-died-1" }, body: body2 });
      if (third.status !== 409) break;
      assert.equal((await third.json()).error.code, "idempotency_in_progress");
      await sleep(100);
    }
    assert.equal(third.headers.get("idempotent-replayed"), "true");
    // served again, its provider fails: the error says the payment was settled, and a retry with it is
    // served again (not refused as used), still paid once
    const bodyF = chat("died, then failed [mock:fail=500]");
    const f = await died(bodyF, "x402-died-2");
    for (let i = 0; i < 2; i++) {
      // (the failed try ends its lease just after it answers: until then a retry is told 409, as the SDKs expect)
      let r;
      for (let j = 0; j < 100; j++) {
        r = await fetch(`${url}/v1/chat/completions`, { method: "POST",
          headers: { ...json, "payment-signature": f.header, "idempotency-key": "x402-died-2" }, body: bodyF });
        if (r.status !== 409) break;
        assert.equal((await r.json()).error.code, "idempotency_in_progress");
        await sleep(100);
      }
      assert.equal(r.status, 502);
      assert.match((await r.json()).error.message,
        /this call's payment was settled by an earlier try: retry with the same payment and Idempotency-Key/);
    }
    assert.equal(await balance(payer.address), f.mid - f.paid, "paid once");
  } finally {
    verifierRpc.close();
  }

  // a stream the client leaves once its payment settled and its output began: that payment bought this
  // serving, so a retry of the same payment and key is told idempotency_key_used, not served again (else
  // leaving each stream before its end would buy stream after stream with one payment)
  const body3 = chat("left [mock:tokens=200][mock:rate=50]", { stream: true, max_tokens: 200 });
  const header3 = await paymentHeader(evmClient(2), body3);
  const send3 = () => fetch(`${url}/v1/chat/completions`, { method: "POST",
    headers: { ...json, "payment-signature": header3, "idempotency-key": "x402-left-1" }, body: body3 });
  const before3 = await balance(payer.address);
  const first3 = await new Promise((resolve, reject) => {
    const req = http.request(`${url}/v1/chat/completions`, { method: "POST",
      headers: { ...json, "payment-signature": header3, "idempotency-key": "x402-left-1" } }, (res) => {
      let got = "";
      res.on("data", (d) => {
        got += d;
        if (/"content":"[^"]+"/.test(got)) { // its output began: the client leaves
          res.socket.destroy();
          resolve({ status: res.statusCode, receipt: res.headers["payment-response"] });
        }
      });
      res.on("end", () => reject(new Error(`the stream ended before its output: ${got}`)));
    });
    req.on("error", reject);
    req.end(body3);
  });
  assert.equal(first3.status, 200);
  assert.equal(JSON.parse(Buffer.from(first3.receipt, "base64").toString()).success, true);
  const paid3 = before3 - await balance(payer.address);
  assert.ok(paid3 > 0n, "paid");
  let retry3, code3;
  for (let i = 0; i < 100; i++) {
    retry3 = await send3();
    if (retry3.status !== 409) break;
    code3 = (await retry3.json()).error.code;
    if (code3 !== "idempotency_in_progress") break;
    await sleep(100);
  }
  assert.equal(retry3.status, 409, "not served again");
  assert.equal(code3, "idempotency_key_used");
  assert.equal(await balance(payer.address), before3 - paid3, "paid once");
  await audit();
});
