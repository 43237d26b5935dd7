#!/usr/bin/env node
// selftest.mjs - proves that devchain.mjs brings up usable chains; exits non-zero on any failure.
//
//   node tests/devchain/selftest.mjs [--keep]     (--keep leaves the temp state dir in place)
//
// Starts the launcher with a temporary --state-dir / --anvil-state, then:
//   EVM     EIP-3009 transferWithAuthorization signed with viem and relayed by a third account, in
//           the (v, r, s) and the (bytes signature) forms; replay, high-s and expired signatures are
//           refused; receiveWithAuthorization and cancelAuthorization work; the EIP-712 domain matches.
//   Solana  a real TransferChecked between two funded wallets, confirmed over the WebSocket API, with
//           the balance change and the transaction's pre/post token balances checked.
//   Restart the launcher is stopped with SIGTERM and started again on the same state: the token and
//           mint addresses are unchanged and the EVM balances and used nonces survived.
// Finally it stops the launcher and checks that no anvil it started is still running.

import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
    createPublicClient,
    createWalletClient,
    defineChain,
    hashDomain,
    http,
    parseEventLogs,
    parseSignature,
    serializeSignature,
    toHex,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import {
    address,
    appendTransactionMessageInstructions,
    createKeyPairSignerFromBytes,
    createSolanaRpc,
    createSolanaRpcSubscriptions,
    createTransactionMessage,
    getBase58Encoder,
    getSignatureFromTransaction,
    pipe,
    sendAndConfirmTransactionFactory,
    setTransactionMessageFeePayerSigner,
    setTransactionMessageLifetimeUsingBlockhash,
    signTransactionMessageWithSigners,
} from "@solana/kit";
import { getTransferCheckedInstruction } from "@solana-program/token";
import { compileTestUSDC } from "./compile.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const LAUNCHER = path.join(here, "devchain.mjs");
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const keep = process.argv.includes("--keep");

// ---------------------------------------------------------------- small test harness

const started = Date.now();
let checks = 0;

function check(cond, what) {
    checks++;
    if (!cond) throw new Error(`check failed: ${what}`);
}

function equal(actual, expected, what) {
    checks++;
    if (actual !== expected) throw new Error(`check failed: ${what}: got ${actual}, want ${expected}`);
}

/** Runs `fn`, which must throw an error whose message contains `reason`. */
async function reverts(fn, reason, what) {
    checks++;
    try {
        await fn();
    } catch (err) {
        const msg = String(err?.shortMessage || "") + "\n" + String(err?.message || err);
        if (msg.includes(reason)) return;
        throw new Error(`check failed: ${what}: reverted, but not with "${reason}":\n${msg}`);
    }
    throw new Error(`check failed: ${what}: did not revert`);
}

/** Prints one line of the summary (stdout) as soon as the step it describes has passed. */
function note(line) {
    process.stdout.write(`selftest: ${line}\n`);
}

// ---------------------------------------------------------------- launcher control

/**
 * Starts devchain.mjs with `args` and waits for its READY line.
 * @returns {Promise<{child, info: object, ms: number, stderr: () => string}>}
 */
function startLauncher(args) {
    const t0 = Date.now();
    const child = spawn(process.execPath, [LAUNCHER, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    return new Promise((resolve, reject) => {
        let stdout = "";
        const timer = setTimeout(() => {
            child.kill("SIGTERM");
            reject(new Error(`launcher not READY within 60 s; stderr:\n${stderr}`));
        }, 60_000);
        child.stdout.on("data", (d) => {
            stdout += d;
            const m = stdout.match(/^READY (.+)$/m);
            if (!m) return;
            clearTimeout(timer);
            const info = JSON.parse(fs.readFileSync(m[1], "utf8"));
            resolve({ child, info, ms: Date.now() - t0, stderr: () => stderr });
        });
        child.once("exit", (code, signal) => {
            clearTimeout(timer);
            reject(new Error(`launcher exited before READY (code ${code}, signal ${signal}); stderr:\n${stderr}`));
        });
    });
}

/** Sends SIGTERM and resolves to the launcher's exit code. */
function stopLauncher(launcher) {
    const { child } = launcher;
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("launcher did not exit within 30 s of SIGTERM")), 30_000);
        child.once("exit", (code) => {
            clearTimeout(timer);
            resolve(code);
        });
        child.kill("SIGTERM");
    });
}

function processAlive(pid) {
    try {
        process.kill(pid, 0);
        return true;
    } catch (err) {
        return err.code === "EPERM";
    }
}

