// devchain.mjs - the dev profile's chains in one container (docker compose --profile dev).
//
// EVM: anvil on 0.0.0.0:8545 (chain id 84532, anvil's well-known development accounts), with
// contracts/TestUSDC.sol (compiled when the image was built: TestUSDC.json) deployed by account 0
// at its first-deployment address 0x5FbDB2315678afecb367f032d93F642f64180aa3 and 1,000,000 USDC
// minted to accounts 1..9. Anvil's accounts are unlocked, so this needs no private key.
//
// Solana: surfpool (the @solana/surfpool SDK, offline) with a 6-decimal SPL Token mint at
// FAREBOX_SOLANA_MINT, set by cheatcode; the verifier's fee payer (the secret in
// FAREBOX_SOLANA_FEE_PAYER_KEY_FILE) is surfpool's pre-funded payer; the associated token
// account of FAREBOX_PAY_TO_SOLANA is opened empty and DEMO_WALLETS wallets get SOL and 1,000,000
// tokens. Surfpool listens on loopback only, so its RPC and websocket are relayed from 0.0.0.0:8899
// and 0.0.0.0:8900.
//
// When both chains are ready it writes /tmp/devchain.json (addresses; the demo Solana wallets'
// secret keys, which are development keys) and /tmp/ready (the healthcheck); it runs until SIGTERM.
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const CHAIN_ID = 84532;
const ANVIL_PORT = 8545;
const SOLANA_RPC_PORT = 8899;
const SOLANA_WS_PORT = 8900;
const MINT_AMOUNT = 1_000_000_000_000n; // 1,000,000 USDC in atomic units
const MINT_SELECTOR = "40c10f19"; // mint(address,uint256)
const TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
const DEMO_WALLETS = 3;

const log = (msg) => process.stderr.write(`devchain: ${msg}\n`);
let anvil, surfnet;

function stop(code) {
    try {
        surfnet?.stop();
    } catch {
        // stopping anyway
    }
    if (anvil && anvil.exitCode === null) anvil.kill("SIGTERM");
    process.exit(code);
}
process.on("SIGTERM", () => stop(0));
process.on("SIGINT", () => stop(0));

async function rpc(url, method, params = []) {
    const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
    });
    const body = await res.json();
    if (body.error) throw new Error(`${method}: ${JSON.stringify(body.error)}`);
    return body.result;
}

async function waitFor(what, fn, ms = 30000) {
    const until = Date.now() + ms;
    for (;;) {
        try {
            return await fn();
        } catch (err) {
            if (Date.now() > until) throw new Error(`${what}: ${err.message}`);
            await new Promise((r) => setTimeout(r, 200));
        }
    }
}

/** ABI encoding of the constructor (string name, string version). */
function encodeStrings(a, b) {
    const word = (n) => n.toString(16).padStart(64, "0");
    const str = (s) => {
        const hex = Buffer.from(s, "utf8").toString("hex");
        return word(s.length) + hex.padEnd(Math.ceil(hex.length / 64) * 64 || 64, "0");
    };
    const first = str(a);
    return word(64) + word(64 + first.length / 2) + first + str(b);
}

async function receipt(url, hash) {
    const r = await waitFor(`receipt ${hash}`, async () => {
        const got = await rpc(url, "eth_getTransactionReceipt", [hash]);
        if (!got) throw new Error("not mined");
        return got;
    });
    if (r.status !== "0x1") throw new Error(`transaction ${hash} reverted`);
    return r;
}

async function startEvm() {
    const bin = require.resolve("@foundry-rs/anvil-linux-amd64/bin/anvil");
    const args = ["--host", "0.0.0.0", "--port", String(ANVIL_PORT), "--chain-id", String(CHAIN_ID)];
    if (process.env.ANVIL_BLOCK_TIME) args.push("--block-time", process.env.ANVIL_BLOCK_TIME);
    anvil = spawn(bin, args, { stdio: ["ignore", "ignore", "inherit"] });
    anvil.on("exit", (code, signal) => {
        log(`anvil exited (${code ?? signal})`);
        stop(1);
    });
    const url = `http://127.0.0.1:${ANVIL_PORT}`;
    const accounts = await waitFor("anvil", () => rpc(url, "eth_accounts"));
    const compiled = JSON.parse(fs.readFileSync(new URL("./TestUSDC.json", import.meta.url), "utf8"));
    const deploy = await rpc(url, "eth_sendTransaction", [
        { from: accounts[0], data: compiled.bytecode + encodeStrings("USDC", "2"), gas: "0x500000" },
    ]);
    const token = (await receipt(url, deploy)).contractAddress;
    for (const to of accounts.slice(1, 10)) {
        const data = "0x" + MINT_SELECTOR + to.slice(2).padStart(64, "0") + MINT_AMOUNT.toString(16).padStart(64, "0");
        await receipt(url, await rpc(url, "eth_sendTransaction", [{ from: accounts[0], to: token, data }]));
    }
    log(`anvil on :${ANVIL_PORT}, TestUSDC at ${token}, accounts 1..9 funded`);
    return { rpcUrl: `http://devchain:${ANVIL_PORT}`, chainId: CHAIN_ID, token, accounts };
}

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
function b58decode(text) {
    let n = 0n;
    for (const c of text) {
        const v = B58.indexOf(c);
        if (v < 0) throw new Error("not base58");
        n = n * 58n + BigInt(v);
    }
    const bytes = [];
    for (; n > 0n; n >>= 8n) bytes.unshift(Number(n & 0xffn));
    for (const c of text) {
        if (c !== "1") break;
        bytes.unshift(0);
    }
    return Uint8Array.from(bytes);
}
function b58encode(bytes) {
    let n = 0n;
    for (const b of bytes) n = (n << 8n) | BigInt(b);
    let out = "";
    for (; n > 0n; n /= 58n) out = B58[Number(n % 58n)] + out;
    for (const b of bytes) {
        if (b !== 0) break;
        out = "1" + out;
    }
    return out;
}

