// paid.test.mjs - the paid routes with prepaid API keys, through the official
// openai and @anthropic-ai/sdk clients against the edge and the mock model:
// non-stream and stream, an Anthropic model through the OpenAI client, tool
// calls both ways, /api/v1/prompt; every charge equals price x reported usage
// (each part rounded up), or the documented conservative count when a stream
// reports none; a client leaving mid-stream pays the input and what was
// produced; every refused or failed call charges nothing and surfaces as the
// SDK's own exception; rate limits per IP and per key and the in-flight cap
// per key answer 429 with Retry-After; the same calls over HTTP/2 (h2c). Ends
// with the ledger's audit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { spawn, spawnSync } from "node:child_process";
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { privateKeyToAccount, generatePrivateKey } from "viem/accounts";
import { Proc, bin, freePort, sleep, startService, tmpDir, waitUntil, stopAll } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const ADMIN = crypto.randomBytes(24).toString("hex");
const HMAC = crypto.randomBytes(32).toString("hex");
const PRICES = { // micro-USDC per million tokens, as the built-in catalog says
  "gpt-4o-mini": [150000, 600000],
  "claude-3-5-haiku-20241022": [800000, 4000000],
};
let pg, db, ledger, verifier, edge, mock, url, ledgerRpc, lp, vp, mp;
const extraEdges = [];
const admin = { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" };

async function call(method, p, body, headers = admin) {
  const r = await fetch(`${url}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: r.status, body: json, text, headers: r.headers };
}

const ceilDiv = (a, b) => (a + b - 1n) / b;
function cost(model, input, output) {
  const [pi, po] = PRICES[model].map(BigInt);
  return Number(ceilDiv(BigInt(input) * pi, 1000000n) + ceilDiv(BigInt(output) * po, 1000000n));
}
/** The edge's count for a stream without usage: max(events, ceil(bytes / 3)), at least 1. */
function outputEstimate(events, bytes) {
  return Math.max(events, Math.ceil(bytes / 3), 1);
}

/** A funded account with a key; options go to the key. */
async function account(micro, keyOptions = {}) {
  const a = await call("POST", "/admin/accounts", { label: "paid" });
  assert.equal(a.status, 201);
  const id = a.body.account_id;
  if (micro > 0) {
    const c = await call("POST", `/admin/accounts/${id}/credits`, { amount_micro: micro, reference: `fund-${id}` });
    assert.equal(c.status, 201, JSON.stringify(c.body));
  }
  const k = await call("POST", `/admin/accounts/${id}/keys`, { label: "t", ...keyOptions });
  assert.equal(k.status, 201, JSON.stringify(k.body));
  return { id, key: k.body.key, keyId: k.body.key_id };
}

async function holds(id) {
  const h = await call("GET", `/admin/accounts/${id}/holds`);
  assert.equal(h.status, 200);
  return h.body.holds;
}

/** The account's charges (one per charged call, newest first) once its prepaid
 * slices are closed (the edge here closes them after 50 ms unused). */
async function settled(id) {
  await waitUntil(async () => (await holds(id)).every((h) => h.state !== "open"), { what: "every slice closed" });
  const r = await call("GET", `/admin/accounts/${id}/charges`);
  assert.equal(r.status, 200);
  return r.body.charges;
}

async function available(id) {
  return (await call("GET", `/admin/accounts/${id}`)).body.available_micro;
}

async function audit() {
  const a = await ledgerRpc.call("ledger.audit", {});
  assert.equal(a.body.ok, true, JSON.stringify(a.body.checks.filter((c) => !c.ok)));
}

before(async () => {
  pg = await startPostgres();
  db = pg.createDatabase("paid");
  lp = await freePort();
  vp = await freePort();
  mp = await freePort();
  const hp = await freePort();
  mock = new Proc(bin("farebox-mock-model"), [], { env: { FAREBOX_MOCK_LISTEN: `127.0.0.1:${mp}` }, name: "mock" });
  await mock.waitForMsg("mock model listening");
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`, FAREBOX_DATABASE_URL: db.url,
    FAREBOX_KEY_HMAC_SECRET: HMAC });
  verifier = await startService("verifier", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${vp}`,
    FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, FAREBOX_EVM_NETWORK: "off", FAREBOX_SOLANA_NETWORK: "off" });
  edge = await startService("edge", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${hp}`, FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`,
    FAREBOX_VERIFIER_ENDPOINT: `tcp://127.0.0.1:${vp}`, FAREBOX_ADMIN_TOKEN: ADMIN, FAREBOX_KEY_HMAC_SECRET: HMAC,
    FAREBOX_MOCK_MODEL_URL: `http://127.0.0.1:${mp}`, FAREBOX_UPSTREAM_TIMEOUT_MS: "5000",
    FAREBOX_PREPAID_SLICE_IDLE_MS: "50" });
  url = `http://127.0.0.1:${hp}`;
  ledgerRpc = new RpcClient(ledger.endpoint);
});

after(async () => {
  ledgerRpc?.close();
  const failed = await stopAll([...extraEdges, edge, verifier, ledger, mock]);
  await pg?.stop();
  assert.deepEqual(failed, [], "every process exits 0");
});

test("OpenAI client, non-stream and stream: the charge is the price of the reported usage", async () => {
  const { id, key } = await account(10_000_000);
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const before = await available(id);

  const r = await openai.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 12,
    messages: [{ role: "user", content: "hello there, model" }] });
  assert.equal(r.choices[0].message.role, "assistant");
  assert.match(r.choices[0].message.content, /^The mock model says/);
  assert.equal(r.usage.completion_tokens, 12);
  const first = cost("gpt-4o-mini", r.usage.prompt_tokens, r.usage.completion_tokens);
  let list = await settled(id);
  assert.equal(list.length, 1);
  assert.equal(list[0].amount_micro, first);
  assert.equal(list[0].ref, r._request_id, "the charge names the call's request id");
  const [slice] = await holds(id);
  assert.ok(slice.amount_micro > first, "the slice covered the worst case");
  assert.equal(slice.charged_micro, first);
  assert.equal(await available(id), before - first);

  // a stream asking for usage gets the usage chunk; the charge is the same rule
  const chunks = [];
  const stream = await openai.chat.completions.create({ model: "openai/gpt-4o-mini", stream: true,
    stream_options: { include_usage: true }, messages: [{ role: "user", content: "stream [mock:tokens=7]" }] });
  for await (const c of stream) chunks.push(c);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
  assert.equal(text, "The mock model says hello from farebox. ");
  const usage = chunks.at(-1).usage;
  assert.equal(usage.completion_tokens, 7);
  list = await settled(id);
  assert.equal(list[0].amount_micro, cost("gpt-4o-mini", usage.prompt_tokens, 7));

  // a stream without stream_options: no usage chunk for the caller, but farebox
  // asked the provider for it and charges from it
  const plain = [];
  for await (const c of await openai.chat.completions.create({ model: "gpt-4o-mini", stream: true,
    messages: [{ role: "user", content: "abcd [mock:tokens=5]" }] })) plain.push(c);
  assert.ok(plain.every((c) => !c.usage), "no usage chunk unless asked");
  assert.ok(plain.every((c) => c.choices.length === 1));
  list = await settled(id);
  // the mock counts a token per 4 bytes of message text
  const promptTokens = Math.ceil("abcd [mock:tokens=5]".length / 4);
  assert.equal(list[0].amount_micro, cost("gpt-4o-mini", promptTokens, 5));
  assert.equal(await available(id), before - list.reduce((s, h) => s + h.amount_micro, 0));

  // a caller's X-Request-Id names its call's charge, up to the 100 characters the ledger keeps; a
  // longer one is replaced (sent as it was, it had the ledger refuse the whole charge write it was
  // in: every call of that write unpaid)
  const given = ["k".repeat(100), "l".repeat(128)];
  const named = await Promise.all(given.map((rid) => openai.chat.completions.create({ model: "gpt-4o-mini",
    max_tokens: 4, messages: [{ role: "user", content: `named ${rid.length}` }] }, { headers: { "x-request-id": rid } })
    .withResponse()));
  assert.equal(named[0].response.headers.get("x-request-id"), given[0]);
  const made = named[1].response.headers.get("x-request-id");
  assert.match(made, /^req_/);
  list = await settled(id);
  const byRef = new Map(list.map((c) => [c.ref, c.amount_micro]));
  for (const [i, ref] of [given[0], made].entries())
    assert.equal(byRef.get(ref), cost("gpt-4o-mini", named[i].data.usage.prompt_tokens, 4), `charged ${ref.slice(0, 8)}`);
  assert.equal(await available(id), before - list.reduce((s, h) => s + h.amount_micro, 0));
  await audit();
});

test("an Anthropic model through the OpenAI client, and through the Anthropic client", async () => {
  const { id, key } = await account(10_000_000);
  const model = "claude-3-5-haiku-20241022";
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const r = await openai.chat.completions.create({ model, max_completion_tokens: 6,
    messages: [{ role: "system", content: "be brief" }, { role: "user", content: "hi" }] });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, model);
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.choices[0].message.content, "The mock model says hello from ");
  assert.equal(r.usage.completion_tokens, 6);
  let list = await settled(id);
  assert.equal(list[0].amount_micro, cost(model, r.usage.prompt_tokens, 6));

  const chunks = [];
  for await (const c of await openai.chat.completions.create({ model, stream: true, max_tokens: 4,
    stream_options: { include_usage: true }, messages: [{ role: "user", content: "hi" }] })) chunks.push(c);
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""), "The mock model says ");
  assert.equal(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason, "length");
  const usage = chunks.at(-1).usage;
  assert.equal(usage.completion_tokens, 4);
  list = await settled(id);
  assert.equal(list[0].amount_micro, cost(model, usage.prompt_tokens, 4));

  const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
  const m = await anthropic.messages.create({ model, max_tokens: 3, messages: [{ role: "user", content: "yo" }] });
  assert.equal(m.type, "message");
  assert.equal(m.content[0].text, "The mock model ");
  list = await settled(id);
  assert.equal(list[0].amount_micro, cost(model, m.usage.input_tokens, m.usage.output_tokens));

  const s = anthropic.messages.stream({ model, max_tokens: 5, messages: [{ role: "user", content: "stream" }] });
  let streamed = "";
  s.on("text", (t) => (streamed += t));
  const final = await s.finalMessage();
  assert.equal(streamed, "The mock model says hello ");
  assert.equal(final.usage.output_tokens, 5);
  list = await settled(id);
  assert.equal(list[0].amount_micro, cost(model, final.usage.input_tokens, 5));
  await audit();
});

test("prompt-cache tokens are charged at the model's cache prices, in both dialects and both directions", async () => {
  const { id, key } = await account(10_000_000);
  const CACHE = { "gpt-4o-mini": [75000, 150000], "claude-3-5-haiku-20241022": [80000, 1000000] }; // read, write
  const part = (tokens, price) => ceilDiv(BigInt(tokens) * BigInt(price), 1000000n);
  // input: uncached at the input price, read and written at theirs, each part rounded up
  const cached = (model, input, read, write, output) => Number(part(input - read - write, PRICES[model][0]) +
    part(read, CACHE[model][0]) + part(write, CACHE[model][1]) + part(output, PRICES[model][1]));
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
  const long = "a long and stable system prompt, cached by the provider ".repeat(8);

  // OpenAI: cached_tokens are part of prompt_tokens, read at half the input price
  const r = await openai.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 5,
    messages: [{ role: "user", content: `${long} [mock:cache_read=100]` }] });
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 100);
  let list = await settled(id);
  const oa = cached("gpt-4o-mini", r.usage.prompt_tokens, 100, 0, 5);
  assert.equal(list[0].amount_micro, oa);
  assert.ok(oa < cost("gpt-4o-mini", r.usage.prompt_tokens, 5), "cheaper than uncached input");

  // Anthropic: input_tokens leave the cache out; writes cost 1.25x, reads 0.1x
  const model = "claude-3-5-haiku-20241022";
  const m = await anthropic.messages.create({ model, max_tokens: 4,
    messages: [{ role: "user", content: `${long} [mock:cache_read=60][mock:cache_write=30]` }] });
  assert.equal(m.usage.cache_read_input_tokens, 60);
  assert.equal(m.usage.cache_creation_input_tokens, 30);
  const total = m.usage.input_tokens + 90;
  list = await settled(id);
  assert.equal(list[0].amount_micro, cached(model, total, 60, 30, 4));

  // streamed, and through the OpenAI client (translated: prompt_tokens counts every input token)
  const chunks = [];
  for await (const c of await openai.chat.completions.create({ model, stream: true, max_tokens: 3,
    stream_options: { include_usage: true },
    messages: [{ role: "user", content: `${long} [mock:cache_read=50][mock:cache_write=20]` }] })) chunks.push(c);
  const usage = chunks.at(-1).usage;
  assert.equal(usage.prompt_tokens_details.cached_tokens, 50);
  list = await settled(id);
  assert.equal(list[0].amount_micro, cached(model, usage.prompt_tokens, 50, 20, 3));
  const t = await openai.chat.completions.create({ model, max_tokens: 3,
    messages: [{ role: "user", content: `${long} [mock:cache_write=40]` }] });
  assert.equal(t.usage.prompt_tokens_details.cached_tokens, 0);
  list = await settled(id);
  assert.equal(list[0].amount_micro, cached(model, t.usage.prompt_tokens, 0, 40, 3));
  assert.ok(list[0].amount_micro > cost(model, t.usage.prompt_tokens, 3), "a cache write costs more than input");

  // an OpenAI model through the Anthropic client: cached tokens shown as cache reads
  const o = await anthropic.messages.create({ model: "gpt-4o-mini", max_tokens: 2,
    messages: [{ role: "user", content: `${long} [mock:cache_read=70]` }] });
  assert.equal(o.usage.cache_read_input_tokens, 70);
  list = await settled(id);
  assert.equal(list[0].amount_micro, cached("gpt-4o-mini", o.usage.input_tokens + 70, 70, 0, 2));

  // /v1/pricing names the cache prices
  const p = await call("GET", "/v1/pricing");
  const row = p.body.models.find((x) => x.id === model);
  assert.equal(row.cache_read_micro_per_mtok, 80000);
  assert.equal(row.cache_write_micro_per_mtok, 1000000);
  assert.equal(row.cache_write_1h_micro_per_mtok, 1600000); // Anthropic's hour-long writes: twice the input
  await audit();
});

test("tool calls pass through both ways, translated for Anthropic models", async () => {
  const { key } = await account(10_000_000);
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const tools = [{ type: "function", function: { name: "get_weather", description: "weather",
    parameters: { type: "object", properties: { city: { type: "string" } } } } }];
  for (const model of ["gpt-4o-mini", "claude-3-5-haiku-20241022"]) {
    const r = await openai.chat.completions.create({ model, tools, tool_choice: "auto",
      messages: [{ role: "user", content: "weather? [mock:tool=get_weather]" }] });
    assert.equal(r.choices[0].finish_reason, "tool_calls", model);
    const tc = r.choices[0].message.tool_calls[0];
    assert.equal(tc.function.name, "get_weather");
    assert.deepEqual(JSON.parse(tc.function.arguments), { city: "Paris" });

    // the result goes back: an assistant tool call and a tool message
    const again = await openai.chat.completions.create({ model, tools, messages: [
      { role: "user", content: "weather?" },
      { role: "assistant", content: null, tool_calls: [tc] },
      { role: "tool", tool_call_id: tc.id, content: "sunny" },
    ] });
    assert.ok(again.choices[0].message.content.length > 0);

    const chunks = [];
    for await (const c of await openai.chat.completions.create({ model, tools, stream: true,
      messages: [{ role: "user", content: "[mock:tool=get_weather]" }] })) chunks.push(c);
    const calls = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
    assert.equal(calls[0].function.name, "get_weather", model);
    assert.deepEqual(JSON.parse(calls.map((c) => c.function.arguments ?? "").join("")), { city: "Paris" });
    assert.equal(chunks.find((c) => c.choices[0]?.finish_reason)?.choices[0].finish_reason, "tool_calls");
  }
  const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
  const m = await anthropic.messages.create({ model: "claude-3-5-haiku-20241022", max_tokens: 50,
    tools: [{ name: "get_weather", input_schema: { type: "object" } }],
    messages: [{ role: "user", content: "[mock:tool=get_weather]" }] });
  assert.equal(m.stop_reason, "tool_use");
  assert.deepEqual(m.content[0].input, { city: "Paris" });
  await audit();
});