/** PIDs of running anvil processes whose command line mentions `marker`. */
function anvilsMentioning(marker) {
    const pids = [];
    for (const entry of fs.readdirSync("/proc")) {
        if (!/^\d+$/.test(entry)) continue;
        let cmdline;
        try {
            cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
        } catch {
            continue; // exited meanwhile
        }
        if (path.basename(cmdline[0] || "") === "anvil" && cmdline.some((a) => a.includes(marker))) pids.push(Number(entry));
    }
    return pids;
}

// ---------------------------------------------------------------- EVM checks

const AUTH_FIELDS = [
    { name: "from", type: "address" },
    { name: "to", type: "address" },
    { name: "value", type: "uint256" },
    { name: "validAfter", type: "uint256" },
    { name: "validBefore", type: "uint256" },
    { name: "nonce", type: "bytes32" },
];

function randomNonce() {
    return toHex(crypto.getRandomValues(new Uint8Array(32)));
}

function evmClients(evm) {
    const chain = defineChain({
        id: evm.chainId,
        name: "devchain",
        nativeCurrency: { name: "Ether", symbol: "ETH", decimals: 18 },
        rpcUrls: { default: { http: [evm.rpcUrl] } },
    });
    const transport = http(evm.rpcUrl, { retryCount: 0 });
    const pub = createPublicClient({ chain, transport, pollingInterval: 50 });
    const walletFor = (privateKey) => createWalletClient({ chain, transport, account: privateKeyToAccount(privateKey) });
    return { pub, walletFor };
}

