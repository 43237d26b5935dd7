// mem.mjs - the edge's memory per open connection and per open stream: its
// resident size (VmRSS) before and after opening CONNS idle keep-alive
// connections (each made one request), then STREAMS concurrent streaming
// paid calls that the mock model answers slowly. Prints JSON lines for
// bench/lib/report.mjs.   node bench/edge/mem.mjs URL KEY EDGE_PID CONNS STREAMS
import fs from "node:fs";
import http from "node:http";

const [url, key, pid, conns, streams] = process.argv.slice(2);
const rss = () => Number(fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/)[1]) * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const { hostname, port } = new URL(url);

async function settle() {
  await sleep(500);
  return rss();
}

// idle keep-alive connections: one request each, then left open
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(conns) });
const base = await settle();
await Promise.all(Array.from({ length: Number(conns) }, () => new Promise((resolve, reject) => {
  http.get({ hostname, port, path: "/healthz", agent }, (res) => { res.resume(); res.on("end", resolve); }).on("error", reject);
})));
const withConns = await settle();
const perConn = (withConns - base) / Number(conns);
process.stdout.write(`${JSON.stringify({ case: "memory_per_connection", round: 1, r: { bytes: perConn, calls_per_s: 0 } })}\n`);
agent.destroy();
await sleep(500);

// open streams: paid calls the mock streams at 2 tokens a second
const body = JSON.stringify({ model: "gpt-4o-mini", stream: true, max_tokens: 1000,
  messages: [{ role: "user", content: "[mock:tokens=1000][mock:rate=2]" }] });
const before = await settle();
const sAgent = new http.Agent({ keepAlive: false, maxSockets: Number(streams) });
const reqs = [];
await Promise.all(Array.from({ length: Number(streams) }, () => new Promise((resolve, reject) => {
  const req = http.request({ hostname, port, path: "/v1/chat/completions", method: "POST", agent: sAgent,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" } }, (res) => {
    if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
    res.once("data", () => resolve());
    res.on("error", () => {});
  });
  req.on("error", () => {});
  req.end(body);
  reqs.push(req);
})));
const withStreams = await settle();
const perStream = (withStreams - before) / Number(streams);
process.stdout.write(`${JSON.stringify({ case: "memory_per_stream", round: 1, r: { bytes: perStream, calls_per_s: 0 } })}\n`);
for (const r of reqs) r.destroy();
await sleep(1000);
process.exit(0);