test("/api/v1/prompt answers in Chat402's shape with exact costs", async () => {
  const { id, key } = await account(10_000_000);
  const r = await call("POST", "/api/v1/prompt", { model: "gpt-4o-mini", prompt: "Explain [mock:tokens=9]" },
    { authorization: `Bearer ${key}`, "content-type": "application/json" });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.success, true);
  assert.equal(r.body.text, "The mock model says hello from farebox. The mock ");
  assert.equal(r.body.usage.outputTokens, 9);
  const total = cost("gpt-4o-mini", r.body.usage.inputTokens, 9);
  assert.equal(r.body.cost.totalCostMicro, total);
  assert.equal(r.body.cost.totalCost, total / 1e6);
  assert.equal(r.body.requestId, r.headers.get("x-request-id"));
  assert.equal((await settled(id))[0].amount_micro, total);

  const bad = await call("POST", "/api/v1/prompt", { model: "gpt-4o-mini", prompt: "x", colour: 1 },
    { authorization: `Bearer ${key}`, "content-type": "application/json" });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.code, "invalid_request");

  // Chat402's payment proof: a wallet signs the request id and an amount in USDC cents; the request id
  // is used once and the call's ceiling must fit the amount
  const wallet = privateKeyToAccount(generatePrivateKey());
  const proof = async (amount, requestId = `req_${crypto.randomUUID()}`) => {
    const timestamp = Date.now();
    const message = `PromptPort Payment\nRequest ID: ${requestId}\nAmount: ${amount} USDC cents\nTimestamp: ${timestamp}`;
    return { from: wallet.address, amount, timestamp, requestId, network: "base", signature: await wallet.signMessage({ message }) };
  };
  const auth = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const p1 = await proof(100);
  const paid = await call("POST", "/api/v1/prompt", { model: "gpt-4o-mini", prompt: "with proof", payment: p1 }, auth);
  assert.equal(paid.status, 200, paid.text);
  assert.equal(paid.body.success, true);
  const reused = await call("POST", "/api/v1/prompt", { model: "gpt-4o-mini", prompt: "again", payment: p1 }, auth);
  assert.equal(reused.status, 402);
  assert.equal(reused.body.code, "payment_invalid");
  assert.equal(reused.body.details.reason, "request_id_used");
  const forged = { ...(await proof(100)), amount: 5000 };
  const f = await call("POST", "/api/v1/prompt", { model: "gpt-4o-mini", prompt: "forged", payment: forged }, auth);
  assert.equal(f.status, 402);
  assert.equal(f.body.details.reason, "message_signer_mismatch");
  const tiny = await call("POST", "/api/v1/prompt", { model: "gpt-4o", prompt: "cheap",
    payment: await proof(1) }, auth); // 1 cent: below gpt-4o's ceiling at its output cap (16,384 x $10/Mtok)
  assert.equal(tiny.status, 402);
  assert.equal(tiny.body.details.reason, "amount_too_low");
  // a proof whose fields are not plain values (nested deeper than an RPC message may be: it once aborted
  // the edge), and an admin body so nested: 400, and the edge still serves
  let deep = "x";
  for (let i = 0; i < 20; i++) deep = [deep];
  const nested = await call("POST", "/api/v1/prompt", { model: "gpt-4o-mini", prompt: "nested",
    payment: { ...(await proof(100)), network: deep } }, auth);
  assert.equal(nested.status, 400, JSON.stringify(nested.body));
  assert.equal(nested.body.code, "invalid_request");
  const adminDeep = await call("POST", "/admin/accounts", { label: deep });
  assert.equal(adminDeep.status, 400, JSON.stringify(adminDeep.body));
  assert.equal((await fetch(`${url}/healthz`)).status, 200);
  const list = await settled(id);
  assert.equal(list.length, 2, "refused proofs charged nothing");
  await audit();
});

test("streams that break: no usage, cut mid-stream, a client that leaves", async () => {
  const { id, key } = await account(10_000_000);
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const body = (content) => JSON.stringify({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content }] });

  // no usage from the provider: charged from the conservative count, never zero
  let text = "";
  for await (const c of await openai.chat.completions.create({ model: "gpt-4o-mini", stream: true,
    messages: [{ role: "user", content: "[mock:nousage][mock:tokens=6]" }] })) text += c.choices[0]?.delta?.content ?? "";
  let list = await settled(id);
  const nousageBody = body("[mock:nousage][mock:tokens=6]");
  assert.equal(list[0].amount_micro,
    cost("gpt-4o-mini", Buffer.byteLength(nousageBody), outputEstimate(6, Buffer.byteLength(text))));

  // the provider drops the connection after 5 tokens: the caller gets an error
  // at the end of what was delivered, and pays for what was delivered
  let cut = "";
  await assert.rejects(async () => {
    for await (const c of await openai.chat.completions.create({ model: "gpt-4o-mini", stream: true,
      messages: [{ role: "user", content: "[mock:cut=5][mock:tokens=20]" }] })) cut += c.choices[0]?.delta?.content ?? "";
  }, (e) => /broke off|ended early/.test(e.message));
  assert.equal(cut, "The mock model says hello ");
  list = await settled(id);
  assert.equal(list[0].amount_micro, cost("gpt-4o-mini", Buffer.byteLength(body("[mock:cut=5][mock:tokens=20]")),
    outputEstimate(5, Buffer.byteLength(cut))));

  // the client leaves after a few tokens of a slow stream: the provider call is
  // cancelled, the input and the output produced are charged, the rest released
  const slow = await openai.chat.completions.create({ model: "gpt-4o-mini", stream: true, max_tokens: 200,
    messages: [{ role: "user", content: "[mock:tokens=200][mock:rate=50]" }] });
  let seen = 0;
  for await (const c of slow) if (c.choices[0]?.delta?.content && ++seen === 3) break; // the SDK aborts the request
  assert.equal(seen, 3);
  list = await settled(id);
  const h = list[0];
  const inputCost = cost("gpt-4o-mini", Buffer.byteLength(JSON.stringify({ model: "gpt-4o-mini", stream: true,
    max_tokens: 200, messages: [{ role: "user", content: "[mock:tokens=200][mock:rate=50]" }] })), 0);
  assert.ok(h.amount_micro >= inputCost + cost("gpt-4o-mini", 0, 3), `charged ${h.amount_micro}`);
  assert.ok(h.amount_micro < inputCost + cost("gpt-4o-mini", 0, 100), "the unproduced output was released");

  // a client over HTTP/1.1 that leaves while the provider is silent (5 s before its first token): the edge
  // looks at the connection each second, cancels the provider call and charges the input only (else
  // it would have learnt of it at its first write, and charged the whole answer), whole or streamed
  for (const stream of [true, false]) {
    const quiet = JSON.stringify({ model: "gpt-4o-mini", stream, max_tokens: 50,
      messages: [{ role: "user", content: `[mock:delay=5000][mock:tokens=50] quiet ${stream}` }] });
    await new Promise((resolve, reject) => {
      const r = http.request(`${url}/v1/chat/completions`, { method: "POST", agent: false,
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
      r.on("error", () => {}); // it is destroyed below
      r.end(quiet, () => setTimeout(() => { r.destroy(); resolve(); }, 300));
      r.on("response", () => reject(new Error("answered before the provider spoke")));
    });
    await waitUntil(async () => (await settled(id)).length === list.length + 1, { timeoutMs: 20000, intervalMs: 100,
      what: "the left call charged" });
    list = await settled(id);
    assert.equal(list[0].amount_micro, cost("gpt-4o-mini", Buffer.byteLength(quiet), 0), `stream ${stream}: the input only`);
  }
  await audit();
});

test("refused and failed calls charge nothing and surface as the SDK's exceptions", async () => {
  const { id, key, keyId } = await account(10_000_000, { models: ["gpt-4o-mini"] });
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const msgs = (content) => [{ role: "user", content }];
  const before = await available(id);
  const cases = [
    [() => new OpenAI({ baseURL: `${url}/v1`, apiKey: "fbx_" + "a".repeat(43), maxRetries: 0 }).chat.completions
      .create({ model: "gpt-4o-mini", messages: msgs("x") }), OpenAI.AuthenticationError, "invalid_key"],
    [() => openai.chat.completions.create({ model: "no-such-model", messages: msgs("x") }), OpenAI.NotFoundError,
      "model_not_found"],
    [() => openai.chat.completions.create({ model: "gpt-4o", messages: msgs("x") }), OpenAI.PermissionDeniedError,
      "model_not_allowed"],
    [() => openai.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 10 ** 7, messages: msgs("x") }),
      OpenAI.BadRequestError, "invalid_request"],
    [() => openai.chat.completions.create({ model: "gpt-4o-mini", messages: [] }), OpenAI.BadRequestError,
      "invalid_request"],
    [() => openai.chat.completions.create({ model: "gpt-4o-mini", n: 0, messages: msgs("x") }),
      OpenAI.BadRequestError, "invalid_request"],
    [() => openai.chat.completions.create({ model: "gpt-4o-mini", n: 129, messages: msgs("x") }),
      OpenAI.BadRequestError, "invalid_request"],
    [() => openai.chat.completions.create({ model: "claude-3-5-haiku-20241022", n: 2, messages: msgs("x") }),
      OpenAI.BadRequestError, "invalid_request"],
    [() => openai.chat.completions.create({ model: "gpt-4o-mini", messages: msgs("[mock:fail=500]") }),
      OpenAI.InternalServerError, "upstream_error"],
    [() => openai.chat.completions.create({ model: "gpt-4o-mini", messages: msgs("[mock:fail=400]") }),
      OpenAI.BadRequestError, "invalid_request"],
    [() => openai.chat.completions.create({ model: "gpt-4o-mini", stream: true, messages: msgs("[mock:fail=503]") }),
      OpenAI.InternalServerError, "upstream_error"],
    [() => openai.chat.completions.create({ model: "gpt-4o-mini", messages: msgs("[mock:hang]") }),
      OpenAI.APIError, "upstream_timeout"],
  ];
  for (const [fn, cls, code] of cases) {
    await assert.rejects(fn, (e) => {
      assert.ok(e instanceof cls, `${code}: got ${e.constructor.name} ${e.status} ${e.message}`);
      assert.equal(e.code ?? e.error?.code, code);
      return true;
    });
  }
  // the provider refusing the gateway's own account (its key, its quota): a 502 that does not repeat the
  // provider's words (they may name the operator's key or organization), which are logged
  for (const status of [401, 403, 429]) {
    await assert.rejects(openai.chat.completions.create({ model: "gpt-4o-mini", messages: msgs(`[mock:fail=${status}]`) }),
      (e) => {
        assert.ok(e instanceof OpenAI.InternalServerError, `${status}: ${e.constructor.name} ${e.message}`);
        assert.equal(e.code, "upstream_error");
        assert.doesNotMatch(e.message, /mock failure/);
        assert.match(e.message, new RegExp(`refused this gateway's account \\(status ${status}\\)`));
        return true;
      });
  }
  // the Anthropic client on /v1/messages: its own exceptions
  const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
  await assert.rejects(anthropic.messages.create({ model: "claude-3-5-haiku-20241022", max_tokens: 5,
    messages: msgs("x") }), Anthropic.PermissionDeniedError);
  await assert.rejects(anthropic.messages.create({ model: "gpt-4o-mini", max_tokens: 5, messages: msgs("[mock:fail=400]") }),
    Anthropic.BadRequestError);

  // not enough money: 402 with the figures
  const poor = await account(10);
  const r = await call("POST", "/v1/chat/completions", { model: "gpt-4o-mini", messages: msgs("x") },
    { authorization: `Bearer ${poor.key}`, "content-type": "application/json" });
  assert.equal(r.status, 402);
  assert.equal(r.body.error.code, "insufficient_balance");
  assert.equal(r.body.error.balance_micro, 10);
  assert.equal(r.body.error.deficit_micro, r.body.error.required_micro - 10);
  // n answers may each reach max_tokens: the ceiling covers them all (bodies of
  // the same length, so the input part is the same: 100 output tokens cost 60)
  const required = async (n, max) => (await call("POST", "/v1/chat/completions",
    { model: "gpt-4o-mini", n, max_tokens: max, messages: msgs("x") },
    { authorization: `Bearer ${poor.key}`, "content-type": "application/json" })).body.error.required_micro;
  const one = await required(1, 100);
  assert.equal(await required(3, 100), one + 120);
  assert.equal(await required(3, 100), await required(1, 300));

  // a spend cap below the hold, then a revoked key
  const capped = await account(10_000_000, { spend_cap_micro: 100 });
  const rc = await call("POST", "/v1/chat/completions", { model: "gpt-4o-mini", messages: msgs("x") },
    { authorization: `Bearer ${capped.key}`, "content-type": "application/json" });
  assert.equal(rc.status, 403);
  assert.equal(rc.body.error.code, "spend_limit_exceeded");
  assert.equal((await call("POST", `/admin/keys/${keyId}/revoke`)).status, 200);
  await assert.rejects(openai.chat.completions.create({ model: "gpt-4o-mini", messages: msgs("x") }),
    (e) => e instanceof OpenAI.AuthenticationError && e.code === "key_revoked");

  const list = await settled(id);
  assert.equal(list.length, 0, JSON.stringify(list));
  assert.equal(await available(id), before);
  assert.equal(await available(poor.id), 10);
  await audit();
});

test("a spend cap lowered through one edge stops the key's calls on another within a second, its open slice notwithstanding", async () => {
  const { id, key, keyId } = await account(10_000_000);
  const other = await startEdge({ FAREBOX_PREPAID_SLICE_IDLE_MS: "600000" });
  const client = new OpenAI({ baseURL: `${other}/v1`, apiKey: key, maxRetries: 0 });
  const ask = (i) => client.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 2,
    messages: [{ role: "user", content: `cap ${i}` }] });
  for (let i = 0; i < 2; i++) await ask(i);
  assert.equal((await holds(id))[0].state, "open", "the other edge's slice is open");
  // through this edge (the other one drops nothing itself): a cap below what the key spent
  const patched = await call("PATCH", `/admin/keys/${keyId}`, { spend_cap_micro: 1 });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
  await sleep(1100); // the other edge's lookups are at most a second old
  await assert.rejects(ask(2), (e) => e instanceof OpenAI.PermissionDeniedError && e.code === "spend_limit_exceeded");
  assert.equal((await settled(id)).length, 2, "nothing charged past the cap");
  await audit();
});

test("HTTP/2 (h2c): the same paid calls, whole and streamed", async () => {
  const { id, key } = await account(10_000_000);
  const session = http2.connect(url);
  const post = (body) => new Promise((resolve, reject) => {
    const s = session.request({ ":method": "POST", ":path": "/v1/chat/completions", authorization: `Bearer ${key}`,
      "content-type": "application/json" });
    let data = "", headers;
    s.on("response", (h) => (headers = h));
    s.on("data", (d) => (data += d));
    s.on("end", () => resolve({ headers, data }));
    s.on("error", reject);
    s.end(JSON.stringify(body));
  });
  const whole = await post({ model: "gpt-4o-mini", max_tokens: 3, messages: [{ role: "user", content: "h2" }] });
  assert.equal(whole.headers[":status"], 200);
  const doc = JSON.parse(whole.data);
  assert.equal(doc.usage.completion_tokens, 3);
  const streamed = await post({ model: "claude-3-5-haiku-20241022", max_tokens: 4, stream: true,
    stream_options: { include_usage: true }, messages: [{ role: "user", content: "h2" }] });
  assert.equal(streamed.headers["content-type"], "text/event-stream");
  const events = streamed.data.split("\n\n").filter(Boolean);
  assert.equal(events.at(-1), "data: [DONE]");
  const usage = JSON.parse(events.at(-2).slice(6)).usage;
  session.close();
  const list = await settled(id);
  assert.equal(list[1].amount_micro, cost("gpt-4o-mini", doc.usage.prompt_tokens, 3));
  assert.equal(list[0].amount_micro, cost("claude-3-5-haiku-20241022", usage.prompt_tokens, 4));
  await audit();
});

/** A short gpt-4o-mini call through an OpenAI client, and what it costs. */
const miniCall = (client, content, extra = {}) => client.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 4,
  messages: [{ role: "user", content }], ...extra });
