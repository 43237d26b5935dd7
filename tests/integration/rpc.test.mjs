// rpc.test.mjs - the internal RPC under scaling and failure: spread over
// replicas, a replica killed or hung mid-flight, callers that start first,
// hostile frames, and CurveZMQ authorization.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { encode } from "@msgpack/msgpack";
import { freePort, rpcTool, rpcToolAsync, sleep, startService, tmpDir, run, bin } from "../lib/harness.mjs";
import { RpcClient } from "../lib/rpc.mjs";

async function replicas(n, extraEnv = {}) {
  const base = await freePort();
  const range = `tcp://127.0.0.1:${base}-${base + 9}`;
  const procs = [];
  for (let i = 0; i < n; i++) {
    procs.push(await startService("test-echo", { FAREBOX_RPC_BIND: range, FAREBOX_REPLICA: `echo-${i}`, ...extraEnv }));
  }
  return { range, procs, base };
}

async function stopAll(procs) {
  for (const p of procs) await p.stop();
}

test("three replicas under load share the calls, none above 50%", async () => {
  const { range, procs } = await replicas(3);
  try {
    const r = rpcTool(["bench", "--endpoint", range, "--concurrency", "32", "--seconds", "3"]);
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.ok(r.calls > 1000, `too few calls: ${r.calls}`);
    assert.equal(r.replicas.length, 3, JSON.stringify(r.replicas));
    const total = r.replicas.reduce((a, x) => a + x.answered, 0);
    for (const rep of r.replicas) {
      const share = rep.answered / total;
      assert.ok(share <= 0.5, `${rep.endpoint} took ${(share * 100).toFixed(1)}% of calls`);
      assert.ok(share >= 0.15, `${rep.endpoint} took only ${(share * 100).toFixed(1)}% of calls`);
    }
  } finally {
    await stopAll(procs);
  }
});

test("SIGTERM: a replica answers the calls it holds before it exits", async () => {
  // one replica, so nobody else could answer: the 1.5 s call made before the SIGTERM must be
  // answered by the stopping replica, which exits 0 afterwards
  const { range, procs } = await replicas(1);
  try {
    const call = rpcToolAsync(["call", "--endpoint", range, "--deadline", "8000", "--attempt", "8000", "sleep",
      '{"ms":1500}']);
    await sleep(500);
    const stopped = procs[0].stop();
    const r = await call;
    assert.equal(r.exit, 0, JSON.stringify(r));
    assert.equal(r.status, "ok", JSON.stringify(r));
    assert.equal(r.replica, "echo-0");
    assert.equal((await stopped).code, 0);
    assert.ok(procs[0].lines.some((e) => e.json?.msg === "stop requested"));
    assert.ok(!procs[0].lines.some((e) => e.json?.msg === "stop grace period over"));
  } finally {
    await stopAll(procs);
  }
});

test("killing a replica mid-flight loses no call", async () => {
  const { range, procs } = await replicas(3);
  try {
    // every call takes 100 ms on its replica, so ~10 are in flight on each when it dies
    const load = rpcToolAsync(["bench", "--endpoint", range, "--method", "sleep", "--body", '{"ms":100}',
      "--concurrency", "30", "--seconds", "4", "--deadline", "10000"]);
    await sleep(1500);
    procs[1].signal("SIGKILL");
    const r = await load;
    assert.equal(r.errors, 0, `calls failed: ${JSON.stringify(r)}`);
    assert.ok(r.calls > 300, `too few calls: ${r.calls}`);
    const killed = r.replicas.find((x) => x.endpoint === procs[1].endpoint);
    const others = r.replicas.filter((x) => x.endpoint !== procs[1].endpoint);
    assert.ok(killed && killed.answered > 0, "the killed replica served before it died");
    assert.ok(others.every((x) => x.answered > killed.answered), JSON.stringify(r.replicas));
  } finally {
    await stopAll(procs);
  }
});

