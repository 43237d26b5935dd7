// http.test.mjs - the edge's transports and health: curl over HTTP/1.1, HTTP/2
// over TLS (ALPN) and cleartext HTTP/2 with prior knowledge, nghttp, and
// /readyz following the ledger as it stops and comes back.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { freePort, startService, tmpDir, waitUntil, run, stopAll } from "../lib/harness.mjs";
import { startPostgres } from "../lib/pg.mjs";

let pg, db, ledger, verifier, edge, dir, httpPort, httpsPort, ledgerBind, verifierBind;
const SECRET = "0123456789abcdef0123456789abcdef-http-test";

function curl(args) {
  const r = spawnSync("curl", ["-sS", "--max-time", "10", ...args], { encoding: "utf8" });
  return r;
}

function get(url, extra = []) {
  const r = curl(["-i", ...extra, url]);
  assert.equal(r.status, 0, r.stderr);
  const [head, ...rest] = r.stdout.split(/\r?\n\r?\n/);
  const lines = head.split(/\r?\n/);
  const status = Number(lines[0].split(" ")[1]);
  const headers = Object.fromEntries(lines.slice(1).map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
  }));
  return { status, headers, body: rest.join("\n\n"), version: lines[0].split(" ")[0] };
}

before(async () => {
  pg = await startPostgres();
  db = pg.createDatabase("http");
  dir = tmpDir("edge");
  run("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "ignore" });
  const lp = await freePort(), vp = await freePort();
  ledgerBind = `tcp://127.0.0.1:${lp}`;
  ledger = await startService("ledger", { FAREBOX_RPC_BIND: ledgerBind, FAREBOX_DATABASE_URL: db.url, FAREBOX_KEY_HMAC_SECRET: SECRET });
  verifierBind = `tcp://127.0.0.1:${vp}`;
  verifier = await startService("verifier", { FAREBOX_RPC_BIND: verifierBind, FAREBOX_LEDGER_ENDPOINT: ledgerBind });
  httpPort = await freePort();
  httpsPort = await freePort();
  edge = await startService("edge", {
    FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
    FAREBOX_HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
    FAREBOX_TLS_CERT_FILE: path.join(dir, "cert.pem"),
    FAREBOX_TLS_KEY_FILE: path.join(dir, "key.pem"),
    FAREBOX_LEDGER_ENDPOINT: ledgerBind,
    FAREBOX_VERIFIER_ENDPOINT: `tcp://127.0.0.1:${vp}`,
    FAREBOX_READY_TIMEOUT_MS: "500",
    FAREBOX_EDGE_THREADS: "2",
  });
});

after(async () => {
  const failed = await stopAll([edge, verifier, ledger]);
  if (pg) await pg.stop();
  assert.deepEqual(failed, [], "every process exits 0");
});

test("curl over HTTP/1.1 reaches /healthz, with a request id", () => {
  const r = get(`http://127.0.0.1:${httpPort}/healthz`, ["--http1.1"]);
  assert.equal(r.version, "HTTP/1.1");
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).status, "ok");
  assert.match(r.headers["x-request-id"], /^req_[0-9a-f]+$/);
  const mine = get(`http://127.0.0.1:${httpPort}/healthz`, ["--http1.1", "-H", "X-Request-Id: my-trace.42"]);
  assert.equal(mine.headers["x-request-id"], "my-trace.42");
  const bad = get(`http://127.0.0.1:${httpPort}/healthz`, ["--http1.1", "-H", "X-Request-Id: has spaces in it"]);
  assert.notEqual(bad.headers["x-request-id"], "has spaces in it");
});

test("curl --http2 over TLS negotiates h2 by ALPN", () => {
  const r = get(`https://127.0.0.1:${httpsPort}/healthz`, ["--http2", "-k"]);
  assert.equal(r.version, "HTTP/2");
  assert.equal(r.status, 200);
  const h1 = get(`https://127.0.0.1:${httpsPort}/healthz`, ["--http1.1", "-k"]);
  assert.equal(h1.version, "HTTP/1.1");
  assert.equal(h1.status, 200);
});

test("cleartext HTTP/2 with prior knowledge (h2c)", () => {
  const r = get(`http://127.0.0.1:${httpPort}/healthz`, ["--http2-prior-knowledge"]);
  assert.equal(r.version, "HTTP/2");
  assert.equal(r.status, 200);
});

test("nghttp reaches /healthz over TLS and cleartext", () => {
  for (const url of [`https://127.0.0.1:${httpsPort}/healthz`, `http://127.0.0.1:${httpPort}/healthz`]) {
    const r = spawnSync("nghttp", ["-v", "-t", "10", url], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /:status: 200/);
    assert.match(r.stdout, /"status":"ok"/);
  }
});