const miniCost = (a) => cost("gpt-4o-mini", a.usage.prompt_tokens, a.usage.completion_tokens);
/** n of them one after another: their cost in all, and their request ids in order. */
async function miniCalls(client, prefix, n) {
  let total = 0;
  const refs = [];
  for (let i = 0; i < n; i++) {
    const a = await miniCall(client, `${prefix} ${i}`);
    total += miniCost(a);
    refs.push(a._request_id);
  }
  return { total, refs };
}
/** An account's charges, newest first. */
const chargesOf = async (id) => (await call("GET", `/admin/accounts/${id}/charges?limit=500`)).body.charges;

async function startEdge(env) {
  const port = await freePort();
  const p = await startService("edge", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${port}`, FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`,
    FAREBOX_VERIFIER_ENDPOINT: `tcp://127.0.0.1:${vp}`, FAREBOX_ADMIN_TOKEN: ADMIN, FAREBOX_KEY_HMAC_SECRET: HMAC,
    FAREBOX_MOCK_MODEL_URL: `http://127.0.0.1:${mp}`, ...env });
  extraEdges.push(p);
  return `http://127.0.0.1:${port}`;
}

// A name the system's resolver maps to this machine, looked up by libcurl on its resolver thread (it
// answers "localhost" itself): another name of 127.x in /etc/hosts, or else the host's own name.
function resolvedName() {
  for (const line of fs.readFileSync("/etc/hosts", "utf8").split("\n")) {
    const [addr, ...names] = line.replace(/#.*/, "").trim().split(/\s+/);
    if (/^127\./.test(addr ?? "")) for (const n of names) if (n && !/localhost/i.test(n)) return n;
  }
  return os.hostname();
}

test("a provider named by host name: every call is answered, each on a new connection", async () => {
  // libcurl resolves the name on a thread that signals through a socket pair, which it closes
  // without CURLOPT_CLOSESOCKETFUNCTION; the watcher put on that socket must not outlive it, or
  // the next connection accepted on the same descriptor is never read (stop 29: HAProxy's 502
  // after the edge had held the request unread for 10 s)
  const port = await freePort();
  const named = new Proc(bin("farebox-mock-model"), [], { env: { FAREBOX_MOCK_LISTEN: `0.0.0.0:${port}` },
    name: "mock-by-name" });
  await named.waitForMsg("mock model listening");
  try {
    const name = resolvedName();
    const edgeUrl = await startEdge({ FAREBOX_MOCK_MODEL_URL: `http://${name}:${port}` });
    const { id, key } = await account(10_000_000);
    const once = (i) => new Promise((resolve, reject) => {
      const body = JSON.stringify({ model: "gpt-4o-mini", max_tokens: 3, messages: [{ role: "user", content: `n${i}` }] });
      const req = http.request(`${edgeUrl}/v1/chat/completions`, { method: "POST", agent: false, timeout: 4000,
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "x-request-id": `named-${i}` } },
      (res) => {
        let text = "";
        res.on("data", (d) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode, text }));
      });
      req.on("timeout", () => req.destroy(new Error(`call ${i} not answered within 4 s (name ${name})`)));
      req.on("error", reject);
      req.end(body);
    });
    // calls at once, each having the name looked up (their socket pairs are closed after the
    // connections are made, above the descriptors in use), then more at once than before, so that
    // the new connections take those descriptors; each call on a connection of its own
    const range = (from, n) => Array.from({ length: n }, (_, i) => from + i);
    const answers = await Promise.all(range(0, 6).map(once));
    answers.push(...await Promise.all(range(6, 24).map(once)));
    let paid = 0;
    for (const r of answers) {
      assert.equal(r.status, 200, r.text);
      const u = JSON.parse(r.text).usage;
      paid += cost("gpt-4o-mini", u.prompt_tokens, u.completion_tokens);
    }
    await waitUntil(async () => (await settled(id)).length === answers.length, { timeoutMs: 10000,
      what: "a charge for each call" });
    assert.equal((await settled(id)).reduce((n, c) => n + c.amount_micro, 0), paid);
    await audit();
  } finally {
    named.signal("SIGTERM");
    await named.exited;
  }
});

test("a provider route that fails before any output is retried once on its second route; refusals are not", async () => {
  // the main OpenAI route: a server that answers what it is told; the second route: the mock
  const seen = [];
  let answer = 503;
  const primary = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      seen.push({ path: req.url, auth: req.headers.authorization, body });
      res.writeHead(answer, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { message: `route down (${answer})`, type: "server_error" } }));
    });
  });
  await new Promise((r) => primary.listen(0, "127.0.0.1", r));
  // the second route: the mock, behind a recorder of the key it is sent
  const secondAuth = [];
  const second = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", async () => {
      secondAuth.push(req.headers.authorization);
      const up = await fetch(`http://127.0.0.1:${mp}${req.url}`, { method: "POST", body,
        headers: { "content-type": "application/json" } });
      res.writeHead(up.status, { "content-type": up.headers.get("content-type") });
      for await (const chunk of up.body) res.write(chunk);
      res.end();
    });
  });
  await new Promise((r) => second.listen(0, "127.0.0.1", r));
  const routes = { FAREBOX_OPENAI_API_KEY: "sk-main-route",
    FAREBOX_OPENAI_FALLBACK_URL: `http://127.0.0.1:${second.address().port}`,
    FAREBOX_OPENAI_FALLBACK_API_KEY: "sk-second-route", FAREBOX_PREPAID_SLICE_IDLE_MS: "50" };
  const routed = await startEdge({ ...routes, FAREBOX_OPENAI_BASE_URL: `http://127.0.0.1:${primary.address().port}` });
  const deadPort = await freePort(); // nothing listens there
  const unreachable = await startEdge({ ...routes, FAREBOX_OPENAI_BASE_URL: `http://127.0.0.1:${deadPort}` });
  try {
    const { id, key } = await account(10_000_000);
    const before = await available(id);
    const msgs = (content) => [{ role: "user", content }];
    const client = (base) => new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
    let expected = 0;
    // 503, 429 and 529 on the main route: served by the second, charged once at the reported usage
    for (const status of [503, 429, 529]) {
      answer = status;
      const r = await client(routed).chat.completions.create({ model: "gpt-4o-mini", messages: msgs(`hi ${status}`) });
      assert.match(r.id, /^chatcmpl-mock/);
      expected += cost("gpt-4o-mini", r.usage.prompt_tokens, r.usage.completion_tokens);
    }
    assert.equal(seen.length, 3);
    assert.ok(seen.every((x) => x.path === "/v1/chat/completions" && x.auth === "Bearer sk-main-route"));
    assert.match(seen[0].body, /"model":"gpt-4o-mini"/);
    // a stream too: nothing had been sent to the caller when the main route failed
    answer = 502;
    const stream = await client(routed).chat.completions.create({ model: "gpt-4o-mini", stream: true,
      stream_options: { include_usage: true }, messages: msgs("stream") });
    let text = "", usage;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      if (chunk.usage) usage = chunk.usage;
    }
    assert.ok(text.length > 0 && usage, JSON.stringify({ text, usage }));
    expected += cost("gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens);
    // a main route that cannot be reached at all
    const r2 = await client(unreachable).chat.completions.create({ model: "gpt-4o-mini", messages: msgs("down") });
    expected += cost("gpt-4o-mini", r2.usage.prompt_tokens, r2.usage.completion_tokens);
    // a refusal is the caller's answer, not retried; a second route that fails too ends the call: nothing charged
    answer = 400;
    await assert.rejects(client(routed).chat.completions.create({ model: "gpt-4o-mini", messages: msgs("bad") }),
      (e) => e instanceof OpenAI.BadRequestError && e.code === "invalid_request" && /route down \(400\)/.test(e.message));
    answer = 500;
    await assert.rejects(client(routed).chat.completions.create({ model: "gpt-4o-mini",
      messages: msgs("[mock:fail=500]") }), (e) => e instanceof OpenAI.InternalServerError && e.code === "upstream_error");
    assert.equal(seen.length, 6);
    assert.equal(secondAuth.length, 6); // 3 + stream + unreachable + the failing one; the refusal never went there
    assert.ok(secondAuth.every((a) => a === "Bearer sk-second-route"), JSON.stringify(secondAuth));
    // Anthropic models have no second route here: unaffected
    const a = await new Anthropic({ baseURL: routed, apiKey: key, maxRetries: 0 }).messages.create({
      model: "claude-3-5-haiku-20241022", max_tokens: 5, messages: msgs("x") });
    expected += cost("claude-3-5-haiku-20241022", a.usage.input_tokens, a.usage.output_tokens);

    const list = await settled(id);
    assert.equal(list.length, 6);
    assert.equal(list.reduce((t, c) => t + c.amount_micro, 0), expected);
    assert.equal(await available(id), before - expected);
    const metrics = await (await fetch(`${routed}/metrics`)).text();
    assert.match(metrics, /^farebox_edge_upstream_fallbacks_total\{provider="openai"\} 5$/m);
    assert.match(metrics, /^farebox_edge_upstream_fallbacks_total\{provider="anthropic"\} 0$/m);
    assert.match(await (await fetch(`${unreachable}/metrics`)).text(),
      /^farebox_edge_upstream_fallbacks_total\{provider="openai"\} 1$/m);
  } finally {
    primary.close();
    second.close();
  }
  await audit();
});

test("a model on a catalog route goes to that route with that route's key; its fallback takes it when it fails", async () => {
  // the catalog route: a recorder in front of the mock that answers what it is told
  const seen = [];
  let down = false;
  const house = http.createServer((req, res) => {
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", async () => {
      seen.push({ path: req.url, auth: req.headers.authorization, apiKey: req.headers["x-api-key"], body });
      if (down) {
        res.writeHead(503, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: "house route down", type: "server_error" } }));
        return;
      }
      const up = await fetch(`http://127.0.0.1:${mp}${req.url}`, { method: "POST", body,
        headers: { "content-type": "application/json" } });
      res.writeHead(up.status, { "content-type": up.headers.get("content-type") });
      res.end(Buffer.from(await up.arrayBuffer()));
    });
  });
  await new Promise((r) => house.listen(0, "127.0.0.1", r));
  const dir = tmpDir("routes");
  const keyFile = path.join(dir, "house.key");
  fs.writeFileSync(keyFile, "sk-house-route\n");
  const HOUSE = [7000, 21000]; // micro-USDC per million input and output tokens
  const catalog = path.join(dir, "catalog.json");
  fs.writeFileSync(catalog, JSON.stringify({
    routes: [{ name: "house", provider: "openai", base_url: `http://127.0.0.1:${house.address().port}`,
      api_key_env: "FBT_HOUSE_KEY", fallback: "openai" },
    { name: "house-anthropic", provider: "anthropic", base_url: `http://127.0.0.1:${house.address().port}`,
      api_key_env: "FBT_HOUSE_ANTHROPIC_KEY" }],
    models: [
      { id: "house-claude", provider: "anthropic", route: "house-anthropic", upstream: "claude-3-5-haiku-20241022",
        input_price: HOUSE[0], output_price: HOUSE[1], context_tokens: 8192, max_output_tokens: 1024 },
      { id: "house-llama", provider: "openai", route: "house", upstream: "llama-3.1-8b", input_price: HOUSE[0],
        output_price: HOUSE[1], context_tokens: 8192, max_output_tokens: 1024 },
      { id: "gpt-4o-mini", provider: "openai", input_price: PRICES["gpt-4o-mini"][0],
        output_price: PRICES["gpt-4o-mini"][1], context_tokens: 128000, max_output_tokens: 16384 }] }));
  const routed = await startEdge({ FAREBOX_CATALOG_FILE: catalog, FBT_HOUSE_KEY_FILE: keyFile,
    FBT_HOUSE_ANTHROPIC_KEY: "sk-ant-house", FAREBOX_PREPAID_SLICE_IDLE_MS: "50" });
  const houseCost = (input, output) => Number(ceilDiv(BigInt(input) * BigInt(HOUSE[0]), 1000000n) +
    ceilDiv(BigInt(output) * BigInt(HOUSE[1]), 1000000n));
  try {
    const { id, key } = await account(10_000_000);
    const before = await available(id);
    const client = new OpenAI({ baseURL: `${routed}/v1`, apiKey: key, maxRetries: 0 });
    const msgs = (content) => [{ role: "user", content }];
    let expected = 0;
    // the catalog route: its own URL, its own key (from FBT_HOUSE_KEY_FILE), the upstream model name
    const r = await client.chat.completions.create({ model: "house-llama", max_tokens: 7, messages: msgs("hi house") });
    assert.equal(r.model, "llama-3.1-8b");
    expected += houseCost(r.usage.prompt_tokens, r.usage.completion_tokens);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].path, "/v1/chat/completions");
    assert.equal(seen[0].auth, "Bearer sk-house-route");
    assert.match(seen[0].body, /"model":"llama-3.1-8b"/);
    // streamed too
    let usage;
    for await (const chunk of await client.chat.completions.create({ model: "house-llama", max_tokens: 4,
      stream: true, stream_options: { include_usage: true }, messages: msgs("stream") })) {
      if (chunk.usage) usage = chunk.usage;
    }
    expected += houseCost(usage.prompt_tokens, usage.completion_tokens);
    assert.equal(seen.length, 2);
    // a route in Anthropic's dialect: its key as x-api-key, through either client
    const a = await new Anthropic({ baseURL: routed, apiKey: key, maxRetries: 0 }).messages.create({
      model: "house-claude", max_tokens: 6, messages: msgs("hi claude") });
    expected += houseCost(a.usage.input_tokens, a.usage.output_tokens);
    const t = await client.chat.completions.create({ model: "house-claude", max_tokens: 2, messages: msgs("via openai") });
    expected += houseCost(t.usage.prompt_tokens, t.usage.completion_tokens);
    assert.equal(seen.length, 4);
    for (const x of seen.slice(2)) {
      assert.equal(x.path, "/v1/messages");
      assert.equal(x.apiKey, "sk-ant-house");
      assert.equal(x.auth, undefined);
      assert.match(x.body, /"model":"claude-3-5-haiku-20241022"/);
    }
    // a model without a route takes its provider's built-in route (here the mock): the house route sees nothing
    const o = await client.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 3, messages: msgs("plain") });
    expected += cost("gpt-4o-mini", o.usage.prompt_tokens, o.usage.completion_tokens);
    assert.equal(seen.length, 4);
    // the house route down: its fallback (the built-in OpenAI route) serves the call, at the model's own prices
    down = true;
    const f = await client.chat.completions.create({ model: "house-llama", max_tokens: 5, messages: msgs("down") });
    assert.match(f.id, /^chatcmpl-mock/);
    expected += houseCost(f.usage.prompt_tokens, f.usage.completion_tokens);
    assert.equal(seen.length, 5);
    // a route without a fallback: its failure is the caller's 502, nothing charged
    await assert.rejects(new Anthropic({ baseURL: routed, apiKey: key, maxRetries: 0 }).messages.create({
      model: "house-claude", max_tokens: 6, messages: msgs("down too") }),
    (e) => e instanceof Anthropic.InternalServerError && e.status === 502);
    assert.equal(seen.length, 6);

    const list = await settled(id);
    assert.equal(list.length, 6);
    assert.equal(list.reduce((t, c) => t + c.amount_micro, 0), expected);
    assert.equal(await available(id), before - expected);
    assert.match(await (await fetch(`${routed}/metrics`)).text(),
      /^farebox_edge_upstream_fallbacks_total\{provider="openai"\} 1$/m);
  } finally {
    house.close();
  }
  await audit();
});

