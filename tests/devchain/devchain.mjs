#!/usr/bin/env node
// devchain.mjs - starts farebox's local development chains and keeps them running.
//
//   node tests/devchain/devchain.mjs --out FILE [--anvil-port N] [--state-dir DIR] [--no-anvil]
//        [--no-surfpool] [--anvil-state FILE] [--block-time SECONDS]
//
// EVM: anvil on 127.0.0.1 (chain id 84532) with contracts/TestUSDC.sol deployed as a USDC-like
// EIP-3009 token and 1,000,000 USDC minted to anvil's default accounts 1..9 (see evm.mjs).
// Solana: an in-process surfpool node with a 6-decimal SPL mint and 3 wallets holding 1,000,000
// tokens each (see solana.mjs).
//
// When both are ready the launcher writes FILE (JSON: RPC URLs, addresses, keys; written atomically)
// and prints "READY FILE" on stdout; progress and errors go to stderr. It then runs until SIGTERM or
// SIGINT, stops surfpool, stops anvil with SIGTERM (anvil dumps --anvil-state on the way out) and
// exits 0. If anvil dies on its own the launcher reports it and exits 1.
//
// FILE holds (sections are omitted for a disabled chain):
//   evm:    rpcUrl, chainId 84532, network "eip155:84532", token (checksummed address), tokenName
//           "USDC", tokenVersion "2", decimals 6, deployer {address, privateKey} (account 0, the
//           token owner), accounts[9] {address, privateKey, usdc} (accounts 1..9; usdc is the
//           balance in atomic units at startup), anvilPid.
//   solana: rpcUrl, wsUrl, network ("solana:" + first 32 chars of this run's genesis hash),
//           genesisHash, x402Network (Solana devnet's CAIP-2 id: @x402/svm accepts only the
//           mainnet/devnet/testnet ids, so x402 clients must be given this one plus rpcUrl),
//           mint, tokenProgram, decimals 6, mintAuthority / payer {address, secretKey (base58 of
//           the 64-byte secret)}, wallets[3] {address, secretKey, ata, tokens}.
//   pid:    this launcher's pid.
//
// --state-dir keeps the compiled-contract cache, the token address, the Solana keys and anvil.log.
// Only the EVM chain's state persists across restarts (with --anvil-state); the Solana chain is new
// on every start, but with the same mint, authority, payer and wallet addresses when the state dir
// is reused.

import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { compileTestUSDC } from "./compile.mjs";
import { writeJsonAtomic } from "./util.mjs";

// viem and @solana/kit take a few hundred ms to load; they are imported in main(), after the signal
// handlers below are installed, so a SIGTERM that arrives early still gets an orderly shutdown.
let setupToken, startAnvil, startSolana;

const USAGE =
    "usage: node tests/devchain/devchain.mjs --out FILE [--anvil-port N] [--state-dir DIR] [--no-anvil]\n" +
    "       [--no-surfpool] [--anvil-state FILE] [--block-time SECONDS]";

function log(msg) {
    process.stderr.write(`devchain: ${msg}\n`);
}

function fail(msg) {
    process.stderr.write(`devchain: ${msg}\n${USAGE}\n`);
    process.exit(2);
}

/** Parses argv into an options object; exits 2 with usage on anything malformed. */
function parseOptions() {
    let values;
    try {
        ({ values } = parseArgs({
            options: {
                out: { type: "string" },
                "anvil-port": { type: "string" },
                "state-dir": { type: "string" },
                "no-anvil": { type: "boolean", default: false },
                "no-surfpool": { type: "boolean", default: false },
                "anvil-state": { type: "string" },
                "block-time": { type: "string" },
                help: { type: "boolean", short: "h", default: false },
            },
            strict: true,
        }));
    } catch (err) {
        fail(err.message);
    }
    if (values.help) {
        process.stdout.write(USAGE + "\n");
        process.exit(0);
    }
    if (!values.out) fail("--out FILE is required");
    let anvilPort;
    if (values["anvil-port"] !== undefined) {
        anvilPort = Number(values["anvil-port"]);
        if (!Number.isInteger(anvilPort) || anvilPort < 1 || anvilPort > 65535) fail(`bad --anvil-port ${values["anvil-port"]}`);
    }
    let blockTime;
    if (values["block-time"] !== undefined) {
        blockTime = Number(values["block-time"]);
        if (!(blockTime > 0)) fail(`bad --block-time ${values["block-time"]}`);
    }
    if (values["no-anvil"] && values["no-surfpool"]) fail("--no-anvil and --no-surfpool leave nothing to run");
    return {
        out: path.resolve(values.out),
        anvilPort,
        stateDir: values["state-dir"] ? path.resolve(values["state-dir"]) : undefined,
        anvil: !values["no-anvil"],
        surfpool: !values["no-surfpool"],
        anvilState: values["anvil-state"] ? path.resolve(values["anvil-state"]) : undefined,
        blockTime,
    };
}

// ---------------------------------------------------------------- process lifetime

