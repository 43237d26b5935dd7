// facilitator.test.mjs - farebox as an x402 facilitator over HTTP: a real
// @x402/express server whose HTTPFacilitatorClient points at the edge's
// /facilitator accepts a payment made by @x402/fetch, settled on anvil; the
// facilitator's own answers (supported, refusals, auth, bad bodies) over
// HTTP/1.1 and h2c.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import http from "node:http";
import { spawnSync } from "node:child_process";
import express from "express";
import { encodeFunctionData, parseAbi, parseSignature, parseTransaction, toHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { paymentMiddleware, x402ResourceServer } from "@x402/express";
import { HTTPFacilitatorClient } from "@x402/core/server";
import { ExactEvmScheme } from "@x402/evm/exact/server";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import { wrapFetchWithPayment, x402Client } from "@x402/fetch";
import { x402HTTPClient } from "@x402/core/client";
import { freePort, startService, stopAll } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { startChains, ethRpc } from "../lib/chains.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const NETWORK = "eip155:84532";
const TOKEN_SECRET = crypto.randomBytes(24).toString("hex");
let pg, chains, evm, ledger, verifier, edge, closedEdge, app, appServer, base, closedBase, treasury;
const erc20 = parseAbi(["function balanceOf(address) view returns (uint256)"]);
const balance = (who) => ethRpc(evm.rpcUrl, "eth_call", [{ to: evm.token,
  data: encodeFunctionData({ abi: erc20, functionName: "balanceOf", args: [who] }) }, "latest"]).then(BigInt);
const auth = { authorization: `Bearer ${TOKEN_SECRET}` };
// signs a TransferWithAuthorization of the test token (EIP-3009)
const signTransfer = (signer, message) => signer.signTypedData({
  domain: { name: "USDC", version: "2", chainId: 84532, verifyingContract: evm.token },
  types: { TransferWithAuthorization: [{ name: "from", type: "address" }, { name: "to", type: "address" },
    { name: "value", type: "uint256" }, { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" }] },
  primaryType: "TransferWithAuthorization", message });

async function startEdge(lp, vp, env) {
  const port = await freePort();
  const p = await startService("edge", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${port}`, FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`,
    FAREBOX_VERIFIER_ENDPOINT: `tcp://127.0.0.1:${vp}`, ...env });
  p.url = `http://127.0.0.1:${port}`;
  return p;
}

before(async () => {
  pg = await startPostgres();
  const db = pg.createDatabase("facilitator");
  chains = await startChains();
  evm = chains.evm;
  treasury = evm.accounts[8].address;
  const lp = await freePort(), vp = await freePort();
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: crypto.randomBytes(32).toString("hex") });
  verifier = await startService("verifier", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${vp}`,
    FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_EVM_NETWORK: NETWORK, FAREBOX_EVM_RPC_URLS: evm.rpcUrl,
    FAREBOX_EVM_TOKEN: evm.token, FAREBOX_SETTLEMENT_KEY: evm.deployer.privateKey,
    FAREBOX_SETTLE_WAIT_MS: "3000", // a settlement not mined in 3 s is left to the tracker
    FAREBOX_EVM_REPRICE_AFTER_MS: "4000" }); // and its tip raised when it is still left out 4 s after signing
  edge = await startEdge(lp, vp, { FAREBOX_FACILITATOR_TOKEN: TOKEN_SECRET });
  closedEdge = await startEdge(lp, vp, {});
  base = `${edge.url}/facilitator`;
  closedBase = `${closedEdge.url}/facilitator`;

  // the resource server: @x402/express with farebox as its facilitator
  const facilitator = new HTTPFacilitatorClient({ url: base,
    createAuthHeaders: async () => ({ verify: auth, settle: auth, supported: {} }) });
  const server = new x402ResourceServer(facilitator).register(NETWORK, new ExactEvmScheme());
  app = express();
  app.use(paymentMiddleware({
    "GET /weather": { accepts: { scheme: "exact", network: NETWORK, payTo: treasury,
      price: { amount: "10000", asset: evm.token, extra: { name: "USDC", version: "2" } } }, description: "weather" },
    "GET /slow": { accepts: { scheme: "exact", network: NETWORK, payTo: treasury,
      price: { amount: "10000", asset: evm.token, extra: { name: "USDC", version: "2" } } }, description: "slow" },
  }, server));
  app.get("/weather", (req, res) => res.json({ weather: "sunny" }));
  app.get("/slow", (req, res) => { app.slowServed = (app.slowServed ?? 0) + 1; setTimeout(() => res.json({ slow: true }), 1500); });
  const port = await freePort();
  await new Promise((resolve) => { appServer = app.listen(port, "127.0.0.1", resolve); });
  app.url = `http://127.0.0.1:${port}`;
});

after(async () => {
  await new Promise((resolve) => appServer ? appServer.close(resolve) : resolve());
  const failed = await stopAll([edge, closedEdge, verifier, ledger]);
  await chains?.stop();
  await pg?.stop();
  assert.deepEqual(failed, [], "every process exits 0");
});

test("an @x402/express server using farebox as facilitator is paid by @x402/fetch, settled on anvil", async () => {
  const payer = privateKeyToAccount(evm.accounts[0].privateKey);
  const before = await balance(payer.address), tBefore = await balance(treasury);

  const unpaid = await fetch(`${app.url}/weather`);
  assert.equal(unpaid.status, 402);
  const required = JSON.parse(Buffer.from(unpaid.headers.get("payment-required"), "base64").toString());
  assert.equal(required.accepts[0].network, NETWORK);
  assert.equal(required.accepts[0].asset, evm.token);

  const client = registerExactEvmScheme(new x402Client(), { signer: payer });
  client.setSpendControls(false);
  const paidFetch = wrapFetchWithPayment(fetch, client);
  const r = await paidFetch(`${app.url}/weather`);
  assert.equal(r.status, 200, await r.clone().text());
  assert.deepEqual(await r.json(), { weather: "sunny" });
  const receipt = JSON.parse(Buffer.from(r.headers.get("payment-response"), "base64").toString());
  assert.equal(receipt.success, true);
  assert.equal(receipt.network, NETWORK);
  assert.equal(receipt.payer, payer.address);
  assert.match(receipt.transaction, /^0x[0-9a-f]{64}$/);
  assert.equal((await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [receipt.transaction])).status, "0x1");
  assert.equal(await balance(payer.address), before - 10000n);
  assert.equal(await balance(treasury), tBefore + 10000n);

  const l = new RpcClient(ledger.endpoint);
  const audit = await l.call("ledger.audit", {});
  l.close();
  assert.equal(audit.body.ok, true, JSON.stringify(audit.body.checks.filter((c) => !c.ok)));
});

test("one payment presented to an @x402/express server five times at once is served once: only the first settle succeeds", async () => {
  // the middleware verifies, runs the handler, then settles: all five pass verify while the handlers run, and
  // a settle of a payment whose settlement an earlier settle began answers duplicate_settlement (as the chain
  // would refuse the authorization a second time), so the four other answers are withheld
  const payer = privateKeyToAccount(evm.accounts[7].privateKey);
  const before = await balance(payer.address);
  const unpaid = await fetch(`${app.url}/slow`);
  assert.equal(unpaid.status, 402);
  const required = JSON.parse(Buffer.from(unpaid.headers.get("payment-required"), "base64").toString());
  const client = registerExactEvmScheme(new x402Client(), { signer: payer });
  client.setSpendControls(false);
  const h = new x402HTTPClient(client);
  const header = h.encodePaymentSignatureHeader(await h.createPaymentPayload(required))["PAYMENT-SIGNATURE"];
  app.slowServed = 0;
  const answers = await Promise.all(Array.from({ length: 5 }, () =>
    fetch(`${app.url}/slow`, { headers: { "payment-signature": header } })));
  assert.equal(app.slowServed, 5, "every copy passed verify");
  const statuses = answers.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, 402, 402, 402, 402], JSON.stringify(statuses));
  const served = answers.find((r) => r.status === 200);
  assert.deepEqual(await served.json(), { slow: true });
  assert.equal(await balance(payer.address), before - 10000n, "paid once");
  // and settled directly again: refused the same way
  const body = JSON.stringify({ x402Version: 2, paymentPayload: JSON.parse(Buffer.from(header, "base64").toString()),
    paymentRequirements: required.accepts[0] });
  const again = await (await fetch(`${base}/settle`, { method: "POST", headers: { "content-type": "application/json",
    ...auth }, body })).json();
  assert.equal(again.success, false, JSON.stringify(again));
  assert.equal(again.errorReason, "duplicate_settlement");
  assert.equal(await balance(payer.address), before - 10000n);
  const l = new RpcClient(ledger.endpoint);
  const audit = await l.call("ledger.audit", {});
  l.close();
  assert.equal(audit.body.ok, true, JSON.stringify(audit.body.checks.filter((c) => !c.ok)));
});