async function evmChecks(evm, abi) {
    const { pub, walletFor } = evmClients(evm);
    const token = evm.token;
    const [payer, payee, relayer] = evm.accounts.map((a) => privateKeyToAccount(a.privateKey));
    const relayerWallet = walletFor(evm.accounts[2].privateKey);
    const payeeWallet = walletFor(evm.accounts[1].privateKey);
    const domain = { name: evm.tokenName, version: evm.tokenVersion, chainId: evm.chainId, verifyingContract: token };
    const read = (functionName, args = []) => pub.readContract({ address: token, abi, functionName, args });
    const balance = (a) => read("balanceOf", [a.address]);

    // The token describes itself the way the devchain JSON does.
    equal(await read("decimals"), 6, "decimals()");
    equal(await read("name"), "USDC", "name()");
    equal(await read("DOMAIN_SEPARATOR"), hashDomain({ domain, types: { EIP712Domain: [
        { name: "name", type: "string" }, { name: "version", type: "string" },
        { name: "chainId", type: "uint256" }, { name: "verifyingContract", type: "address" },
    ] } }), "DOMAIN_SEPARATOR() matches viem's EIP-712 domain hash");
    const d5267 = await read("eip712Domain");
    check(d5267[0] === "0x0f" && d5267[1] === "USDC" && d5267[2] === "2" && d5267[3] === 84532n, "eip712Domain()");

    const { timestamp: now } = await pub.getBlock();
    const authorization = (overrides = {}) => ({
        from: payer.address,
        to: payee.address,
        value: 1_500_000n,
        validAfter: 0n,
        validBefore: now + 3600n,
        nonce: randomNonce(),
        ...overrides,
    });
    const sign = (message, primaryType = "TransferWithAuthorization", signer = payer) =>
        signer.signTypedData({ domain, types: { [primaryType]: AUTH_FIELDS }, primaryType, message });
    const argsOf = (a) => [a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce];
    const vrs = (sig) => {
        const { r, s, v } = parseSignature(sig);
        return [Number(v), r, s];
    };
    const relay = async (functionName, args, wallet = relayerWallet) => {
        const hash = await wallet.writeContract({ address: token, abi, functionName, args });
        const receipt = await pub.waitForTransactionReceipt({ hash });
        equal(receipt.status, "success", `${functionName} receipt status`);
        return receipt;
    };
    const simulate = (functionName, args, account = relayer) =>
        pub.simulateContract({ address: token, abi, functionName, args, account });

    // 1. transferWithAuthorization, (v, r, s) form, relayed by a third account.
    const before = { payer: await balance(payer), payee: await balance(payee), relayer: await balance(relayer) };
    const auth1 = authorization();
    const sig1 = await sign(auth1);
    const receipt = await relay("transferWithAuthorization", [...argsOf(auth1), ...vrs(sig1)]);
    equal(await balance(payer), before.payer - 1_500_000n, "payer balance after transferWithAuthorization");
    equal(await balance(payee), before.payee + 1_500_000n, "payee balance after transferWithAuthorization");
    equal(await balance(relayer), before.relayer, "relayer balance unchanged");
    const events = parseEventLogs({ abi, logs: receipt.logs });
    const used = events.find((e) => e.eventName === "AuthorizationUsed");
    check(used && used.args.authorizer === payer.address && used.args.nonce === auth1.nonce, "AuthorizationUsed(from, nonce) emitted");
    const transfer = events.find((e) => e.eventName === "Transfer");
    check(transfer && transfer.args.from === payer.address && transfer.args.to === payee.address && transfer.args.value === 1_500_000n, "Transfer emitted");
    check(events.indexOf(used) < events.indexOf(transfer), "AuthorizationUsed logged before Transfer, as in FiatToken");
    equal(await read("authorizationState", [payer.address, auth1.nonce]), true, "authorizationState after use");

    // 2. Replaying it is refused, both in simulation and as a mined transaction.
    await reverts(() => simulate("transferWithAuthorization", [...argsOf(auth1), ...vrs(sig1)]),
        "FiatTokenV2: authorization is used or canceled", "replayed authorization");
    const replayHash = await relayerWallet.writeContract({
        address: token, abi, functionName: "transferWithAuthorization", args: [...argsOf(auth1), ...vrs(sig1)], gas: 200_000n,
    });
    equal((await pub.waitForTransactionReceipt({ hash: replayHash })).status, "reverted", "mined replay reverts");
    note("EVM: transferWithAuthorization (v,r,s) relayed by a third account; replay refused");

    // 3. The (bytes signature) overload.
    const auth2 = authorization({ value: 250_000n });
    await relay("transferWithAuthorization", [...argsOf(auth2), await sign(auth2)]);
    equal(await balance(payee), before.payee + 1_750_000n, "payee balance after bytes-signature transfer");

    // 4. A high-s twin of a valid signature (s' = n - s, v flipped) is refused in both forms.
    const auth3 = authorization();
    const { r, s, v } = parseSignature(await sign(auth3));
    const highS = toHex(SECP256K1_N - BigInt(s), { size: 32 });
    const flippedV = v === 27n ? 28 : 27;
    await reverts(() => simulate("transferWithAuthorization", [...argsOf(auth3), flippedV, r, highS]),
        "ECRecover: invalid signature 's' value", "high-s signature, (v, r, s) form");
    await reverts(() => simulate("transferWithAuthorization", [...argsOf(auth3), serializeSignature({ r, s: highS, v: BigInt(flippedV) })]),
        "ECRecover: invalid signature 's' value", "high-s signature, bytes form");
    await reverts(() => simulate("transferWithAuthorization", [...argsOf(auth3), 29, r, s]),
        "ECRecover: invalid signature 'v' value", "v outside {27, 28}");

    // 5. Expired, not-yet-valid, wrong signer, wrong amount.
    const expired = authorization({ validBefore: now - 1n });
    await reverts(async () => simulate("transferWithAuthorization", [...argsOf(expired), await sign(expired)]),
        "FiatTokenV2: authorization is expired", "expired authorization");
    const early = authorization({ validAfter: now + 3000n });
    await reverts(async () => simulate("transferWithAuthorization", [...argsOf(early), await sign(early)]),
        "FiatTokenV2: authorization is not yet valid", "not-yet-valid authorization");
    const forged = authorization();
    await reverts(async () => simulate("transferWithAuthorization", [...argsOf(forged), await sign(forged, undefined, relayer)]),
        "FiatTokenV2: invalid signature", "authorization signed by someone else");
    const tampered = authorization();
    const tamperedSig = await sign(tampered);
    await reverts(() => simulate("transferWithAuthorization", [...argsOf({ ...tampered, value: 9_000_000n }), tamperedSig]),
        "FiatTokenV2: invalid signature", "amount changed after signing");
    const tooMuch = authorization({ value: 10n ** 18n });
    await reverts(async () => simulate("transferWithAuthorization", [...argsOf(tooMuch), await sign(tooMuch)]),
        "ERC20: transfer amount exceeds balance", "authorization above the balance");
    note("EVM: bytes-signature overload works; high-s, bad v, expired, early, forged, tampered and overdrawn refused");

    // 6. receiveWithAuthorization: only the payee may submit it.
    const auth4 = authorization({ value: 100_000n });
    const sig4 = await sign(auth4, "ReceiveWithAuthorization");
    await reverts(() => simulate("receiveWithAuthorization", [...argsOf(auth4), ...vrs(sig4)]),
        "FiatTokenV2: caller must be the payee", "receiveWithAuthorization from a third party");
    await relay("receiveWithAuthorization", [...argsOf(auth4), sig4], payeeWallet);
    equal(await balance(payee), before.payee + 1_850_000n, "payee balance after receiveWithAuthorization");

    // 7. cancelAuthorization burns a nonce; the transfer signed for it is then refused.
    const auth5 = authorization();
    const sig5 = await sign(auth5);
    const cancelSig = await payer.signTypedData({
        domain,
        types: { CancelAuthorization: [{ name: "authorizer", type: "address" }, { name: "nonce", type: "bytes32" }] },
        primaryType: "CancelAuthorization",
        message: { authorizer: payer.address, nonce: auth5.nonce },
    });
    const cancelReceipt = await relay("cancelAuthorization", [payer.address, auth5.nonce, ...vrs(cancelSig)]);
    check(parseEventLogs({ abi, logs: cancelReceipt.logs }).some((e) => e.eventName === "AuthorizationCanceled"), "AuthorizationCanceled emitted");
    await reverts(() => simulate("transferWithAuthorization", [...argsOf(auth5), sig5]),
        "FiatTokenV2: authorization is used or canceled", "canceled authorization");
    note("EVM: receiveWithAuthorization (payee only) and cancelAuthorization work");

    return { usedNonce: auth1.nonce };
}

