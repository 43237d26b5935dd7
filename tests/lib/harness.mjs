// harness.mjs - processes, ports, temp dirs and the farebox binaries for the
// integration tests. Everything a test starts is stopped when the test process
// exits, even on failure.
import assert from "node:assert/strict";
import { spawn, spawnSync, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { RpcClient } from "./rpc.mjs";

export const SOURCE = process.env.FAREBOX_SOURCE ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.FAREBOX_BIN ?? path.join(SOURCE, "build/bin");
const TMP_ROOT = process.env.FAREBOX_TEST_TMP ?? os.tmpdir();

const live = new Set();
function killAll() {
  for (const p of live) {
    try {
      process.kill(p.child.pid, "SIGKILL");
    } catch {}
  }
}
process.on("exit", killAll);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => { killAll(); process.exit(1); });

export function bin(name) {
  return path.join(BIN, name);
}

/** A new temporary directory. public: under the system temp dir, so that other
 * users (the postgres server user, when tests run as root) can reach it. */
export function tmpDir(prefix = "fbt", { public: pub = false } = {}) {
  const root = pub ? os.tmpdir() : TMP_ROOT;
  fs.mkdirSync(root, { recursive: true });
  return fs.mkdtempSync(path.join(root, `farebox-${prefix}-`));
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function portIsFree(port, host = "127.0.0.1") {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

/* Ports handed to services are taken below the kernel's ephemeral range: a
 * port the kernel picked for listen(0) is one it also gives to outgoing
 * connections, so under a parallel test's burst of connections it could be
 * taken again before the service binds it. */
const EPHEMERAL_LOW = (() => {
  try {
    return Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
})();
const PORT_LOW = 10000, PORT_HIGH = Math.max(PORT_LOW + 1000, Math.min(EPHEMERAL_LOW, 65536));

/** A port nobody listens on right now, outside the ephemeral range. */
export async function freePort(host = "127.0.0.1") {
  for (let attempt = 0; attempt < 500; attempt++) {
    const port = PORT_LOW + Math.floor(Math.random() * (PORT_HIGH - PORT_LOW));
    if (await portIsFree(port, host)) return port;
  }
  throw new Error("no free port found");
}

/** The first port of n consecutive ports that are all free now. */
export async function freePortBlock(n) {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = PORT_LOW + Math.floor(Math.random() * (PORT_HIGH - PORT_LOW - n));
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await portIsFree(base + i);
    if (ok) return base;
  }
  throw new Error(`no block of ${n} free ports found`);
}

/** Polls fn until it returns a truthy value or timeoutMs passes. */
export async function waitUntil(fn, { timeoutMs = 15000, intervalMs = 50, what = "condition" } = {}) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

/** A child process whose stdout lines (JSON logs) are kept and can be awaited. */
export class Proc {
  constructor(cmd, args = [], { env = {}, name = path.basename(cmd), cwd, stdio } = {}) {
    this.name = name;
    this.lines = [];
    this.waiters = [];
    this.child = spawn(cmd, args, {
      env: { ...process.env, ...env },
      cwd,
      stdio: stdio ?? ["ignore", "pipe", "pipe"],
      detached: false,
    });
    live.add(this);
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        live.delete(this);
        this.exitCode = code;
        this.exitSignal = signal;
        for (const w of this.waiters) w.reject(new Error(`${this.name} exited (${code ?? signal}) before: ${w.what}\n${this.tail()}`));
        this.waiters = [];
        resolve({ code, signal });
      });
    });
    const onLine = (line) => {
      let json = null;
      try {
        json = JSON.parse(line);
      } catch {}
      const entry = { line, json };
      this.lines.push(entry);
      if (process.env.FAREBOX_TEST_VERBOSE) process.stderr.write(`[${this.name}] ${line}\n`);
      this.waiters = this.waiters.filter((w) => {
        if (w.pred(entry)) {
          w.resolve(entry);
          return false;
        }
        return true;
      });
    };
    if (this.child.stdout) readline.createInterface({ input: this.child.stdout }).on("line", onLine);
    if (this.child.stderr) readline.createInterface({ input: this.child.stderr }).on("line", onLine);
  }

  /** Resolves with the first line (past or future) for which pred(entry) is true. */
  waitFor(pred, { timeoutMs = 20000, what = "a log line" } = {}) {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    if (this.exitCode !== undefined || this.exitSignal) return Promise.reject(new Error(`${this.name} has exited`));
    return new Promise((resolve, reject) => {
      const w = { pred, resolve, reject, what };
      this.waiters.push(w);
      setTimeout(() => {
        if (this.waiters.includes(w)) {
          this.waiters = this.waiters.filter((x) => x !== w);
          reject(new Error(`${this.name}: timed out waiting for ${what}\n${this.tail()}`));
        }
      }, timeoutMs).unref();
    });
  }

  waitForMsg(msg, opts = {}) {
    return this.waitFor((e) => e.json?.msg === msg, { what: `"${msg}"`, ...opts });
  }

  tail(n = 30) {
    return this.lines.slice(-n).map((e) => e.line).join("\n");
  }

  signal(sig) {
    try {
      process.kill(this.child.pid, sig);
    } catch {}
  }

  /** SIGTERM, then the exit status (SIGKILL after graceMs). */
  async stop(graceMs = 10000) {
    if (this.exitCode !== undefined || this.exitSignal) return { code: this.exitCode, signal: this.exitSignal };
    this.signal("SIGTERM");
    const t = setTimeout(() => this.signal("SIGKILL"), graceMs);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

/** Stops every process in order, each whatever happened to the ones before (so that a failing after()
 * leaves nothing running to keep the test's process alive); resolves with a message for each one that
 * did not exit 0 — assert on it once everything else is stopped too. */
export async function stopAll(procs) {
  const failed = [];
  for (const p of procs) {
    if (!p) continue;
    try {
      const { code, signal } = await p.stop();
      if (code !== 0) failed.push(`${p.name} exited ${code}${signal ? ` (${signal})` : ""}\n${p.tail()}`);
    } catch (e) {
      failed.push(`${p.name}: ${e.message}`);
    }
  }
  return failed;
}

/** Starts farebox-<name> with env; resolves once it logged "started", with its RPC endpoint. */
export async function startService(name, env = {}, { binary } = {}) {
  const p = new Proc(bin(binary ?? `farebox-${name}`), [], { env: { FAREBOX_LOG_LEVEL: "info", ...env }, name });
  const serving = await p.waitForMsg("rpc serving", { timeoutMs: 30000 });
  p.endpoint = serving.json.endpoint;
  await p.waitForMsg("started", { timeoutMs: 30000 });
  return p;
}

/**
 * A ledger of its own (on the database db) and one verifier on it, with verifierEnv (its chains), for a
 * test whose settlements the file's other verifiers must not follow. fn gets { l, v } (RPC clients of
 * the ledger and the verifier) and { ledger, verifier } (the processes). The ledger's audit must be
 * clean after fn, and both must stop with 0.
 */
export async function withOwnLedger(db, secret, name, verifierEnv, fn) {
  const lp = await freePort();
  const ledger = await startService("ledger", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${lp}`,
    FAREBOX_DATABASE_URL: db.url, FAREBOX_KEY_HMAC_SECRET: secret, FAREBOX_REPLICA: `ledger-${name}` });
  const l = new RpcClient(ledger.endpoint);
  try {
    const verifier = await startService("verifier", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
      FAREBOX_REPLICA: `verifier-${name}`, FAREBOX_LEDGER_ENDPOINT: `tcp://127.0.0.1:${lp}`, ...verifierEnv });
    const v = new RpcClient(verifier.endpoint);
    try {
      await fn({ l, v, ledger, verifier });
      const audit = await l.call("ledger.audit", {});
      assert.equal(audit.body.ok, true, JSON.stringify(audit.body.checks.filter((c) => !c.ok)));
    } finally {
      v.close();
      assert.equal((await verifier.stop()).code, 0);
    }
  } finally {
    l.close();
    assert.equal((await ledger.stop()).code, 0);
  }
}

/** Runs farebox-rpc and parses its one JSON line. */
export function rpcTool(args, { env = {}, allowFail = true } = {}) {
  const r = spawnSync(bin("farebox-rpc"), args, { env: { ...process.env, ...env }, encoding: "utf8", timeout: 120000 });
  if (r.status !== 0 && r.status !== 1 && !allowFail) throw new Error(`farebox-rpc ${args.join(" ")}: ${r.stderr}`);
  const line = r.stdout.trim().split("\n").pop();
  try {
    return { exit: r.status, ...JSON.parse(line) };
  } catch {
    return { exit: r.status, stdout: r.stdout, stderr: r.stderr };
  }
}

/** Runs farebox-rpc in the background; resolves with its parsed output. */
export function rpcToolAsync(args, { env = {} } = {}) {
  return new Promise((resolve) => {
    const child = spawn(bin("farebox-rpc"), args, { env: { ...process.env, ...env } });
    let out = "", err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("exit", (code) => {
      const line = out.trim().split("\n").pop();
      try {
        resolve({ exit: code, ...JSON.parse(line) });
      } catch {
        resolve({ exit: code, stdout: out, stderr: err });
      }
    });
  });
}

export function run(cmd, args, opts = {}) {
  return execFileSync(cmd, args, { encoding: "utf8", ...opts });
}