// A settle that has to answer settlement_pending (no receipt within the wait) leaves the payment's
// success to be answered: the official resource server asks settle again at once for the same payment,
// expecting the broadcast transaction's outcome. It gets it, serves, and a later copy is told
// duplicate_settlement. (Until stop 35 the retry was told duplicate_settlement: not served, yet paid.)
test("a settle answered settlement_pending is answered its success when the resource server asks again; the payment serves once", async () => {
  const payer = privateKeyToAccount(evm.accounts[6].privateKey);
  const before = await balance(payer.address), tBefore = await balance(treasury);
  // in front of the facilitator: a pending answer is held until the settlement's block is mined
  const seen = [];
  const proxy = http.createServer(async (req, res) => {
    let body = "";
    for await (const chunk of req) body += chunk;
    const up = await fetch(`${base}${req.url}`, { method: req.method, headers: { "content-type": "application/json",
      authorization: req.headers.authorization ?? "" }, body: req.method === "POST" ? body : undefined });
    const text = await up.text();
    if (req.url === "/settle") {
      seen.push(JSON.parse(text));
      if (JSON.parse(text).errorReason === "settlement_pending") await ethRpc(evm.rpcUrl, "evm_mine", []);
    }
    res.writeHead(up.status, { "content-type": "application/json" });
    res.end(text);
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  const server = new x402ResourceServer(new HTTPFacilitatorClient({ url: `http://127.0.0.1:${proxy.address().port}`,
    createAuthHeaders: async () => ({ verify: auth, settle: auth, supported: {} }) })).register(NETWORK, new ExactEvmScheme());
  const late = express();
  let served = 0;
  late.use(paymentMiddleware({ "GET /late": { accepts: { scheme: "exact", network: NETWORK, payTo: treasury,
    price: { amount: "10000", asset: evm.token, extra: { name: "USDC", version: "2" } } }, description: "late" } }, server));
  late.get("/late", (req, res) => { served++; res.json({ late: true }); });
  const lateServer = await new Promise((r) => { const s = late.listen(0, "127.0.0.1", () => r(s)); });
  const url = `http://127.0.0.1:${lateServer.address().port}/late`;
  try {
    const required = JSON.parse(Buffer.from((await fetch(url)).headers.get("payment-required"), "base64").toString());
    const client = registerExactEvmScheme(new x402Client(), { signer: payer });
    client.setSpendControls(false);
    const h = new x402HTTPClient(client);
    const header = h.encodePaymentSignatureHeader(await h.createPaymentPayload(required))["PAYMENT-SIGNATURE"];
    await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
    let r;
    try {
      r = await fetch(url, { headers: { "payment-signature": header } });
    } finally {
      await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
    }
    assert.equal(r.status, 200, await r.clone().text());
    assert.deepEqual(await r.json(), { late: true });
    assert.deepEqual(seen.map((x) => [x.success, x.errorReason ?? null]),
      [[false, "settlement_pending"], [true, null]], JSON.stringify(seen));
    const receipt = JSON.parse(Buffer.from(r.headers.get("payment-response"), "base64").toString());
    assert.deepEqual([receipt.success, receipt.transaction], [true, seen[0].transaction]);
    assert.equal((await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [receipt.transaction])).status, "0x1");
    assert.equal(served, 1);
    // the same payment again: refused (its authorization is used on chain), not served
    const again = await fetch(url, { headers: { "payment-signature": header } });
    assert.equal(again.status, 402);
    assert.equal(served, 1);
    assert.equal(seen.length, 2, "no settle for it");
    assert.equal(await balance(payer.address), before - 10000n, "paid once");
    assert.equal(await balance(treasury), tBefore + 10000n);
    const l = new RpcClient(ledger.endpoint);
    const audit = await l.call("ledger.audit", {});
    l.close();
    assert.equal(audit.body.ok, true, JSON.stringify(audit.body.checks.filter((c) => !c.ok)));
  } finally {
    proxy.close();
    lateServer.close();
  }
});

test("supported is public and lists the network; verify and settle need the token", async () => {
  const s = await fetch(`${base}/supported`);
  assert.equal(s.status, 200);
  const body = await s.json();
  assert.deepEqual(body.kinds[0], { x402Version: 2, scheme: "exact", network: NETWORK });
  assert.deepEqual(body.signers["eip155:*"], [privateKeyToAccount(evm.deployer.privateKey).address]);
  assert.ok(s.headers.get("x-request-id"));

  const post = (url, headers, body) => fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });
  const anyBody = JSON.stringify({ x402Version: 2, paymentPayload: {}, paymentRequirements: {} });
  for (const headers of [{}, { authorization: "Bearer wrong-token-wrong-token" }, { authorization: TOKEN_SECRET }]) {
    for (const op of ["verify", "settle"]) {
      const r = await post(`${base}/${op}`, headers, anyBody);
      assert.equal(r.status, 401, `${op} ${JSON.stringify(headers)}`);
      assert.equal(r.headers.get("www-authenticate"), "Bearer");
      assert.match((await r.json()).error, /token/);
    }
  }
  // an edge without a token does not act as a facilitator at all
  const closed = await post(`${closedBase}/settle`, auth, anyBody);
  assert.equal(closed.status, 403);
  assert.equal((await fetch(`${closedBase}/supported`)).status, 200);
  // wrong methods
  assert.equal((await fetch(`${base}/verify`)).status, 405);
  assert.equal((await post(`${base}/supported`, {}, "{}")).status, 405);
});

