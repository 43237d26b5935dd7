// chains.mjs - the dev chains (tests/devchain/devchain.mjs) for one test file:
// anvil with the EIP-3009 test token (unless evm: false), and surfpool with a mint (solana: true).
import fs from "node:fs";
import http from "node:http";
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

/**
 * A JSON-RPC proxy in front of target: handle(call, answer, res) answers a call itself (answer(result), or
 * anything on res) and returns true, or returns false to pass it on. Resolves to {url, close}.
 */
export function rpcProxy(target, handle) {
  const server = http.createServer(async (req, res) => {
    try {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const body = Buffer.concat(chunks).toString();
      const call = JSON.parse(body);
      const answer = (result) => res.writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ jsonrpc: "2.0", id: call.id, result }));
      if (handle(call, answer, res)) return;
      const up = await fetch(target, { method: "POST", headers: { "content-type": "application/json" }, body });
      res.writeHead(up.status, { "content-type": "application/json" }).end(await up.text());
    } catch {
      res.destroy(); // a call cut off (the proxy closed under it, the caller gone): nothing to answer
    }
  });
  return new Promise((r) => server.listen(0, "127.0.0.1", () => r({ url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((c) => { server.closeAllConnections(); server.close(c); }) })));
}
