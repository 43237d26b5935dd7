#!/usr/bin/env node
// tests/fuzz/seeds.mjs - writes the seed corpus of each fuzz driver
// (tests/fuzz/seeds/NAME/) from the known-answer vectors (tests/vectors),
// with signed-message proofs made by viem and @solana/kit at the drivers'
// clock (2026-01-01T00:00:00Z). Deterministic: fixed keys, no clock, no
// network. Usage (from the repository root): node tests/fuzz/seeds.mjs
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { encode as mpEncode } from '@msgpack/msgpack';
import * as kit from '@solana/kit';
import { privateKeyToAccount } from 'viem/accounts';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');

const v = JSON.parse(readFileSync(join(root, 'tests', 'vectors', 'vectors.json'), 'utf8'));
const NOW_MS = 1767225600000;
const SOLANA_DEVNET = 'solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1';

const seeds = { x402_header: [], x402_json: [], solana_tx: [], rpc_frame: [], edge_scan: [] };
const b64 = (s) => Buffer.from(s).toString('base64');
const json = (o) => Buffer.from(JSON.stringify(o));

// EVM: the official client's headers, as v2, as v1 (X-PAYMENT), and the
// PaymentRequired they answer
for (const x of v.x402) {
  const accepted = x.paymentRequired.accepts[0];
  seeds.x402_header.push(Buffer.from(x.header));
  seeds.x402_header.push(Buffer.from(b64(JSON.stringify(x.paymentRequired))));
  const v1 = { x402Version: 1, scheme: 'exact', network: 'base-sepolia', payload: x.decoded.payload };
  const v1req = { ...accepted, network: 'base-sepolia', maxAmountRequired: accepted.amount, resource: 'https://api.example.com/premium', description: '', mimeType: 'application/json' };
  delete v1req.amount;
  seeds.x402_header.push(Buffer.from(b64(JSON.stringify({ ...v1, accepts: [v1req] }))));
  seeds.x402_json.push(json({ x402Version: 2, paymentPayload: x.decoded, paymentRequirements: accepted }));
  seeds.x402_json.push(json({ x402Version: 1, paymentPayload: v1, paymentRequirements: v1req }));
}

// Solana: the wire transactions, and as x402 v2 payloads
for (const t of v.solana_tx) {
  seeds.solana_tx.push(Buffer.from(t.wireBase64, 'base64'));
  const amount = t.instructions.find((i) => i.decoded?.instruction === 'TransferChecked').decoded.amount;
  const accepted = { scheme: 'exact', network: SOLANA_DEVNET, amount, asset: t.mint, payTo: t.recipient, maxTimeoutSeconds: 60, extra: { feePayer: t.feePayer } };
  const payload = { x402Version: 2, accepted, payload: { transaction: t.wireBase64 } };
  seeds.x402_header.push(Buffer.from(b64(JSON.stringify(payload))));
  seeds.x402_json.push(json({ x402Version: 2, paymentPayload: payload, paymentRequirements: accepted }));
}

// signed-message proofs (Chat402's "PromptPort Payment")
const text = (id, cents) => `PromptPort Payment\nRequest ID: ${id}\nAmount: ${cents} USDC cents\nTimestamp: ${NOW_MS}`;
{
  const acct = privateKeyToAccount(v.x402[0].privateKey);
  const signature = await acct.signMessage({ message: text('req_fuzz_1', 25) });
  seeds.x402_json.push(json({ network: 'base', from: acct.address, amount: 25, timestamp: NOW_MS, requestId: 'req_fuzz_1', signature }));
  seeds.x402_json.push(json({ model: 'mock', prompt: 'hi', payment: { network: 'eip155:84532', from: acct.address, amount: 25, timestamp: NOW_MS, requestId: 'req_fuzz_1', signature, message: text('req_fuzz_1', 25) } }));
}
{
  const seed = Buffer.from(v.solana_tx[0].ownerSeed.slice(2), 'hex');
  const kp = await kit.createKeyPairFromPrivateKeyBytes(seed, false);
  const from = await kit.getAddressFromPublicKey(kp.publicKey);
  const sig = await kit.signBytes(kp.privateKey, Buffer.from(text('req_fuzz_2', 7)));
  const signature = kit.getBase58Decoder().decode(sig);
  seeds.x402_json.push(json({ network: 'solana', from, amount: 7, timestamp: NOW_MS, requestId: 'req_fuzz_2', signature }));
}

// internal RPC frames (proto/README.md): requests and replies
const reqFrame = (id, method, body, extra = {}) => Buffer.from(mpEncode({ v: 1, id, method, deadline_ms: 5000, ...extra, body }));
seeds.rpc_frame.push(reqFrame(1, 'health', {}));
seeds.rpc_frame.push(reqFrame(2, 'verifier.verify', { header: v.x402[0].header, requirements: v.x402[0].paymentRequired.accepts[0] }, { trace: 'req_abc' }));
seeds.rpc_frame.push(reqFrame('s-3', 'ledger.hold', { account: 'acct_1', amount: 1500, expires_s: 60 }, { idem: 'hold-1' }));
seeds.rpc_frame.push(Buffer.from(mpEncode({ v: 1, id: 2, status: 'ok', replica: 'verifier-1', body: { isValid: true, payer: v.x402[0].signer } })));
seeds.rpc_frame.push(Buffer.from(mpEncode({ v: 1, id: 3, status: 'error', code: 'insufficient_funds', message: 'balance 10 < 1500', body: { balance: 10, required: 1500, deficit: 1490 } })));
seeds.rpc_frame.push(Buffer.from(mpEncode([1.5, -1, 2n ** 63n, null, true, new Uint8Array([1, 2, 3])], { useBigInt64: true })));

// the edge's scans: providers' answers (OpenAI chat completions) and callers'
// chat completions requests, as the official clients send them
seeds.edge_scan.push(json({ id: 'chatcmpl-1', object: 'chat.completion', created: 1795271302, model: 'gpt-4o-mini',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello "there"\n' }, logprobs: null, finish_reason: 'length' }],
  usage: { prompt_tokens: 6, completion_tokens: 16, total_tokens: 22 } }));
seeds.edge_scan.push(json({ usage: { prompt_tokens: 2006, completion_tokens: 300, prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 } },
  choices: [{ message: { content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get', arguments: '{"usage": 1}' } }] } }] }));
seeds.edge_scan.push(json({ model: 'gpt-4o-mini', max_tokens: 16, messages: [{ role: 'user', content: 'Say hello to farebox.' }] }));
seeds.edge_scan.push(Buffer.from(JSON.stringify({ model: 'gpt-4o', temperature: 0.7, top_p: 0.01, stream: true,
  stream_options: { include_usage: true }, n: 2, max_completion_tokens: 300,
  messages: [{ role: 'system', content: 'Be "brief"\n' }, { role: 'user', content: [{ type: 'text', text: 'hi' }] }],
  tools: [{ type: 'function', function: { name: 'get', parameters: { type: 'object', properties: {} } } }], stop: null }, null, 2)));

for (const [name, list] of Object.entries(seeds)) {
  const dir = join(here, 'seeds', name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const buf of list) writeFileSync(join(dir, createHash('sha1').update(buf).digest('hex')), buf);
  console.log(`${name}: ${list.length} seeds`);
}