test("two authorizations sharing a payer and nonce: the second is refused as used, never answered with the first's transfer", async () => {
  const post = (op, body) => fetch(`${base}/${op}`, { method: "POST", headers: { "content-type": "application/json", ...auth }, body });
  const payer = privateKeyToAccount(evm.accounts[2].privateKey);
  const other = privateKeyToAccount(toHex(crypto.randomBytes(32))).address;
  const nonce = toHex(crypto.randomBytes(32));
  const now = Math.floor(Date.now() / 1000);
  async function payment(to, validBefore) {
    const requirements = { scheme: "exact", network: NETWORK, amount: "10000", asset: evm.token, payTo: to,
      maxTimeoutSeconds: 60, extra: { name: "USDC", version: "2" } };
    const message = { from: payer.address, to, value: 10000n, validAfter: 0n, validBefore: BigInt(validBefore), nonce };
    const signature = await signTransfer(payer, message);
    const paymentPayload = { x402Version: 2, resource: { url: "http://x/r" }, accepted: requirements, payload: {
      signature, authorization: { ...message, value: "10000", validAfter: "0", validBefore: String(validBefore) } } };
    return JSON.stringify({ x402Version: 2, paymentPayload, paymentRequirements: requirements });
  }
  const first = await payment(treasury, now + 120);
  const toOther = await payment(other, now + 120);
  const resigned = await payment(treasury, now + 90); // the same recipient, another signature
  const treasuryBefore = await balance(treasury);
  const s1 = await (await post("settle", first)).json();
  assert.equal(s1.success, true, JSON.stringify(s1));
  assert.equal(await balance(treasury), treasuryBefore + 10000n);
  for (const body of [toOther, resigned]) {
    const s = await (await post("settle", body)).json();
    assert.equal(s.success, false, JSON.stringify(s));
    assert.equal(s.errorReason, "invalid_exact_evm_nonce_already_used");
    assert.notEqual(s.transaction, s1.transaction);
  }
  assert.equal(await balance(other), 0n);
  assert.equal(await balance(treasury), treasuryBefore + 10000n);
  // the first one settled again: a payment settles once
  const again = await (await post("settle", first)).json();
  assert.equal(again.success, false);
  assert.equal(again.errorReason, "duplicate_settlement");
  const l = new RpcClient(ledger.endpoint);
  try {
    const a = await l.call("ledger.audit", {});
    assert.equal(a.body.ok, true, JSON.stringify(a.body.checks.filter((c) => !c.ok)));
  } finally {
    l.close();
  }
});

