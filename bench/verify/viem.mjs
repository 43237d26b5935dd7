// viem.mjs - the EVM payloads of bench/verify/payloads.mjs checked by viem in
// Node, on this thread, for bench/run verify: verifyTypedData (case evm_viem)
// and, for reference, recoverTypedDataAddress (evm_viem_recover). Each call
// starts from the payload's JSON fields, as farebox's check does. The first
// WARM payloads must verify before timing (viem takes milliseconds a call:
// all of them would take longer than the measurement); errors while timing
// are counted.
//   node bench/verify/viem.mjs PAYLOADS SECONDS [CASE...]
// Prints one JSON line per case: {"case":..., "r":{calls, errors, seconds,
// calls_per_s, us_per_call}}.
import fs from "node:fs";
import { createRequire } from "node:module";

// The Node packages live in tests/ (see payloads.mjs).
const need = createRequire(new URL("../../tests/package.json", import.meta.url));
const { verifyTypedData, recoverTypedDataAddress, isAddressEqual } = need("viem");

const [file, secondsArg, ...wanted] = process.argv.slice(2);
const seconds = Number(secondsArg);
if (!file || !(seconds > 0)) {
  console.error("usage: node bench/verify/viem.mjs PAYLOADS SECONDS [evm_viem] [evm_viem_recover]");
  process.exit(2);
}
const WARM = 50;
const { evm } = JSON.parse(fs.readFileSync(file, "utf8"));
const types = {
  TransferWithAuthorization: [
    { name: "from", type: "address" }, { name: "to", type: "address" }, { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" }, { name: "validBefore", type: "uint256" }, { name: "nonce", type: "bytes32" },
  ],
};

/** The typed data and signature of one x402 v2 EIP-3009 payload. */
function typedData(p) {
  const a = p.payload.authorization, req = p.accepted;
  return {
    domain: { name: req.extra.name, version: req.extra.version, chainId: Number(req.network.split(":")[1]),
      verifyingContract: req.asset },
    types, primaryType: "TransferWithAuthorization",
    message: { from: a.from, to: a.to, value: BigInt(a.value), validAfter: BigInt(a.validAfter),
      validBefore: BigInt(a.validBefore), nonce: a.nonce },
    signature: p.payload.signature,
  };
}

const cases = {
  evm_viem: async (c) => verifyTypedData({ address: c.payload.payload.authorization.from, ...typedData(c.payload) }),
  evm_viem_recover: async (c) =>
    isAddressEqual(await recoverTypedDataAddress(typedData(c.payload)), c.payload.payload.authorization.from),
};

for (const name of wanted.length ? wanted : Object.keys(cases)) {
  const call = cases[name];
  if (!call) {
    console.error(`viem.mjs: unknown case "${name}"`);
    process.exit(2);
  }
  for (const [i, c] of evm.slice(0, WARM).entries()) {
    if (!(await call(c))) {
      console.error(`viem.mjs: ${name} fails on payload ${i}: nothing to measure`);
      process.exit(1);
    }
  }
  let calls = 0, errors = 0, i = 0;
  const t0 = process.hrtime.bigint(), end = t0 + BigInt(Math.round(seconds * 1e9));
  let t = t0;
  while (t < end) {
    if (!(await call(evm[i]))) errors++;
    if (++i === evm.length) i = 0;
    calls++;
    t = process.hrtime.bigint();
  }
  const s = Number(t - t0) / 1e9;
  console.log(JSON.stringify({ case: name, r: { calls, errors, seconds: Number(s.toFixed(3)),
    calls_per_s: Number((calls / s).toFixed(1)), us_per_call: Number((s * 1e6 / calls).toFixed(3)) } }));
}
