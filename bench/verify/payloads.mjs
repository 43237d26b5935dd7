// payloads.mjs - the payments bench/run verify checks: N distinct x402 v2
// "exact" payloads on EVM (EIP-3009, signed with viem's signTypedData by N
// random keys) and N on Solana (a v0 transaction built with @solana/kit the
// way @x402/svm's client builds it, partially signed by N random payers, the
// fee payer's slot left empty), each with the raw material of its baseline:
// the EIP-712 digest and 65-byte signature, or the signed message bytes, the
// 64-byte signature and the 32-byte public key. No chain is needed.
//   node bench/verify/payloads.mjs OUT_FILE [N]
// Writes {now, evm: [...], svm_fee_payer, svm: [...]}: every payload is valid
// at `now` (Unix seconds).
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";

// The Node packages live in tests/ (tests/package-lock.json); an ES module
// resolves packages from its own folder, so ask tests/ for them.
const need = createRequire(new URL("../../tests/package.json", import.meta.url));
const { hashTypedData } = need("viem");
const { privateKeyToAccount } = need("viem/accounts");
const {
  address, appendTransactionMessageInstructions, createTransactionMessage, generateKeyPairSigner,
  getAddressEncoder, getBase64EncodedWireTransaction, partiallySignTransactionMessageWithSigners, pipe,
  setTransactionMessageFeePayer, setTransactionMessageLifetimeUsingBlockhash,
} = need("@solana/kit");
const { getSetComputeUnitLimitInstruction, getSetComputeUnitPriceInstruction } = need("@solana-program/compute-budget");
const { TOKEN_PROGRAM_ADDRESS, findAssociatedTokenPda, getTransferCheckedInstruction } = need("@solana-program/token");

const [outFile, nArg] = process.argv.slice(2);
if (!outFile) {
  console.error("usage: node bench/verify/payloads.mjs OUT_FILE [N]");
  process.exit(2);
}
const N = Number(nArg ?? 1000);
const now = Math.floor(Date.now() / 1000);
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const header = (payload) => Buffer.from(JSON.stringify(payload)).toString("base64");
const resource = { url: "http://farebox.test/v1/chat/completions", description: "", mimeType: "application/json" };

// --- EVM: EIP-3009 transferWithAuthorization on Base Sepolia's USDC --------
const evmReq = {
  scheme: "exact", network: "eip155:84532", amount: "10000",
  asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e", payTo: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
  maxTimeoutSeconds: 60, extra: { name: "USDC", version: "2" },
};
const domain = { name: "USDC", version: "2", chainId: 84532, verifyingContract: evmReq.asset };
const types = {
  TransferWithAuthorization: [
    { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" },
  ],
};
const evm = [];
for (let i = 0; i < N; i++) {
  const account = privateKeyToAccount(`0x${crypto.randomBytes(32).toString("hex")}`);
  // what @x402/evm's client signs: a window of [now - 600, now + maxTimeoutSeconds]
  // here stretched to an hour so that the file stays valid for a long run
  const authorization = {
    from: account.address, to: evmReq.payTo, value: evmReq.amount,
    validAfter: String(now - 600), validBefore: String(now + 3600),
    nonce: `0x${crypto.randomBytes(32).toString("hex")}`,
  };
  const message = { ...authorization, value: BigInt(authorization.value),
    validAfter: BigInt(authorization.validAfter), validBefore: BigInt(authorization.validBefore) };
  const typed = { domain, types, primaryType: "TransferWithAuthorization", message };
  const signature = await account.signTypedData(typed);
  const payload = { x402Version: 2, resource, accepted: evmReq, payload: { authorization, signature } };
  evm.push({ payload, header: header(payload), digest: hashTypedData(typed).slice(2), signature: signature.slice(2),
    address: account.address });
}

// --- Solana: SPL TransferChecked on devnet, co-signed later by the fee payer --
const MEMO_PROGRAM = address("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
const feePayer = address("8WwmAjk9cWEYRJkuweQaThCz6FMtELztsozE1bjsmuVh");
const mint = address("4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU");
const payTo = address("3JSLa22ucS3v7upZZVP6o6gWgfFzeQSkA9QYUuenjM4a");
const svmReq = {
  scheme: "exact", network: "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", amount: "10000", asset: mint, payTo,
  maxTimeoutSeconds: 60, extra: { feePayer },
};
const lifetime = { blockhash: "4uQeVj5tqViQh7yWWGStvkEG1Zmhx6uasJtWCJziofM", lastValidBlockHeight: 1000000n };
const [destination] = await findAssociatedTokenPda({ mint, owner: payTo, tokenProgram: TOKEN_PROGRAM_ADDRESS });
const keyBytes = getAddressEncoder();
const svm = [];
for (let i = 0; i < N; i++) {
  const payer = await generateKeyPairSigner();
  const [source] = await findAssociatedTokenPda({ mint, owner: payer.address, tokenProgram: TOKEN_PROGRAM_ADDRESS });
  const memo = { programAddress: MEMO_PROGRAM, accounts: [],
    data: new TextEncoder().encode(crypto.randomBytes(16).toString("hex")) };
  const msg = pipe(createTransactionMessage({ version: 0 }),
    (m) => setTransactionMessageFeePayer(feePayer, m),
    (m) => appendTransactionMessageInstructions([
      getSetComputeUnitLimitInstruction({ units: 20000 }),
      getSetComputeUnitPriceInstruction({ microLamports: 1 }),
      getTransferCheckedInstruction({ source, mint, destination, authority: payer, amount: BigInt(svmReq.amount),
        decimals: 6 }, { programAddress: TOKEN_PROGRAM_ADDRESS }),
      memo], m),
    (m) => setTransactionMessageLifetimeUsingBlockhash(lifetime, m));
  const tx = await partiallySignTransactionMessageWithSigners(msg);
  if (tx.signatures[feePayer] != null) throw new Error("the fee payer's slot should stay empty");
  const payload = { x402Version: 2, resource, accepted: svmReq,
    payload: { transaction: getBase64EncodedWireTransaction(tx) } };
  svm.push({ payload, header: header(payload), message: hex(tx.messageBytes),
    signature: hex(tx.signatures[payer.address]), public_key: hex(keyBytes.encode(payer.address)) });
}

fs.writeFileSync(outFile, JSON.stringify({ now, evm, svm_fee_payer: feePayer, svm }) + "\n");