// An EIP-3009 authorization is public once signed: whoever sends it first
// executes it, and the money goes to the signed payee all the same. With
// anvil's automine off, the settlement's own transaction waits in the pool
// while another account sends the same authorization with a higher tip (or
// the payer cancels it); one block then holds both, the other first, and the
// settlement's own transaction reverts.
test("a settlement whose authorization another transaction executes first is confirmed with that transaction; a canceled one fails (settle, and the tracker)", async () => {
  const abi = parseAbi([
    "function transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)",
    "function cancelAuthorization(address,bytes32,bytes)"]);
  const post = (op, body) => fetch(`${base}/${op}`, { method: "POST", headers: { "content-type": "application/json", ...auth }, body });
  const payer = privateKeyToAccount(evm.accounts[3].privateKey);
  const thirdParty = evm.accounts[4].address;
  const domain = { name: "USDC", version: "2", chainId: 84532, verifyingContract: evm.token };
  const l = new RpcClient(ledger.endpoint);
  const settlementNonce = async () => BigInt(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [evm.deployer.address, "pending"]));
  async function race(front, { tracker = false } = {}) {
    const nonce = toHex(crypto.randomBytes(32));
    const validBefore = Math.floor(Date.now() / 1000) + 300;
    const message = { from: payer.address, to: treasury, value: 10000n, validAfter: 0n, validBefore: BigInt(validBefore), nonce };
    const signature = await signTransfer(payer, message);
    const requirements = { scheme: "exact", network: NETWORK, amount: "10000", asset: evm.token, payTo: treasury,
      maxTimeoutSeconds: 300, extra: { name: "USDC", version: "2" } };
    const body = JSON.stringify({ x402Version: 2, paymentRequirements: requirements, paymentPayload: { x402Version: 2,
      resource: { url: "http://x/r" }, accepted: requirements, payload: { signature,
        authorization: { ...message, value: "10000", validAfter: "0", validBefore: String(validBefore) } } } });
    const before = await balance(treasury);
    const n0 = await settlementNonce();
    await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
    let other;
    try {
      const settling = post("settle", body).then((r) => r.json());
      for (let i = 0; (await settlementNonce()) === n0; i++) {
        assert.ok(i < 200, "the settlement transaction reached the pool");
        await new Promise((r) => setTimeout(r, 50));
      }
      // the other transaction, with a higher tip: first in the block
      const fees = { maxFeePerGas: toHex(100_000_000_000n), maxPriorityFeePerGas: toHex(50_000_000_000n), gas: toHex(200000) };
      if (front === "third party")
        other = await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: thirdParty, to: evm.token, ...fees,
          data: encodeFunctionData({ abi, functionName: "transferWithAuthorization",
            args: [payer.address, treasury, 10000n, 0n, BigInt(validBefore), nonce, signature] }) }]);
      else {
        const cancel = await payer.signTypedData({ domain, types: { CancelAuthorization: [
          { name: "authorizer", type: "address" }, { name: "nonce", type: "bytes32" }] },
          primaryType: "CancelAuthorization", message: { authorizer: payer.address, nonce } });
        other = await ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: thirdParty, to: evm.token, ...fees,
          data: encodeFunctionData({ abi, functionName: "cancelAuthorization", args: [payer.address, nonce, cancel] }) }]);
      }
      let answer;
      if (tracker) {
        answer = await settling; // not mined within the settle wait: left pending
        assert.equal(answer.success, false, JSON.stringify(answer));
        assert.equal(answer.errorReason, "settlement_pending");
      }
      await ethRpc(evm.rpcUrl, "evm_mine", []);
      if (!tracker) answer = await settling;
      const block = await ethRpc(evm.rpcUrl, "eth_getBlockByNumber", ["latest", false]);
      assert.equal(block.transactions.length, 2, "one block holds both transactions");
      assert.equal(block.transactions[0], other, "the other transaction first");
      const own = await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [block.transactions[1]]);
      assert.equal(own.status, "0x0", "the settlement's own transaction reverted");
      return { answer, other, body, own: own.transactionHash, before, key: { network: NETWORK,
        payer: payer.address.toLowerCase(), nonce } };
    } finally {
      await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
    }
  }
  const record = async (key) => (await l.call("ledger.authorization", key)).body;
  try {
    // settle: the answer names the transaction that moved the money
    const paid = await race("third party");
    assert.equal(paid.answer.success, true, JSON.stringify(paid.answer));
    assert.equal(paid.answer.transaction, paid.other);
    assert.equal(await balance(treasury), paid.before + 10000n, "paid once");
    const a1 = await record(paid.key);
    assert.equal(a1.state, "settled");
    assert.equal(a1.settlement_tx, paid.other);
    const s1 = (await l.call("ledger.settlement", { authorization_id: a1.authorization_id })).body;
    assert.equal(s1.state, "confirmed");
    assert.equal(s1.settled_by, paid.other);
    assert.equal(s1.tx_hash, paid.own, "the settlement keeps its own transaction");
    // canceled by the payer: nothing moved, the settlement failed
    const canceled = await race("cancel");
    assert.equal(canceled.answer.success, false, JSON.stringify(canceled.answer));
    assert.equal(canceled.answer.errorReason, "invalid_exact_evm_nonce_already_used");
    assert.equal(await balance(treasury), canceled.before);
    assert.equal((await record(canceled.key)).state, "failed");
    // left pending, then resolved by the tracker the same way
    const late = await race("third party", { tracker: true });
    let a3;
    for (let i = 0; i < 100; i++) {
      a3 = await record(late.key);
      if (a3.state === "settled") break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(a3.state, "settled", JSON.stringify(a3));
    assert.equal(a3.settlement_tx, late.other);
    assert.equal(await balance(treasury), late.before + 10000n);
    // asked again through the verifier's RPC (as the edge's own paid calls re-ask): the recorded answer,
    // naming the other transaction; through the facilitator API, a payment's success is answered once: the
    // one answered success is told duplicate_settlement, the one answered pending gets its success now, once
    const v = new RpcClient(verifier.endpoint);
    try {
      for (const r of [paid, late]) {
        const { paymentPayload, paymentRequirements } = JSON.parse(r.body);
        const again = (await v.call("verifier.settle", { payload: paymentPayload, requirements: paymentRequirements },
          { deadlineMs: 30000 })).body;
        assert.equal(again.success, true, JSON.stringify(again));
        assert.equal(again.transaction, r.other);
        const http = await (await post("settle", r.body)).json();
        if (r === paid) {
          assert.equal(http.errorReason, "duplicate_settlement", JSON.stringify(http));
        } else {
          assert.deepEqual([http.success, http.transaction], [true, r.other], JSON.stringify(http));
          const third = await (await post("settle", r.body)).json();
          assert.equal(third.errorReason, "duplicate_settlement", JSON.stringify(third));
        }
      }
    } finally {
      v.close();
    }
    assert.equal(await balance(treasury), late.before + 10000n);
    const a = await l.call("ledger.audit", {});
    assert.equal(a.body.ok, true, JSON.stringify(a.body.checks.filter((c) => !c.ok)));
  } finally {
    l.close();
  }
});

