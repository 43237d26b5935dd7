// readme.test.mjs - README.md's configuration section is what the binaries
// print with --config-doc (so the README lists every variable and default).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { BIN, SOURCE } from "../lib/harness.mjs";

test("README's configuration tables match the binaries", () => {
  const readme = fs.readFileSync(path.join(SOURCE, "README.md"), "utf8");
  const begin = readme.indexOf("<!-- config:begin");
  const end = readme.indexOf("<!-- config:end -->");
  assert.ok(begin > 0 && end > begin, "README has the config markers");
  const section = readme.slice(readme.indexOf("\n", begin) + 1, end);
  const generated = execFileSync("node", [path.join(SOURCE, "scripts/config-doc.mjs"), BIN], { encoding: "utf8" });
  assert.equal(section, generated, "run `node scripts/config-doc.mjs` and paste its output into README.md");
});

test("every service answers --help, --version and refuses unknown arguments", () => {
  for (const s of ["edge", "ledger", "verifier", "chain-watcher"]) {
    const b = path.join(BIN, `farebox-${s}`);
    assert.match(execFileSync(b, ["--version"], { encoding: "utf8" }), new RegExp(`^farebox-${s} \\d+\\.\\d+\\.\\d+`));
    assert.match(execFileSync(b, ["--help"], { encoding: "utf8" }), /--config-doc/);
    assert.throws(() => execFileSync(b, ["--bogus"], { stdio: "ignore" }), (e) => e.status === 2);
  }
});