test("unknown routes, wrong methods and unbuilt routes answer clear JSON errors", () => {
  const nf = get(`http://127.0.0.1:${httpPort}/nope`);
  assert.equal(nf.status, 404);
  assert.equal(JSON.parse(nf.body).error.code, "not_found");
  assert.equal(nf.headers["content-type"], "application/json");
  const wm = get(`http://127.0.0.1:${httpPort}/healthz`, ["-X", "POST"]);
  assert.equal(wm.status, 405);
  assert.equal(wm.headers.allow, "GET");
  const bad = get(`http://127.0.0.1:${httpPort}/v1/chat/completions`, ["-X", "POST", "-d", "{}"]);
  assert.equal(bad.status, 400);
  assert.equal(JSON.parse(bad.body).error.code, "invalid_request");
  const api = get(`http://127.0.0.1:${httpPort}/openapi.json`);
  assert.equal(api.status, 200);
  const doc = JSON.parse(api.body);
  assert.equal(doc.openapi, "3.1.0");
  assert.ok(doc.paths["/v1/chat/completions"].post && doc.paths["/v1/topup"].post);
  const off = get(`http://127.0.0.1:${httpPort}/v1/topup`, ["-X", "POST", "-d", "{}"]);
  assert.equal(off.status, 503, "no treasury configured: topups are off");
  assert.equal(JSON.parse(off.body).error.code, "unavailable");
});

// Error messages quote the caller (a path, a method, a model's name), cut to fit: bytes that are
// not UTF-8, or a character cut in half, made jansson refuse the message and the edge abort.
test("errors quoting bytes that are not UTF-8 (a path, a method, a model, a field) are answered, the edge up", async () => {
  const base = `http://127.0.0.1:${httpPort}`;
  const cases = [
    [["--path-as-is", `${base}/%ff`], 404],
    [["--http2-prior-knowledge", `${base}/%C0`], 404],
    [[`${base}/${"%C3%A9".repeat(400)}`], 404],
    [["-X", "POST", "-H", "content-type: application/json", "-d", JSON.stringify({ model: "a" + "é".repeat(100), messages: [{ role: "user", content: "x" }] }), `${base}/v1/chat/completions`], 404],
    [["-X", "POST", "-H", "content-type: application/json", "-d", JSON.stringify({ model: "gpt-4o-mini", prompt: "x", ["a" + "é".repeat(60)]: 1 }), `${base}/api/v1/prompt`], 400],
  ];
  // a method with a byte that is not UTF-8 (through sh: node's arguments are UTF-8)
  cases.push([["-X", "$(printf 'G\\351T')", `${base}/v1/models`], 405]);
  for (const [args, status] of cases) {
    const quoted = args.map((a) => a.startsWith("$(") ? `"${a}"` : `'${a.replaceAll("'", "'\\''")}'`).join(" ");
    const r = spawnSync("sh", ["-c", `curl -sS -w '\\n%{http_code}' ${quoted}`], { encoding: "latin1" });
    const lines = r.stdout.trimEnd().split("\n");
    assert.equal(Number(lines.at(-1)), status, `${args.join(" ").slice(0, 120)}: ${r.stdout.slice(0, 300)} ${r.stderr}`);
    let body;
    assert.doesNotThrow(() => { body = JSON.parse(Buffer.from(lines.slice(0, -1).join("\n"), "latin1").toString("utf8")); },
      `${quoted.slice(0, 120)}: ${JSON.stringify(r.stdout.slice(0, 300))}`);
    assert.ok(body.error?.message ?? body.error, JSON.stringify(body));
    assert.equal(get(`${base}/healthz`).status, 200, "the edge is up");
  }
});

test("/readyz is ready with the ledger and verifier, unready without the ledger, ready again when it is back", async () => {
  const url = `http://127.0.0.1:${httpPort}/readyz`;
  await waitUntil(() => get(url).status === 200, { what: "ready", timeoutMs: 10000 });
  const ok = JSON.parse(get(url).body);
  assert.equal(ok.ready, true);
  assert.equal(ok.checks.ledger.ok, true);
  assert.equal(ok.checks.verifier.ok, true);

  const { code } = await ledger.stop();
  assert.equal(code, 0);
  await waitUntil(() => get(url).status === 503, { what: "unready", timeoutMs: 10000 });
  const down = JSON.parse(get(url).body);
  assert.equal(down.ready, false);
  assert.equal(down.checks.ledger.ok, false);
  assert.equal(down.checks.verifier.ok, true);

  ledger = await startService("ledger", { FAREBOX_RPC_BIND: ledgerBind, FAREBOX_DATABASE_URL: db.url, FAREBOX_KEY_HMAC_SECRET: SECRET });
  await waitUntil(() => get(url).status === 200, { what: "ready again", timeoutMs: 10000 });
  // over HTTP/2 as well
  const h2 = get(url, ["--http2-prior-knowledge"]);
  assert.equal(h2.status, 200);
});

