// node_client.test.mjs - a client written from proto/README.md alone (Node's
// zeromq + @msgpack/msgpack) talks to a farebox service, and the exact bytes of
// the document's worked example are what goes over the wire.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Request } from "zeromq";
import { encode, decode } from "@msgpack/msgpack";
import { startService } from "../lib/harness.mjs";
import { RpcClient } from "../lib/rpc.mjs";

const hex = (b) => Buffer.from(b).toString("hex").replace(/(..)/g, "$1 ").trim();

test("the worked example's request bytes are what the document says", () => {
  const req = encode({ v: 1, id: 7, method: "health", deadline_ms: 1000, body: {} });
  assert.equal(req.length, 43);
  assert.equal(hex(req),
    "85 a1 76 01 a2 69 64 07 a6 6d 65 74 68 6f 64 a6 68 65 61 6c 74 68 " +
    "ab 64 65 61 64 6c 69 6e 65 5f 6d 73 cd 03 e8 a4 62 6f 64 79 80");
});

test("a DEALER client calls health, echo and gets error codes", async () => {
  const p = await startService("test-echo", { FAREBOX_REPLICA: "ledger-1" });
  const c = new RpcClient(p.endpoint);
  try {
    // the exact frame of the worked example, and the reply's documented prefix
    const raw = await c.raw([Buffer.from(encode({ v: 1, id: 7, method: "health", deadline_ms: 1000, body: {} }))]);
    assert.equal(raw.id, 7);
    assert.equal(raw.status, "ok");
    assert.equal(raw.replica, "ledger-1");
    assert.equal(raw.body.service, "test-echo");
    assert.equal(typeof raw.body.uptime_ms, "number");
    const replyBytes = encode(raw);
    assert.ok(hex(replyBytes).startsWith("85 a1 76 01 a2 69 64 07 a6 73 74 61 74 75 73 a2 6f 6b a7 72 65 70 6c 69 63 61 " +
      "a8 6c 65 64 67 65 72 2d 31 a4 62 6f 64 79"), hex(replyBytes));

    const echo = await c.call("echo", { amount_micro: 1500000, nested: { list: [1, "two", null, true] } },
      { idem: "k-1", trace: "req-abc" });
    assert.deepEqual(echo.body, { amount_micro: 1500000, nested: { list: [1, "two", null, true] } });

    const err = await c.call("nope");
    assert.equal(err.status, "error");
    assert.equal(err.code, "unknown_method");
    assert.match(err.message, /nope/);
    assert.deepEqual(err.body, {});
    assert.equal(Object.keys(err).length, 7);

    // ids may be strings too
    const s = await c.sendRequest({ v: 1, id: "call-é", method: "health", deadline_ms: 500 });
    assert.equal(s.id, "call-é");
  } finally {
    c.close();
    await p.stop();
  }
});

test("a REQ client (with the empty delimiter frame) works too", async () => {
  const p = await startService("test-echo");
  const sock = new Request({ linger: 0, receiveTimeout: 3000 });
  sock.connect(p.endpoint);
  try {
    await sock.send(Buffer.from(encode({ v: 1, id: 1, method: "echo", deadline_ms: 1000, body: { x: 1 } })));
    const [reply] = await sock.receive();
    const r = decode(reply);
    assert.equal(r.status, "ok");
    assert.deepEqual(r.body, { x: 1 });
  } finally {
    sock.close();
    await p.stop();
  }
});
