#!/usr/bin/env node
/*
 * farebox known-answer test vector generator
 * ==========================================
 *
 * Produces tests/vectors/vectors.json: byte-exact reference outputs computed
 * with the OFFICIAL JavaScript libraries pinned in tests/package.json
 * (viem, @solana/kit, @solana-program/token, @solana-program/compute-budget,
 * @x402/core, @x402/evm). The C implementation is checked against this file.
 *
 * Determinism rules:
 *   - fixed private keys / seeds and fixed inputs only;
 *   - no network access (no RPC clients are ever created);
 *   - no wall clock: the one library path that reads the clock (x402 client)
 *     runs with Date.now stubbed to a fixed instant, and the one path that
 *     draws randomness (the x402 EIP-3009 nonce) runs with
 *     globalThis.crypto.getRandomValues stubbed to a keccak-based counter
 *     stream. Both stubs are restored immediately afterwards, and the
 *     generator asserts the stub was actually what the library consumed.
 *
 * Running the generator twice must give a byte-identical vectors.json.
 *
 * Usage (from the repository root):  node tests/vectors/generate.mjs
 *
 * Conventions in the output: byte strings are lowercase 0x-hex unless a field
 * says otherwise (Solana addresses / signatures are base58, wire transactions
 * are base64, EVM addresses are additionally given EIP-55 checksummed where a
 * library returns them that way). Integers that may exceed 2^53 are decimal
 * strings.
 *
 * Each vector set is produced by one function below (genKeccak, genEip55, ...).
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import {
  keccak256,
  toBytes,
  hexToBytes,
  bytesToHex,
  stringToHex,
  getAddress,
  hashDomain,
  hashStruct,
  hashTypedData,
  getTypesForEIP712Domain,
  parseSignature,
  recoverTypedDataAddress,
  hashMessage,
  recoverMessageAddress,
  toRlp,
  serializeTransaction,
  parseTransaction,
  recoverTransactionAddress,
  encodeFunctionData,
  decodeFunctionResult,
  encodeAbiParameters,
  toFunctionSelector,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

import {
  address,
  getAddressEncoder,
  getAddressFromPublicKey,
  getProgramDerivedAddress,
  getBase58Decoder,
  getBase58Encoder,
  getBase64Encoder,
  createKeyPairFromPrivateKeyBytes,
  createSignerFromKeyPair,
  signBytes,
  verifySignature,
  blockhash,
  pipe,
  createTransactionMessage,
  setTransactionMessageFeePayer,
  setTransactionMessageLifetimeUsingBlockhash,
  appendTransactionMessageInstructions,
  compileTransaction,
  partiallySignTransaction,
  getBase64EncodedWireTransaction,
  getCompiledTransactionMessageDecoder,
  getTransactionEncoder,
} from '@solana/kit';
import {
  TOKEN_PROGRAM_ADDRESS,
  ASSOCIATED_TOKEN_PROGRAM_ADDRESS,
  findAssociatedTokenPda,
  getTransferCheckedInstruction,
  getTransferCheckedInstructionDataDecoder,
} from '@solana-program/token';
import { TOKEN_2022_PROGRAM_ADDRESS } from '@solana-program/token-2022';
import {
  COMPUTE_BUDGET_PROGRAM_ADDRESS,
  getSetComputeUnitLimitInstruction,
  getSetComputeUnitPriceInstruction,
  getSetComputeUnitLimitInstructionDataDecoder,
  getSetComputeUnitPriceInstructionDataDecoder,
} from '@solana-program/compute-budget';

import { x402Client, x402HTTPClient } from '@x402/core/client';
import { decodePaymentSignatureHeader } from '@x402/core/http';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { authorizationTypes } from '@x402/evm';

const HERE = dirname(fileURLToPath(import.meta.url));
const OUT = join(HERE, 'vectors.json');

// ---------------------------------------------------------------------------
// Fixed keys and helpers
// ---------------------------------------------------------------------------

/** Well-known test key (web3.js docs); address 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23. */
const EVM_KEY_A = '0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318';
/** Anvil/Hardhat default account #0; address 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266. */
const EVM_KEY_B = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80';

const USDC_BASE_SEPOLIA = '0x036CbD53842c5426634e7929541eC2318f3dCF7e';
const USDC_BASE = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913';

const TWO_64 = 1n << 64n;
const MAX_UINT256 = (1n << 256n) - 1n;

