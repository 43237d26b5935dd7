// inspect.test.mjs - farebox-inspect on headers made by the official x402
// clients: fields, EIP-712 digest (against viem's), recovered signer, Solana
// signers, each offline check's verdict at a given clock, and its exit codes.
import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { spawnSync } from "node:child_process";
import { hashTypedData, toHex } from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { x402Client, x402HTTPClient } from "@x402/core/client";
import { registerExactEvmScheme } from "@x402/evm/exact/client";
import {
  address, appendTransactionMessageInstructions, createKeyPairSignerFromBytes, createTransactionMessage,
  generateKeyPairSigner, getBase64EncodedWireTransaction, partiallySignTransactionMessageWithSigners, pipe,
  setTransactionMessageFeePayer, setTransactionMessageLifetimeUsingBlockhash,
} from "@solana/kit";
import { getSetComputeUnitLimitInstruction, getSetComputeUnitPriceInstruction } from "@solana-program/compute-budget";
import { TOKEN_PROGRAM_ADDRESS, findAssociatedTokenPda, getTransferCheckedInstruction } from "@solana-program/token";
import { bin } from "../lib/harness.mjs";

const TOKEN = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64");

function inspect(args, input) {
  const r = spawnSync(bin("farebox-inspect"), args, { input, encoding: "utf8" });
  return { code: r.status, out: r.stdout ? JSON.parse(r.stdout) : null, stderr: r.stderr };
}

const requirements = (over = {}) => ({ scheme: "exact", network: "eip155:84532", amount: "10000", asset: TOKEN, payTo: PAY_TO,
  maxTimeoutSeconds: 60, extra: { name: "USDC", version: "2" }, ...over });

async function officialEvm(account) {
  const client = registerExactEvmScheme(new x402Client(), { signer: account });
  client.setSpendControls(false);
  const h = new x402HTTPClient(client);
  const payload = await h.createPaymentPayload({ x402Version: 2, resource: { url: "http://farebox.test/r", description: "", mimeType: "" }, accepts: [requirements()] });
  return { header: h.encodePaymentSignatureHeader(payload)["PAYMENT-SIGNATURE"], payload };
}

