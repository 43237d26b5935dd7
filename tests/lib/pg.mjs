// pg.mjs - a throwaway PostgreSQL cluster on a free port, for one test run.
// initdb refuses to run as root, so as root the cluster runs as the
// "postgres" system user that Debian's package creates (through setpriv, which
// execs in place: the pid is the server's and signals reach it).
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { freePort, tmpDir, Proc, waitUntil } from "./harness.mjs";

function pgBinDir() {
  const base = "/usr/lib/postgresql";
  const versions = fs.existsSync(base) ? fs.readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) if (fs.existsSync(path.join(base, v, "bin/initdb"))) return path.join(base, v, "bin");
  throw new Error("PostgreSQL server binaries not found under /usr/lib/postgresql (apt install postgresql)");
}

const asRoot = process.getuid() === 0;

const SETPRIV = ["--reuid=postgres", "--regid=postgres", "--init-groups", "--"];

function runAsOwner(cmd, args) {
  const r = asRoot ? spawnSync("setpriv", [...SETPRIV, cmd, ...args], { encoding: "utf8" })
    : spawnSync(cmd, args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** Starts a cluster; resolves with {port, url(db), createDatabase(name), stop()}. */
export async function startPostgres() {
  const bindir = pgBinDir();
  const dir = tmpDir("pg", { public: true });
  if (asRoot) {
    fs.chmodSync(dir, 0o755);
    execFileSync("chown", ["postgres:postgres", dir]);
  }
  const data = path.join(dir, "data");
  runAsOwner(path.join(bindir, "initdb"), ["-D", data, "--auth=trust", "-U", "farebox", "-E", "UTF8", "--no-sync"]);
  const port = await freePort();
  const args = ["-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1",
    "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "max_connections=200", "-c", "shared_buffers=64MB"];
  const proc = asRoot
    ? new Proc("setpriv", [...SETPRIV, path.join(bindir, "postgres"), ...args], { name: "postgres" })
    : new Proc(path.join(bindir, "postgres"), args, { name: "postgres" });
  await waitUntil(() => spawnSync(path.join(bindir, "pg_isready"), ["-h", "127.0.0.1", "-p", String(port)]).status === 0,
    { what: "postgres to accept connections", timeoutMs: 30000 });
  let n = 0;
  const pg = {
    port,
    dir,
    bindir,
    url: (db = "postgres") => `postgresql://farebox@127.0.0.1:${port}/${db}`,
    psql(db, sql) {
      const r = spawnSync(path.join(bindir, "psql"), ["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", pg.url(db), "-c", sql],
        { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
      return r.stdout.trim();
    },
    createDatabase(prefix = "t") {
      const name = `${prefix}_${process.pid}_${++n}`;
      pg.psql("postgres", `CREATE DATABASE ${name}`);
      return { name, url: pg.url(name) };
    },
    async stop() {
      proc.signal("SIGINT"); // fast shutdown
      await proc.exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return pg;
}
