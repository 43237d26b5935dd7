// compose.mjs - a farebox stack on a real Docker engine, driven through docker-compose (v1) and the
// docker CLI, for the deployment tests. Every call is asynchronous so that a load generator in the
// same process keeps running while containers are killed and restarted.
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { SOURCE, sleep } from "./harness.mjs";

/** Runs a command; resolves {code, stdout, stderr}, rejects only when it cannot start. */
export function exec(cmd, args, { env = {}, timeoutMs = 600000, cwd = SOURCE } = {}) {
    return new Promise((resolve, reject) => {
        execFile(cmd, args, { cwd, env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 64 << 20 },
            (err, stdout, stderr) => {
                if (err && typeof err.code !== "number") return reject(err);
                resolve({ code: err ? err.code : 0, stdout, stderr });
            });
    });
}

async function must(cmd, args, opts) {
    const r = await exec(cmd, args, opts);
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}:\n${r.stderr.slice(-4000)}`);
    return r.stdout;
}

export class Stack {
    /** @param {string} project compose project name; @param {object} env variables for compose.yaml */
    constructor(project, env) {
        this.project = project;
        this.env = env;
    }

    compose(args, opts = {}) {
        return must("docker-compose", ["-p", this.project, "--profile", "dev", ...args], { env: this.env, ...opts });
    }

    /** docker-compose with the tools profile too (the sweep). */
    composeTools(args, opts = {}) {
        return must("docker-compose", ["-p", this.project, "--profile", "dev", "--profile", "tools", ...args],
            { env: this.env, ...opts });
    }

    composeRaw(args, opts = {}) {
        return exec("docker-compose", ["-p", this.project, "--profile", "dev", ...args], { env: this.env, ...opts });
    }

    /** Container names of a service, running or not, in replica order. */
    async containers(service) {
        const out = await must("docker", ["ps", "-a", "--filter", `label=com.docker.compose.project=${this.project}`,
            "--filter", `label=com.docker.compose.service=${service}`, "--format", "{{.Names}}"]);
        return out.split("\n").filter(Boolean).sort();
    }

    /** "healthy", "unhealthy", "starting", "exited", ... of one container. */
    async state(name) {
        const r = await exec("docker", ["inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", name]);
        if (r.code !== 0) return "gone";
        const [status, health] = r.stdout.trim().split(" ");
        return status === "running" ? health || "running" : status;
    }

    async waitHealthy(names, timeoutMs = 120000) {
        const until = Date.now() + timeoutMs;
        for (;;) {
            const states = await Promise.all(names.map((n) => this.state(n)));
            if (states.every((s) => s === "healthy" || s === "running")) return;
            if (Date.now() > until) throw new Error(`not healthy: ${names.map((n, i) => `${n}=${states[i]}`).join(" ")}`);
            await sleep(500);
        }
    }

    docker(args, opts) {
        return must("docker", args, opts);
    }

    /** Logs of every container of the project into dir (kept when a test fails). */
    async saveLogs(dir) {
        fs.mkdirSync(dir, { recursive: true });
        const out = await exec("docker", ["ps", "-a", "--filter", `label=com.docker.compose.project=${this.project}`,
            "--format", "{{.Names}}"]);
        for (const name of out.stdout.split("\n").filter(Boolean)) {
            const r = await exec("docker", ["logs", name]);
            fs.writeFileSync(path.join(dir, `${name}.log`), r.stdout + r.stderr);
        }
    }

    async down() {
        await exec("docker-compose", ["-p", this.project, "--profile", "dev", "--profile", "tools", "down", "-v",
            "--remove-orphans", "-t", "5"],
            { env: this.env });
    }
}
