// report.mjs - turns benchmark rounds (one JSON line per measurement) into a
// table on stdout and bench/out/NAME.json: medians per case and ratios.
//   node bench/lib/report.mjs NAME ROUNDS_FILE OUT_FILE
import fs from "node:fs";
import os from "node:os";

const [name, roundsFile, outFile] = process.argv.slice(2);
const rows = fs.readFileSync(roundsFile, "utf8").trim().split("\n").map((l) => JSON.parse(l));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const cases = {};
for (const { case: c, r } of rows) (cases[c] ??= []).push(r);
const summary = {};
for (const [c, rs] of Object.entries(cases)) {
  summary[c] = {
    rounds: rs.length,
    calls_per_s: median(rs.map((r) => r.calls_per_s ?? r.pairs_per_s)),
    p50_us: median(rs.map((r) => r.p50_us)),
    p99_us: median(rs.map((r) => r.p99_us)),
    errors: rs.reduce((a, r) => a + (r.errors ?? 0), 0),
    spread: rs[rs.length - 1].replicas?.map((x) => x.answered),
    ...(rs[0].us_per_call != null && { us_per_call: median(rs.map((r) => r.us_per_call)) }),
    ...(rs[0].bytes != null && { bytes: median(rs.map((r) => r.bytes)) }),
    ...(rs[0].wal_flush_us_mean != null && {
      wal_flushes_per_call: median(rs.map((r) => r.wal_flushes_per_call)),
      wal_flush_us_mean: median(rs.map((r) => r.wal_flush_us_mean)),
    }),
    ...(rs[0].cpu_us_per_call != null && { cpu_us_per_call: Object.fromEntries(Object.keys(rs[0].cpu_us_per_call)
      .map((k) => [k, median(rs.map((r) => r.cpu_us_per_call[k]))])) }),
  };
}

const ratios = {};
if (name === "rpc") {
  const z1 = summary.zmq_1, r1 = summary.rpc_1, z64 = summary.zmq_64, r64 = summary.rpc_64x3;
  ratios.one_to_one_throughput = r1.calls_per_s / z1.calls_per_s;
  ratios.one_to_one_p50_latency = r1.p50_us / z1.p50_us;
  ratios.one_to_one_p99_latency = r1.p99_us / z1.p99_us;
  ratios.many_throughput = r64.calls_per_s / z64.calls_per_s;
  ratios.many_p99_latency = r64.p99_us / z64.p99_us;
}

if (name === "ledger") {
  const b = summary;
  ratios.hot_account_throughput = b.batched_hot.calls_per_s / b.naive_hot.calls_per_s;
  ratios.hot_account_p99_latency = b.batched_hot.p99_us / b.naive_hot.p99_us;
  ratios.spread_throughput = b.batched_spread.calls_per_s / b.naive_spread.calls_per_s;
  ratios.spread_p99_latency = b.batched_spread.p99_us / b.naive_spread.p99_us;
}

if (name === "verify") {
  const v = summary;
  // calls/s against calls/s: the goals are evm_farebox_vs_raw and svm_farebox_vs_raw >= 0.9
  ratios.evm_farebox_vs_raw = v.evm_farebox.calls_per_s / v.evm_raw.calls_per_s;
  ratios.evm_farebox_header_vs_raw = v.evm_farebox_header.calls_per_s / v.evm_raw.calls_per_s;
  ratios.svm_farebox_vs_raw = v.svm_farebox.calls_per_s / v.svm_raw.calls_per_s;
  ratios.evm_viem_vs_raw = v.evm_viem.calls_per_s / v.evm_raw.calls_per_s;
  ratios.evm_farebox_vs_viem = v.evm_farebox.calls_per_s / v.evm_viem.calls_per_s;
}