/** Deterministic byte pattern used for long inputs: byte i = (i * 7 + 3) mod 256. */
function pattern(n) {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

/** 32 deterministic bytes labelled by a string: keccak256(utf8(label)). */
function labelled32(label) {
  return keccak256(stringToHex(label));
}

const b58 = getBase58Decoder(); // bytes  -> base58 string
const b58enc = getBase58Encoder(); // base58 -> bytes
const b64enc = getBase64Encoder(); // base64 -> bytes
const addrEnc = getAddressEncoder();

function assert(cond, msg) {
  if (!cond) throw new Error(`self-check failed: ${msg}`);
}

/** Version of an installed package (read directly: not every package exports ./package.json). */
function pkgVersion(name) {
  return JSON.parse(readFileSync(join(HERE, '..', 'node_modules', name, 'package.json'), 'utf8')).version;
}

// ---------------------------------------------------------------------------
// 1. keccak256
// ---------------------------------------------------------------------------

function genKeccak() {
  const inputs = [
    ['empty', new Uint8Array(0)],
    ['ascii "abc"', toBytes('abc')],
    ['1 byte 0xcc', new Uint8Array([0xcc])],
    ['1 byte 0x00', new Uint8Array([0x00])],
    ['ascii "The quick brown fox jumps over the lazy dog"', toBytes('The quick brown fox jumps over the lazy dog')],
    ['pattern 134 bytes (rate - 2)', pattern(134)],
    ['pattern 135 bytes (rate - 1: single pad byte 0x81)', pattern(135)],
    ['pattern 136 bytes (exactly one rate block)', pattern(136)],
    ['pattern 137 bytes (rate + 1)', pattern(137)],
    ['pattern 200 bytes', pattern(200)],
    ['pattern 272 bytes (two rate blocks)', pattern(272)],
    ['pattern 1000 bytes', pattern(1000)],
  ];
  return inputs.map(([description, bytes]) => ({
    description,
    length: bytes.length,
    input: bytesToHex(bytes),
    hash: keccak256(bytes),
  }));
}

// ---------------------------------------------------------------------------
// 2. EIP-55
// ---------------------------------------------------------------------------

function genEip55() {
  const addrs = [
    // the four examples from the EIP-55 text, lowercased
    '0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed',
    '0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359',
    '0xdbf03b407c01e7cd3cbea99509d93f8dddc8c6fb',
    '0xd1220a0cf47c7b9be7a2e6ba89f429762e7b9adb',
    // USDC on Base Sepolia / Base
    USDC_BASE_SEPOLIA.toLowerCase(),
    USDC_BASE.toLowerCase(),
    // addresses of the fixed keys
    privateKeyToAccount(EVM_KEY_A).address.toLowerCase(),
    privateKeyToAccount(EVM_KEY_B).address.toLowerCase(),
    // degenerate
    '0x0000000000000000000000000000000000000000',
    '0xffffffffffffffffffffffffffffffffffffffff',
  ];
  return addrs.map((lower) => ({ lower, checksummed: getAddress(lower) }));
}

// ---------------------------------------------------------------------------
// 3. EIP-712 TransferWithAuthorization (EIP-3009)
// ---------------------------------------------------------------------------

/** The EIP-3009 type, taken from @x402/evm so it is exactly what x402 clients sign. */
const TWA_TYPES = authorizationTypes; // { TransferWithAuthorization: [...] }

function eip712Cases() {
  const A = privateKeyToAccount(EVM_KEY_A).address;
  const B = privateKeyToAccount(EVM_KEY_B).address;
  return [
    {
      description: 'Base Sepolia USDC, x402-typical 0.01 USDC',
      privateKey: EVM_KEY_A,
      domain: { name: 'USDC', version: '2', chainId: 84532, verifyingContract: USDC_BASE_SEPOLIA },
      message: {
        from: A,
        to: '0x209693Bc6afc0C5328bA36FaF03C514EF312287C',
        value: '10000',
        validAfter: '0',
        validBefore: '1767225660',
        nonce: labelled32('farebox/eip712/nonce/1'),
      },
    },
    {
      description: 'Base mainnet USDC ("USD Coin"), value > 2^64',
      privateKey: EVM_KEY_A,
      domain: { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: USDC_BASE },
      message: {
        from: A,
        to: B,
        value: (TWO_64 + 1n).toString(),
        validAfter: '1700000000',
        validBefore: '1800000000',
        nonce: labelled32('farebox/eip712/nonce/2'),
      },
    },
    {
      description: 'Base Sepolia USDC, second signer, zero value, all-zero nonce',
      privateKey: EVM_KEY_B,
      domain: { name: 'USDC', version: '2', chainId: 84532, verifyingContract: USDC_BASE_SEPOLIA },
      message: {
        from: B,
        to: A,
        value: '0',
        validAfter: '0',
        validBefore: '4294967295',
        nonce: '0x' + '00'.repeat(32),
      },
    },
    {
      description: 'Ethereum mainnet USDC, max uint256 value and validBefore, all-ff nonce',
      privateKey: EVM_KEY_B,
      domain: { name: 'USD Coin', version: '2', chainId: 1, verifyingContract: '0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48' },
      message: {
        from: B,
        to: '0x0000000000000000000000000000000000000001',
        value: MAX_UINT256.toString(),
        validAfter: '1',
        validBefore: MAX_UINT256.toString(),
        nonce: '0x' + 'ff'.repeat(32),
      },
    },
    {
      description: 'Ethereum Sepolia USDC, large chainId',
      privateKey: EVM_KEY_A,
      domain: { name: 'USDC', version: '2', chainId: 11155111, verifyingContract: '0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238' },
      message: {
        from: A,
        to: USDC_BASE,
        value: '123456789012345678901234567890',
        validAfter: '1767225600',
        validBefore: '1767229200',
        nonce: labelled32('farebox/eip712/nonce/5'),
      },
    },
    {
      description: 'local anvil token, non-USDC name and version "1", chainId 31337',
      privateKey: EVM_KEY_B,
      domain: { name: 'Farebox Test Dollar', version: '1', chainId: 31337, verifyingContract: '0x5FbDB2315678afecb367f032d93F642f64180aa3' },
      message: {
        from: B,
        to: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
        value: '1000000',
        validAfter: '0',
        validBefore: '2000000000',
        nonce: labelled32('farebox/eip712/nonce/6'),
      },
    },
  ];
}

function typedMessage(m) {
  return {
    from: m.from,
    to: m.to,
    value: BigInt(m.value),
    validAfter: BigInt(m.validAfter),
    validBefore: BigInt(m.validBefore),
    nonce: m.nonce,
  };
}

async function genEip712() {
  const out = [];
  for (const c of eip712Cases()) {
    const account = privateKeyToAccount(c.privateKey);
    const message = typedMessage(c.message);
    const typed = { domain: c.domain, types: TWA_TYPES, primaryType: 'TransferWithAuthorization', message };
    const domainSeparator = hashDomain({
      domain: c.domain,
      types: { EIP712Domain: getTypesForEIP712Domain({ domain: c.domain }), ...TWA_TYPES },
    });
    const structHash = hashStruct({ data: message, primaryType: 'TransferWithAuthorization', types: TWA_TYPES });
    const digest = hashTypedData(typed);
    const signature = await account.signTypedData(typed);
    const sig = parseSignature(signature);
    // self-checks: the digest is keccak(0x1901 || domainSeparator || structHash) and the signature recovers
    assert(keccak256(`0x1901${domainSeparator.slice(2)}${structHash.slice(2)}`) === digest, 'eip712 digest composition');
    assert((await recoverTypedDataAddress({ ...typed, signature })) === account.address, 'eip712 recover');
    out.push({
      description: c.description,
      domain: c.domain,
      message: c.message,
      privateKey: c.privateKey,
      signer: account.address,
      typeString:
        'TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)',
      typeHash: keccak256(
        stringToHex(
          'TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)',
        ),
      ),
      domainSeparator,
      structHash,
      digest,
      signature,
      r: sig.r,
      s: sig.s,
      v: Number(sig.v),
      yParity: sig.yParity,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// 4. personal_sign (EIP-191 version 0x45)
// ---------------------------------------------------------------------------

async function genPersonalSign() {
  const account = privateKeyToAccount(EVM_KEY_A);
  const long = Array.from({ length: 300 }, (_, i) => String.fromCharCode(0x21 + (i % 94))).join('');
  const messages = [
    ['ascii', 'hello farebox'],
    ['utf-8 with non-ascii (multi-byte and 4-byte code points)', 'héllo wörld — 支付 💸'],
    ['empty', ''],
    ['300 ascii characters (length prefix "300")', long],
  ];
  const out = [];
  for (const [description, message] of messages) {
    const hash = hashMessage(message);
    const signature = await account.signMessage({ message });
    const sig = parseSignature(signature);
    assert((await recoverMessageAddress({ message, signature })) === account.address, 'personal_sign recover');
    const messageHex = stringToHex(message);
    out.push({
      description,
      message,
      messageHex,
      messageByteLength: hexToBytes(messageHex).length,
      privateKey: EVM_KEY_A,
      signer: account.address,
      hash,
      signature,
      r: sig.r,
      s: sig.s,
      v: Number(sig.v),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// 5. RLP
// ---------------------------------------------------------------------------

/** Ethereum integer encoding: minimal big-endian bytes, zero is the empty string. */
function rlpInt(n) {
  n = BigInt(n);
  if (n === 0n) return '0x';
  let h = n.toString(16);
  if (h.length % 2) h = '0' + h;
  return `0x${h}`;
}

function genRlp() {
  const cases = [
    ['empty byte string', '0x'],
    ['single byte 0x00 (< 0x80, encodes as itself)', '0x00'],
    ['single byte 0x7f', '0x7f'],
    ['single byte 0x80 (needs 0x81 prefix)', '0x80'],
    ['string "dog"', stringToHex('dog')],
    ['55-byte string (longest short string, prefix 0xb7)', bytesToHex(pattern(55))],
    ['56-byte string (shortest long string, prefix 0xb8 0x38)', bytesToHex(pattern(56))],
    ['1024-byte string (prefix 0xb9 0x0400)', bytesToHex(pattern(1024))],
    ['empty list', []],
    ['list ["cat", "dog"]', [stringToHex('cat'), stringToHex('dog')]],
    ['nested lists (set-theoretic three) [ [], [[]], [ [], [[]] ] ]', [[], [[]], [[], [[]]]]],
    ['list whose payload is exactly 55 bytes (one 54-byte string)', [bytesToHex(pattern(54))]],
    ['list whose payload is exactly 56 bytes (one 55-byte string)', [bytesToHex(pattern(55))]],
    ['mixed list [0x, 0x00, [0x7f, "dog"], 56-byte string]', ['0x', '0x00', ['0x7f', stringToHex('dog')], bytesToHex(pattern(56))]],
  ];
  const out = cases.map(([description, input]) => ({ description, input, encoded: toRlp(input) }));
  for (const n of [0n, 1n, 127n, 128n, 255n, 256n, 1024n, TWO_64 - 1n, TWO_64]) {
    const input = rlpInt(n);
    out.push({ description: `integer ${n} (Ethereum minimal big-endian)`, integer: n.toString(), input, encoded: toRlp(input) });
  }
  return out;
}

// ---------------------------------------------------------------------------
// 6. EIP-1559 transactions carrying transferWithAuthorization
// ---------------------------------------------------------------------------

const SIG_TWA_VRS = 'transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)';
const SIG_TWA_BYTES = 'transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)';
const SIG_BALANCE_OF = 'balanceOf(address)';
const SIG_AUTH_STATE = 'authorizationState(address,bytes32)';

/** Only the (v,r,s) overload, so encodeFunctionData is unambiguous. */
const TWA_VRS_ABI = [
  {
    type: 'function',
    name: 'transferWithAuthorization',
    stateMutability: 'nonpayable',
    inputs: [
      { name: 'from', type: 'address' },
      { name: 'to', type: 'address' },
      { name: 'value', type: 'uint256' },
      { name: 'validAfter', type: 'uint256' },
      { name: 'validBefore', type: 'uint256' },
      { name: 'nonce', type: 'bytes32' },
      { name: 'v', type: 'uint8' },
      { name: 'r', type: 'bytes32' },
      { name: 's', type: 'bytes32' },
    ],
    outputs: [],
  },
];

const ERC20_READ_ABI = [
  {
    type: 'function',
    name: 'balanceOf',
    stateMutability: 'view',
    inputs: [{ name: 'account', type: 'address' }],
    outputs: [{ name: '', type: 'uint256' }],
  },
  {
    type: 'function',
    name: 'authorizationState',
    stateMutability: 'view',
    inputs: [
      { name: 'authorizer', type: 'address' },
      { name: 'nonce', type: 'bytes32' },
    ],
    outputs: [{ name: '', type: 'bool' }],
  },
];

function genSelectors() {
  return [SIG_TWA_VRS, SIG_TWA_BYTES, SIG_BALANCE_OF, SIG_AUTH_STATE].map((signature) => ({
    signature,
    selector: toFunctionSelector(signature),
  }));
}

async function genEip1559(eip712) {
  // Each transaction relays one of the EIP-712 authorizations above (so the
  // calldata is a real, valid transferWithAuthorization call) and is signed
  // by a relayer key different from the authorization signer where possible.
  const plans = [
    { auth: 0, relayerKey: EVM_KEY_B, chainId: 84532, nonce: 0, maxPriorityFeePerGas: 1000000n, maxFeePerGas: 2000000000n, gas: 100000n },
    { auth: 0, relayerKey: EVM_KEY_B, chainId: 84532, nonce: 1, maxPriorityFeePerGas: 0n, maxFeePerGas: 1n, gas: 21000n },
    { auth: 1, relayerKey: EVM_KEY_B, chainId: 8453, nonce: 300, maxPriorityFeePerGas: 1500000000n, maxFeePerGas: 30000000000n, gas: 120000n },
    { auth: 2, relayerKey: EVM_KEY_A, chainId: 8453, nonce: 70000, maxPriorityFeePerGas: 123456789n, maxFeePerGas: 987654321012n, gas: 16777216n },
  ];
  const out = [];
  for (const p of plans) {
    const a = eip712[p.auth];
    const relayer = privateKeyToAccount(p.relayerKey);
    const args = [
      a.message.from,
      a.message.to,
      BigInt(a.message.value),
      BigInt(a.message.validAfter),
      BigInt(a.message.validBefore),
      a.message.nonce,
      a.v,
      a.r,
      a.s,
    ];
    const data = encodeFunctionData({ abi: TWA_VRS_ABI, functionName: 'transferWithAuthorization', args });
    const tx = {
      type: 'eip1559',
      chainId: p.chainId,
      nonce: p.nonce,
      maxPriorityFeePerGas: p.maxPriorityFeePerGas,
      maxFeePerGas: p.maxFeePerGas,
      gas: p.gas,
      to: a.domain.verifyingContract,
      value: 0n,
      data,
      accessList: [],
    };
    const unsigned = serializeTransaction(tx);
    const signingHash = keccak256(unsigned);
    const signedRaw = await relayer.signTransaction(tx);
    const txHash = keccak256(signedRaw);
    const parsed = parseTransaction(signedRaw);
    assert((await recoverTransactionAddress({ serializedTransaction: signedRaw })) === relayer.address, 'eip1559 recover');
    assert(data.startsWith(toFunctionSelector(SIG_TWA_VRS)), 'eip1559 selector');
    out.push({
      description: `relay of eip712_transfer_with_authorization[${p.auth}] on chain ${p.chainId}, nonce ${p.nonce}`,
      privateKey: p.relayerKey,
      from: relayer.address,
      type: '0x02',
      chainId: p.chainId,
      nonce: p.nonce,
      maxPriorityFeePerGas: p.maxPriorityFeePerGas.toString(),
      maxFeePerGas: p.maxFeePerGas.toString(),
      gas: p.gas.toString(),
      to: a.domain.verifyingContract,
      value: '0',
      accessList: [],
      calldataArgs: {
        from: a.message.from,
        to: a.message.to,
        value: a.message.value,
        validAfter: a.message.validAfter,
        validBefore: a.message.validBefore,
        nonce: a.message.nonce,
        v: a.v,
        r: a.r,
        s: a.s,
      },
      data,
      unsigned,
      signingHash,
      signedRaw,
      txHash,
      yParity: parsed.yParity,
      r: parsed.r,
      s: parsed.s,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// 7. ABI: balanceOf / authorizationState calldata, return-value decoding
// ---------------------------------------------------------------------------

function genAbi() {
  const A = privateKeyToAccount(EVM_KEY_A).address;
  const B = privateKeyToAccount(EVM_KEY_B).address;
  const calls = [
    { functionName: 'balanceOf', args: [A] },
    { functionName: 'balanceOf', args: ['0x0000000000000000000000000000000000000001'] },
    { functionName: 'authorizationState', args: [A, labelled32('farebox/eip712/nonce/1')] },
    { functionName: 'authorizationState', args: [B, '0x' + 'ff'.repeat(32)] },
  ].map(({ functionName, args }) => ({
    functionName,
    args,
    calldata: encodeFunctionData({ abi: ERC20_READ_ABI, functionName, args }),
  }));

  const uintReturns = [0n, 1n, 10000n, 1234567890123n, TWO_64 + 5n, MAX_UINT256].map((v) => {
    const data = encodeAbiParameters([{ type: 'uint256' }], [v]);
    const decoded = decodeFunctionResult({ abi: ERC20_READ_ABI, functionName: 'balanceOf', data });
    assert(decoded === v, 'uint256 decode round trip');
    return { functionName: 'balanceOf', returnData: data, type: 'uint256', value: decoded.toString() };
  });
  const boolReturns = [false, true].map((v) => {
    const data = encodeAbiParameters([{ type: 'bool' }], [v]);
    const decoded = decodeFunctionResult({ abi: ERC20_READ_ABI, functionName: 'authorizationState', data });
    return { functionName: 'authorizationState', returnData: data, type: 'bool', value: decoded };
  });
  return { calls, returns: [...uintReturns, ...boolReturns] };
}

// ---------------------------------------------------------------------------
// Solana fixed keys
// ---------------------------------------------------------------------------

const SOL_SEED_OWNER = hexToBytes(labelled32('farebox/solana/owner'));
const SOL_SEED_FEE_PAYER = hexToBytes(labelled32('farebox/solana/fee-payer'));
const SOL_SEED_RECIPIENT = hexToBytes(labelled32('farebox/solana/recipient'));

const USDC_MINT_MAINNET = address('EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v');
const USDC_MINT_DEVNET = address('4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU');
const PYUSD_MINT_T22 = address('2b1kV6DkPAnxd5ixfnxCpjxmKwqjjaYmCZfHsFu24GXo'); // Token-2022 mint

async function solKey(seed) {
  const keyPair = await createKeyPairFromPrivateKeyBytes(seed, false);
  const addr = await getAddressFromPublicKey(keyPair.publicKey);
  return { seed, keyPair, address: addr, signer: await createSignerFromKeyPair(keyPair) };
}

// ---------------------------------------------------------------------------
// 8. Solana associated token accounts and generic PDAs
// ---------------------------------------------------------------------------

async function genSolanaAta() {
  const owner = (await solKey(SOL_SEED_OWNER)).address;
  const recipient = (await solKey(SOL_SEED_RECIPIENT)).address;
  const cases = [
    [owner, USDC_MINT_DEVNET, TOKEN_PROGRAM_ADDRESS],
    [recipient, USDC_MINT_DEVNET, TOKEN_PROGRAM_ADDRESS],
    [owner, USDC_MINT_MAINNET, TOKEN_PROGRAM_ADDRESS],
    [address('11111111111111111111111111111111'), USDC_MINT_MAINNET, TOKEN_PROGRAM_ADDRESS],
    [owner, PYUSD_MINT_T22, TOKEN_2022_PROGRAM_ADDRESS],
    [recipient, PYUSD_MINT_T22, TOKEN_2022_PROGRAM_ADDRESS],
    // same owner+mint under both token programs gives different ATAs
    [owner, USDC_MINT_DEVNET, TOKEN_2022_PROGRAM_ADDRESS],
  ];
  const ata = [];
  for (const [o, mint, tokenProgram] of cases) {
    const [ataAddr, bump] = await findAssociatedTokenPda({ owner: o, mint, tokenProgram });
    const [generic, genericBump] = await getProgramDerivedAddress({
      programAddress: ASSOCIATED_TOKEN_PROGRAM_ADDRESS,
      seeds: [addrEnc.encode(o), addrEnc.encode(tokenProgram), addrEnc.encode(mint)],
    });
    assert(generic === ataAddr && genericBump === bump, 'ATA helper vs generic PDA');
    ata.push({
      owner: o,
      mint,
      tokenProgram,
      associatedTokenProgram: ASSOCIATED_TOKEN_PROGRAM_ADDRESS,
      ata: ataAddr,
      ataHex: bytesToHex(addrEnc.encode(ataAddr)),
      bump,
    });
  }

  const pdaCases = [
    { programAddress: TOKEN_PROGRAM_ADDRESS, seeds: [] },
    { programAddress: ASSOCIATED_TOKEN_PROGRAM_ADDRESS, seeds: ['hello'] },
    { programAddress: COMPUTE_BUDGET_PROGRAM_ADDRESS, seeds: ['vault', addrEnc.encode(owner)] },
    { programAddress: address('11111111111111111111111111111111'), seeds: [new Uint8Array([1, 2, 3]), new Uint8Array(32)] },
    { programAddress: TOKEN_2022_PROGRAM_ADDRESS, seeds: ['farebox', new Uint8Array([0xff]), 'x'.repeat(32)] },
  ];
  const pda = [];
  for (const c of pdaCases) {
    const [p, bump] = await getProgramDerivedAddress(c);
    pda.push({
      programAddress: c.programAddress,
      seeds: c.seeds.map((s) => (typeof s === 'string' ? stringToHex(s) : bytesToHex(s))),
      seedsUtf8: c.seeds.map((s) => (typeof s === 'string' ? s : null)),
      pda: p,
      pdaHex: bytesToHex(addrEnc.encode(p)),
      bump,
    });
  }
  return { ata, pda };
}

// ---------------------------------------------------------------------------
// 9. base58
// ---------------------------------------------------------------------------

async function genBase58() {
  const owner = await solKey(SOL_SEED_OWNER);
  const ownerPub = addrEnc.encode(owner.address);
  const sig64 = await signBytes(owner.keyPair.privateKey, toBytes('farebox base58'));
  const inputs = [
    ['empty', new Uint8Array(0)],
    ['single zero byte', new Uint8Array([0])],
    ['leading zeros then 0x01', new Uint8Array([0, 0, 0, 1])],
    ['0x00 0x00 0xff', new Uint8Array([0, 0, 0xff])],
    ['32 zero bytes (System Program id)', new Uint8Array(32)],
    ['32 bytes 0xff', new Uint8Array(32).fill(0xff)],
    ['32-byte public key', ownerPub],
    ['32-byte public key with leading zero bytes', Uint8Array.from([0, 0, ...ownerPub.slice(2)])],
    ['64-byte ed25519 signature', sig64],
    ['64-byte signature with leading zero byte', Uint8Array.from([0, ...sig64.slice(1)])],
    ['"Hello World!" (ascii)', toBytes('Hello World!')],
  ];
  return inputs.map(([description, bytes]) => {
    const encoded = b58.decode(bytes);
    assert(bytesToHex(b58enc.encode(encoded)) === bytesToHex(bytes), 'base58 round trip');
    return { description, hex: bytesToHex(bytes), base58: encoded };
  });
}

// ---------------------------------------------------------------------------
// 10. ed25519
// ---------------------------------------------------------------------------

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

async function genEd25519() {
  const cases = [
    // RFC 8032 section 7.1 TEST 1, 2, 3 (cross-check against published values)
    ['RFC 8032 TEST 1', '0x9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', '0x'],
    ['RFC 8032 TEST 2', '0x4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb', '0x72'],
    ['RFC 8032 TEST 3', '0xc5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7', '0xaf82'],
    ['farebox owner key, 32-byte message', bytesToHex(SOL_SEED_OWNER), labelled32('farebox/ed25519/msg')],
    ['farebox fee-payer key, 300-byte message', bytesToHex(SOL_SEED_FEE_PAYER), bytesToHex(pattern(300))],
  ];
  // published RFC 8032 values [publicKey, signature], checked before writing
  const rfcExpected = {
    'RFC 8032 TEST 1': [
      'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    ],
    'RFC 8032 TEST 2': [
      '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
      '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
    ],
    'RFC 8032 TEST 3': [
      'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025',
      '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
    ],
  };
  const out = [];
  for (const [description, seedHex, msgHex] of cases) {
    const seed = hexToBytes(seedHex);
    const msg = hexToBytes(msgHex);
    const keyPair = await createKeyPairFromPrivateKeyBytes(seed, false);
    const publicKey = await getAddressFromPublicKey(keyPair.publicKey);
    const signature = await signBytes(keyPair.privateKey, msg);
    assert(await verifySignature(keyPair.publicKey, signature, msg), 'ed25519 verify (kit)');
    // cross-check with node:crypto (PKCS8 DER prefix + seed)
    const nodeKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, Buffer.from(seed)]), format: 'der', type: 'pkcs8' });
    const nodeSig = nodeSign(null, Buffer.from(msg), nodeKey);
    assert(Buffer.from(signature).equals(nodeSig), 'ed25519 kit vs node:crypto');
    const nodePub = createPublicKey(nodeKey).export({ format: 'der', type: 'spki' }).subarray(-32);
    assert(bytesToHex(nodePub) === bytesToHex(addrEnc.encode(publicKey)), 'ed25519 public key kit vs node');
    assert(nodeVerify(null, Buffer.from(msg), createPublicKey(nodeKey), Buffer.from(signature)), 'ed25519 node verify');
    if (rfcExpected[description]) {
      const [pk, sg] = rfcExpected[description];
      assert(bytesToHex(addrEnc.encode(publicKey)).slice(2) === pk, `${description} public key`);
      assert(bytesToHex(signature).slice(2) === sg, `${description} signature`);
    }
    out.push({
      description,
      seed: seedHex,
      publicKey,
      publicKeyHex: bytesToHex(addrEnc.encode(publicKey)),
      message: msgHex,
      signature: b58.decode(signature),
      signatureHex: bytesToHex(signature),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// 11. Solana transactions (legacy and v0), partially signed by the token owner
// ---------------------------------------------------------------------------

const PROGRAM_NAMES = {
  [COMPUTE_BUDGET_PROGRAM_ADDRESS]: 'ComputeBudget',
  [TOKEN_PROGRAM_ADDRESS]: 'Token',
  [TOKEN_2022_PROGRAM_ADDRESS]: 'Token-2022',
};

function describeInstruction(programAddress, data) {
  const name = PROGRAM_NAMES[programAddress] ?? 'unknown';
  if (programAddress === COMPUTE_BUDGET_PROGRAM_ADDRESS) {
    if (data[0] === 2) {
      const d = getSetComputeUnitLimitInstructionDataDecoder().decode(data);
      return { program: name, instruction: 'SetComputeUnitLimit', discriminator: d.discriminator, units: d.units };
    }
    if (data[0] === 3) {
      const d = getSetComputeUnitPriceInstructionDataDecoder().decode(data);
      return { program: name, instruction: 'SetComputeUnitPrice', discriminator: d.discriminator, microLamports: d.microLamports.toString() };
    }
  }
  if ((programAddress === TOKEN_PROGRAM_ADDRESS || programAddress === TOKEN_2022_PROGRAM_ADDRESS) && data[0] === 12) {
    const d = getTransferCheckedInstructionDataDecoder().decode(data);
    return { program: name, instruction: 'TransferChecked', discriminator: d.discriminator, amount: d.amount.toString(), decimals: d.decimals };
  }
  return { program: name, instruction: 'unknown' };
}

async function genSolanaTx() {
  const owner = await solKey(SOL_SEED_OWNER);
  const feePayer = await solKey(SOL_SEED_FEE_PAYER);
  const recipient = await solKey(SOL_SEED_RECIPIENT);

  const plans = [
    {
      description: 'legacy message, classic Token program, devnet USDC',
      version: 'legacy',
      blockhashLabel: 'farebox/solana/blockhash/1',
      lastValidBlockHeight: 1000n,
      mint: USDC_MINT_DEVNET,
      tokenProgram: TOKEN_PROGRAM_ADDRESS,
      amount: 10000n,
      decimals: 6,
      units: 20000,
      microLamports: 1n,
    },
    {
      description: 'version 0 message (no lookup tables), classic Token program, devnet USDC',
      version: 0,
      blockhashLabel: 'farebox/solana/blockhash/2',
      lastValidBlockHeight: 2000n,
      mint: USDC_MINT_DEVNET,
      tokenProgram: TOKEN_PROGRAM_ADDRESS,
      amount: 1234567890123n,
      decimals: 6,
      units: 200000,
      microLamports: 5000n,
    },
    {
      description: 'version 0 message, Token-2022 program (PYUSD mint), TransferChecked built by @solana-program/token with programAddress override',
      version: 0,
      blockhashLabel: 'farebox/solana/blockhash/3',
      lastValidBlockHeight: 3000n,
      mint: PYUSD_MINT_T22,
      tokenProgram: TOKEN_2022_PROGRAM_ADDRESS,
      amount: 1n,
      decimals: 6,
      units: 1400000,
      microLamports: 18446744073709551615n,
    },
  ];

  const out = [];
  for (const p of plans) {
    const recentBlockhash = blockhash(b58.decode(hexToBytes(labelled32(p.blockhashLabel))));
    const [source] = await findAssociatedTokenPda({ owner: owner.address, mint: p.mint, tokenProgram: p.tokenProgram });
    const [destination] = await findAssociatedTokenPda({ owner: recipient.address, mint: p.mint, tokenProgram: p.tokenProgram });
    const instructions = [
      getSetComputeUnitLimitInstruction({ units: p.units }),
      getSetComputeUnitPriceInstruction({ microLamports: p.microLamports }),
      getTransferCheckedInstruction(
        { source, mint: p.mint, destination, authority: owner.signer, amount: p.amount, decimals: p.decimals },
        { programAddress: p.tokenProgram },
      ),
    ];
    const message = pipe(
      createTransactionMessage({ version: p.version }),
      (m) => setTransactionMessageFeePayer(feePayer.address, m),
      (m) => setTransactionMessageLifetimeUsingBlockhash({ blockhash: recentBlockhash, lastValidBlockHeight: p.lastValidBlockHeight }, m),
      (m) => appendTransactionMessageInstructions(instructions, m),
    );
    const compiled = compileTransaction(message);
    const signed = await partiallySignTransaction([owner.keyPair], compiled);
    const wireBase64 = getBase64EncodedWireTransaction(signed);
    const wireBytes = getTransactionEncoder().encode(signed);
    assert(bytesToHex(b64enc.encode(wireBase64)) === bytesToHex(wireBytes), 'wire base64 vs encoder');

    const decoded = getCompiledTransactionMessageDecoder().decode(signed.messageBytes);
    const accountKeys = decoded.staticAccounts;
    const signers = Object.entries(signed.signatures).map(([addr, sig]) => ({
      address: addr,
      role: addr === feePayer.address ? 'fee payer' : addr === owner.address ? 'token owner (transfer authority)' : 'other',
      present: sig !== null,
      signature: sig === null ? null : b58.decode(sig),
      signatureHex: sig === null ? '0x' + '00'.repeat(64) : bytesToHex(sig),
    }));
    // signature order in signed.signatures must follow account key order
    assert(signers.every((s, i) => s.address === accountKeys[i]), 'signature order == first account keys');
    const ownerSig = signed.signatures[owner.address];
    assert(await verifySignature(owner.keyPair.publicKey, ownerSig, signed.messageBytes), 'owner signature verifies');

    out.push({
      description: p.description,
      version: p.version,
      feePayer: feePayer.address,
      feePayerSeed: bytesToHex(feePayer.seed),
      owner: owner.address,
      ownerSeed: bytesToHex(owner.seed),
      recipient: recipient.address,
      mint: p.mint,
      tokenProgram: p.tokenProgram,
      sourceAta: source,
      destinationAta: destination,
      recentBlockhash,
      recentBlockhashHex: bytesToHex(b58enc.encode(recentBlockhash)),
      wireBase64,
      wireHex: bytesToHex(wireBytes),
      messageHex: bytesToHex(signed.messageBytes),
      signers,
      header: {
        numRequiredSignatures: decoded.header.numSignerAccounts,
        numReadonlySignedAccounts: decoded.header.numReadonlySignerAccounts,
        numReadonlyUnsignedAccounts: decoded.header.numReadonlyNonSignerAccounts,
      },
      accountKeys,
      addressTableLookups: (decoded.addressTableLookups ?? []).map((l) => ({
        lookupTableAddress: l.lookupTableAddress,
        writableIndexes: l.writableIndexes,
        readonlyIndexes: l.readonlyIndexes,
      })),
      instructions: decoded.instructions.map((ix) => ({
        programIdIndex: ix.programAddressIndex,
        programId: accountKeys[ix.programAddressIndex],
        accounts: ix.accountIndices ?? [],
        data: bytesToHex(ix.data ?? new Uint8Array(0)),
        decoded: describeInstruction(accountKeys[ix.programAddressIndex], ix.data ?? new Uint8Array(0)),
      })),
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// 12. x402 v2 PAYMENT-SIGNATURE headers (exact scheme, EIP-3009, eip155:84532)
// ---------------------------------------------------------------------------

/**
 * Runs fn() with Date.now fixed to nowMs and crypto.getRandomValues replaced
 * by a deterministic stream keccak256(label || counter), then restores both.
 * Returns { result, randomBytesServed } so the caller can assert the library
 * really consumed the stub.
 */
async function withFixedClockAndRandom(nowMs, label, fn) {
  const cryptoObj = globalThis.crypto;
  const realNow = Date.now;
  const hadOwn = Object.prototype.hasOwnProperty.call(cryptoObj, 'getRandomValues');
  const realGRV = cryptoObj.getRandomValues;
  const served = [];
  let counter = 0;
  Date.now = () => nowMs;
  cryptoObj.getRandomValues = (arr) => {
    const bytes = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
    let off = 0;
    while (off < bytes.length) {
      const block = hexToBytes(keccak256(stringToHex(`${label}/${counter++}`)));
      const n = Math.min(block.length, bytes.length - off);
      bytes.set(block.subarray(0, n), off);
      off += n;
    }
    served.push(bytesToHex(bytes));
    return arr;
  };
  try {
    return { result: await fn(), randomBytesServed: served };
  } finally {
    Date.now = realNow;
    if (hadOwn) cryptoObj.getRandomValues = realGRV;
    else delete cryptoObj.getRandomValues;
  }
}

async function genX402() {
  const payTo = '0x209693Bc6afc0C5328bA36FaF03C514EF312287C';
  const requirements = {
    scheme: 'exact',
    network: 'eip155:84532',
    asset: USDC_BASE_SEPOLIA,
    amount: '10000',
    payTo,
    maxTimeoutSeconds: 60,
    extra: { name: 'USDC', version: '2' },
  };
  const cases = [
    { description: 'key A, clock 2026-01-01T00:00:00Z', privateKey: EVM_KEY_A, nowMs: 1767225600000, label: 'farebox/x402/random/1' },
    { description: 'key B, clock 2026-06-01T12:34:56.789Z', privateKey: EVM_KEY_B, nowMs: 1780317296789, label: 'farebox/x402/random/2' },
  ];
  const out = [];
  for (const c of cases) {
    const account = privateKeyToAccount(c.privateKey);
    const client = registerExactEvmScheme(new x402Client(), { signer: account });
    const http = new x402HTTPClient(client);
    const paymentRequired = {
      x402Version: 2,
      resource: { url: 'https://api.example.com/premium', description: 'farebox test resource', mimeType: 'application/json' },
      accepts: [requirements],
    };
    const { result, randomBytesServed } = await withFixedClockAndRandom(c.nowMs, c.label, async () => {
      const payload = await http.createPaymentPayload(paymentRequired);
      const headers = http.encodePaymentSignatureHeader(payload);
      return { payload, headers };
    });
    const header = result.headers['PAYMENT-SIGNATURE'];
    assert(typeof header === 'string', 'x402 v2 header name PAYMENT-SIGNATURE');
    const decoded = decodePaymentSignatureHeader(header);
    const auth = decoded.payload.authorization;
    // the EIP-3009 nonce must be exactly the first 32 stubbed random bytes
    assert(randomBytesServed.length === 1 && auth.nonce === randomBytesServed[0], 'x402 nonce came from the stub');
    assert(auth.validBefore === String(Math.floor(c.nowMs / 1000) + requirements.maxTimeoutSeconds), 'x402 validBefore from stubbed clock');
    // independent re-check of the signature with viem
    const domain = { name: 'USDC', version: '2', chainId: 84532, verifyingContract: getAddress(requirements.asset) };
    const typed = { domain, types: TWA_TYPES, primaryType: 'TransferWithAuthorization', message: typedMessage(auth) };
    assert((await recoverTypedDataAddress({ ...typed, signature: decoded.payload.signature })) === account.address, 'x402 signature recovers');
    out.push({
      description: c.description,
      privateKey: c.privateKey,
      signer: account.address,
      fixedNowMs: c.nowMs,
      stubbedRandomLabel: c.label,
      paymentRequired,
      headerName: 'PAYMENT-SIGNATURE',
      header,
      decoded,
      decodedJson: Buffer.from(header, 'base64').toString('utf8'),
      eip712: {
        domainSeparator: hashDomain({ domain, types: { EIP712Domain: getTypesForEIP712Domain({ domain }), ...TWA_TYPES } }),
        structHash: hashStruct({ data: typedMessage(auth), primaryType: 'TransferWithAuthorization', types: TWA_TYPES }),
        digest: hashTypedData(typed),
      },
    });
  }
  return out;
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

function jsonReplacer(_key, value) {
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Uint8Array) return bytesToHex(value);
  return value;
}

async function main() {
  const eip712 = await genEip712();
  const vectors = {
    meta: {
      generator: 'tests/vectors/generate.mjs',
      regenerate: 'node tests/vectors/generate.mjs',
      libraries: Object.fromEntries(
        [
          'viem',
          '@solana/kit',
          '@solana-program/token',
          '@solana-program/token-2022',
          '@solana-program/compute-budget',
          '@x402/core',
          '@x402/evm',
        ].map((n) => [n, pkgVersion(n)]),
      ),
      conventions: 'bytes are lowercase 0x-hex unless stated; Solana addresses/signatures base58; wire txs base64; big integers as decimal strings',
    },
    keccak256: genKeccak(),
    eip55: genEip55(),
    eip712_transfer_with_authorization: eip712,
    personal_sign: await genPersonalSign(),
    rlp: genRlp(),
    selectors: genSelectors(),
    eip1559_tx: await genEip1559(eip712),
    abi: genAbi(),
    solana_ata: await genSolanaAta(),
    base58: await genBase58(),
    ed25519: await genEd25519(),
    solana_tx: await genSolanaTx(),
    x402: await genX402(),
  };
  writeFileSync(OUT, JSON.stringify(vectors, jsonReplacer, 2) + '\n');
  const counts = Object.entries(vectors)
    .filter(([k]) => k !== 'meta')
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.length : Object.entries(v).map(([kk, vv]) => `${kk}:${vv.length}`).join('/')}`);
  console.log(`wrote ${OUT}\n  ${counts.join('\n  ')}`);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
}