test("a charge write the ledger does not answer in time is sent again as is: the call is answered and charged once", async () => {
  const stalled = await startEdge({ FAREBOX_PREPAID_SLICE_IDLE_MS: "50" });
  const proc = extraEdges.at(-1);
  const { id, key } = await account(10_000_000);
  const client = new OpenAI({ baseURL: `${stalled}/v1`, apiKey: key, maxRetries: 0 });
  const before = await available(id);
  // the key looked up and its slice opened; then the ledger stops while the provider answers
  await client.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 2, messages: [{ role: "user", content: "warm" }] });
  const pending = client.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 4,
    messages: [{ role: "user", content: "[mock:delay=1500] the ledger is away" }] });
  await sleep(500);
  ledger.signal("SIGSTOP");
  let resumed = false;
  try {
    // no answer within the write's deadline (10 s): its outcome is unknown, so it is sent again
    await proc.waitFor((e) => e.json?.msg === "a charge write's outcome is unknown; it is sent again",
      { timeoutMs: 20000, what: "the charge write sent again" });
    ledger.signal("SIGCONT");
    resumed = true;
    const r = await pending; // answered, not refused: the charge is known
    assert.equal(r.usage.completion_tokens, 4);
    const list = await settled(id);
    assert.equal(list.length, 2);
    const expected = list.reduce((t, c) => t + c.amount_micro, 0);
    assert.equal(list[0].amount_micro, cost("gpt-4o-mini", r.usage.prompt_tokens, 4));
    assert.equal(await available(id), before - expected);
  } finally {
    if (!resumed) ledger.signal("SIGCONT");
  }
  await audit();
});

test("an Anthropic stream whose input grows (a server tool ran) is charged its final counts", async () => {
  // a provider that streams Anthropic events: message_start counts 12 input tokens and 100 written to the
  // cache (70 of them for an hour); message_delta, after the tool ran, counts 860 input, 40 read from the
  // cache and 5 output
  const events = [
    ["message_start", { type: "message_start", message: { id: "msg_1", type: "message", role: "assistant",
      model: "claude-3-5-haiku-20241022", content: [], stop_reason: null,
      usage: { input_tokens: 12, output_tokens: 1, cache_creation_input_tokens: 100,
        cache_creation: { ephemeral_5m_input_tokens: 30, ephemeral_1h_input_tokens: 70 } } } }],
    ["content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }],
    ["content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Found it." } }],
    ["content_block_stop", { type: "content_block_stop", index: 0 }],
    ["message_delta", { type: "message_delta", delta: { stop_reason: "end_turn" },
      usage: { input_tokens: 860, cache_read_input_tokens: 40, output_tokens: 5 } }],
    ["message_stop", { type: "message_stop" }]];
  const bodies = [];
  const scripted = http.createServer((req, res) => {
    let data = "";
    req.on("data", (c) => { data += c; });
    req.on("end", () => {
      bodies.push(JSON.parse(data));
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (const [name, data] of events) res.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
      res.end();
    });
  });
  await new Promise((r) => scripted.listen(0, "127.0.0.1", r));
  const dir = tmpDir("scripted");
  const catalog = path.join(dir, "catalog.json");
  const [pin, pout, pread] = [800000, 4000000, 80000];
  fs.writeFileSync(catalog, JSON.stringify({
    routes: [{ name: "scripted", provider: "anthropic", base_url: `http://127.0.0.1:${scripted.address().port}` }],
    models: [{ id: "claude-3-5-haiku-20241022", provider: "anthropic", route: "scripted", input_price: pin,
      output_price: pout, cache_read_price: pread, cache_write_price: 1000000, context_tokens: 200000,
      max_output_tokens: 8192 }] }));
  const edgeUrl = await startEdge({ FAREBOX_CATALOG_FILE: catalog, FAREBOX_PREPAID_SLICE_IDLE_MS: "50" });
  try {
    const { id, key } = await account(10_000_000);
    const anthropic = new Anthropic({ baseURL: edgeUrl, apiKey: key, maxRetries: 0 });
    const stream = await anthropic.messages.create({
      model: "claude-3-5-haiku-20241022", max_tokens: 64, stream: true,
      tools: [{ type: "web_search_20250305", name: "web_search", max_uses: 1 }], // its results are input too
      messages: [{ role: "user", content: "search for it" }] });
    let text = "";
    for await (const e of stream) if (e.type === "content_block_delta") text += e.delta.text;
    assert.equal(text, "Found it.");
    const part = (tokens, price) => Number(ceilDiv(BigInt(tokens) * BigInt(price), 1000000n));
    const list = await settled(id);
    assert.equal(list.length, 1);
    // hour-long cache writes at the model's cache_write_1h_price (by default twice the input price)
    const full = part(860, pin) + part(40, pread) + part(30, 1000000) + part(70, 2 * pin) + part(5, pout);
    assert.equal(list[0].amount_micro, full);
    // the same usage reported for a call without the server tool, whose ceiling counts its bytes as input:
    // charged its ceiling, never more, and what the usage says above it counted (and logged)
    const bounded = await anthropic.messages.create({ model: "claude-3-5-haiku-20241022", max_tokens: 64,
      stream: true, messages: [{ role: "user", content: "no tool" }] });
    for await (const e of bounded) assert.ok(e.type);
    const [capped] = await settled(id);
    assert.ok(capped.amount_micro < full, `charged ${capped.amount_micro} of ${full}`);
    assert.ok(capped.amount_micro >= part(64, pout), "its ceiling");
    const m = await (await fetch(`${edgeUrl}/metrics`)).text();
    assert.match(m, new RegExp(`^farebox_edge_money_capped_micro_total ${full - capped.amount_micro}$`, "m"));
    // the same stream translated for the OpenAI client: its usage chunk gives the input counts charged
    // (the last message_delta's: 860 + 40 read + 100 written), and the request went as Anthropic takes
    // it — max_completion_tokens before max_tokens, the system part's cache breakpoint kept, the
    // temperature capped at 1 and top_p left out, only user as metadata
    const openai = new OpenAI({ baseURL: `${edgeUrl}/v1`, apiKey: key, maxRetries: 0 });
    const chunks = await openai.chat.completions.create({ model: "claude-3-5-haiku-20241022", stream: true,
      stream_options: { include_usage: true }, max_tokens: 4000, max_completion_tokens: 64, temperature: 1.5,
      top_p: 0.5, metadata: { tag: "x" }, user: "u1",
      messages: [{ role: "system", content: [{ type: "text", text: "a".repeat(2000), cache_control: { type: "ephemeral" } }] },
        { role: "user", content: "search for it" }] });
    let usage;
    for await (const c of chunks) if (c.usage) usage = c.usage;
    assert.deepEqual([usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, usage.completion_tokens], [1000, 40, 5]);
    const [translated] = await settled(id);
    assert.equal(translated.amount_micro, full, "charged what the usage chunk says");
    const up = bodies.at(-1);
    assert.equal(up.max_tokens, 64);
    assert.deepEqual(up.system, [{ type: "text", text: "a".repeat(2000), cache_control: { type: "ephemeral" } }]);
    assert.equal(up.temperature, 1);
    assert.equal(up.top_p, undefined);
    assert.deepEqual(up.metadata, { user_id: "u1" });
  } finally {
    scripted.close();
  }
  await audit();
});

test("a stream whose provider fails after a role-only first chunk failed before any output: a 502, nothing charged", async () => {
  let served = 0;
  const scripted = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      served++;
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(`data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", created: 0, model: "gpt-4o-mini",
        choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] })}\n\n`);
      setTimeout(() => res.socket.destroy(), 50); // cut before any content
    });
  });
  await new Promise((r) => scripted.listen(0, "127.0.0.1", r));
  const dir = tmpDir("rolecut");
  const catalog = path.join(dir, "catalog.json");
  fs.writeFileSync(catalog, JSON.stringify({
    routes: [{ name: "cut", provider: "openai", base_url: `http://127.0.0.1:${scripted.address().port}` }],
    models: [{ id: "gpt-4o-mini", provider: "openai", route: "cut", input_price: PRICES["gpt-4o-mini"][0],
      output_price: PRICES["gpt-4o-mini"][1], context_tokens: 128000, max_output_tokens: 16384 }] }));
  const edgeUrl = await startEdge({ FAREBOX_CATALOG_FILE: catalog, FAREBOX_PREPAID_SLICE_IDLE_MS: "50" });
  try {
    const { id, key } = await account(10_000_000);
    const before = await available(id);
    const client = new OpenAI({ baseURL: `${edgeUrl}/v1`, apiKey: key, maxRetries: 0 });
    await assert.rejects(async () => {
      const stream = await client.chat.completions.create({ model: "gpt-4o-mini", stream: true, max_tokens: 5,
        messages: [{ role: "user", content: "hi" }] });
      for await (const chunk of stream) assert.fail(`no chunk was due: ${JSON.stringify(chunk)}`);
    }, (e) => e instanceof OpenAI.APIError && e.status === 502);
    assert.equal(served, 1);
    assert.equal((await settled(id)).length, 0);
    assert.equal(await available(id), before);
  } finally {
    scripted.close();
  }
  await audit();
});

/** An edge whose two models (`claude-NAME` in Anthropic's dialect, `gpt-NAME` in OpenAI's, 1 and 2
 * micro-USDC per input and output token) are served by a scripted provider, handler(req, res). */
async function scriptedEdge(name, handler, { claudeMax = 100, gptMax = 100, fallback = false } = {}) {
  const scripted = http.createServer(handler);
  await new Promise((r) => scripted.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${scripted.address().port}`;
  const catalog = path.join(tmpDir(name), "catalog.json");
  const model = (id, provider, route, max) => ({ id, provider, route, input_price: 1000000, output_price: 2000000,
    context_tokens: 10000, max_output_tokens: max });
  fs.writeFileSync(catalog, JSON.stringify({
    routes: [{ name: "a", provider: "anthropic", base_url: base, ...(fallback && { fallback: "anthropic" }) },
      { name: "o", provider: "openai", base_url: base, ...(fallback && { fallback: "openai" }) }],
    models: [model(`claude-${name}`, "anthropic", "a", claudeMax), model(`gpt-${name}`, "openai", "o", gptMax)] }));
  const edgeUrl = await startEdge({ FAREBOX_CATALOG_FILE: catalog, FAREBOX_PREPAID_SLICE_IDLE_MS: "50" });
  return { edgeUrl, close: () => scripted.close() };
}

// A provider is trusted for its usage, not for the shape of its events: a
// translated stream's event missing a field, or an id longer than farebox keeps
// (cut, it ended inside a UTF-8 character), could not be encoded and took the
// whole edge down. Those events are now translated without what they lack, and
// the call is charged its usage.
test("odd provider streams (a tool block without id or name, a delta without partial_json, long non-ASCII ids) are translated, never a crash, and charged their usage", async () => {
  const longId = "é".repeat(100);
  const { edgeUrl, close } = await scriptedEdge("odd", (req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      const send = (name, data) => res.write(`${name ? `event: ${name}\n` : ""}data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
      if (req.url.endsWith("/messages")) {
        send("message_start", { type: "message_start", message: { id: longId, type: "message", role: "assistant",
          model: "claude-odd", content: [], stop_reason: null, usage: { input_tokens: 10, output_tokens: 1 } } });
        send("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } });
        send("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "hi" } });
        send("content_block_start", { type: "content_block_start", index: 1, content_block: { type: "tool_use", input: {} } });
        send("content_block_delta", { type: "content_block_delta", index: 1, delta: { type: "input_json_delta" } });
        send("message_delta", { type: "message_delta", delta: { stop_reason: "tool_use" }, usage: { output_tokens: 5 } });
        send("message_stop", { type: "message_stop" });
      } else {
        const chunk = (delta, extra = {}) => ({ id: longId, object: "chat.completion.chunk", created: 0, model: "gpt-odd",
          choices: delta ? [{ index: 0, delta, finish_reason: null }] : [], ...extra });
        send(null, chunk({ role: "assistant", content: "" }));
        send(null, chunk({ content: "hi" }));
        send(null, chunk(null, { usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } }));
        send(null, "[DONE]");
      }
      res.end();
    });
  });
  try {
    const { id, key } = await account(10_000_000);
    const openai = new OpenAI({ baseURL: `${edgeUrl}/v1`, apiKey: key, maxRetries: 0 });
    const chunks = [];
    for await (const c of await openai.chat.completions.create({ model: "claude-odd", stream: true, max_tokens: 10,
      messages: [{ role: "user", content: "x" }], tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }] }))
      chunks.push(c);
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""), "hi");
    const call = chunks.find((c) => c.choices[0]?.delta?.tool_calls)?.choices[0].delta.tool_calls[0];
    assert.deepEqual([call?.id, call?.function?.name], ["", ""], "a tool block without id or name: empty strings");
    assert.equal(chunks.at(-1).choices[0]?.finish_reason, "tool_calls");
    const anthropic = new Anthropic({ baseURL: edgeUrl, apiKey: key, maxRetries: 0 });
    const events = [];
    for await (const e of await anthropic.messages.create({ model: "gpt-odd", stream: true, max_tokens: 10,
      messages: [{ role: "user", content: "x" }] }))
      events.push(e);
    assert.equal(events.filter((e) => e.type === "content_block_delta").map((e) => e.delta.text).join(""), "hi");
    assert.equal(events[0].message.id, "msg", "an id too long to keep whole is not kept");
    assert.equal((await fetch(`${edgeUrl}/healthz`)).status, 200, "the edge is up");
    // each call: 10 input tokens at 1 micro-USDC and 5 output tokens at 2
    assert.deepEqual((await settled(id)).map((c) => c.amount_micro), [20, 20]);
  } finally {
    close();
  }
  await audit();
});

// A provider whose stream began (200) and then failed before any output — an
// Anthropic overloaded_error event, an OpenAI error chunk, a stream cut or
// ended early — has sent the caller nothing: the second route takes the call,
// as it does for a 5xx. An error refusing the request is the caller's answer.
test("a stream failing before any output (overloaded, cut, ended early) is served by the second route; a refusal is not retried; one missing only its end marker is whole", async () => {
  const seen = [];
  let mode = "overloaded";
  const { edgeUrl, close } = await scriptedEdge("flaky", (req, res) => {
    req.resume();
    req.on("end", () => {
      seen.push(`${req.url.endsWith("/messages") ? "a" : "o"}:${mode}`);
      res.writeHead(200, { "content-type": "text/event-stream" });
      const send = (name, data) => res.write(`${name ? `event: ${name}\n` : ""}data: ${JSON.stringify(data)}\n\n`);
      const type = mode === "refused" ? "invalid_request_error" : mode === "overloaded" ? "overloaded_error" : "api_error";
      if (mode === "nodone" && req.url.endsWith("/messages")) {
        // whole but for message_stop
        send("message_start", { type: "message_start", message: { id: "msg_n", type: "message", role: "assistant",
          model: "claude-flaky", content: [], stop_reason: null, usage: { input_tokens: 10, output_tokens: 1 } } });
        send("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } });
        send("content_block_delta", { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "hi" } });
        send("content_block_stop", { type: "content_block_stop", index: 0 });
        send("message_delta", { type: "message_delta", delta: { stop_reason: "end_turn" }, usage: { output_tokens: 5 } });
      } else if (mode === "nodone") {
        // whole but for [DONE]
        const chunk = (delta, finish = null) => ({ id: "c", object: "chat.completion.chunk", created: 0, model: "gpt-flaky",
          choices: [{ index: 0, delta, finish_reason: finish }] });
        send(null, chunk({ role: "assistant", content: "" }));
        send(null, chunk({ content: "hi" }));
        send(null, chunk({}, "stop"));
        send(null, { id: "c", object: "chat.completion.chunk", created: 0, model: "gpt-flaky", choices: [],
          usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } });
      } else if (req.url.endsWith("/messages")) {
        send("message_start", { type: "message_start", message: { id: "msg_f", type: "message", role: "assistant",
          model: "claude-flaky", content: [], stop_reason: null, usage: { input_tokens: 900, output_tokens: 1 } } });
        if (mode !== "cut" && mode !== "early")
          send("error", { type: "error", error: { type, message: `scripted ${mode}` } });
      } else {
        send(null, { id: "c", object: "chat.completion.chunk", created: 0, model: "gpt-flaky",
          choices: [{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }] });
        if (mode !== "cut" && mode !== "early")
          send(null, { error: { type: mode === "refused" ? "invalid_request_error" : "server_error", message: `scripted ${mode}` } });
      }
      if (mode === "cut") setTimeout(() => res.destroy(), 50); // once what was written has left
      else res.end();
    });
  }, { fallback: true });
  try {
    const { id, key } = await account(10_000_000);
    const openai = new OpenAI({ baseURL: `${edgeUrl}/v1`, apiKey: key, maxRetries: 0 });
    const anthropic = new Anthropic({ baseURL: edgeUrl, apiKey: key, maxRetries: 0 });
    const msg = [{ role: "user", content: "x" }];
    const expected = [];
    // usage reported by the mock, which served the call: 1 micro-USDC an input token, 2 an output token
    const viaOpenAI = async (model) => {
      let text = "", usage;
      for await (const c of await openai.chat.completions.create({ model, stream: true, max_tokens: 6, messages: msg,
        stream_options: { include_usage: true } })) {
        text += c.choices[0]?.delta?.content ?? "";
        if (c.usage) usage = c.usage;
      }
      assert.ok(text.length > 0, model);
      expected.push(usage.prompt_tokens + 2 * usage.completion_tokens);
    };
    const viaAnthropic = async (model) => {
      const stream = anthropic.messages.stream({ model, max_tokens: 6, messages: msg });
      const m = await stream.finalMessage();
      assert.ok(m.content[0].text.length > 0, model);
      assert.ok(m.usage.input_tokens !== 900, "the first route's counts are forgotten");
      expected.push(m.usage.input_tokens + 2 * m.usage.output_tokens);
    };
    for (mode of ["overloaded", "api", "cut", "early"]) {
      await viaAnthropic("claude-flaky");
      await viaOpenAI("claude-flaky"); // translated
      await viaOpenAI("gpt-flaky");
      await viaAnthropic("gpt-flaky"); // translated
    }
    assert.equal(seen.length, 16, JSON.stringify(seen));
    // a refusal inside the stream: not retried, the caller's 502 says why, nothing charged
    mode = "refused";
    await assert.rejects(anthropic.messages.stream({ model: "claude-flaky", max_tokens: 6, messages: msg }).finalMessage(),
      (e) => e instanceof Anthropic.InternalServerError && e.status === 502 && /scripted refused/.test(e.message));
    await assert.rejects((async () => {
      for await (const c of await openai.chat.completions.create({ model: "gpt-flaky", stream: true, messages: msg })) void c;
    })(), (e) => e instanceof OpenAI.InternalServerError && e.status === 502 && /scripted refused/.test(e.message));
    assert.equal(seen.length, 18);
    // a stream closed after its last event (the usage chunk, the stop reason) but before its end
    // marker is whole: the caller gets the marker, not an error, and it is charged its usage
    mode = "nodone";
    const before = seen.length;
    const fromScript = expected.length;
    await viaOpenAI("gpt-flaky");
    await viaOpenAI("claude-flaky");
    await viaAnthropic("gpt-flaky");
    const m = await anthropic.messages.stream({ model: "claude-flaky", max_tokens: 6, messages: msg }).finalMessage();
    assert.deepEqual([m.content[0].text, m.stop_reason, m.usage.output_tokens], ["hi", "end_turn", 5]);
    expected.push(20);
    assert.equal(seen.length, before + 4, "served by the first route");
    assert.deepEqual(expected.slice(fromScript), [20, 20, 20, 20], "10 input tokens at 1 micro-USDC, 5 output at 2");
    const metrics = await (await fetch(`${edgeUrl}/metrics`)).text();
    assert.match(metrics, /^farebox_edge_upstream_fallbacks_total\{provider="anthropic"\} 8$/m);
    assert.match(metrics, /^farebox_edge_upstream_fallbacks_total\{provider="openai"\} 8$/m);
    const charges = (await settled(id)).map((c) => c.amount_micro);
    assert.deepEqual(charges.slice().sort((a, b) => a - b), expected.slice().sort((a, b) => a - b));
  } finally {
    close();
  }
  await audit();
});

