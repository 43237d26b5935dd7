// parse.mjs - one measurement of wrk or h2load as a JSON line for
// bench/lib/report.mjs: calls_per_s, p50_us, p99_us (wrk --latency; h2load
// gives the mean as both), errors (non-2xx and socket errors).
//   node bench/edge/parse.mjs wrk|h2load CASE ROUND < output
import fs from "node:fs";

const [tool, name, round] = process.argv.slice(2);
const text = fs.readFileSync(0, "utf8");
const us = (v, unit) => Number(v) * { us: 1, ms: 1000, s: 1e6 }[unit];
let r;
if (tool === "wrk") {
  const pct = (p) => {
    const m = text.match(new RegExp(`^\\s+${p}%\\s+([0-9.]+)(us|ms|s)\\s*$`, "m"));
    return m ? us(m[1], m[2]) : null;
  };
  const rps = text.match(/^Requests\/sec:\s+([0-9.]+)/m);
  const non2xx = text.match(/Non-2xx or 3xx responses: (\d+)/);
  const sock = text.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  r = { calls_per_s: rps ? Number(rps[1]) : 0, p50_us: pct(50), p99_us: pct(99),
    errors: (non2xx ? Number(non2xx[1]) : 0) + (sock ? sock.slice(1).reduce((a, x) => a + Number(x), 0) : 0) };
} else {
  const rps = text.match(/finished in [0-9.]+\w+, ([0-9.]+) req\/s/);
  const codes = text.match(/status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/);
  const reqs = text.match(/requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored/);
  const mean = text.match(/time for request:\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)/);
  const meanUs = mean ? us(mean[5], mean[6]) : null;
  r = { calls_per_s: rps ? Number(rps[1]) : 0, p50_us: meanUs, p99_us: mean ? us(mean[3], mean[4]) : null,
    errors: (codes ? Number(codes[3]) + Number(codes[4]) : 0) + (reqs ? Number(reqs[1]) + Number(reqs[2]) : 0) };
}
if (!r.calls_per_s) {
  process.stderr.write(`no figures in ${tool} output for ${name}:\n${text}\n`);
  process.exit(1);
}
process.stdout.write(`${JSON.stringify({ case: name, round: Number(round), r })}\n`);