// ---------------------------------------------------------------- Solana checks

async function solanaChecks(sol) {
    const rpc = createSolanaRpc(sol.rpcUrl);
    const rpcSubscriptions = createSolanaRpcSubscriptions(sol.wsUrl);
    const sendAndConfirm = sendAndConfirmTransactionFactory({ rpc, rpcSubscriptions });
    const [w0, w1] = sol.wallets;
    const owner = await createKeyPairSignerFromBytes(getBase58Encoder().encode(w0.secretKey));
    equal(owner.address, w0.address, "wallet 0 secret key matches its address");
    const amount = 2_500_000n;

    const parsedMint = (await rpc.getAccountInfo(address(sol.mint), { encoding: "jsonParsed" }).send()).value;
    equal(parsedMint.data.parsed.info.decimals, 6, "mint decimals");
    equal(parsedMint.owner, "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", "mint owned by the Token program");
    equal(parsedMint.data.parsed.info.mintAuthority, sol.mintAuthority.address, "mint authority");

    const balanceOf = async (ata) => BigInt((await rpc.getTokenAccountBalance(address(ata)).send()).value.amount);
    const before0 = await balanceOf(w0.ata);
    const before1 = await balanceOf(w1.ata);

    const { value: blockhash } = await rpc.getLatestBlockhash().send();
    const message = pipe(
        createTransactionMessage({ version: 0 }),
        (m) => setTransactionMessageFeePayerSigner(owner, m),
        (m) => setTransactionMessageLifetimeUsingBlockhash(blockhash, m),
        (m) => appendTransactionMessageInstructions([
            getTransferCheckedInstruction({
                source: address(w0.ata),
                mint: address(sol.mint),
                destination: address(w1.ata),
                authority: owner,
                amount,
                decimals: 6,
            }),
        ], m),
    );
    const tx = await signTransactionMessageWithSigners(message);
    await sendAndConfirm(tx, { commitment: "confirmed" });
    const signature = getSignatureFromTransaction(tx);

    equal(await balanceOf(w0.ata), before0 - amount, "wallet 0 ATA after TransferChecked");
    equal(await balanceOf(w1.ata), before1 + amount, "wallet 1 ATA after TransferChecked");

    const fetched = await rpc
        .getTransaction(signature, { encoding: "jsonParsed", maxSupportedTransactionVersion: 0, commitment: "confirmed" })
        .send();
    check(fetched && fetched.meta && fetched.meta.err === null, "getTransaction finds the successful transaction");
    const tokenBalance = (list, owner) => list.find((b) => b.mint === sol.mint && b.owner === owner)?.uiTokenAmount.amount;
    equal(tokenBalance(fetched.meta.preTokenBalances, w0.address), before0.toString(), "preTokenBalances of wallet 0");
    equal(tokenBalance(fetched.meta.postTokenBalances, w0.address), (before0 - amount).toString(), "postTokenBalances of wallet 0");
    equal(tokenBalance(fetched.meta.preTokenBalances, w1.address), before1.toString(), "preTokenBalances of wallet 1");
    equal(tokenBalance(fetched.meta.postTokenBalances, w1.address), (before1 + amount).toString(), "postTokenBalances of wallet 1");
    const ix = fetched.transaction.message.instructions[0];
    check(ix.parsed?.type === "transferChecked" && ix.parsed.info.tokenAmount.amount === amount.toString(), "parsed instruction is transferChecked");
    note(`Solana: TransferChecked of 2.5 tokens confirmed over ${sol.wsUrl.split(":")[0]}, balances and pre/post token balances agree`);
}

// ---------------------------------------------------------------- main