if (name === "edge") {
  const e = summary;
  // the goals: throughput >= 0.5 of nginx; added p99 under 2 ms (at half the peak: half_peak_added_p99_us)
  ratios.h1_throughput_vs_nginx = e.edge_h1.calls_per_s / e.nginx_h1.calls_per_s;
  ratios.h2_throughput_vs_nginx = e.edge_h2.calls_per_s / e.nginx_h2.calls_per_s;
  ratios.light_p50_vs_nginx = e.edge_light.p50_us / e.nginx_light.p50_us;
  ratios.light_p99_vs_nginx = e.edge_light.p99_us / e.nginx_light.p99_us;
  // the same against an edge with FAREBOX_PREPAID_CHARGE_DEFER_MS (answers before their charges)
  if (e.edged_h1) {
    ratios.deferred_h1_throughput_vs_nginx = e.edged_h1.calls_per_s / e.nginx_h1.calls_per_s;
    ratios.deferred_h2_throughput_vs_nginx = e.edged_h2.calls_per_s / e.nginx_h2.calls_per_s;
  }
  // ... and with FAREBOX_PREPAID_JOURNAL_FSYNC too (answers wait for the journal's fdatasync)
  if (e.edgef_h1) {
    ratios.fsync_h1_throughput_vs_nginx = e.edgef_h1.calls_per_s / e.nginx_h1.calls_per_s;
    ratios.fsync_h2_throughput_vs_nginx = e.edgef_h2.calls_per_s / e.nginx_h2.calls_per_s;
  }
}