// What the provider is told: a call without a max gets the model's output cap
// (what its ceiling counted), whichever way the edge read the request; a
// service tier or an Anthropic beta billed above the catalog's prices is
// refused before anything is held.
test("the provider is told the max the ceiling counted; tiers and betas priced above the catalog are refused, nothing charged", async () => {
  const seen = [];
  const { edgeUrl, close } = await scriptedEdge("cap", (req, res) => {
    let data = "";
    req.on("data", (c) => { data += c; });
    req.on("end", () => {
      seen.push({ path: req.url, headers: req.headers, body: JSON.parse(data) });
      res.writeHead(200, { "content-type": "application/json" });
      if (req.url.endsWith("/messages")) {
        res.end(JSON.stringify({ id: "msg_1", type: "message", role: "assistant", model: "claude-cap", content: [{ type: "text", text: "ok" }],
          stop_reason: "end_turn", stop_sequence: null, usage: { input_tokens: 3, output_tokens: 2 } }));
      } else if (String(JSON.parse(data).messages[0].content).startsWith("nousage:")) {
        // no usage reported: k answers of 60 bytes each
        const k = Number(JSON.parse(data).messages[0].content.slice(8));
        res.end(JSON.stringify({ id: "c", object: "chat.completion", created: 0, model: "gpt-cap",
          choices: Array.from({ length: k }, (_, i) => ({ index: i, message: { role: "assistant", content: "y".repeat(60) },
            finish_reason: "stop" })) }));
      } else {
        res.end(JSON.stringify({ id: "c", object: "chat.completion", created: 0, model: "gpt-cap",
          choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
          usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }));
      }
    });
  }, { claudeMax: 77, gptMax: 55 });
  try {
    const { id, key } = await account(10_000_000);
    const openai = new OpenAI({ baseURL: `${edgeUrl}/v1`, apiKey: key, maxRetries: 0 });
    const msg = [{ role: "user", content: "x" }];
    // no max: the scanned request, the parsed one (an escape in it), and /api/v1/prompt
    await openai.chat.completions.create({ model: "gpt-cap", messages: msg });
    await openai.chat.completions.create({ model: "gpt-cap", messages: [{ role: "user", content: "\u00e9" }] });
    await openai.chat.completions.create({ model: "gpt-cap", messages: msg, max_tokens: null });
    const prompt = await fetch(`${edgeUrl}/api/v1/prompt`, { method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "gpt-cap", prompt: "x" }) });
    assert.equal(prompt.status, 200, await prompt.clone().text());
    assert.deepEqual(seen.map((q) => q.body.max_completion_tokens), [55, 55, 55, 55]);
    assert.equal(seen[0].body.messages[0].content, "x", "the rest of the body as sent");
    // a max asked: as asked, and the body untouched
    await openai.chat.completions.create({ model: "gpt-cap", messages: msg, max_tokens: 9 });
    assert.deepEqual([seen.at(-1).body.max_tokens, seen.at(-1).body.max_completion_tokens], [9, undefined]);
    // tiers: those the catalog's prices hold for pass, others are refused
    await openai.chat.completions.create({ model: "gpt-cap", messages: msg, max_tokens: 9, service_tier: "flex" });
    assert.equal(seen.at(-1).body.service_tier, "flex");
    const calls = seen.length;
    for (const tier of ["priority", "scale", 7]) {
      await assert.rejects(openai.chat.completions.create({ model: "gpt-cap", messages: msg, service_tier: tier }),
        (e) => e instanceof OpenAI.BadRequestError && /service_tier/.test(e.message), String(tier));
    }
    // an Anthropic beta priced above the catalog (the 1M context) is refused; others pass as sent
    const anthropic = new Anthropic({ baseURL: edgeUrl, apiKey: key, maxRetries: 0 });
    await assert.rejects(anthropic.messages.create({ model: "claude-cap", max_tokens: 5, messages: msg },
      { headers: { "anthropic-beta": "prompt-caching-2024-07-31,context-1m-2025-08-07" } }),
    (e) => e instanceof Anthropic.BadRequestError && /context-1m/.test(e.message));
    assert.equal(seen.length, calls, "nothing refused reached the provider");
    await anthropic.messages.create({ model: "claude-cap", max_tokens: 5, messages: msg },
      { headers: { "anthropic-beta": "token-efficient-tools-2025-02-19" } });
    assert.equal(seen.at(-1).headers["anthropic-beta"], "token-efficient-tools-2025-02-19");
    // charged: 7 answered calls at 3 input and 2 output tokens (7 micro-USDC each); the refused ones nothing
    const charges = await settled(id);
    assert.equal(charges.length, 7);
    assert.ok(charges.every((c) => c.amount_micro === 7), JSON.stringify(charges));
    // an answer without usage is counted from every one of its n answers: the same request (n = 2)
    // answered once and twice, 60 bytes each (20 tokens, counted as 3 bytes each), differs by 40 micro-USDC
    for (const k of [1, 2])
      await openai.chat.completions.create({ model: "gpt-cap", n: 2, max_tokens: 50, messages: [{ role: "user", content: `nousage:${k}` }] });
    const [two, one] = (await settled(id)).slice(0, 2).map((c) => c.amount_micro);
    assert.equal(two - one, 40, JSON.stringify([one, two]));
  } finally {
    close();
  }
  await audit();
});

test("rate limits per IP and per key, and the in-flight cap per key: 429 with Retry-After, nothing charged", async () => {
  // per IP: a burst of 2, then one a second; /healthz is not counted
  const ipEdge = await startEdge({ FAREBOX_RATE_IP_PER_S: "1", FAREBOX_RATE_IP_BURST: "2" });
  const codes = [];
  for (let i = 0; i < 3; i++) codes.push((await fetch(`${ipEdge}/v1/models`)).status);
  assert.deepEqual(codes, [200, 200, 429]);
  const limited = await fetch(`${ipEdge}/v1/models`);
  assert.equal(limited.status, 429);
  assert.ok(Number(limited.headers.get("retry-after")) >= 1);
  assert.equal((await limited.json()).error.code, "rate_limited");
  // /readyz asks the ledger and the verifier: counted like any call; /healthz is not
  assert.equal((await fetch(`${ipEdge}/readyz`)).status, 429);
  assert.equal((await fetch(`${ipEdge}/healthz`)).status, 200);
  const anthropicShape = await fetch(`${ipEdge}/v1/messages`, { method: "POST", body: "{}" });
  assert.equal((await anthropicShape.json()).error.type, "rate_limit_error");

  // behind a trusted load balancer, X-Forwarded-For names the client; from anyone else it is ignored
  const lbEdge = await startEdge({ FAREBOX_RATE_IP_PER_S: "1", FAREBOX_RATE_IP_BURST: "2", FAREBOX_TRUSTED_PROXIES: "127.0.0.0/8" });
  const from = (ip) => fetch(`${lbEdge}/v1/models`, { headers: { "x-forwarded-for": `203.0.113.50, ${ip}` } }).then((r) => r.status);
  assert.deepEqual([await from("198.51.100.1"), await from("198.51.100.1"), await from("198.51.100.1")], [200, 200, 429]);
  assert.equal(await from("198.51.100.2"), 200, "another client behind the balancer has its own bucket");
  // the caller's own X-Forwarded-For line first, the balancer's appended as a second line (HAProxy's option
  // forwardfor): the lines read as one list, so the balancer's names the client, not the caller's
  const twoLines = (callers) => new Promise((resolve, reject) => {
    const r = http.request(`${lbEdge}/v1/models`, { headers: ["x-forwarded-for", callers, "x-forwarded-for", "198.51.100.3"] },
      (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)); });
    r.on("error", reject);
    r.end();
  });
  assert.deepEqual([await twoLines("203.0.113.1"), await twoLines("203.0.113.2"), await twoLines("203.0.113.3")],
    [200, 200, 429]);
  const spoofed = [];
  for (let i = 0; i < 3; i++) spoofed.push((await fetch(`${ipEdge}/v1/models`, { headers: { "x-forwarded-for": `10.0.0.${i}` } })).status);
  assert.equal(spoofed.at(-1), 429, "an untrusted peer cannot pick its bucket");

  // per key: one call in flight at once, and a bucket of 3
  const { id, key } = await account(10_000_000);
  const keyEdge = await startEdge({ FAREBOX_RATE_IP_PER_S: "0", FAREBOX_RATE_KEY_PER_S: "1", FAREBOX_RATE_KEY_BURST: "3",
    FAREBOX_KEY_CONCURRENCY: "1" });
  const openai = new OpenAI({ baseURL: `${keyEdge}/v1`, apiKey: key, maxRetries: 0 });
  const slow = await openai.chat.completions.create({ model: "gpt-4o-mini", stream: true, max_tokens: 100,
    messages: [{ role: "user", content: "[mock:tokens=100][mock:rate=20]" }] });
  const it = slow[Symbol.asyncIterator]();
  await it.next();
  await assert.rejects(openai.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.RateLimitError && e.code === "rate_limited" && Number(e.headers.get("retry-after")) >= 1);
  await it.return();
  // the bucket: 3 requests, then 429 until a token comes back
  let refused;
  for (let i = 0; i < 4 && !refused; i++) {
    const r = await fetch(`${keyEdge}/v1/balance`, { headers: { authorization: `Bearer ${key}` } });
    if (r.status === 429) refused = r;
  }
  assert.ok(refused, "the key's bucket ran out");
  assert.ok(Number(refused.headers.get("retry-after")) >= 1);
  const list = await settled(id);
  assert.equal(list.length, 1, "only the call that ran was charged");
  await audit();
});

test("/metrics: Prometheus text with requests, latencies, provider and RPC timings, and money that adds up", async () => {
  const r = await fetch(`${url}/metrics`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("content-type"), "text/plain; version=0.0.4");
  const text = await r.text();
  for (const line of text.split("\n").filter(Boolean)) {
    assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? [0-9.e+-]+)$/, line);
  }
  const value = (series) => {
    const m = text.match(new RegExp(`^${series.replace(/[{}"/.+]/g, "\\$&")} (\\S+)$`, "m"));
    return m ? Number(m[1]) : undefined;
  };
  assert.ok(value('farebox_edge_requests_total{route="/v1/chat/completions",status="200"}') > 10);
  assert.ok(value('farebox_edge_requests_total{route="/v1/chat/completions",status="402"}') >= 1);
  assert.ok(value('farebox_edge_request_duration_seconds_count{route="/v1/chat/completions"}') > 10);
  assert.ok(value('farebox_edge_upstream_duration_seconds_count{provider="openai"}') > 5);
  assert.ok(value('farebox_edge_upstream_failures_total{provider="openai"}') >= 3);
  assert.ok(value('farebox_edge_rpc_duration_seconds_count{service="ledger"}') > 10);
  assert.equal(value("farebox_edge_open_streams"), 0);
  const held = value("farebox_edge_money_held_micro_total"), committed = value("farebox_edge_money_committed_micro_total"),
    released = value("farebox_edge_money_released_micro_total");
  assert.ok(committed > 0);
  assert.equal(held, committed + released, "every micro-USDC held was charged or released");
});

test("a key revoked while its stream runs: the stream is cut within seconds and pays only what was delivered", async () => {
  const { id, key, keyId } = await account(10_000_000);
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const stream = await openai.chat.completions.create({ model: "gpt-4o-mini", stream: true, max_tokens: 400,
    messages: [{ role: "user", content: "[mock:tokens=400][mock:rate=20]" }] });
  let text = "", revokedAt;
  await assert.rejects(async () => {
    for await (const c of stream) {
      text += c.choices[0]?.delta?.content ?? "";
      if (!revokedAt && text.length > 10) {
        assert.equal((await call("POST", `/admin/keys/${keyId}/revoke`)).status, 200);
        revokedAt = Date.now();
      }
    }
  }, /revoked/);
  assert.ok(Date.now() - revokedAt < 5000, "cut within a few seconds, not after the 20 s stream");
  const [h] = await settled(id);
  assert.ok(h.amount_micro > 0 && h.amount_micro < cost("gpt-4o-mini", 0, 400) / 2, JSON.stringify(h));
  await audit();
});

