// evm.mjs - the EVM half of the dev chains: an anvil node with the TestUSDC token deployed and funded.
//
// startAnvil() runs Foundry's anvil (from the @foundry-rs/anvil npm package) as a child process on
// loopback with chain id 84532 (Base Sepolia's id, so x402 clients treat it as "eip155:84532").
// setupToken() deploys contracts/TestUSDC.sol from anvil's default account 0, or finds the copy a
// restored --state already holds, and mints 1,000,000 USDC to default accounts 1..9 that hold none.

import { spawn } from "node:child_process";
import { pbkdf2Sync } from "node:crypto";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import { createPublicClient, createWalletClient, defineChain, getAddress, getContractAddress, http } from "viem";
import { HDKey, hdKeyToAccount } from "viem/accounts";
import { writeJsonAtomic } from "./util.mjs";

const require = createRequire(import.meta.url);

export const CHAIN_ID = 84532;
export const TOKEN_NAME = "USDC";
export const TOKEN_VERSION = "2";
export const TOKEN_DECIMALS = 6;
/** Minted to each funded account: 1,000,000 USDC in atomic units. */
export const MINT_AMOUNT = 1_000_000n * 10n ** 6n;
/** anvil's built-in dev mnemonic; its accounts 0..9 are pre-funded with ETH. */
const ANVIL_MNEMONIC = "test test test test test test test test test test test junk";
const FUNDED_ACCOUNTS = 9; // accounts 1..9 receive USDC; account 0 deploys

/** Path of the anvil executable shipped by @foundry-rs/anvil's per-platform package. */
function anvilBinary() {
    return require.resolve("@foundry-rs/anvil-linux-amd64/bin/anvil");
}

/** Resolves to a TCP port that was free on 127.0.0.1 a moment ago (bind port 0, read it, close). */
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on("error", reject);
        srv.listen(0, "127.0.0.1", () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

/** POSTs one JSON-RPC call; resolves to its result, rejects on transport or RPC error. */
async function rpcCall(url, method, params = []) {
    const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
    });
    const body = await res.json();
    if (body.error) throw new Error(`${method}: ${body.error.message}`);
    return body.result;
}

/** Last `lines` lines of a log file, or "" when it cannot be read. */
function tail(file, lines = 20) {
    try {
        return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
        return "";
    }
}

/**
 * Starts anvil and waits until it answers eth_chainId.
 *
 * @param {object} opts
 * @param {number} [opts.port]       TCP port on 127.0.0.1; a free one is picked when omitted.
 * @param {string} [opts.stateFile]  passed as --state: loaded at start if present, dumped at exit.
 * @param {string} [opts.blockTime]  seconds between blocks (--block-time); automine when omitted.
 * @param {string} [opts.logFile]    anvil's stdout and stderr go here; stdout is dropped otherwise.
 * @param {(child) => void} [opts.onSpawn] called with the child as soon as it is spawned, so the
 *                                  caller can stop it even while startup is still in progress.
 * @returns {Promise<{child: import("node:child_process").ChildProcess, rpcUrl: string, port: number}>}
 * @throws when anvil exits or does not answer within 30 s (the child is killed first).
 */
export async function startAnvil({ port, stateFile, blockTime, logFile, onSpawn } = {}) {
    // An auto-picked port can be taken between freePort() and anvil's bind; retry on a new one then.
    const attempts = port ? 1 : 3;
    for (let attempt = 1; ; attempt++) {
        const p = port || (await freePort());
        try {
            return await startAnvilOnce(p, { stateFile, blockTime, logFile, onSpawn });
        } catch (err) {
            if (attempt >= attempts) throw err;
        }
    }
}

async function startAnvilOnce(port, { stateFile, blockTime, logFile, onSpawn }) {
    const args = ["--host", "127.0.0.1", "--port", String(port), "--chain-id", String(CHAIN_ID)];
    if (stateFile) args.push("--state", stateFile);
    if (blockTime !== undefined) args.push("--block-time", String(blockTime));

    let out = "ignore";
    let err = "inherit";
    if (logFile) out = err = fs.openSync(logFile, "a");
    // detached: anvil gets its own process group, so a Ctrl-C in the terminal (SIGINT to the whole
    // foreground group) reaches only the launcher, which then stops anvil in order.
    const child = spawn(anvilBinary(), args, { stdio: ["ignore", out, err], detached: true });
    if (typeof out === "number") fs.closeSync(out); // the child holds its own copy
    if (onSpawn) onSpawn(child);

    let exited = null;
    child.once("exit", (code, signal) => (exited = { code, signal }));
    child.once("error", (e) => (exited = { error: e }));

    const rpcUrl = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    for (;;) {
        if (exited) {
            const why = exited.error ? exited.error.message : `exit code ${exited.code}, signal ${exited.signal}`;
            const log = logFile ? `\n${tail(logFile)}` : "";
            throw new Error(`anvil on port ${port} stopped during startup (${why})${log}`);
        }
        try {
            const id = await rpcCall(rpcUrl, "eth_chainId");
            if (Number(id) !== CHAIN_ID) throw new Error(`anvil reports chain id ${id}, want ${CHAIN_ID}`);
            return { child, rpcUrl, port };
        } catch (e) {
            if (e.message.startsWith("anvil reports")) {
                child.kill("SIGKILL");
                throw e;
            }
        }
        if (Date.now() > deadline) {
            child.kill("SIGKILL");
            throw new Error(`anvil on port ${port} did not answer within 30 s`);
        }
        await new Promise((r) => setTimeout(r, 50));
    }
}

let devRoot; // the BIP-32 root key of ANVIL_MNEMONIC, derived once

