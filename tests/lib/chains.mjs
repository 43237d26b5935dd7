// chains.mjs - the dev chains (tests/devchain/devchain.mjs) for one test file:
// anvil with the EIP-3009 test token (unless evm: false), and surfpool with a mint (solana: true).
import fs from "node:fs";
import path from "node:path";
import { Proc, SOURCE, freePort, tmpDir } from "./harness.mjs";

/** Starts the chains; resolves with the devchain JSON plus stop(). */
export async function startChains({ solana = false, evm = true } = {}) {
  const dir = tmpDir("chains");
  const out = path.join(dir, "devchain.json");
  const args = [path.join(SOURCE, "tests/devchain/devchain.mjs"), "--out", out, "--state-dir", dir];
  if (evm) args.push("--anvil-port", String(await freePort()));
  else args.push("--no-anvil");
  if (!solana) args.push("--no-surfpool");
  const p = new Proc(process.execPath, args, { name: "devchain" });
  await p.waitFor((e) => e.line.startsWith("READY "), { timeoutMs: 120000, what: "the dev chains" });
  const info = JSON.parse(fs.readFileSync(out, "utf8"));
  info.proc = p;
  info.stop = async () => {
    await p.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return info;
}

/** A JSON-RPC call to an EVM node. */
export async function ethRpc(url, method, params = []) {
  const r = await fetch(url, { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }) });
  const j = await r.json();
  if (j.error) throw new Error(`${method}: ${j.error.message}`);
  return j.result;
}