test("the revocation watch covers every key in flight: a key revoked among 300 other keys' streams is cut", async () => {
  // one worker with 301 keys streaming: each second every key is looked up again (the watch once stopped
  // at the 256 newest, and the oldest stream of a revoked key ran to its end)
  const busy = await startEdge({ FAREBOX_RATE_IP_PER_S: "0", FAREBOX_HTTP_MAX_CONNECTIONS_PER_IP: "0",
    FAREBOX_PREPAID_SLICE_IDLE_MS: "50" });
  const victim = await account(10_000_000);
  const crowd = await account(10_000_000); // 300 more keys of one account, minted through the busy edge
  const others = [];
  for (let i = 0; i < 300; i += 25)
    others.push(...await Promise.all(Array.from({ length: 25 }, async () => {
      const r = await fetch(`${busy}/admin/accounts/${crowd.id}/keys`, { method: "POST", headers: admin, body: "{}" });
      assert.equal(r.status, 201);
      return (await r.json());
    })));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 400 });
  const open = (key) => new Promise((resolve, reject) => {
    const req = http.request(`${busy}/v1/chat/completions`, { method: "POST", agent, headers: {
      authorization: `Bearer ${key}`, "content-type": "application/json" } }, (res) => {
      let text = "";
      res.on("data", (d) => (text += d));
      resolve({ res, ended: new Promise((done) => res.on("end", () => done(text)).on("close", () => done(text))) });
    });
    req.on("error", reject);
    req.end(JSON.stringify({ model: "gpt-4o-mini", stream: true, max_tokens: 40,
      messages: [{ role: "user", content: "[mock:tokens=40][mock:rate=2]" }] }));
  });
  const first = await open(victim.key); // the oldest call on the worker
  const rest = await Promise.all(others.map((o) => open(o.key)));
  assert.equal(first.res.statusCode, 200);
  assert.ok(rest.every((r) => r.res.statusCode === 200));
  await sleep(1200); // every call over a second old: all watched
  assert.equal((await call("POST", `/admin/keys/${victim.keyId}/revoke`)).status, 200);
  const revokedAt = Date.now();
  const text = await first.ended;
  assert.ok(Date.now() - revokedAt < 5000, `cut within seconds, not after the 20 s stream (${Date.now() - revokedAt} ms)`);
  assert.match(text, /revoked/);
  for (const r of rest) r.res.destroy(); // the others leave: each charged what it was sent
  agent.destroy();
  const delivered = (text.match(/"content":"[^"]+"/g) ?? []).length;
  assert.ok(delivered > 0 && delivered < 40, `${delivered} tokens delivered of 40`);
  const [h] = await settled(victim.id);
  assert.ok(h.amount_micro > 0, JSON.stringify(h));
  await waitUntil(async () => (await holds(crowd.id)).every((x) => x.state !== "open") &&
    (await chargesOf(crowd.id)).length === 300,
    { what: "every other stream charged once", timeoutMs: 20000 });
  await audit();
});

test("an OpenAI model through the Anthropic client on /v1/messages: whole, streamed, with tools", async () => {
  const { id, key } = await account(10_000_000);
  const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
  const m = await anthropic.messages.create({ model: "gpt-4o-mini", max_tokens: 4, system: "be brief",
    messages: [{ role: "user", content: "hi" }] });
  assert.equal(m.type, "message");
  assert.equal(m.model, "gpt-4o-mini");
  assert.equal(m.content[0].text, "The mock model says ");
  assert.equal(m.stop_reason, "max_tokens");
  let list = await settled(id);
  assert.equal(list[0].amount_micro, cost("gpt-4o-mini", m.usage.input_tokens, m.usage.output_tokens));

  const s = anthropic.messages.stream({ model: "gpt-4o-mini", max_tokens: 3, messages: [{ role: "user", content: "go" }] });
  let text = "";
  s.on("text", (t) => (text += t));
  const final = await s.finalMessage();
  assert.equal(text, "The mock model ");
  assert.equal(final.usage.output_tokens, 3);
  list = await settled(id);
  assert.equal(list[0].amount_micro, cost("gpt-4o-mini", final.usage.input_tokens, 3));

  const tools = [{ name: "get_weather", input_schema: { type: "object", properties: { city: { type: "string" } } } }];
  const t = await anthropic.messages.create({ model: "gpt-4o-mini", max_tokens: 50, tools,
    messages: [{ role: "user", content: "[mock:tool=get_weather]" }] });
  assert.equal(t.stop_reason, "tool_use");
  const use = t.content.find((b) => b.type === "tool_use");
  assert.deepEqual(use.input, { city: "Paris" });
  const back = await anthropic.messages.create({ model: "gpt-4o-mini", max_tokens: 50, tools, messages: [
    { role: "user", content: "weather?" }, { role: "assistant", content: [use] },
    { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "sunny" }] }] });
  assert.ok(back.content[0].text.length > 0);
  const ts = anthropic.messages.stream({ model: "gpt-4o-mini", max_tokens: 50, tools,
    messages: [{ role: "user", content: "[mock:tool=get_weather]" }] });
  const tfinal = await ts.finalMessage();
  assert.equal(tfinal.stop_reason, "tool_use");
  assert.deepEqual(tfinal.content.find((b) => b.type === "tool_use").input, { city: "Paris" });
  await audit();
});

test("prepaid slices: concurrent calls of one key are each charged once, from a few holds", async () => {
  const { id, key } = await account(50_000_000);
  const before = await available(id);
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const ids = new Set();
  let total = 0;
  const one = async (i) => {
    const r = await openai.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 2 + (i % 5),
      messages: [{ role: "user", content: `call number ${i}` }] });
    ids.add(r._request_id);
    total += cost("gpt-4o-mini", r.usage.prompt_tokens, r.usage.completion_tokens);
  };
  for (let b = 0; b < 3; b++) await Promise.all(Array.from({ length: 30 }, (_, j) => one(b * 30 + j)));
  const list = await settled(id);
  assert.equal(list.length, 90);
  assert.deepEqual(new Set(list.map((c) => c.ref)), ids, "one charge per answered call, named by its request id");
  assert.equal(list.reduce((s, c) => s + c.amount_micro, 0), total);
  assert.equal(await available(id), before - total);
  const slices = await holds(id);
  assert.ok(slices.length < 20, `${slices.length} holds for 90 calls`);
  // a slice asked for ahead that no call needed is given back whole
  assert.ok(slices.every((h) => (h.state === "committed" && h.committed_micro === h.charged_micro) ||
    (h.state === "voided" && h.charged_micro === 0)), JSON.stringify(slices));
  await audit();
});

test("a busy key's calls do not wait on the ledger: one lookup for many concurrent calls, its next slice opened before the current one runs out", async () => {
  const body = JSON.stringify({ model: "gpt-4o-mini", max_tokens: 200,
    messages: [{ role: "user", content: "[mock:tokens=2] ahead" }] });
  const ceiling = cost("gpt-4o-mini", Buffer.byteLength(body), 200);
  // slices of two ceilings that never grow: a call costs ~1/100 of its ceiling,
  // so the next slice is asked for ~50 calls before the current one runs out
  const busy = await startEdge({ FAREBOX_PREPAID_SLICE_CALLS: "2", FAREBOX_PREPAID_SLICE_MAX_MICRO: String(2 * ceiling),
    FAREBOX_RATE_KEY_PER_S: "0", FAREBOX_RATE_IP_PER_S: "0" });
  const counts = async () => {
    const text = await (await fetch(`${busy}/metrics`)).text();
    const out = {};
    for (const [, family, outcome, v] of text.matchAll(/^farebox_edge_(key_lookups|prepaid_slices)_total\{outcome="(\w+)"\} (\d+)$/gm))
      out[`${family}.${outcome}`] = Number(v);
    return out;
  };
  const { id, key } = await account(10_000_000);
  const before = await available(id);
  const post = () => fetch(`${busy}/v1/chat/completions`, { method: "POST", body,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } });
  const c0 = await counts();
  assert.equal(c0["key_lookups.asked"], 0);
  // 40 calls of a key this edge has not seen, arriving together (HTTP/2
  // streams of one connection, sent in one write): the ledger is asked once,
  // the other calls wait for that answer
  const session = http2.connect(busy);
  const streams = Array.from({ length: 40 }, () => new Promise((resolve, reject) => {
    const s = session.request({ ":method": "POST", ":path": "/v1/chat/completions", authorization: `Bearer ${key}`,
      "content-type": "application/json" });
    let data = "", status;
    s.on("response", (h) => (status = h[":status"]));
    s.on("data", (d) => (data += d));
    s.on("end", () => resolve({ status, data }));
    s.on("error", reject);
    s.end(body);
  }));
  let total = 0;
  for (const r of await Promise.all(streams)) {
    assert.equal(r.status, 200, r.data);
    const u = JSON.parse(r.data).usage;
    total += cost("gpt-4o-mini", u.prompt_tokens, u.completion_tokens);
  }
  session.close();
  const c1 = await counts();
  assert.equal(c1["key_lookups.asked"], 1, JSON.stringify(c1));
  assert.ok(c1["key_lookups.joined"] >= 1, JSON.stringify(c1));
  assert.equal(c1["key_lookups.joined"] + c1["key_lookups.cached"], 39, JSON.stringify(c1));
  // then calls one after another through several slices: only the key's
  // first calls waited for a slice (the first one opened); each next slice
  // was ready before the current one ran out
  for (let i = 0; i < 150; i++) {
    const r = await post();
    assert.equal(r.status, 200);
    const u = (await r.json()).usage;
    total += cost("gpt-4o-mini", u.prompt_tokens, u.completion_tokens);
  }
  const c2 = await counts();
  // an answer in use is asked again before it is a second old: no call asked
  assert.equal(c2["key_lookups.asked"], 1, JSON.stringify(c2));
  assert.equal(c2["prepaid_slices.opened"], c1["prepaid_slices.opened"], JSON.stringify({ c1, c2 }));
  assert.equal(c2["prepaid_slices.waited"], c1["prepaid_slices.waited"], JSON.stringify({ c1, c2 }));
  assert.ok(c2["prepaid_slices.ahead"] >= 2, JSON.stringify(c2));
  assert.equal(c2["prepaid_slices.ready"] - c1["prepaid_slices.ready"], 150);
  await settled(id);
  const list = (await call("GET", `/admin/accounts/${id}/charges?limit=500`)).body.charges;
  assert.equal(list.length, 190);
  assert.equal(list.reduce((s, c) => s + c.amount_micro, 0), total);
  assert.equal(await available(id), before - total);
  const slices = (await call("GET", `/admin/accounts/${id}/holds?limit=500`)).body.holds;
  assert.ok(slices.every((h) => h.amount_micro <= 2 * ceiling), "no slice grew past the limit");
  assert.ok(slices.every((h) => (h.state === "committed" && h.committed_micro === h.charged_micro) ||
    (h.state === "voided" && h.charged_micro === 0)), JSON.stringify(slices));

  // a lookup still unanswered after a second (the ledger paused) is not joined: its answer could be
  // older than the second a key's answer may be (a revocation missed); a later call asks again
  const late = await account(1_000_000);
  const lookups = await counts();
  const postAs = (k) => fetch(`${busy}/v1/chat/completions`, { method: "POST", body,
    headers: { authorization: `Bearer ${k}`, "content-type": "application/json" } });
  ledger.signal("SIGSTOP");
  let answers;
  try {
    const first = postAs(late.key);
    await sleep(1300);
    const second = postAs(late.key);
    await sleep(200);
    ledger.signal("SIGCONT");
    answers = await Promise.all([first, second]);
  } finally {
    ledger.signal("SIGCONT");
  }
  for (const r of answers) assert.equal(r.status, 200, await r.text());
  const after = await counts();
  assert.equal(after["key_lookups.asked"] - lookups["key_lookups.asked"], 2, JSON.stringify(after));
  assert.equal(after["key_lookups.joined"] ?? 0, lookups["key_lookups.joined"] ?? 0);
  await settled(late.id);
  await audit();
});

test("prepaid slices: a balance too small for a slice still pays call by call; a stopped edge closes its slices; a killed one leaves every answered call charged", async () => {
  // room for one call's ceiling but not for a slice of 16
  const ceiling = cost("gpt-4o-mini", Buffer.byteLength(JSON.stringify({ model: "gpt-4o-mini", max_tokens: 50,
    messages: [{ role: "user", content: "small" }] })), 50);
  const small = await account(ceiling * 3);
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: small.key, maxRetries: 0 });
  const r = await openai.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 50,
    messages: [{ role: "user", content: "small" }] });
  const [only] = await settled(small.id);
  assert.equal(only.amount_micro, cost("gpt-4o-mini", r.usage.prompt_tokens, r.usage.completion_tokens));
  assert.equal((await holds(small.id))[0].amount_micro, ceiling, "the slice was exactly the call's ceiling");

  // SIGTERM: the edge answers what runs, then gives its slices back before it exits
  const { id, key } = await account(10_000_000);
  const other = await startEdge({ FAREBOX_PREPAID_SLICE_IDLE_MS: "600000" });
  const p = extraEdges.at(-1);
  const client = new OpenAI({ baseURL: `${other}/v1`, apiKey: key, maxRetries: 0 });
  await client.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 2, messages: [{ role: "user", content: "a" }] });
  assert.equal((await holds(id))[0].state, "open");
  extraEdges.splice(extraEdges.indexOf(p), 1);
  assert.equal((await p.stop()).code, 0);
  assert.equal((await holds(id))[0].state, "committed", "closed by the stop, not left to expire");

  // SIGKILL: the slice stays open until it expires, but every answered call is already charged
  const killed = await startEdge({ FAREBOX_PREPAID_SLICE_IDLE_MS: "600000" });
  const k = extraEdges.at(-1);
  extraEdges.splice(extraEdges.indexOf(k), 1);
  const kc = new OpenAI({ baseURL: `${killed}/v1`, apiKey: key, maxRetries: 0 });
  const balanceBefore = (await call("GET", `/admin/accounts/${id}`)).body.balance_micro;
  let paid = 0;
  const answered = [];
  for (let i = 0; i < 5; i++) {
    const a = await kc.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 3,
      messages: [{ role: "user", content: `k${i}` }] });
    answered.push(a._request_id);
    paid += cost("gpt-4o-mini", a.usage.prompt_tokens, a.usage.completion_tokens);
  }
  k.signal("SIGKILL");
  await k.exited;
  const charges = (await call("GET", `/admin/accounts/${id}/charges`)).body.charges;
  assert.deepEqual(charges.slice(0, 5).map((c) => c.ref).reverse(), answered);
  const acct = (await call("GET", `/admin/accounts/${id}`)).body;
  assert.equal(acct.balance_micro, balanceBefore - paid, "charged before answering, durable");
  assert.ok(acct.held_micro > 0, "the killed edge's slice is left to expire");
  await audit();
});