async function main() {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "devchain-selftest-"));
    const stateDir = path.join(dir, "state");
    const outFile = path.join(dir, "devchain.json");
    const args = ["--out", outFile, "--state-dir", stateDir, "--anvil-state", path.join(stateDir, "anvil-state.json")];
    const launchers = [];
    try {
        // First start: fresh state.
        const first = await startLauncher(args);
        launchers.push(first);
        note(`launcher READY in ${first.ms} ms (fresh state: compile, deploy, mint)`);
        const { evm, solana } = first.info;
        check(evm && solana, "both chain sections present");
        equal(evm.chainId, 84532, "evm.chainId");
        equal(evm.network, "eip155:84532", "evm.network");
        equal(evm.accounts.length, 9, "nine funded EVM accounts");
        check(evm.accounts.every((a) => a.usdc === "1000000000000"), "each EVM account holds 1,000,000 USDC");
        equal(solana.wallets.length, 3, "three Solana wallets");
        check(solana.wallets.every((w) => w.tokens === "1000000000000"), "each wallet holds 1,000,000 tokens");
        check(/^solana:[1-9A-HJ-NP-Za-km-z]{32}$/.test(solana.network), "solana.network is a CAIP-2 id");

        const { abi } = compileTestUSDC(stateDir); // read from the launcher's cache
        const { usedNonce } = await evmChecks(evm, abi);
        await solanaChecks(solana);

        // Remember the EVM state, restart on the same state dir, compare.
        const { pub } = evmClients(evm);
        const balancesBefore = await Promise.all(evm.accounts.map((a) =>
            pub.readContract({ address: evm.token, abi, functionName: "balanceOf", args: [a.address] })));
        equal(await stopLauncher(first), 0, "launcher exit code after SIGTERM");
        check(!processAlive(evm.anvilPid), "anvil stopped with the launcher");
        check(fs.existsSync(path.join(stateDir, "anvil-state.json")), "anvil dumped its state on SIGTERM");

        const second = await startLauncher(args);
        launchers.push(second);
        note(`launcher READY again in ${second.ms} ms (restored state)`);
        const evm2 = second.info.evm;
        const sol2 = second.info.solana;
        equal(evm2.token, evm.token, "token address after restart");
        equal(sol2.mint, solana.mint, "mint address after restart");
        equal(sol2.mintAuthority.address, solana.mintAuthority.address, "mint authority after restart");
        equal(sol2.payer.address, solana.payer.address, "Solana payer after restart");
        check(sol2.wallets.every((w, i) => w.address === solana.wallets[i].address && w.ata === solana.wallets[i].ata), "Solana wallets after restart");
        check(second.stderr().includes("already deployed"), "token reused, not redeployed");
        const c2 = evmClients(evm2);
        const balancesAfter = await Promise.all(evm2.accounts.map((a) =>
            c2.pub.readContract({ address: evm2.token, abi, functionName: "balanceOf", args: [a.address] })));
        for (let i = 0; i < balancesBefore.length; i++) {
            equal(balancesAfter[i], balancesBefore[i], `account ${i + 1} balance survives the restart`);
            equal(evm2.accounts[i].usdc, balancesBefore[i].toString(), `devchain JSON reports account ${i + 1}'s balance`);
        }
        equal(await c2.pub.readContract({ address: evm2.token, abi, functionName: "authorizationState", args: [evm.accounts[0].address, usedNonce] }),
            true, "used nonce still used after restart");
        check(balancesAfter[0] !== 1_000_000_000_000n, "restart did not re-mint");
        note("restart: same token and mint addresses, EVM balances and used nonces preserved");

        equal(await stopLauncher(second), 0, "launcher exit code after second SIGTERM");
        check(!processAlive(evm2.anvilPid), "second anvil stopped with the launcher");
        equal(anvilsMentioning(dir).length, 0, "no anvil from this test left running");
        note("stop: launcher exited 0, no anvil left");
    } catch (err) {
        for (const l of launchers) {
            if (l.child.exitCode === null) l.child.kill("SIGTERM");
        }
        process.stderr.write(`selftest: FAILED after ${checks} checks: ${err.stack || err}\n`);
        for (const l of launchers) process.stderr.write(`--- launcher stderr ---\n${l.stderr()}`);
        process.stderr.write(`selftest: state kept in ${dir}\n`);
        process.exit(1);
    }
    if (!keep) fs.rmSync(dir, { recursive: true, force: true });
    else note(`state kept in ${dir}`);
    process.stdout.write(`selftest: OK, ${checks} checks in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    process.exit(0); // the Solana WebSocket client would otherwise keep the loop alive
}

main();
