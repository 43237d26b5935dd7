// demo.mjs - the demo account of ./scripts/run, funded through the real path:
// an account and an API key made with the admin API, then a /v1/topup paid
// with x402 (an EIP-3009 authorization signed by a dev payer on anvil, settled
// by the verifier, credited by the ledger). The key is kept in KEY_FILE and
// reused on later runs; the account is topped up again when it runs low.
// Prints the key on stdout.
//
//   node tests/devchain/demo.mjs URL ADMIN_TOKEN PAYER_PRIVATE_KEY KEY_FILE
import fs from "node:fs";
import { privateKeyToAccount } from "viem/accounts";
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { registerExactEvmScheme } from "@x402/evm/exact/client";

const [url, adminToken, payerKey, keyFile] = process.argv.slice(2);
if (!keyFile) {
  console.error("usage: demo.mjs URL ADMIN_TOKEN PAYER_PRIVATE_KEY KEY_FILE");
  process.exit(2);
}
const TOPUP_MICRO = 5_000_000; // $5 of test USDC
const LOW_MICRO = 1_000_000;
const json = { "content-type": "application/json" };
const admin = { authorization: `Bearer ${adminToken}`, ...json };

async function call(method, path, headers, body) {
  const r = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let doc = null;
  try {
    doc = JSON.parse(text);
  } catch {}
  return { status: r.status, doc, text, headers: r.headers };
}

async function demoKey() {
  if (fs.existsSync(keyFile)) {
    const key = fs.readFileSync(keyFile, "utf8").trim();
    const b = await call("GET", "/v1/balance", { authorization: `Bearer ${key}` });
    if (b.status === 200) return { key, available: b.doc.available_micro };
  }
  const a = await call("POST", "/admin/accounts", admin, { label: "demo" });
  if (a.status !== 201) throw new Error(`open account: ${a.status} ${a.text}`);
  const k = await call("POST", `/admin/accounts/${a.doc.account_id}/keys`, admin, { label: "demo" });
  if (k.status !== 201) throw new Error(`mint key: ${k.status} ${k.text}`);
  fs.writeFileSync(keyFile, `${k.doc.key}\n`, { mode: 0o600 });
  return { key: k.doc.key, available: 0 };
}

async function topup(key) {
  const auth = { authorization: `Bearer ${key}`, ...json };
  const quote = await call("POST", "/v1/topup", auth, { amount_micro: TOPUP_MICRO });
  if (quote.status !== 402) throw new Error(`topup quote: ${quote.status} ${quote.text}`);
  const required = JSON.parse(Buffer.from(quote.headers.get("payment-required"), "base64").toString());
  required.accepts = required.accepts.filter((a) => a.network.startsWith("eip155:"));
  const client = registerExactEvmScheme(new x402Client(), { signer: privateKeyToAccount(payerKey) });
  client.setSpendControls(false);
  const http = new x402HTTPClient(client);
  const header = http.encodePaymentSignatureHeader(await http.createPaymentPayload(required))["PAYMENT-SIGNATURE"];
  const paid = await call("POST", "/v1/topup", { ...auth, "payment-signature": header }, { amount_micro: TOPUP_MICRO });
  if (paid.status !== 200) throw new Error(`topup: ${paid.status} ${paid.text}`);
  return paid.doc.available_micro;
}

const { key, available } = await demoKey();
if (available < LOW_MICRO) await topup(key);
process.stdout.write(`${key}\n`);