// A call made for one attempt (attempt = deadline: the edge's settles, verifies and proof checks, which must
// not run twice) stays with a replica that is stopping: the replica keeps answering health while it drains, so
// the caller waits for it, and new calls meanwhile go to another replica. Until stop 35 a stopping replica
// stopped reading its socket: after three silent heartbeats the caller sent the call to another replica too,
// and it ran twice.
test("SIGTERM with another replica up: a one-attempt call is answered once, by the stopping replica; new calls go to the other", async () => {
  const base = await freePort();
  const range = `tcp://127.0.0.1:${base}-${base + 9}`;
  const first = await startService("test-echo", { FAREBOX_RPC_BIND: range, FAREBOX_REPLICA: "echo-0",
    FAREBOX_LOG_LEVEL: "debug" });
  const procs = [first];
  try {
    const call = rpcToolAsync(["call", "--endpoint", range, "--deadline", "15000", "--attempt", "15000", "sleep",
      '{"ms":5000}']);
    await sleep(500); // on echo-0, the only replica
    const second = await startService("test-echo", { FAREBOX_RPC_BIND: range, FAREBOX_REPLICA: "echo-1",
      FAREBOX_LOG_LEVEL: "debug" });
    procs.push(second);
    await sleep(500);
    const stopped = first.stop();
    await sleep(500);
    // a new call while echo-0 drains: echo-1's
    const during = await rpcToolAsync(["call", "--endpoint", range, "--deadline", "5000", "echo", '{"x":1}']);
    assert.equal(during.status, "ok", JSON.stringify(during));
    assert.equal(during.replica, "echo-1");
    const r = await call;
    assert.equal(r.status, "ok", JSON.stringify(r));
    assert.equal(r.replica, "echo-0");
    assert.equal((await stopped).code, 0);
    await sleep(5500); // a copy sent to echo-1 when echo-0 went silent would have ended by now
    const ranSleep = (p) => p.lines.some((e) => e.json?.msg === "rpc call answered" && /sleep/.test(e.line));
    assert.ok(ranSleep(first), "echo-0 ran it");
    assert.ok(!ranSleep(second), "echo-1 did not run it too");
  } finally {
    await stopAll(procs);
  }
});

test("a hung replica's calls are retried on another", async () => {
  const { range, procs } = await replicas(2);
  try {
    procs[0].signal("SIGSTOP");
    const r = rpcTool(["bench", "--endpoint", range, "--concurrency", "8", "--seconds", "3", "--attempt", "300",
      "--deadline", "5000"]);
    assert.equal(r.errors, 0, JSON.stringify(r));
    assert.ok(r.calls > 100, JSON.stringify(r));
    // a call on the hung replica must not be lost either: one that never answers
    const hang = await rpcToolAsync(["call", "--endpoint", range, "--attempt", "300", "--deadline", "5000",
      "echo", '{"after":"hang"}']);
    assert.equal(hang.status, "ok", JSON.stringify(hang));
    assert.equal(hang.replica, "echo-1");
  } finally {
    procs[0].signal("SIGCONT");
    await stopAll(procs);
  }
});

test("a call made before any replica exists succeeds once one appears", async () => {
  const base = await freePort();
  const range = `tcp://127.0.0.1:${base}-${base + 9}`;
  const call = rpcToolAsync(["call", "--endpoint", range, "--deadline", "20000", "echo", '{"late":true}']);
  await sleep(1500);
  const p = await startService("test-echo", { FAREBOX_RPC_BIND: range, FAREBOX_REPLICA: "late" });
  try {
    const r = await call;
    assert.equal(r.status, "ok", JSON.stringify(r));
    assert.deepEqual(r.body, { late: true });
    assert.equal(r.replica, "late");
    // and after a restart on the same port, callers reconnect by themselves
    await p.stop();
    const again = await startService("test-echo", { FAREBOX_RPC_BIND: range, FAREBOX_REPLICA: "late-2" });
    try {
      const client = new RpcClient(again.endpoint);
      const h = await client.call("health");
      client.close();
      assert.equal(h.replica, "late-2");
    } finally {
      await again.stop();
    }
  } finally {
    await p.stop();
  }
});