test("bad bodies are 400 and refused payments are 200 with their reason, over HTTP/1.1 and h2c", async () => {
  const post = (op, body) => fetch(`${base}/${op}`, { method: "POST", headers: { "content-type": "application/json", ...auth }, body });
  for (const body of ["", "not json", "[]", JSON.stringify({ paymentPayload: {} }), JSON.stringify({ paymentRequirements: {} })]) {
    const r = await post("verify", body);
    assert.equal(r.status, 400, body);
    assert.ok((await r.json()).error);
  }
  const big = await post("verify", JSON.stringify({ paymentPayload: { pad: "x".repeat(70000) }, paymentRequirements: {} }));
  assert.equal(big.status, 413);

  // a payment signed by someone else than its from: isValid false, 200, nothing settled
  const payer = privateKeyToAccount(evm.accounts[2].privateKey), other = privateKeyToAccount(toHex(crypto.randomBytes(32)));
  const requirements = { scheme: "exact", network: NETWORK, amount: "10000", asset: evm.token, payTo: treasury,
    maxTimeoutSeconds: 60, extra: { name: "USDC", version: "2" } };
  const now = Math.floor(Date.now() / 1000);
  const message = { from: payer.address, to: treasury, value: 10000n, validAfter: 0n, validBefore: BigInt(now + 60), nonce: toHex(crypto.randomBytes(32)) };
  const signature = await signTransfer(other, message);
  const paymentPayload = { x402Version: 2, resource: { url: "http://x/r" }, accepted: requirements, payload: { signature,
    authorization: { ...message, value: "10000", validAfter: "0", validBefore: String(now + 60) } } };
  const body = JSON.stringify({ x402Version: 2, paymentPayload, paymentRequirements: requirements });
  const v = await post("verify", body);
  assert.equal(v.status, 200);
  const vb = await v.json();
  assert.equal(vb.isValid, false);
  assert.equal(vb.invalidReason, "invalid_exact_evm_signature");
  const s = await post("settle", body);
  assert.equal(s.status, 200);
  const sb = await s.json();
  assert.equal(sb.success, false);
  assert.equal(sb.errorReason, "invalid_exact_evm_signature");
  assert.equal(sb.transaction, "");
  assert.equal(sb.network, NETWORK);
  // extensions a client copied from the server's 402 (bazaar's schemas nest deep) are not the verifier's to
  // read: the same verdict, at once; requirements nested deeper than a message can carry: 400, at once
  const nest = (n) => (n === 0 ? "leaf" : { in: nest(n - 1) });
  const ext = await (await post("verify", JSON.stringify({ x402Version: 2, paymentRequirements: requirements,
    paymentPayload: { ...paymentPayload, extensions: { bazaar: nest(30) } } }))).json();
  assert.deepEqual([ext.isValid, ext.invalidReason], [false, "invalid_exact_evm_signature"], JSON.stringify(ext));
  const deep = await post("settle", JSON.stringify({ x402Version: 2, paymentPayload,
    paymentRequirements: { ...requirements, extra: { ...requirements.extra, deep: nest(30) } } }));
  assert.equal(deep.status, 400);
  assert.match((await deep.json()).error, /nests too deep/);

  // a valid payment naming a topup's resource (what has the ledger credit an account once the
  // settlement confirms): refused as a bad request, nothing settled or recorded (settled, it credited
  // the named account that much, whoever it paid)
  const payer3 = privateKeyToAccount(evm.accounts[3].privateKey);
  const self = { ...requirements, payTo: payer3.address };
  const m3 = { from: payer3.address, to: payer3.address, value: 10000n, validAfter: 0n, validBefore: BigInt(now + 60),
    nonce: toHex(crypto.randomBytes(32)) };
  const signed3 = { signature: await signTransfer(payer3, m3),
    authorization: { ...m3, value: "10000", validAfter: "0", validBefore: String(now + 60) } };
  for (const [payload3, reqs3] of [
    [{ x402Version: 2, resource: { url: "topup:account:1" }, accepted: self, payload: signed3 }, self],
    [{ x402Version: 2, resource: { url: "http://x/r" }, accepted: self, payload: signed3 }, { ...self, resource: "topup:account:1" }]]) {
    for (const op of ["verify", "settle"]) {
      const r = await post(op, JSON.stringify({ x402Version: 2, paymentPayload: payload3, paymentRequirements: reqs3 }));
      assert.equal(r.status, 400, op);
      assert.match((await r.json()).error, /reserved: topups are paid through POST \/v1\/topup/);
    }
  }
  const l = new RpcClient(ledger.endpoint);
  const found = await l.call("ledger.authorization", { network: NETWORK, payer: payer3.address.toLowerCase(), nonce: m3.nonce });
  l.close();
  assert.equal(found.code, "authorization_not_found", JSON.stringify(found));
  const used = await ethRpc(evm.rpcUrl, "eth_call", [{ to: evm.token, data: encodeFunctionData({
    abi: parseAbi(["function authorizationState(address,bytes32) view returns (bool)"]), functionName: "authorizationState",
    args: [payer3.address, m3.nonce] }) }, "latest"]);
  assert.equal(BigInt(used), 0n, "the authorization was never executed");

  // the same over cleartext HTTP/2
  const h2 = spawnSync("curl", ["-sS", "--http2-prior-knowledge", "-H", "content-type: application/json", "-H",
    `authorization: Bearer ${TOKEN_SECRET}`, "--data-binary", body, "-w", "\n%{http_version} %{http_code}", `${base}/verify`], { encoding: "utf8" });
  const [json, status] = h2.stdout.trim().split("\n");
  assert.equal(status, "2 200");
  assert.equal(JSON.parse(json).invalidReason, "invalid_exact_evm_signature");
});