/** anvil's default account `index` (path m/44'/60'/0'/0/index) as {address, privateKey, account}. */
export function devAccount(index) {
    // BIP-39 seed = PBKDF2-HMAC-SHA512(mnemonic, "mnemonic", 2048 rounds); node's native PBKDF2 is
    // much faster than deriving it in JS for each account the way mnemonicToAccount() would.
    devRoot ??= HDKey.fromMasterSeed(pbkdf2Sync(ANVIL_MNEMONIC.normalize("NFKD"), "mnemonic", 2048, 64, "sha512"));
    const account = hdKeyToAccount(devRoot, { addressIndex: index });
    const privateKey = "0x" + Buffer.from(account.getHdKey().privateKey).toString("hex");
    return { address: account.address, privateKey, account };
}

/** A viem chain description for the local node. */
export function devChain(rpcUrl) {
    return defineChain({
        id: CHAIN_ID,
        name: "farebox devchain",
        nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
        rpcUrls: { default: { http: [rpcUrl] } },
    });
}

/**
 * Makes sure TestUSDC is deployed and accounts 1..9 hold USDC.
 *
 * A deployed copy is recognised by its runtime code at either the address recorded in
 * `recordFile` by an earlier run or the address account 0's first deployment gets (nonce 0);
 * otherwise the token is deployed afresh. Accounts with a zero balance receive MINT_AMOUNT.
 *
 * @param {string} rpcUrl
 * @param {{abi: object[], bytecode: string, deployedBytecode: string}} compiled  from compileTestUSDC()
 * @param {string} [recordFile]  JSON file remembering the token address across restarts.
 * @param {(msg: string) => void} [log]
 * @returns {Promise<object>} the "evm" section of the devchain JSON.
 */
export async function setupToken(rpcUrl, compiled, recordFile, log = () => {}) {
    const chain = devChain(rpcUrl);
    const transport = http(rpcUrl, { retryCount: 0 });
    const pub = createPublicClient({ chain, transport, pollingInterval: 50 });
    const deployer = devAccount(0);
    const wallet = createWalletClient({ chain, transport, account: deployer.account });

    // Sanity: the mnemonic-derived keys are the accounts anvil funded.
    const anvilAccounts = (await rpcCall(rpcUrl, "eth_accounts")).map((a) => a.toLowerCase());
    if (anvilAccounts[0] !== deployer.address.toLowerCase()) {
        throw new Error(`anvil's account 0 is ${anvilAccounts[0]}, expected ${deployer.address}`);
    }

    const candidates = [];
    if (recordFile && fs.existsSync(recordFile)) {
        try {
            candidates.push(getAddress(JSON.parse(fs.readFileSync(recordFile, "utf8")).token));
        } catch {
            // unreadable record: ignore it
        }
    }
    candidates.push(getContractAddress({ from: deployer.address, nonce: 0n }));

    let token;
    for (const candidate of candidates) {
        if (!candidate) continue;
        const code = await pub.getCode({ address: candidate });
        if (code && code.toLowerCase() === compiled.deployedBytecode.toLowerCase()) {
            token = candidate;
            log(`TestUSDC already deployed at ${token}`);
            break;
        }
    }
    if (!token) {
        const hash = await wallet.deployContract({
            abi: compiled.abi,
            bytecode: compiled.bytecode,
            args: [TOKEN_NAME, TOKEN_VERSION],
        });
        const receipt = await pub.waitForTransactionReceipt({ hash, timeout: 60_000 });
        if (receipt.status !== "success") throw new Error(`TestUSDC deployment ${hash} reverted`);
        token = getAddress(receipt.contractAddress);
        log(`TestUSDC deployed at ${token}`);
    }
    if (recordFile) writeJsonAtomic(recordFile, { token });

    // Fund accounts 1..9 that hold no USDC. Nonces are assigned by hand so that all mints go out at
    // once and are mined together (one block with --block-time, one block each with automine).
    const accounts = [];
    for (let i = 1; i <= FUNDED_ACCOUNTS; i++) accounts.push(devAccount(i));
    const balanceOf = (address) =>
        pub.readContract({ address: token, abi: compiled.abi, functionName: "balanceOf", args: [address] });
    const before = await Promise.all(accounts.map((a) => balanceOf(a.address)));
    let nonce = await pub.getTransactionCount({ address: deployer.address, blockTag: "pending" });
    const hashes = [];
    for (let i = 0; i < accounts.length; i++) {
        if (before[i] > 0n) continue;
        hashes.push(
            await wallet.writeContract({
                address: token,
                abi: compiled.abi,
                functionName: "mint",
                args: [accounts[i].address, MINT_AMOUNT],
                nonce: nonce++,
                gas: 100_000n,
            }),
        );
    }
    for (const hash of hashes) {
        const receipt = await pub.waitForTransactionReceipt({ hash, timeout: 60_000 });
        if (receipt.status !== "success") throw new Error(`mint ${hash} reverted`);
    }
    if (hashes.length) log(`minted ${MINT_AMOUNT} atomic USDC to ${hashes.length} account(s)`);
    const balances = await Promise.all(accounts.map((a) => balanceOf(a.address)));

    return {
        rpcUrl,
        chainId: CHAIN_ID,
        network: `eip155:${CHAIN_ID}`,
        token,
        tokenName: TOKEN_NAME,
        tokenVersion: TOKEN_VERSION,
        decimals: TOKEN_DECIMALS,
        deployer: { address: deployer.address, privateKey: deployer.privateKey },
        accounts: accounts.map((a, i) => ({
            address: a.address,
            privateKey: a.privateKey,
            usdc: balances[i].toString(),
        })),
    };
}