test("bad frames get clear errors or a logged drop, and the replica keeps serving", async () => {
  const p = await startService("test-echo", { FAREBOX_RPC_MAX_MESSAGE: "65536" });
  const c = new RpcClient(p.endpoint);
  try {
    const garbage = await c.raw([Buffer.from([0xc1, 0xff, 0x00, 0x13])]);
    assert.equal(garbage.status, "error");
    assert.equal(garbage.code, "bad_request");
    assert.equal(garbage.id, null);

    const notMap = await c.raw([Buffer.from(encode([1, 2, 3]))]);
    assert.equal(notMap.code, "bad_request");

    const truncated = await c.raw([Buffer.from(encode({ v: 1, id: 5, method: "echo", deadline_ms: 100 })).subarray(0, 12)]);
    assert.equal(truncated.code, "bad_request");

    const empty = await c.raw([Buffer.alloc(0)]);
    assert.equal(empty.code, "bad_request");

    const v2 = await c.sendRequest({ v: 2, id: 900, method: "health", deadline_ms: 1000 });
    assert.equal(v2.code, "unsupported_version");
    assert.equal(v2.id, 900);
    assert.match(v2.message, /version 1/);

    const noDeadline = await c.sendRequest({ v: 1, id: 901, method: "health" });
    assert.equal(noDeadline.code, "bad_request");
    assert.match(noDeadline.message, /deadline_ms/);

    const badMethod = await c.sendRequest({ v: 1, id: 902, method: "Drop Tables;", deadline_ms: 100 });
    assert.equal(badMethod.code, "bad_request");

    const unknown = await c.call("no.such.method");
    assert.equal(unknown.code, "unknown_method");

    const big = await c.call("echo", { data: "x".repeat(80000) });
    assert.equal(big.code, "too_large");

    // a 1.5 MB message is far over the limit: libzmq drops that connection
    const huge = new RpcClient(p.endpoint);
    const dropped = await huge.raw([Buffer.from(encode({ v: 1, id: 1, method: "echo", deadline_ms: 100, body: { d: "y".repeat(1500000) } }))], 1500);
    assert.equal(dropped, null);
    huge.close();

    // too many routing frames: dropped and logged, nothing sent back
    const many = await c.raw([Buffer.from("a"), Buffer.from("b"), Buffer.from("c"), Buffer.from("d"), Buffer.from("e"),
      Buffer.from(encode({ v: 1, id: 77, method: "health", deadline_ms: 100 }))], 1000);
    assert.equal(many, null);
    await p.waitFor((e) => e.json?.msg === "rpc message dropped" && e.json.reason === "too many frames");

    const health = await c.call("health");
    assert.equal(health.status, "ok");
    assert.equal(p.exitCode, undefined, "the replica is still running");
  } finally {
    c.close();
    const { code } = await p.stop();
    assert.equal(code, 0);
  }
});

test("CurveZMQ: authorized clients get through, others are refused", async () => {
  const dir = tmpDir("curve");
  const clients = path.join(dir, "clients");
  fs.mkdirSync(clients);
  const serverPub = run(bin("farebox-rpc"), ["keygen", dir, "server"]).trim();
  const aPub = run(bin("farebox-rpc"), ["keygen", clients, "a"]).trim();
  run(bin("farebox-rpc"), ["keygen", dir, "b"]); // not in the clients directory
  fs.renameSync(path.join(clients, "a.key"), path.join(dir, "a.key"));
  const p = await startService("test-echo", {
    FAREBOX_CURVE_SECRET_KEY_FILE: path.join(dir, "server.key"),
    FAREBOX_CURVE_CLIENTS_DIR: clients,
  });
  try {
    const ok = rpcTool(["call", "--endpoint", p.endpoint, "--server-key", serverPub, "--deadline", "3000", "echo", '{"a":1}'],
      { env: { FAREBOX_CURVE_SECRET_KEY_FILE: path.join(dir, "a.key") } });
    assert.equal(ok.status, "ok", JSON.stringify(ok));

    const refused = rpcTool(["call", "--endpoint", p.endpoint, "--server-key", serverPub, "--deadline", "1500", "echo", "{}"],
      { env: { FAREBOX_CURVE_SECRET_KEY_FILE: path.join(dir, "b.key") } });
    assert.equal(refused.status, "error");
    assert.equal(refused.code, "unavailable", JSON.stringify(refused));

    const plain = rpcTool(["call", "--endpoint", p.endpoint, "--deadline", "1500", "echo", "{}"]);
    assert.equal(plain.code, "unavailable", JSON.stringify(plain));

    // the Node client with the authorized key, too
    const aSecret = fs.readFileSync(path.join(dir, "a.key"), "utf8").trim();
    const node = new RpcClient(p.endpoint, { curve: { serverKey: serverPub, publicKey: aPub, secretKey: aSecret } });
    const h = await node.call("health");
    node.close();
    assert.equal(h.status, "ok");
  } finally {
    await p.stop();
  }
});

test("a service refuses a bad configuration with one line naming the variable", () => {
  const cases = [
    [{ FAREBOX_RPC_BIND: "udp://nowhere" }, /FAREBOX_RPC_BIND/],
    [{ FAREBOX_RPC_HEARTBEAT_MS: "5" }, /FAREBOX_RPC_HEARTBEAT_MS=5 is out of range/],
    [{ FAREBOX_LOG_LEVEL: "loud" }, /FAREBOX_LOG_LEVEL/],
    [{ FAREBOX_CURVE_SECRET_KEY: "short" }, /FAREBOX_CURVE_SECRET_KEY/],
  ];
  for (const [env, re] of cases) {
    let out = "";
    try {
      run(bin("farebox-test-echo"), [], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
      assert.fail("started with a bad configuration");
    } catch (e) {
      assert.equal(e.status, 2);
      out = String(e.stderr);
    }
    assert.match(out, re);
    assert.equal(out.trim().split("\n").length, 1, out);
    assert.doesNotMatch(out, /short/, "secret values are not echoed");
  }
});