// A verifier replica that stops between the ledger allocating a settlement's
// wallet nonce and recording its signed transaction leaves the settlement
// unsigned; every later settlement of the wallet waits behind that nonce. The
// tracker signs it, at the chain's current fees: here a base fee far above
// the one the wallet's first transactions paid.
test("a settlement left unsigned by its replica is signed by the tracker at the chain's current base fee, then confirmed", async () => {
  const abi = parseAbi(["function transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"]);
  const payer = privateKeyToAccount(evm.accounts[5].privateKey);
  const nonce = toHex(crypto.randomBytes(32));
  const validBefore = BigInt(Math.floor(Date.now() / 1000) + 600);
  const message = { from: payer.address, to: treasury, value: 10000n, validAfter: 0n, validBefore, nonce };
  const signature = await signTransfer(payer, message);
  const { v, r, s } = parseSignature(signature);
  const calldata = encodeFunctionData({ abi, functionName: "transferWithAuthorization",
    args: [payer.address, treasury, 10000n, 0n, validBefore, nonce, Number(v), r, s] });
  const baseFee = 40_000_000_000n; // 40 gwei: the chain's fees rose since the wallet's last settlement
  await ethRpc(evm.rpcUrl, "anvil_setNextBlockBaseFeePerGas", [toHex(baseFee)]);
  await ethRpc(evm.rpcUrl, "evm_mine", []);
  const l = new RpcClient(ledger.endpoint);
  try {
    const before = await balance(treasury);
    const key = { network: NETWORK, payer: payer.address.toLowerCase(), nonce };
    // what a replica does before it signs: the settlement begun, its nonce allocated
    const begun = await l.call("ledger.settlement_begin", { ...key, amount_micro: 10000,
      pay_to: treasury.toLowerCase(), resource: "http://x/unsigned", sender: evm.deployer.address.toLowerCase(),
      evm: true, chain_nonce: Number(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [evm.deployer.address, "pending"])),
      calldata }, { idem: `unsigned:${nonce}` });
    assert.equal(begun.status, "ok", JSON.stringify(begun));
    assert.equal(begun.body.state, "begun");
    assert.equal(begun.body.tx_hash, null);
    let a;
    for (let i = 0; i < 150; i++) {
      a = (await l.call("ledger.authorization", key)).body;
      if (a.state === "settled") break;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.equal(a.state, "settled", JSON.stringify(a));
    const st = (await l.call("ledger.settlement", { authorization_id: a.authorization_id })).body;
    assert.equal(st.state, "confirmed");
    assert.equal(st.nonce, begun.body.nonce, "the nonce the ledger allocated");
    const tx = await ethRpc(evm.rpcUrl, "eth_getTransactionByHash", [st.tx_hash]);
    const receipt = await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [st.tx_hash]);
    assert.equal(receipt.status, "0x1");
    assert.equal(BigInt(tx.nonce), BigInt(begun.body.nonce));
    const block = await ethRpc(evm.rpcUrl, "eth_getBlockByNumber", [receipt.blockNumber, false]);
    assert.ok(BigInt(tx.maxFeePerGas) >= BigInt(block.baseFeePerGas), "priced for the block that took it");
    assert.equal(await balance(treasury), before + 10000n, "paid once");
    const audit = await l.call("ledger.audit", {});
    assert.equal(audit.body.ok, true, JSON.stringify(audit.body.checks.filter((c) => !c.ok)));
  } finally {
    l.close();
    // back to a cheap chain for whatever runs next on it
    await ethRpc(evm.rpcUrl, "anvil_setNextBlockBaseFeePerGas", [toHex(1_000_000_000n)]);
    await ethRpc(evm.rpcUrl, "evm_mine", []);
  }
});