test("FAREBOX_PREPAID_CHARGE_DEFER_MS: answers go before their charges, which follow within the window, exactly; a clean stop writes them; a refused write is counted unbilled; a killed edge leaves its last answers unpaid; a paused ledger is caught up", async () => {
  const ask = (client, i, extra) => miniCall(client, `deferred ${i}`, extra);
  const priced = miniCost, charges = chargesOf;
  const { id, key } = await account(10_000_000);
  const before = (await call("GET", `/admin/accounts/${id}`)).body.balance_micro;
  // a window far longer than the test's calls: what is written when is decided by the test
  const base = await startEdge({ FAREBOX_PREPAID_CHARGE_DEFER_MS: "10000", FAREBOX_PREPAID_SLICE_IDLE_MS: "600000" });
  const p = extraEdges.at(-1);
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
  let { total, refs } = await miniCalls(client, "deferred", 4);
  // a stream's charge is deferred too: its usage chunk is sent, then its end
  let streamed = null;
  for await (const chunk of await ask(client, "s", { stream: true, stream_options: { include_usage: true } }))
    if (chunk.usage) streamed = chunk.usage;
  total += cost("gpt-4o-mini", streamed.prompt_tokens, streamed.completion_tokens);
  assert.equal((await charges(id)).length, 0, "answered, not yet charged");
  assert.equal((await holds(id))[0].state, "open");
  // a call with an Idempotency-Key waits for its charge, and the deferred ones go with it
  const kept = await client.chat.completions.create({ model: "gpt-4o-mini", max_tokens: 4,
    messages: [{ role: "user", content: "deferred kept" }] }, { headers: { "Idempotency-Key": "defer-1" } });
  total += priced(kept);
  let list = await charges(id);
  assert.equal(list.length, 6, "the kept call's write carried the deferred charges");
  assert.equal(list.reduce((sum, c) => sum + c.amount_micro, 0), total);
  assert.deepEqual(list.slice(2).map((c) => c.ref).reverse(), refs);
  // a client leaving a slow stream: its charge (input and what was produced) is deferred like the others
  const slowBody = { model: "gpt-4o-mini", stream: true, max_tokens: 200,
    messages: [{ role: "user", content: "[mock:tokens=200][mock:rate=50]" }] };
  let seen = 0;
  const slow = await client.chat.completions.create(slowBody).withResponse();
  for await (const c of slow.data)
    if (c.choices[0]?.delta?.content && ++seen === 3) break; // the SDK aborts the request
  // deferred calls, then a clean stop: every charge written, the slice closed
  for (let i = 4; i < 7; i++)
    total += priced(await ask(client, i));
  assert.equal((await charges(id)).length, 6);
  extraEdges.splice(extraEdges.indexOf(p), 1);
  assert.equal((await p.stop()).code, 0);
  list = await charges(id);
  assert.equal(list.length, 10);
  const left = list.find((c) => c.ref === slow.response.headers.get("x-request-id")).amount_micro, inputCost = cost("gpt-4o-mini", Buffer.byteLength(JSON.stringify(slowBody)), 0);
  assert.ok(left >= inputCost + cost("gpt-4o-mini", 0, 3) && left < inputCost + cost("gpt-4o-mini", 0, 100), `${left}`);
  total += left;
  assert.equal(list.reduce((sum, c) => sum + c.amount_micro, 0), total);
  assert.ok((await holds(id)).every((h) => h.state === "committed"), "closed by the stop");
  assert.equal((await call("GET", `/admin/accounts/${id}`)).body.balance_micro, before - total, "charged exactly");

  // the slice's hold closed behind the edge's back: the deferred write is refused, the calls go unpaid,
  // counted as unbilled (and logged), and the next call opens another slice
  const short = await startEdge({ FAREBOX_PREPAID_CHARGE_DEFER_MS: "1500", FAREBOX_PREPAID_SLICE_IDLE_MS: "600000" });
  const sp = extraEdges.at(-1);
  const sc = new OpenAI({ baseURL: `${short}/v1`, apiKey: key, maxRetries: 0 });
  let lost = 0;
  for (let i = 0; i < 3; i++)
    lost += priced(await ask(sc, `lost ${i}`));
  const open = (await holds(id)).find((h) => h.state === "open");
  const voided = await ledgerRpc.call("ledger.void", { hold_id: open.hold_id }, { idem: `test-void-${open.hold_id}` });
  assert.equal(voided.status, "ok", JSON.stringify(voided));
  await sp.waitForMsg("deferred charges of answered calls could not be written; those calls go unpaid");
  const metrics = await (await fetch(`${short}/metrics`)).text();
  assert.match(metrics, new RegExp(`^farebox_edge_money_unbilled_micro_total ${lost}$`, "m"));
  assert.equal((await charges(id)).length, 10, "nothing charged for them");
  const next = await ask(sc, "after");
  total += priced(next);
  extraEdges.splice(extraEdges.indexOf(sp), 1);
  assert.equal((await sp.stop()).code, 0);
  assert.equal((await charges(id)).length, 11);

  // SIGKILL inside the window: the answered calls' charges are never written; the slice stays open
  // until it expires and then gives its whole rest back (those callers were served unpaid)
  const killed = await startEdge({ FAREBOX_PREPAID_CHARGE_DEFER_MS: "10000", FAREBOX_PREPAID_SLICE_IDLE_MS: "600000" });
  const k = extraEdges.at(-1);
  extraEdges.splice(extraEdges.indexOf(k), 1);
  const kc = new OpenAI({ baseURL: `${killed}/v1`, apiKey: key, maxRetries: 0 });
  const balance = (await call("GET", `/admin/accounts/${id}`)).body.balance_micro;
  for (let i = 0; i < 3; i++)
    assert.ok((await ask(kc, `killed ${i}`)).choices[0].message.content.length > 0);
  k.signal("SIGKILL");
  await k.exited;
  assert.equal((await charges(id)).length, 11, "the killed edge's answered calls are not charged");
  const acct = (await call("GET", `/admin/accounts/${id}`)).body;
  assert.equal(acct.balance_micro, balance);
  assert.ok(acct.held_micro > 0, "the killed edge's slice is left to expire, whole");

  // the ledger paused (SIGSTOP): a key's open slice still serves its calls, and their charges land
  // once it resumes, exactly
  const paused = await account(10_000_000);
  const pe = await startEdge({ FAREBOX_PREPAID_CHARGE_DEFER_MS: "100" });
  const pp = extraEdges.at(-1);
  const pc = new OpenAI({ baseURL: `${pe}/v1`, apiKey: paused.key, maxRetries: 0 });
  let owed = priced(await ask(pc, "opens the slice")); // and looks the key up: its answer is fresh
  ledger.signal("SIGSTOP");
  let resumed = false;
  try {
    for (let i = 0; i < 5; i++)
      owed += priced(await ask(pc, `paused ${i}`));
    await sleep(300); // their write is sent, and waits
    ledger.signal("SIGCONT");
    resumed = true;
  } finally {
    if (!resumed) ledger.signal("SIGCONT");
  }
  await waitUntil(async () => (await charges(paused.id)).length === 6, { what: "the paused calls' charges" });
  extraEdges.splice(extraEdges.indexOf(pp), 1);
  assert.equal((await pp.stop()).code, 0);
  const after = await charges(paused.id);
  assert.equal(after.length, 6);
  assert.equal(after.reduce((sum, c) => sum + c.amount_micro, 0), owed);
  assert.equal(await available(paused.id), 10_000_000 - owed);

  // a window's timer that finds its slice's write still in flight (the hold's row locked in Postgres, so
  // that write waits): the charges it could not send go the moment that write ends, not a window later
  const late = await account(10_000_000);
  const slowUrl = await startEdge({ FAREBOX_PREPAID_CHARGE_DEFER_MS: "1000", FAREBOX_PREPAID_SLICE_IDLE_MS: "600000",
    FAREBOX_RATE_KEY_PER_S: "0" });
  const slowEdge = extraEdges.at(-1);
  const slowClient = new OpenAI({ baseURL: `${slowUrl}/v1`, apiKey: late.key, maxRetries: 0 });
  let slowOwed = priced(await ask(slowClient, "opens"));
  await waitUntil(async () => (await charges(late.id)).length === 1, { what: "the first window's charge" });
  const slowHold = (await holds(late.id)).find((h) => h.state === "open").hold_id;
  const locker = spawn(path.join(pg.bindir, "psql"), ["-X", "-q", db.url, "-c",
    `BEGIN; SELECT 1 FROM holds WHERE id = ${slowHold} FOR UPDATE; SELECT pg_sleep(3); COMMIT;`]);
  const unlocked = new Promise((resolve) => locker.on("exit", resolve));
  await waitUntil(() => pg.psql(db.name, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") === "1",
    { what: "the hold's row locked" });
  const lockedAt = Date.now();
  for (const i of [0, 1]) {
    const a = await ask(slowClient, `first window ${i}`); // their window's write will wait for the lock
    slowOwed += priced(a);
  }
  await sleep(Math.max(0, 1300 - (Date.now() - lockedAt))); // that write is out, waiting
  for (const i of [0, 1]) {
    const a = await ask(slowClient, `second window ${i}`); // their window ends while it waits
    slowOwed += priced(a);
  }
  // (their window, 1 s, must end before the lock goes, 3 s after it was taken)
  assert.ok(Date.now() - lockedAt < 1800, `the second window began ${Date.now() - lockedAt} ms in: too late to tell`);
  assert.equal(await unlocked, 0);
  await waitUntil(async () => (await charges(late.id)).length >= 3, { what: "the first window's write" });
  const firstWritten = Date.now();
  await waitUntil(async () => (await charges(late.id)).length === 5, { what: "the second window's charges" });
  assert.ok(Date.now() - firstWritten < 600, `the second window's charges waited ${Date.now() - firstWritten} ms more`);
  extraEdges.splice(extraEdges.indexOf(slowEdge), 1);
  assert.equal((await slowEdge.stop()).code, 0);
  assert.equal((await charges(late.id)).reduce((sum, c) => sum + c.amount_micro, 0), slowOwed);
  assert.equal(await available(late.id), 10_000_000 - slowOwed);

  // under steady calls the charges go in one write per window, not one per ledger round trip: a write
  // that ends leaves the charges answered meanwhile to the next window
  const steady = await account(10_000_000);
  const WINDOW = 400;
  const se = await startEdge({ FAREBOX_PREPAID_CHARGE_DEFER_MS: String(WINDOW), FAREBOX_PREPAID_SLICE_IDLE_MS: "600000",
    FAREBOX_RATE_IP_PER_S: "0", FAREBOX_RATE_KEY_PER_S: "0" });
  const sq = extraEdges.at(-1);
  const stc = new OpenAI({ baseURL: `${se}/v1`, apiKey: steady.key, maxRetries: 0 });
  let steadyOwed = 0, steadyCalls = 0;
  const started = Date.now();
  // four callers without pause for 3 s: calls answered while a write is in flight wait for the next window
  await Promise.all([0, 1, 2, 3].map(async (lane) => {
    while (Date.now() - started < 3000) {
      const answer = await ask(stc, `steady ${lane} ${steadyCalls}`);
      steadyOwed += priced(answer);
      steadyCalls++;
    }
  }));
  const elapsed = Date.now() - started;
  const written = () => pg.psql(db.name, "SELECT count(*) || ' ' || count(DISTINCT w.first_id) || ' ' || " +
    `coalesce(sum(a), 0) FROM charge_writes w, unnest(w.amounts) a WHERE w.account_id = ${steady.id}`).split(" ").map(Number);
  await waitUntil(async () => written()[0] === steadyCalls, { what: "the steady calls' charges" });
  extraEdges.splice(extraEdges.indexOf(sq), 1);
  assert.equal((await sq.stop()).code, 0);
  const [steadyCharged, writes, steadySum] = written();
  // a window's timer writes each slice with charges once (the key's current slice, and the next one
  // opened ahead of it): two writes a window at most, and the stop's
  const bound = 2 * (Math.ceil(elapsed / WINDOW) + 1) + 2;
  assert.ok(steadyCalls > 4 * bound, `${steadyCalls} calls: too few to tell`);
  assert.ok(writes <= bound, `${steadyCalls} calls in ${elapsed} ms took ${writes} charge writes (at most ${bound})`);
  assert.equal(steadyCharged, steadyCalls);
  assert.equal(steadySum, steadyOwed);
  assert.equal(await available(steady.id), 10_000_000 - steadyOwed);
  await audit();
});

test("FAREBOX_PREPAID_JOURNAL_DIR: a killed edge's deferred charges are written by another edge, exactly and once; a live edge's journal, another ledger's, and an unreadable one are left alone", async () => {
  const ask = (client, i, extra) => miniCall(client, `journaled ${i}`, extra);
  const priced = miniCost, charges = chargesOf;
  const journals = (dir) => fs.readdirSync(dir).filter((f) => f.endsWith(".journal") &&
    fs.lstatSync(path.join(dir, f)).isFile()).sort();
  const dir = path.join(tmpDir("journal"), "charges");
  const ledgerId = (await ledgerRpc.call("ledger.identity", {})).body.ledger_id;
  assert.match(ledgerId, /^[0-9a-f-]{36}$/);
  assert.equal((await ledgerRpc.call("ledger.identity", {})).body.ledger_id, ledgerId, "one name, kept");
  const { id, key } = await account(10_000_000);
  const before = (await call("GET", `/admin/accounts/${id}`)).body.balance_micro;
  const env = { FAREBOX_PREPAID_CHARGE_DEFER_MS: "10000", FAREBOX_PREPAID_SLICE_IDLE_MS: "600000",
    FAREBOX_PREPAID_JOURNAL_DIR: dir, FAREBOX_PREPAID_JOURNAL_MAX_BYTES: "4096", FAREBOX_RATE_KEY_PER_S: "0" };
  // a journal of another ledger, and one that cannot be read: both left alone (the bad one set aside)
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, "charges-foreign.journal"), "farebox-charge-journal 1 another-ledger\nC 1 1 5 r\n");
  fs.writeFileSync(path.join(dir, "charges-broken.journal"), `farebox-charge-journal 1 ${ledgerId}\nC one 1 5 r\n`);
  // and a FIFO by a journal's name: opening it to read would wait for a writer, on the edge's loop
  assert.equal(spawnSync("mkfifo", [path.join(dir, "charges-fifo.journal")]).status, 0);
  // the edge that will be killed, and another one beside it (not deferring, looking after the directory)
  const doomedUrl = await startEdge(env);
  const doomed = extraEdges.at(-1); // left in extraEdges until it is killed: a failure before stops it
  await doomed.waitForMsg("deferred charges are journaled");
  await doomed.waitForMsg("a charge journal could not be read; it is set aside (.bad) for the operator");
  await doomed.waitForMsg("the journal directory holds journals of another ledger; they are left alone");
  assert.ok(fs.existsSync(path.join(dir, "charges-broken.journal.bad")));
  assert.equal(journals(dir).length, 2, "its one worker's journal, and the other ledger's");
  const journal = path.join(dir, journals(dir).find((f) => f !== "charges-foreign.journal"));
  await startEdge({ FAREBOX_PREPAID_JOURNAL_DIR: dir });
  const keeper = extraEdges.at(-1);
  const client = new OpenAI({ baseURL: `${doomedUrl}/v1`, apiKey: key, maxRetries: 0 });
  let { total, refs } = await miniCalls(client, "journaled", 4);
  let streamed = null;
  const s = await ask(client, "s", { stream: true, stream_options: { include_usage: true } }).withResponse();
  for await (const chunk of s.data)
    if (chunk.usage) streamed = chunk.usage;
  total += cost("gpt-4o-mini", streamed.prompt_tokens, streamed.completion_tokens);
  refs.push(s.response.headers.get("x-request-id"));
  // enough calls, 10 at a time, for the journal to pass its 4 KiB more than once: each time it is replaced
  // (a new file under its name) by one of what is pending, here every charge so far
  const first = fs.statSync(journal).ino;
  for (let i = 0; i < 15; i++) {
    for (const a of await Promise.all(Array.from({ length: 10 }, (_, j) => ask(client, `many ${i} ${j}`)))) {
      total += priced(a);
      refs.push(a._request_id);
    }
  }
  assert.notEqual(fs.statSync(journal).ino, first, "replaced");
  assert.ok(fs.statSync(journal).size < 4096 + 200 * 60, `${fs.statSync(journal).size}`);
  const text = fs.readFileSync(journal, "utf8");
  for (const ref of refs)
    assert.match(text, new RegExp(`^C \\d+ \\d+ \\d+ ${ref}$`, "m"), "journaled before it was answered");
  // another key's slice opened for a call its provider failed: nothing charged to it, its hold in the journal
  const idle = await account(10_000_000);
  await assert.rejects(miniCall(new OpenAI({ baseURL: `${doomedUrl}/v1`, apiKey: idle.key, maxRetries: 0 }),
    "[mock:fail=500]"), (e) => e.status === 502);
  assert.equal((await holds(idle.id)).filter((h) => h.state === "open").length, 1, "its slice stays open");
  assert.match(fs.readFileSync(journal, "utf8"), new RegExp(`^h ${(await holds(idle.id))[0].hold_id}$`, "m"));
  await sleep(2500); // the keeper looks at the directory each second: a live edge's journal is not touched
  assert.equal((await charges(id)).length, 0, "answered, not yet charged");
  assert.ok(fs.existsSync(journal));

  // killed: the keeper writes the answered calls' charges, closes the slice, deletes the journal
  const saved = fs.readFileSync(journal);
  extraEdges.splice(extraEdges.indexOf(doomed), 1);
  doomed.signal("SIGKILL");
  await doomed.exited;
  await keeper.waitForMsg("a stopped edge's journaled charges are written", { timeoutMs: 30000 });
  let list = await charges(id);
  assert.equal(list.length, refs.length);
  assert.deepEqual(list.map((c) => c.ref).sort(), [...refs].sort(), "each call charged once");
  assert.equal(list.reduce((sum, c) => sum + c.amount_micro, 0), total);
  assert.ok((await holds(id)).every((h) => h.state === "committed"), "the slice closed at once, not left to expire");
  assert.ok((await holds(idle.id)).every((h) => h.state !== "open"), "the uncharged slice closed at once too");
  assert.equal(await available(idle.id), 10_000_000, "nothing charged, nothing held");
  assert.equal((await call("GET", `/admin/accounts/${id}`)).body.balance_micro, before - total, "charged exactly");
  assert.ok(!fs.existsSync(journal));
  assert.deepEqual(journals(dir), ["charges-foreign.journal"]);

  // a recovery cut short after its writes (the journal back, as if its writer died before deleting it):
  // written again under the same keys, nothing charged twice
  fs.writeFileSync(journal, saved);
  const line = (await keeper.waitFor((e) => e.json?.msg === "a stopped edge's journaled charges are written" &&
    keeper.lines.filter((x) => x.json?.msg === e.json.msg).length === 2, { what: "the second recovery" })).json;
  assert.equal(line.charged_micro, total, "the ledger's first answers");
  assert.equal((await charges(id)).length, refs.length);
  assert.equal((await call("GET", `/admin/accounts/${id}`)).body.balance_micro, before - total);

  // a clean stop of a journaling edge writes its charges and deletes its journal
  const cleanUrl = await startEdge(env);
  const clean = extraEdges.at(-1);
  await clean.waitForMsg("deferred charges are journaled");
  const more = priced(await ask(new OpenAI({ baseURL: `${cleanUrl}/v1`, apiKey: key, maxRetries: 0 }), "clean"));
  assert.equal(journals(dir).length, 2, "the other ledger's, and the clean one's");
  extraEdges.splice(extraEdges.indexOf(clean), 1);
  assert.equal((await clean.stop()).code, 0);
  assert.deepEqual(journals(dir), ["charges-foreign.journal"]);
  list = await charges(id);
  assert.equal(list.length, refs.length + 1);
  assert.equal(list[0].amount_micro, more);
  extraEdges.splice(extraEdges.indexOf(keeper), 1);
  assert.equal((await keeper.stop()).code, 0);

  // a journal that cannot be made: charges are not deferred (each answer waits for its charge)
  const noJournal = await startEdge({ ...env, FAREBOX_PREPAID_JOURNAL_DIR: "/dev/null/journal" });
  const nj = extraEdges.at(-1);
  await nj.waitForMsg("the charge journal could not be made; prepaid answers wait for their charges");
  const waited = await ask(new OpenAI({ baseURL: `${noJournal}/v1`, apiKey: key, maxRetries: 0 }), "no journal");
  list = await charges(id);
  assert.equal(list.length, refs.length + 2, "charged before it was answered");
  assert.equal(list[0].ref, waited._request_id);
  assert.equal(list[0].amount_micro, priced(waited));
  extraEdges.splice(extraEdges.indexOf(nj), 1);
  assert.equal((await nj.stop()).code, 0);
  await audit();
});