const labels = {
  edge_h1: "edge, paid calls, HTTP/1.1, 64 conns",
  nginx_h1: "nginx proxy, HTTP/1.1, 64 conns",
  edge_h2: "edge, paid calls, h2c, 8 conns x 16",
  nginx_h2: "nginx proxy, h2c, 8 conns x 16",
  edge_light: "edge, paid calls, 2 conns (light load)",
  nginx_light: "nginx proxy, 2 conns (light load)",
  edge_half: "edge, paid calls, half its peak, open loop",
  nginx_half: "nginx proxy, the same rate, open loop",
  mock_half: "mock model direct, the same rate, open loop",
  mock_light: "mock model direct, 2 conns",
  edged_h1: "deferred-charge edge, HTTP/1.1, 64 conns",
  edged_h2: "deferred-charge edge, h2c, 8 conns x 16",
  edged_light: "deferred-charge edge, 2 conns",
  edged_half: "deferred-charge edge, half its peak",
  nginxd_half: "nginx proxy, that same rate",
  mockd_half: "mock model direct, that same rate",
  edgef_h1: "fsync-journal edge, HTTP/1.1, 64 conns",
  edgef_h2: "fsync-journal edge, h2c, 8 conns x 16",
  edgef_light: "fsync-journal edge, 2 conns",
  edgef_half: "fsync-journal edge, half its peak",
  nginxf_half: "nginx proxy, the fsync edge's rate",
  mockf_half: "mock model direct, the fsync edge's rate",
  edge_fixed: "edge, fixed rate (FIXED_RATE), open loop",
  edged_fixed: "deferred-charge edge, fixed rate",
  edgef_fixed: "fsync-journal edge, fixed rate",
  nginx_fixed: "nginx proxy, fixed rate",
  mock_fixed: "mock model direct, fixed rate",
  memory_per_connection: "edge bytes per idle keep-alive conn",
  memory_per_stream: "edge bytes per open stream",
  batched_hot: "ledger, group commit, 1 hot account",
  naive_hot: "naive (1 tx per op), 1 hot account",
  batched_spread: "ledger, group commit, 10,000 accounts",
  naive_spread: "naive (1 tx per op), 10,000 accounts",
  zmq_1: "bare ZeroMQ REQ/REP, 1 client",
  rpc_1: "farebox RPC, 1 client -> 1 replica",
  zmq_64: "bare ZeroMQ REQ/REP, 64 clients -> 1 REP",
  rpc_64x3: "farebox RPC, 64 in flight -> 3 replicas",
  evm_raw: "raw secp256k1 parse + recover",
  evm_farebox: "farebox evm_exact_check, parsed payload",
  evm_farebox_header: "farebox evm_exact_check from the header",
  evm_viem: "viem verifyTypedData (Node)",
  evm_viem_recover: "viem recoverTypedDataAddress (Node)",
  svm_raw: "raw libsodium ed25519 verify",
  svm_farebox: "farebox svm_exact_check, parsed payload",
};
const pad = (s, n) => String(s).padEnd(n);
console.log(`\n${name}: medians of ${Math.max(...Object.values(summary).map((s) => s.rounds))} alternating rounds\n`);
if (name === "verify") {
  // one thread, one call at a time: a call's time is 1 / rate, no latency spread
  console.log(pad("case", 44) + pad("calls/s", 12) + pad("us/call", 10) + "errors");
  for (const [c, s] of Object.entries(summary))
    console.log(pad(labels[c] ?? c, 44) + pad(Math.round(s.calls_per_s), 12) + pad(s.us_per_call.toFixed(1), 10) + s.errors);
} else {
  console.log(pad("case", 44) + pad(name === "ledger" ? "pairs/s" : "calls/s", 12) + pad("p50 us", 9) + pad("p99 us", 9) + "errors");
  for (const [c, s] of Object.entries(summary)) {
    if (s.bytes != null) {
      console.log(pad(labels[c] ?? c, 44) + `${Math.round(s.bytes)} bytes`);
      continue;
    }
    console.log(pad(labels[c] ?? c, 44) + pad(Math.round(s.calls_per_s), 12) + pad(s.p50_us, 9) + pad(s.p99_us, 9) + s.errors +
      (s.spread ? `   spread ${s.spread.join("/")}` : ""));
  }
}
if (name === "edge") {
  const e = summary;
  // the figures of an edge with another charge mode (PREFIX_...), against the mock and nginx at its half peak
  const sum3 = (c) => c.edge + c.ledger + c.postgres;
  const mode = (prefix, light, half, nginx, mock) => half ? {
    [`${prefix}_added_p50_us`]: light.p50_us - e.mock_light.p50_us,
    [`${prefix}_added_p99_us`]: light.p99_us - e.mock_light.p99_us,
    [`${prefix}_half_peak_calls_per_s`]: half.calls_per_s,
    [`${prefix}_half_peak_added_p50_us`]: half.p50_us - mock.p50_us,
    [`${prefix}_half_peak_added_p99_us`]: half.p99_us - mock.p99_us,
    [`${prefix}_half_peak_nginx_added_p50_us`]: nginx.p50_us - mock.p50_us,
    [`${prefix}_half_peak_nginx_added_p99_us`]: nginx.p99_us - mock.p99_us,
    ...(half.cpu_us_per_call && nginx.cpu_us_per_call && {
      [`${prefix}_half_peak_cpu_us_per_call`]: sum3(half.cpu_us_per_call),
      [`${prefix}_half_peak_cpu_per_call_vs_nginx`]: sum3(half.cpu_us_per_call) / nginx.cpu_us_per_call.nginx }) } : {};
  const added = { added_p50_us: e.edge_light.p50_us - e.mock_light.p50_us, added_p99_us: e.edge_light.p99_us - e.mock_light.p99_us,
    nginx_added_p50_us: e.nginx_light.p50_us - e.mock_light.p50_us, nginx_added_p99_us: e.nginx_light.p99_us - e.mock_light.p99_us,
    light_load_share_of_peak: e.edge_light.calls_per_s / e.edge_h1.calls_per_s,
    ...(e.edge_half && { half_peak_calls_per_s: e.edge_half.calls_per_s,
      half_peak_added_p50_us: e.edge_half.p50_us - e.mock_half.p50_us,
      half_peak_added_p99_us: e.edge_half.p99_us - e.mock_half.p99_us,
      half_peak_nginx_added_p50_us: e.nginx_half.p50_us - e.mock_half.p50_us,
      half_peak_nginx_added_p99_us: e.nginx_half.p99_us - e.mock_half.p99_us }),
    // CPU per call at that rate: farebox's serving path (edge, ledger, Postgres) against nginx's
    ...(e.edge_half?.cpu_us_per_call && e.nginx_half?.cpu_us_per_call && {
      half_peak_cpu_us_per_call: e.edge_half.cpu_us_per_call.edge + e.edge_half.cpu_us_per_call.ledger +
        e.edge_half.cpu_us_per_call.postgres,
      half_peak_nginx_cpu_us_per_call: e.nginx_half.cpu_us_per_call.nginx,
      half_peak_cpu_per_call_vs_nginx: (e.edge_half.cpu_us_per_call.edge + e.edge_half.cpu_us_per_call.ledger +
        e.edge_half.cpu_us_per_call.postgres) / e.nginx_half.cpu_us_per_call.nginx }),
    // each answer waits for the WAL flush of its charge's commit: the floor under the added latency
    ...(e.edge_half?.wal_flush_us_mean != null && { half_peak_wal_flush_us_mean: e.edge_half.wal_flush_us_mean,
      half_peak_wal_flushes_per_call: e.edge_half.wal_flushes_per_call }),
    ...mode("deferred", e.edged_light, e.edged_half, e.nginxd_half, e.mockd_half),
    ...mode("fsync", e.edgef_light, e.edgef_half, e.nginxf_half, e.mockf_half),
    // every mode at one fixed rate: the p99 each adds over the mock there
    ...(e.mock_fixed && { fixed_rate_calls_per_s: e.mock_fixed.calls_per_s,
      fixed_rate_added_p99_us: e.edge_fixed.p99_us - e.mock_fixed.p99_us,
      fixed_rate_deferred_added_p99_us: e.edged_fixed.p99_us - e.mock_fixed.p99_us,
      fixed_rate_fsync_added_p99_us: e.edgef_fixed.p99_us - e.mock_fixed.p99_us,
      fixed_rate_nginx_added_p99_us: e.nginx_fixed.p99_us - e.mock_fixed.p99_us }),
    bytes_per_connection: e.memory_per_connection?.bytes, bytes_per_stream: e.memory_per_stream?.bytes };
  Object.assign(ratios, added);
  console.log("\nlatency the edge adds over calling the mock directly, at light load (h2load reports a mean, so p50 of h2 cases is a mean)");
  const cpu = (c) => Object.entries(c ?? {}).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ");
  if (e.edge_half?.cpu_us_per_call)
    console.log(`CPU us per call at half the edge's peak: ${cpu(e.edge_half.cpu_us_per_call)} | nginx's run: ${cpu(e.nginx_half.cpu_us_per_call)}`);
  if (e.edged_half?.cpu_us_per_call)
    console.log(`CPU us per call at half the deferred-charge edge's peak: ${cpu(e.edged_half.cpu_us_per_call)} | nginx's run: ${cpu(e.nginxd_half.cpu_us_per_call)}`);
  if (e.edgef_half?.cpu_us_per_call)
    console.log(`CPU us per call at half the fsync-journal edge's peak: ${cpu(e.edgef_half.cpu_us_per_call)} | nginx's run: ${cpu(e.nginxf_half.cpu_us_per_call)}`);
  if (e.edge_half?.wal_flush_us_mean != null)
    console.log(`Postgres WAL flushes at half the edge's peak: ${e.edge_half.wal_flushes_per_call.toFixed(3)} per call, ` +
      `${Math.round(e.edge_half.wal_flush_us_mean)} us each on average (every answer waits for one)`);
}
console.log("\nratios (farebox / baseline)");
for (const [k, v] of Object.entries(ratios)) console.log(`  ${pad(k, 40)} ${v == null ? "-" : Number.isInteger(v) ? v : v.toFixed(3)}`);

fs.writeFileSync(outFile, JSON.stringify({
  benchmark: name,
  when: new Date().toISOString(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, load: os.loadavg() },
  cases: summary,
  ratios,
  rounds: rows,
}, null, 2) + "\n");
console.log(`\nwritten to ${outFile}`);