// Connections are capped: per address (here 3) and in all, a connection over the cap closed as it
// comes and counted; one closing makes room.
test("FAREBOX_HTTP2=false: HTTP/1.1 only — h2 not offered by ALPN, no h2c upgrade, the prior-knowledge preface refused", async () => {
  const port = await freePort(), tlsPort = await freePort();
  const h1 = await startService("edge", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${port}`, FAREBOX_HTTPS_LISTEN: `127.0.0.1:${tlsPort}`,
    FAREBOX_TLS_CERT_FILE: path.join(dir, "cert.pem"), FAREBOX_TLS_KEY_FILE: path.join(dir, "key.pem"),
    FAREBOX_LEDGER_ENDPOINT: ledgerBind, FAREBOX_VERIFIER_ENDPOINT: verifierBind, FAREBOX_HTTP2: "false" });
  try {
    const tls = get(`https://127.0.0.1:${tlsPort}/healthz`, ["--http2", "-k"]);
    assert.deepEqual([tls.version, tls.status], ["HTTP/1.1", 200]);
    const upgrade = get(`http://127.0.0.1:${port}/healthz`, ["--http2"]);
    assert.deepEqual([upgrade.version, upgrade.status], ["HTTP/1.1", 200]);
    assert.equal(upgrade.headers.upgrade, undefined);
    const prior = curl(["-i", "--http2-prior-knowledge", `http://127.0.0.1:${port}/healthz`]);
    assert.notEqual(prior.status, 0, "the HTTP/2 preface is not answered");
    assert.doesNotMatch(prior.stdout, /HTTP\/2/);
    assert.equal(get(`http://127.0.0.1:${port}/healthz`, ["--http1.1"]).status, 200, "the edge is up");
  } finally {
    assert.equal((await h1.stop()).code, 0);
  }
});

test("connections over FAREBOX_HTTP_MAX_CONNECTIONS_PER_IP are closed as they come, and counted", async () => {
  const port = await freePort();
  const capped = await startService("edge", { FAREBOX_RPC_BIND: `tcp://127.0.0.1:${await freePort()}`,
    FAREBOX_HTTP_LISTEN: `127.0.0.1:${port}`, FAREBOX_LEDGER_ENDPOINT: ledgerBind, FAREBOX_VERIFIER_ENDPOINT: verifierBind,
    FAREBOX_HTTP_MAX_CONNECTIONS_PER_IP: "3", FAREBOX_EDGE_THREADS: "2" });
  const open = () => new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    let data = "";
    sock.on("data", (d) => { data += d; });
    sock.on("error", () => {});
    sock.on("close", () => { sock.closedWith = data; });
    sock.ask = (pathName) => new Promise((res) => {
      const before = data.length;
      sock.write(`GET ${pathName} HTTP/1.1\r\nHost: x\r\n\r\n`);
      const check = setInterval(() => {
        if (data.length > before || sock.closedWith !== undefined) { clearInterval(check); res(data.slice(before)); }
      }, 20);
    });
    sock.on("connect", () => resolve(sock));
  });
  try {
    const held = [];
    for (let i = 0; i < 3; i++) {
      const s = await open();
      assert.match(await s.ask("/healthz"), /^HTTP\/1.1 200/);
      held.push(s);
    }
    const over = await open();
    await waitUntil(() => over.closedWith !== undefined, { what: "the fourth connection closed", timeoutMs: 5000 });
    assert.equal(over.closedWith, "", "nothing answered");
    held.pop().destroy();
    let metrics = "";
    await waitUntil(async () => {
      const s = await open();
      metrics = await s.ask("/metrics");
      s.destroy();
      return /^HTTP\/1.1 200/.test(metrics);
    }, { what: "room for a new connection", timeoutMs: 5000 });
    assert.match(metrics, /^farebox_edge_connections_refused_total [1-9]/m);
    assert.match(metrics, /^farebox_edge_connections_open [1-9]/m);
    for (const s of held) s.destroy();
  } finally {
    assert.equal((await capped.stop()).code, 0);
  }
});