/** Relays 0.0.0.0:port to a loopback port (surfpool binds 127.0.0.1 only). */
function relay(port, target) {
    net.createServer((client) => {
        const upstream = net.connect(target, "127.0.0.1");
        client.pipe(upstream).pipe(client);
        const close = () => {
            client.destroy();
            upstream.destroy();
        };
        client.on("error", close);
        upstream.on("error", close);
    }).listen(port, "0.0.0.0");
}

async function startSolana() {
    const { Surfnet } = require("@solana/surfpool-linux-x64-gnu");
    const mint = process.env.FAREBOX_SOLANA_MINT;
    const payTo = process.env.FAREBOX_PAY_TO_SOLANA;
    const keyFile = process.env.FAREBOX_SOLANA_FEE_PAYER_KEY_FILE;
    const config = { offline: true };
    if (keyFile) {
        // base58, or solana-keygen's JSON array of the 64 bytes (what scripts/compose-secrets writes)
        const text = fs.readFileSync(keyFile, "utf8").trim();
        config.payerSecretKey = text.startsWith("[") ? JSON.parse(text) : Array.from(b58decode(text));
    }
    surfnet = Surfnet.startWithConfig(config);
    // the SDK queues an event per slot; a full queue stalls the node after ~1,000 slots
    setInterval(() => surfnet.drainEvents(), 1000);
    const url = surfnet.rpcUrl;
    await waitFor("surfpool", () => rpc(url, "getHealth"));

    // An 82-byte SPL mint: authority set (to the payer), supply, 6 decimals, initialised.
    const data = Buffer.alloc(82);
    data.writeUInt32LE(1, 0);
    Buffer.from(b58decode(surfnet.payer)).copy(data, 4);
    data.writeBigUInt64LE(MINT_AMOUNT * BigInt(DEMO_WALLETS), 36);
    data[44] = 6;
    data[45] = 1;
    const lamports = await rpc(url, "getMinimumBalanceForRentExemption", [82]);
    await rpc(url, "surfnet_setAccount", [mint, { lamports, owner: TOKEN_PROGRAM, data: data.toString("hex") }]);

    if (payTo) surfnet.fundToken(payTo, mint, 0);
    const wallets = [];
    for (let i = 0; i < DEMO_WALLETS; i++) {
        const kp = Surfnet.newKeypair(); // {publicKey, secretKey: 64 bytes}
        surfnet.fundSol(kp.publicKey, 10_000_000_000);
        surfnet.fundToken(kp.publicKey, mint, Number(MINT_AMOUNT));
        wallets.push(kp);
    }

    const rpcPort = Number(new URL(url).port);
    const wsPort = Number(new URL(surfnet.wsUrl).port);
    relay(SOLANA_RPC_PORT, rpcPort);
    relay(SOLANA_WS_PORT, wsPort);
    log(`surfpool on :${SOLANA_RPC_PORT}, mint ${mint}, fee payer ${surfnet.payer}, ${DEMO_WALLETS} wallets funded`);
    return {
        rpcUrl: `http://devchain:${SOLANA_RPC_PORT}`,
        mint,
        payer: surfnet.payer,
        wallets: wallets.map((w) => ({ address: w.publicKey, secretKey: b58encode(Uint8Array.from(w.secretKey)) })),
    };
}

try {
    const evm = await startEvm();
    const solana = await startSolana();
    fs.writeFileSync("/tmp/devchain.json", JSON.stringify({ evm, solana }, null, 2));
    fs.writeFileSync("/tmp/ready", "ready\n");
    log("ready");
} catch (err) {
    log(`failed: ${err.stack || err.message}`);
    stop(1);
}