test("FAREBOX_PREPAID_JOURNAL_FSYNC: deferred calls are answered once their journal records are synced (several a sync), the journal replaced durably; a killed edge's charges are written exactly", async () => {
  // deferred charges without a journal to sync: it stops the edge with one line
  const r = spawnSync(bin("farebox-edge"), [], { encoding: "utf8", timeout: 10000, env: { ...process.env,
    FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`, FAREBOX_HTTP_LISTEN: `127.0.0.1:${await freePort()}`,
    FAREBOX_ADMIN_TOKEN: ADMIN, FAREBOX_KEY_HMAC_SECRET: HMAC, FAREBOX_PREPAID_JOURNAL_FSYNC: "true",
    FAREBOX_PREPAID_CHARGE_DEFER_MS: "20" } });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /FAREBOX_PREPAID_JOURNAL_FSYNC with FAREBOX_PREPAID_CHARGE_DEFER_MS needs FAREBOX_PREPAID_JOURNAL_DIR/);
  const dir = path.join(tmpDir("fsync"), "charges");
  const journals = () => fs.readdirSync(dir).filter((f) => f.endsWith(".journal"));
  const { id, key } = await account(10_000_000);
  // without the deferral (compose's journal settings with FAREBOX_PREPAID_CHARGE_DEFER_MS=0) it has
  // no effect: each answer waits for its charge in the ledger, no journal is made, nothing synced
  let waited = 0;
  {
    const waitUrl = await startEdge({ FAREBOX_PREPAID_JOURNAL_DIR: dir, FAREBOX_PREPAID_JOURNAL_FSYNC: "true" });
    const waiting = extraEdges.at(-1);
    const c = new OpenAI({ baseURL: `${waitUrl}/v1`, apiKey: key, maxRetries: 0 });
    waited = miniCost(await miniCall(c, "not deferred"));
    assert.deepEqual((await chargesOf(id)).map((x) => x.amount_micro), [waited], "charged before the answer");
    const m = await (await fetch(`${waitUrl}/metrics`)).text();
    assert.match(m, /^farebox_edge_journal_fsynced_calls_total 0$/m);
    assert.match(m, /^farebox_edge_journal_fsync_duration_seconds_count\{result="ok"\} 0$/m);
    assert.deepEqual(fs.existsSync(dir) ? journals() : [], []);
    extraEdges.splice(extraEdges.indexOf(waiting), 1);
    assert.equal((await waiting.stop()).code, 0);
  }
  // without it, answers do not wait for a sync, but a write carrying journaled charges is sent only
  // once its record is synced (a host's crash must not leave the charges without their write)
  {
    const plainUrl = await startEdge({ FAREBOX_PREPAID_CHARGE_DEFER_MS: "200", FAREBOX_PREPAID_JOURNAL_DIR: dir });
    const plain = extraEdges.at(-1);
    await plain.waitForMsg("deferred charges are journaled");
    const c = new OpenAI({ baseURL: `${plainUrl}/v1`, apiKey: key, maxRetries: 0 });
    const answered = await Promise.all(Array.from({ length: 5 }, (_, j) => miniCall(c, `plain ${j}`)));
    await waitUntil(async () => (await chargesOf(id)).length === 6, { what: "the window's charges written" });
    const m = await (await fetch(`${plainUrl}/metrics`)).text();
    assert.match(m, /^farebox_edge_journal_fsynced_calls_total 0$/m, "answers did not wait");
    const synced = Number(m.match(/^farebox_edge_journal_fsync_duration_seconds_count\{result="ok"\} (\d+)$/m)[1]);
    assert.ok(synced >= 1, "the write's record synced before it was sent");
    assert.equal((await chargesOf(id)).reduce((sum, x) => sum + x.amount_micro, 0),
      answered.reduce((sum, a) => sum + miniCost(a), waited));
    extraEdges.splice(extraEdges.indexOf(plain), 1);
    assert.equal((await plain.stop()).code, 0);
  }
  const charged = (await chargesOf(id)).length;
  const before = (await call("GET", `/admin/accounts/${id}`)).body.balance_micro;
  const env = { FAREBOX_PREPAID_CHARGE_DEFER_MS: "10000", FAREBOX_PREPAID_SLICE_IDLE_MS: "600000",
    FAREBOX_PREPAID_JOURNAL_DIR: dir, FAREBOX_PREPAID_JOURNAL_FSYNC: "true", FAREBOX_PREPAID_JOURNAL_MAX_BYTES: "4096",
    FAREBOX_RATE_KEY_PER_S: "0", FAREBOX_KEY_CONCURRENCY: "0" };
  const edgeUrl = await startEdge(env);
  const doomed = extraEdges.at(-1);
  await doomed.waitForMsg("deferred charges are journaled");
  const journal = path.join(dir, journals()[0]);
  const first = fs.statSync(journal).ino;
  const client = new OpenAI({ baseURL: `${edgeUrl}/v1`, apiKey: key, maxRetries: 0 });
  let total = 0, replaced = false;
  const refs = [];
  // 8 rounds of 25 at once: many records each sync; past 4 KiB the journal is replaced (a new file, synced)
  for (let i = 0; i < 8; i++) {
    for (const a of await Promise.all(Array.from({ length: 25 }, (_, j) => miniCall(client, `synced ${i} ${j}`)))) {
      total += miniCost(a);
      refs.push(a._request_id);
    }
    replaced ||= fs.statSync(journal).ino !== first; // (a later file may get the first one's inode again)
  }
  let streamed = null;
  const s = await miniCall(client, "synced stream", { stream: true, stream_options: { include_usage: true } }).withResponse();
  for await (const chunk of s.data)
    if (chunk.usage) streamed = chunk.usage;
  total += cost("gpt-4o-mini", streamed.prompt_tokens, streamed.completion_tokens);
  refs.push(s.response.headers.get("x-request-id"));
  assert.equal((await chargesOf(id)).length, charged, "answered, not yet charged");
  assert.ok(replaced, "replaced");
  const text = fs.readFileSync(journal, "utf8");
  for (const ref of refs)
    assert.match(text, new RegExp(`^C \\d+ \\d+ \\d+ ${ref}$`, "m"), "journaled before it was answered");
  const metrics = await (await fetch(`${edgeUrl}/metrics`)).text();
  assert.match(metrics, new RegExp(`^farebox_edge_journal_fsynced_calls_total ${refs.length}$`, "m"), "each call answered after a sync");
  const syncs = Number(metrics.match(/^farebox_edge_journal_fsync_duration_seconds_count\{result="ok"\} (\d+)$/m)[1]);
  assert.ok(syncs >= 1 && syncs < refs.length, `${syncs} syncs for ${refs.length} calls: several records a sync`);
  assert.match(metrics, /^farebox_edge_journal_fsync_duration_seconds_count\{result="failed"\} 0$/m);
  // killed: another edge writes every answered call's charge, once
  await startEdge({ FAREBOX_PREPAID_JOURNAL_DIR: dir });
  const keeper = extraEdges.at(-1);
  extraEdges.splice(extraEdges.indexOf(doomed), 1);
  doomed.signal("SIGKILL");
  await doomed.exited;
  await keeper.waitForMsg("a stopped edge's journaled charges are written", { timeoutMs: 30000 });
  const list = (await chargesOf(id)).slice(0, -charged || undefined); // newest first: the plain edge's are last
  assert.deepEqual(list.map((c) => c.ref).sort(), [...refs].sort(), "each call charged once");
  assert.equal(list.reduce((sum, c) => sum + c.amount_micro, 0), total);
  assert.equal((await call("GET", `/admin/accounts/${id}`)).body.balance_micro, before - total, "charged exactly");
  assert.deepEqual(journals(), []);
  extraEdges.splice(extraEdges.indexOf(keeper), 1);
  assert.equal((await keeper.stop()).code, 0);
  await audit();
});

test("Idempotency-Key: a retried call gets its kept answer and pays once; 409 while it runs, 422 for another body", async () => {
  const { id, key, keyId } = await account(10_000_000);
  const openai = new OpenAI({ baseURL: `${url}/v1`, apiKey: key, maxRetries: 0 });
  const req = { model: "gpt-4o-mini", max_tokens: 8, messages: [{ role: "user", content: "[mock:tokens=5] kept" }] };

  // whole answers: the retry is the same answer, marked replayed, and no new charge
  const first = await openai.chat.completions.create(req, { headers: { "Idempotency-Key": "whole-1" } }).withResponse();
  assert.equal(first.response.headers.get("idempotent-replayed"), null);
  const again = await openai.chat.completions.create(req, { headers: { "Idempotency-Key": "whole-1" } }).withResponse();
  assert.equal(again.response.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(again.data, first.data);
  let charges = await settled(id);
  assert.equal(charges.length, 1);
  assert.equal(charges[0].amount_micro, cost("gpt-4o-mini", first.data.usage.prompt_tokens,
    first.data.usage.completion_tokens));
  const kept = await ledgerRpc.call("ledger.call", { scope: `key:${keyId}`, idem_key: "whole-1" });
  assert.equal(kept.body.charge_id, charges[0].charge_id, "the answer is kept with its charge");

  // the same key for another request: 422, the SDK's own exception, nothing charged
  await assert.rejects(openai.chat.completions.create({ ...req, max_tokens: 9 },
    { headers: { "Idempotency-Key": "whole-1" } }), (e) => e instanceof OpenAI.UnprocessableEntityError &&
    e.code === "idempotency_key_mismatch");

  // streams: the retry replays the stream as it was sent
  const sreq = { ...req, stream: true, messages: [{ role: "user", content: "[mock:tokens=6] streamed" }] };
  const read = async (s) => {
    let t = "";
    for await (const c of s) t += c.choices[0]?.delta?.content ?? "";
    return t;
  };
  const s1 = await read(await openai.chat.completions.create(sreq, { headers: { "Idempotency-Key": "stream-1" } }));
  const s2 = await openai.chat.completions.create(sreq, { headers: { "Idempotency-Key": "stream-1" } }).withResponse();
  assert.equal(s2.response.headers.get("idempotent-replayed"), "true");
  assert.equal(s2.response.headers.get("content-type"), "text/event-stream");
  assert.equal(await read(s2.data), s1);
  assert.ok(s1.length > 0);
  charges = await settled(id);
  assert.equal(charges.length, 2);

  // a call still running: a retry is told 409 with Retry-After (the SDK retries 409 by itself)
  const slow = { ...req, messages: [{ role: "user", content: "[mock:delay=1500] slow" }] };
  const running = openai.chat.completions.create(slow, { headers: { "Idempotency-Key": "slow-1" } });
  await sleep(400);
  const busy = await fetch(`${url}/v1/chat/completions`, { method: "POST", body: JSON.stringify(slow),
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", "idempotency-key": "slow-1" } });
  assert.equal(busy.status, 409);
  assert.equal((await busy.json()).error.code, "idempotency_in_progress");
  assert.ok(Number(busy.headers.get("retry-after")) >= 1);
  assert.ok(Number(busy.headers.get("retry-after-ms")) >= 1);
  const done = await running;
  const retried = await openai.chat.completions.create(slow, { headers: { "Idempotency-Key": "slow-1" } });
  assert.deepEqual(retried, done);
  charges = await settled(id);
  assert.equal(charges.length, 3);

  // a call that failed (nothing charged) frees its key: the retry is served afresh
  const failing = { ...req, messages: [{ role: "user", content: "[mock:fail=500]" }] };
  await assert.rejects(openai.chat.completions.create(failing, { headers: { "Idempotency-Key": "fail-1" } }),
    OpenAI.InternalServerError);
  await waitUntil(async () => (await ledgerRpc.call("ledger.call", { scope: `key:${keyId}`, idem_key: "fail-1" }))
    .code === "call_not_found", { what: "the failed call's key released" });
  // refused before any money (not enough balance) releases too, and a bad key is refused
  const poor = await account(1);
  const poorClient = new OpenAI({ baseURL: `${url}/v1`, apiKey: poor.key, maxRetries: 0 });
  await assert.rejects(poorClient.chat.completions.create(req, { headers: { "Idempotency-Key": "poor-1" } }),
    (e) => e.status === 402);
  await waitUntil(async () => (await ledgerRpc.call("ledger.call", { scope: `key:${poor.keyId}`, idem_key: "poor-1" }))
    .code === "call_not_found", { what: "the refused call's key released" });
  await assert.rejects(openai.chat.completions.create(req, { headers: { "Idempotency-Key": "not ok!" } }),
    OpenAI.BadRequestError);

  // Anthropic's client and /api/v1/prompt keep their answers too
  const anthropic = new Anthropic({ baseURL: url, apiKey: key, maxRetries: 0 });
  const areq = { model: "claude-3-5-haiku-20241022", max_tokens: 5, messages: [{ role: "user", content: "hi" }] };
  const a1 = await anthropic.messages.create(areq, { headers: { "Idempotency-Key": "anthropic-1" } });
  const a2 = await anthropic.messages.create(areq, { headers: { "Idempotency-Key": "anthropic-1" } });
  assert.deepEqual(a2, a1);
  const prompt = () => fetch(`${url}/api/v1/prompt`, { method: "POST", body: JSON.stringify({ model: "gpt-4o-mini",
    prompt: "hello" }), headers: { authorization: `Bearer ${key}`, "content-type": "application/json",
    "idempotency-key": "prompt-1" } }).then(async (r) => [r.status, await r.text(), r.headers.get("idempotent-replayed")]);
  const [p1, p2] = [await prompt(), await prompt()];
  assert.equal(p1[0], 200);
  assert.deepEqual([p2[0], p2[1], p2[2]], [200, p1[1], "true"]);
  charges = await settled(id);
  assert.equal(charges.length, 5, "one charge per named call, whatever the retries");
  const metrics = await (await fetch(`${url}/metrics`)).text();
  const outcome = (o) => Number(metrics.match(new RegExp(`farebox_edge_idempotent_calls_total\\{outcome="${o}"\\} (\\d+)`))[1]);
  assert.ok(outcome("replayed") >= 5 && outcome("in_progress") >= 1 && outcome("mismatch") >= 1 &&
    outcome("claimed") >= 7, metrics.split("\n").filter((l) => l.includes("idempotent")).join("\n"));
  await audit();
});