test("an @x402/evm payment: fields, viem's EIP-712 digest, the signer, every check passing", async () => {
  const account = privateKeyToAccount(toHex(crypto.randomBytes(32)));
  const { header, payload } = await officialEvm(account);
  const a = payload.payload.authorization;
  const now = Math.floor(Date.now() / 1000);
  const { code, out } = inspect(["--now", String(now), header]);
  assert.equal(code, 0, JSON.stringify(out));
  assert.equal(out.kind, "payment");
  assert.equal(out.header, "PAYMENT-SIGNATURE");
  assert.equal(out.scheme, "exact");
  assert.equal(out.network, "eip155:84532");
  assert.equal(out.payer, account.address);
  assert.equal(out.signer, account.address);
  assert.equal(out.valid, true);
  assert.equal(out.reason, null);
  const digest = hashTypedData({
    domain: { name: "USDC", version: "2", chainId: 84532, verifyingContract: TOKEN },
    types: { TransferWithAuthorization: [
      { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
      { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" }] },
    primaryType: "TransferWithAuthorization",
    message: { ...a, value: BigInt(a.value), validAfter: BigInt(a.validAfter), validBefore: BigInt(a.validBefore) } });
  assert.equal(out.digest, digest);
  assert.ok(out.checks.length >= 8 && out.checks.every((c) => c.result === "pass"));
  assert.ok(out.chain_checks.length > 0 && out.chain_checks.every((c) => c.result === "not_run"));
  assert.deepEqual(out.decoded, JSON.parse(JSON.stringify(payload)));

  // the same header through stdin, with its name in front
  const viaStdin = inspect(["--now", String(now)], `PAYMENT-SIGNATURE: ${header}\n`);
  assert.equal(viaStdin.code, 0);
  assert.equal(viaStdin.out.digest, digest);

  // later than validBefore: the time window fails, the checks after it are not run
  const late = inspect(["--now", String(Number(a.validBefore) + 1), header]);
  assert.equal(late.code, 1);
  assert.equal(late.out.valid, false);
  assert.equal(late.out.reason, "invalid_exact_evm_payload_authorization_valid_before");
  const byName = Object.fromEntries(late.out.checks.map((c) => [c.name, c.result]));
  assert.equal(byName.signature, "pass");
  assert.equal(byName.time_window, "fail");
  assert.equal(byName.amount, "not_run");

  // checked against other requirements: another amount
  const other = inspect(["--now", String(now), "--requirements", JSON.stringify(requirements({ amount: "20000" })), header]);
  assert.equal(other.out.reason, "invalid_exact_evm_payload_authorization_value_mismatch");
  // payTo one of the development mnemonic's public accounts: fine on this test chain, refused on a real
  // one (Base: 8453), where anyone holding the well-known key could take the payment
  const anvil9 = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720";
  const devPayload = async (network) => {
    const client = registerExactEvmScheme(new x402Client(), { signer: account });
    client.setSpendControls(false);
    const h = new x402HTTPClient(client);
    const req = requirements({ network, payTo: anvil9 });
    const p = await h.createPaymentPayload({ x402Version: 2, resource: { url: "http://farebox.test/r" }, accepts: [req] });
    return inspect(["--now", String(now), h.encodePaymentSignatureHeader(p)["PAYMENT-SIGNATURE"]]).out;
  };
  assert.equal((await devPayload("eip155:84532")).valid, true);
  const real = await devPayload("eip155:8453");
  assert.equal(real.reason, "invalid_payment_requirements");
  assert.match(real.message, /public development account/);
  // a tampered amount in the authorization no longer matches the signature
  const tampered = structuredClone(payload);
  tampered.payload.authorization.value = "20000";
  tampered.accepted.amount = "20000";
  const t = inspect(["--now", String(now), b64(tampered)]);
  assert.equal(t.out.reason, "invalid_exact_evm_signature");
  assert.notEqual(t.out.signer, account.address);
});

test("a v1 X-PAYMENT needs --requirements; PAYMENT-REQUIRED and PAYMENT-RESPONSE are decoded", async () => {
  const account = privateKeyToAccount(toHex(crypto.randomBytes(32)));
  const { payload } = await officialEvm(account);
  const v1 = { x402Version: 1, scheme: "exact", network: "base-sepolia", payload: payload.payload };
  const now = String(Math.floor(Date.now() / 1000));
  const bare = inspect(["--now", now, b64(v1)]);
  assert.equal(bare.code, 1);
  assert.equal(bare.out.header, "X-PAYMENT");
  assert.equal(bare.out.valid, null);
  assert.match(bare.out.message, /--requirements/);
  const v1req = { scheme: "exact", network: "base-sepolia", maxAmountRequired: "10000", resource: "http://farebox.test/r",
    description: "", mimeType: "", payTo: PAY_TO, maxTimeoutSeconds: 60, asset: TOKEN, extra: { name: "USDC", version: "2" } };
  const withReq = inspect(["--now", now, "--requirements", JSON.stringify(v1req), b64(v1)]);
  assert.equal(withReq.code, 0, JSON.stringify(withReq.out));
  assert.equal(withReq.out.signer, account.address);

  const required = inspect([b64({ x402Version: 2, resource: { url: "http://x" }, accepts: [requirements(), { scheme: "exact" }] })]);
  assert.equal(required.out.kind, "payment_required");
  assert.equal(required.out.accepts[0].valid, true);
  assert.equal(required.out.accepts[1].valid, false);
  assert.equal(required.out.reason, "invalid_payment_requirements");

  const response = inspect([b64({ success: true, transaction: "0xabc", network: "eip155:84532", payer: account.address })]);
  assert.equal(response.code, 0);
  assert.equal(response.out.kind, "payment_response");
});

test("a Solana payment: signers listed (fee payer slot empty), transfer decoded, tampering caught", async () => {
  const payer = await generateKeyPairSigner();
  const feePayer = (await generateKeyPairSigner()).address;
  const payTo = (await generateKeyPairSigner()).address;
  const mint = (await generateKeyPairSigner()).address;
  const [source] = await findAssociatedTokenPda({ mint, owner: payer.address, tokenProgram: TOKEN_PROGRAM_ADDRESS });
  const [destination] = await findAssociatedTokenPda({ mint, owner: payTo, tokenProgram: TOKEN_PROGRAM_ADDRESS });
  const msg = pipe(createTransactionMessage({ version: 0 }),
    (m) => setTransactionMessageFeePayer(feePayer, m),
    (m) => appendTransactionMessageInstructions([
      getSetComputeUnitLimitInstruction({ units: 20000 }), getSetComputeUnitPriceInstruction({ microLamports: 1n }),
      getTransferCheckedInstruction({ source, mint, destination, authority: payer, amount: 5000n, decimals: 6 }),
      { programAddress: address("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"), accounts: [], data: new TextEncoder().encode("ab12") }], m),
    (m) => setTransactionMessageLifetimeUsingBlockhash({ blockhash: "4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM", lastValidBlockHeight: 1n }, m));
  const tx = getBase64EncodedWireTransaction(await partiallySignTransactionMessageWithSigners(msg));
  const accepted = { scheme: "exact", network: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", amount: "5000", asset: mint, payTo,
    maxTimeoutSeconds: 60, extra: { feePayer } };
  const doc = { x402Version: 2, resource: { url: "http://farebox.test/r" }, accepted, payload: { transaction: tx } };
  const { code, out } = inspect([b64(doc)]);
  assert.equal(code, 0, JSON.stringify(out));
  assert.equal(out.payer, payer.address);
  assert.equal(out.signer, payer.address);
  assert.deepEqual(out.signers.map((s) => [s.key, s.present, s.verifies]), [[feePayer, false, null], [payer.address, true, true]]);
  assert.equal(out.transfer.amount, 5000);
  assert.equal(out.transfer.destination, destination);
  assert.equal(out.instructions.length, 4);
  assert.ok(out.chain_checks.some((c) => /blockhash/.test(c.name)));

  const bytes = Buffer.from(tx, "base64");
  bytes[1 + 64 + 10] ^= 1; // a byte of the payer's signature
  const bad = inspect([b64({ ...doc, payload: { transaction: bytes.toString("base64") } })]);
  assert.equal(bad.out.reason, "invalid_exact_svm_payload_signature_invalid");
  assert.equal(bad.out.signers[1].verifies, false);
  const cut = inspect([b64({ ...doc, payload: { transaction: bytes.subarray(0, 100).toString("base64") } })]);
  assert.equal(cut.out.reason, "invalid_exact_svm_payload_transaction_could_not_be_decoded");
});

test("undecodable input is reported, bad usage exits 2", () => {
  for (const input of ["not base64!", Buffer.from("not json").toString("base64"), b64([1, 2])]) {
    const r = inspect([input]);
    assert.equal(r.code, 1, input);
    assert.equal(r.out.valid, false);
    assert.equal(r.out.reason, "invalid_payload");
  }
  assert.equal(inspect(["--now"]).code, 2);
  assert.equal(inspect(["--now", "yesterday", "abc"]).code, 2);
  assert.equal(inspect(["--bogus", "abc"]).code, 2);
  assert.equal(inspect(["--requirements", "{", "abc"]).code, 2);
});
