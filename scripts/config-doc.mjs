// config-doc.mjs - prints README.md's configuration section from the binaries
// themselves (each answers --config-doc), so the README cannot drift: a test
// compares the two.  node scripts/config-doc.mjs [BIN_DIR]
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const bin = process.argv[2] ?? path.join(root, "build/bin");
const services = ["edge", "ledger", "verifier", "chain-watcher"];
const rows = (b) => execFileSync(path.join(bin, b), ["--config-doc"], { encoding: "utf8" }).trim().split("\n");
const name = (row) => row.match(/`([A-Z0-9_]+)`/)[1];

const tables = Object.fromEntries(services.map((s) => [s, rows(`farebox-${s}`)]));
const common = tables.edge.filter((r) => services.every((s) => tables[s].some((x) => name(x) === name(r) && x === r)));
const commonNames = new Set(common.map(name));
const head = "| variable | default | meaning |\n|---|---|---|";
let out = `### Every service\n\n${head}\n${common.join("\n")}\n`;
for (const s of services) {
  const own = tables[s].filter((r) => !commonNames.has(name(r)));
  out += `\n### farebox-${s}\n\n${head}\n${own.join("\n")}\n`;
}
out += `\n### farebox-mock-model\n\n${head}\n${rows("farebox-mock-model").join("\n")}\n`;
process.stdout.write(out);