// Settles a fresh payment of payer's with anvil not mining, calls
// interfere(n0, own) once the settlement's transaction (wallet nonce n0, own:
// the pending transaction) is in the pool, then mines one block; the settle
// answers pending. Then waits for the tracker to settle it. Returns what the
// checks need.
async function settleDisturbed(payer, interfere) {
  const post = (op, body) => fetch(`${base}/${op}`, { method: "POST", headers: { "content-type": "application/json", ...auth }, body });
  const nonce = toHex(crypto.randomBytes(32));
  const validBefore = Math.floor(Date.now() / 1000) + 600;
  const message = { from: payer.address, to: treasury, value: 10000n, validAfter: 0n, validBefore: BigInt(validBefore), nonce };
  const signature = await signTransfer(payer, message);
  const requirements = { scheme: "exact", network: NETWORK, amount: "10000", asset: evm.token, payTo: treasury,
    maxTimeoutSeconds: 600, extra: { name: "USDC", version: "2" } };
  const body = JSON.stringify({ x402Version: 2, paymentRequirements: requirements, paymentPayload: { x402Version: 2,
    resource: { url: "http://x/disturbed" }, accepted: requirements, payload: { signature,
      authorization: { ...message, value: "10000", validAfter: "0", validBefore: String(validBefore) } } } });
  const wallet = evm.deployer.address;
  const pendingNonce = async () => BigInt(await ethRpc(evm.rpcUrl, "eth_getTransactionCount", [wallet, "pending"]));
  const before = await balance(treasury);
  const n0 = await pendingNonce();
  await ethRpc(evm.rpcUrl, "evm_setAutomine", [false]);
  let answer;
  try {
    const settling = post("settle", body).then((r) => r.json());
    for (let i = 0; (await pendingNonce()) === n0; i++) {
      assert.ok(i < 200, "the settlement transaction reached the pool");
      await new Promise((r) => setTimeout(r, 50));
    }
    const own = (await ethRpc(evm.rpcUrl, "eth_getBlockByNumber", ["pending", true])).transactions
      .find((t) => BigInt(t.nonce) === n0 && t.from.toLowerCase() === wallet.toLowerCase());
    await interfere(n0, own);
    answer = await settling; // not mined within the settle wait
    await ethRpc(evm.rpcUrl, "evm_mine", []);
  } finally {
    await ethRpc(evm.rpcUrl, "evm_setAutomine", [true]);
  }
  assert.equal(answer.success, false, JSON.stringify(answer));
  assert.equal(answer.errorReason, "settlement_pending");
  const first = answer.transaction;
  assert.equal(await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [first]), null, "not mined");
  const l = new RpcClient(ledger.endpoint);
  try {
    const key = { network: NETWORK, payer: payer.address.toLowerCase(), nonce };
    let a;
    for (let i = 0; i < 200; i++) {
      a = (await l.call("ledger.authorization", key)).body;
      if (a.state === "settled") break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(a.state, "settled", JSON.stringify(a));
    const st = (await l.call("ledger.settlement", { authorization_id: a.authorization_id })).body;
    assert.equal(st.state, "confirmed");
    assert.equal(st.tx_hash, first, "the settlement keeps its first transaction as its name");
    assert.deepEqual(st.displaced, [first]);
    assert.ok(st.resigned_tx && st.resigned_tx !== first, JSON.stringify(st));
    assert.equal(st.settled_by, st.resigned_tx, "the re-signed transaction moved the money");
    assert.equal(a.settlement_tx, st.resigned_tx);
    assert.equal((await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [st.resigned_tx])).status, "0x1");
    assert.equal(await ethRpc(evm.rpcUrl, "eth_getTransactionReceipt", [first]), null, "the first never mined");
    assert.equal(await balance(treasury), before + 10000n, "paid once");
    // settle asked again (the verifier's RPC): the recorded answer, naming the transaction that moved the money
    const { paymentPayload, paymentRequirements } = JSON.parse(body);
    const v = new RpcClient(verifier.endpoint);
    const again = (await v.call("verifier.settle", { payload: paymentPayload, requirements: paymentRequirements },
      { deadlineMs: 30000 }).finally(() => v.close())).body;
    assert.equal(again.success, true, JSON.stringify(again));
    assert.equal(again.transaction, st.resigned_tx);
    assert.equal(await balance(treasury), before + 10000n);
    const audit = await l.call("ledger.audit", {});
    assert.equal(audit.body.ok, true, JSON.stringify(audit.body.checks.filter((c) => !c.ok)));
    return { n0, st, tx: await ethRpc(evm.rpcUrl, "eth_getTransactionByHash", [st.resigned_tx]) };
  } finally {
    l.close();
  }
}