let anvilChild; // the anvil ChildProcess, once spawned
let surfnet; // the running Surfnet, once started
let stopping = false; // set once shutdown has begun: anvil exiting is then expected

/** True while the anvil child has neither exited nor been reaped. */
function anvilRunning() {
    return anvilChild && anvilChild.exitCode === null && anvilChild.signalCode === null;
}

// Last line of defence against an orphaned anvil: whatever ends this process (an exception,
// process.exit from anywhere) asks anvil to stop too. SIGTERM, not SIGKILL, so it still dumps --state.
process.on("exit", () => {
    if (anvilRunning()) anvilChild.kill("SIGTERM");
});

/** Stops surfpool, then anvil (waiting for it to dump its state), then exits with `code`. */
async function shutdown(code) {
    if (stopping) return;
    stopping = true;
    if (surfnet) {
        try {
            surfnet.stop();
        } catch (err) {
            log(`surfpool stop: ${err.message}`);
        }
    }
    if (anvilRunning()) {
        const exited = new Promise((resolve) => anvilChild.once("exit", resolve));
        anvilChild.kill("SIGTERM");
        const timer = setTimeout(() => {
            log("anvil did not stop within 20 s of SIGTERM; killing it");
            anvilChild.kill("SIGKILL");
        }, 20_000);
        await exited;
        clearTimeout(timer);
    }
    process.exit(code);
}

for (const sig of ["SIGTERM", "SIGINT"]) {
    process.on(sig, () => {
        log(`${sig} received, stopping`);
        shutdown(0);
    });
}
process.on("uncaughtException", (err) => {
    log(`fatal: ${err.stack || err}`);
    shutdown(1);
});
process.on("unhandledRejection", (err) => {
    log(`fatal: ${err?.stack || err}`);
    shutdown(1);
});

// ---------------------------------------------------------------- startup

/** Starts anvil, deploys and funds the token; resolves to the "evm" section. */
async function bringUpEvm(opts, compiled) {
    const t0 = Date.now();
    const { child, rpcUrl } = await startAnvil({
        port: opts.anvilPort,
        stateFile: opts.anvilState,
        blockTime: opts.blockTime,
        logFile: opts.stateDir ? path.join(opts.stateDir, "anvil.log") : undefined,
        onSpawn: (c) => (anvilChild = c), // from now on shutdown() and the exit hook can stop it
    });
    if (stopping) return undefined; // a signal arrived while anvil was booting; shutdown() handles it
    child.once("exit", (code, signal) => {
        if (stopping) return;
        log(`anvil exited unexpectedly (code ${code}, signal ${signal})`);
        shutdown(1);
    });
    const tAnvil = Date.now();

    const recordFile = opts.stateDir ? path.join(opts.stateDir, "evm-token.json") : undefined;
    const evm = await setupToken(rpcUrl, compiled, recordFile, log);
    log(`anvil ready at ${rpcUrl}: boot ${tAnvil - t0} ms, token deploy/mint ${Date.now() - tAnvil} ms`);
    return { ...evm, anvilPid: child.pid };
}

/** Starts surfpool and sets up the mint and wallets; resolves to the "solana" section. */
async function bringUpSolana(opts) {
    const t0 = Date.now();
    const { net, info } = await startSolana(opts.stateDir, log);
    surfnet = net;
    log(`surfpool ready at ${info.rpcUrl} in ${Date.now() - t0} ms`);
    return info;
}

async function main() {
    const opts = parseOptions();
    ({ setupToken, startAnvil } = await import("./evm.mjs"));
    ({ startSolana } = await import("./solana.mjs"));
    if (stopping) return;
    if (opts.stateDir) fs.mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.dirname(opts.out), { recursive: true });
    const t0 = Date.now();

    // The compile is synchronous (solc-js blocks the event loop for ~2.5 s when not cached), so it
    // runs before anything else; then the two chains come up concurrently.
    let compiled;
    if (opts.anvil) {
        compiled = compileTestUSDC(opts.stateDir);
        log(`TestUSDC.sol ${compiled.cached ? "read from cache" : "compiled"} in ${Date.now() - t0} ms`);
    }
    const solana = opts.surfpool ? bringUpSolana(opts) : Promise.resolve(undefined);
    const evm = opts.anvil ? bringUpEvm(opts, compiled) : Promise.resolve(undefined);
    const [solanaInfo, evmInfo] = await Promise.all([solana, evm]);
    if (stopping) return;

    const result = {};
    if (evmInfo) result.evm = evmInfo;
    if (solanaInfo) result.solana = solanaInfo;
    result.pid = process.pid;
    writeJsonAtomic(opts.out, result);
    log(`all chains up in ${Date.now() - t0} ms`);
    process.stdout.write(`READY ${opts.out}\n`);

    // Surfnet's servers run on native threads that do not keep Node's event loop alive; with
    // --no-anvil nothing else would, so hold the loop open until a signal arrives.
    setInterval(() => {}, 1 << 30);
}

main().catch((err) => {
    if (stopping) return; // a signal interrupted startup; shutdown() is already under way
    log(`startup failed: ${err.stack || err}`);
    shutdown(1);
});