// The settlement wallet is an ordinary account: another transaction from it
// (farebox-sweep pays its gas from it; an operator's own transfer) can take
// the nonce a settlement was signed with before the settlement is mined. Here
// the wallet's own replacement (same nonce, twice the fees) takes it while
// anvil is not mining: the settlement's transaction can never be mined. The
// tracker sees the wallet's mined nonce past it, finds the authorization
// unused, has a new nonce allocated and signs the settlement again.
test("a settlement whose wallet nonce another transaction took is signed again with a new nonce, and confirmed by that transaction", async () => {
  const wallet = evm.deployer.address;
  const { n0, st, tx } = await settleDisturbed(privateKeyToAccount(evm.accounts[6].privateKey), (n0, own) =>
    ethRpc(evm.rpcUrl, "eth_sendTransaction", [{ from: wallet, to: wallet, value: "0x0", nonce: toHex(n0),
      maxFeePerGas: toHex(2n * BigInt(own.maxFeePerGas)), maxPriorityFeePerGas: toHex(2n * BigInt(own.maxPriorityFeePerGas)),
      gas: toHex(21000) }]));
  assert.ok(BigInt(tx.nonce) > n0, "a new nonce");
  assert.equal(BigInt(tx.nonce), BigInt(st.nonce));
});

// A settlement the base fee admits can still be left out, for a tip too low
// to compete (here anvil is not mining at all). Next in its wallet's line and
// still unmined FAREBOX_EVM_REPRICE_AFTER_MS after its signing, it is replaced
// at its own nonce with its tip and max fee each raised by an eighth (as a
// node requires of a replacement), and the replacement is what gets mined.
test("a settlement left out with a tip too low is replaced at its own nonce with its tip and max fee raised, and confirmed by the replacement", async () => {
  const wallet = evm.deployer.address.toLowerCase();
  let replaced;
  const { n0, st, tx } = await settleDisturbed(privateKeyToAccount(evm.accounts[1].privateKey), async (n0, own) => {
    // the tracker follows it once it is older than the settle wait and 3 s; the replacement takes its place
    for (let i = 0; i < 120 && !replaced; i++) {
      await new Promise((r) => setTimeout(r, 250));
      replaced = (await ethRpc(evm.rpcUrl, "eth_getBlockByNumber", ["pending", true])).transactions
        .find((t) => BigInt(t.nonce) === n0 && t.from.toLowerCase() === wallet && t.hash !== own.hash);
    }
    assert.ok(replaced, "the settlement's transaction was replaced in the pool");
  });
  const stuck = parseTransaction(st.raw_tx);
  assert.equal(BigInt(tx.nonce), n0, "replaced at its own nonce");
  assert.equal(tx.hash, replaced.hash);
  assert.ok(BigInt(tx.maxPriorityFeePerGas) >= stuck.maxPriorityFeePerGas * 9n / 8n + 1n, "the tip raised by an eighth");
  assert.ok(BigInt(tx.maxFeePerGas) >= stuck.maxFeePerGas * 9n / 8n + 1n, "the max fee raised by an eighth");
});

// A settlement signed when the chain was cheap cannot be included once the
// base fee passes its max fee. The tracker replaces it at its own nonce,
// signed at the current fees (its tip raised, as a node requires of a
// replacement).
test("a settlement priced under the chain's base fee is replaced at its own nonce at the current fees, and confirmed by the replacement", async () => {
  let jumped;
  try {
    const { n0, st, tx } = await settleDisturbed(privateKeyToAccount(evm.accounts[7].privateKey), (n0, own) => {
      // the next block's base fee: twice the settlement transaction's max fee
      jumped = 2n * BigInt(own.maxFeePerGas);
      return ethRpc(evm.rpcUrl, "anvil_setNextBlockBaseFeePerGas", [toHex(jumped)]);
    });
    const stuck = parseTransaction(st.raw_tx);
    assert.ok(stuck.maxFeePerGas < jumped, "the first was priced under the new base fee");
    assert.equal(BigInt(tx.nonce), n0, "replaced at its own nonce");
    assert.equal(BigInt(st.nonce), n0);
    assert.ok(BigInt(tx.maxPriorityFeePerGas) > stuck.maxPriorityFeePerGas, "a higher tip");
  } finally {
    await ethRpc(evm.rpcUrl, "anvil_setNextBlockBaseFeePerGas", [toHex(1_000_000_000n)]);
    await ethRpc(evm.rpcUrl, "evm_mine", []);
  }
});
