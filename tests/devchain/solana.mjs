// solana.mjs - the Solana half of the dev chains: a surfpool node with a 6-decimal test token.
//
// Surfpool's Node SDK (@solana/surfpool-linux-x64-gnu) embeds a Solana runtime with a real JSON-RPC
// and WebSocket server inside this process, offline. startSolana() starts it and then, with real
// transactions through its RPC:
//   - creates an SPL mint owned by the classic Token program (createAccount + initializeMint2),
//   - mints 1,000,000 tokens into the associated token account of each of 3 test wallets (MintToChecked),
// so mint supply, balances and transaction history are what the Token program itself produced.
//
// Two things are done with Surfnet cheatcodes because this surfpool build lacks them offline:
//   - SOL for the payer and the wallets (fundSol; there is no faucet besides the payer);
//   - the wallets' associated token accounts (fundToken with amount 0): the Associated Token Account
//     program is not loaded in an offline surfnet, so its CreateIdempotent instruction cannot run.
//
// Surfnet state lives in memory only: every start is a fresh chain with a new genesis hash. What is
// stable across restarts is the keys, which live in STATE_DIR/solana-keys.json, so the mint address,
// its authority, the fee payer and the wallets keep their addresses.

import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import {
    address,
    appendTransactionMessageInstructions,
    createKeyPairSignerFromBytes,
    createSolanaRpc,
    createTransactionMessage,
    getBase58Decoder,
    getBase58Encoder,
    getBase64EncodedWireTransaction,
    getSignatureFromTransaction,
    pipe,
    setTransactionMessageFeePayerSigner,
    setTransactionMessageLifetimeUsingBlockhash,
    signTransactionMessageWithSigners,
} from "@solana/kit";
import {
    TOKEN_PROGRAM_ADDRESS,
    findAssociatedTokenPda,
    getCreateMintInstructionPlan,
    getMintSize,
    getMintToCheckedInstruction,
} from "@solana-program/token";
import { writeJsonAtomic } from "./util.mjs";

const require = createRequire(import.meta.url);

export const TOKEN_DECIMALS = 6;
/** Minted to each wallet: 1,000,000 tokens in atomic units. */
export const WALLET_TOKENS = 1_000_000n * 10n ** 6n;
const WALLET_COUNT = 3;
const WALLET_LAMPORTS = 100n * 10n ** 9n; // 100 SOL per wallet, for fees when a wallet pays
const PAYER_LAMPORTS = 1_000n * 10n ** 9n; // 1,000 SOL for the fee payer (a facilitator's fee payer)
/** x402's CAIP-2 id for Solana devnet; @x402/svm accepts only mainnet/devnet/testnet ids. */
export const SOLANA_DEVNET_CAIP2 = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";

const b58encode = (bytes) => getBase58Decoder().decode(bytes); // bytes -> base58 text
const b58decode = (text) => getBase58Encoder().encode(text); // base58 text -> bytes

/** Loads the surfpool SDK's Surfnet class (a native addon, CommonJS only). */
export function surfnetClass() {
    return require("@solana/surfpool-linux-x64-gnu").Surfnet;
}

/** A fresh ed25519 keypair as {address, secretKey: Uint8Array(64)} (seed || public key). */
function newKeypair(Surfnet) {
    const kp = Surfnet.newKeypair();
    return { address: kp.publicKey, secretKey: Uint8Array.from(kp.secretKey) };
}

/**
 * Reads the keys kept in `stateDir`, creating and saving whatever is missing.
 * Without a state dir every key is fresh.
 *
 * @returns {{payer, mint, mintAuthority, wallets: object[]}} each {address, secretKey: Uint8Array}.
 */
function loadOrCreateKeys(Surfnet, stateDir) {
    const file = stateDir ? path.join(stateDir, "solana-keys.json") : undefined;
    let saved = {};
    if (file && fs.existsSync(file)) saved = JSON.parse(fs.readFileSync(file, "utf8"));

    const revive = (k) => (k ? { address: k.address, secretKey: b58decode(k.secretKey) } : newKeypair(Surfnet));
    const keys = {
        payer: revive(saved.payer),
        mint: revive(saved.mint),
        mintAuthority: revive(saved.mintAuthority),
        wallets: Array.from({ length: WALLET_COUNT }, (_, i) => revive(saved.wallets?.[i])),
    };
    if (file) {
        const dump = (k) => ({ address: k.address, secretKey: b58encode(k.secretKey) });
        writeJsonAtomic(file, {
            payer: dump(keys.payer),
            mint: dump(keys.mint),
            mintAuthority: dump(keys.mintAuthority),
            wallets: keys.wallets.map(dump),
        });
    }
    return keys;
}

/**
 * Signs and sends one transaction, then polls until it is confirmed.
 * (Polling over HTTP rather than a WebSocket subscription leaves no socket open in the launcher.)
 *
 * @returns {Promise<string>} the transaction signature.
 * @throws when the transaction fails or is not confirmed within 30 s.
 */
async function sendAndConfirm(rpc, feePayer, instructions) {
    const { value: blockhash } = await rpc.getLatestBlockhash({ commitment: "confirmed" }).send();
    const message = pipe(
        createTransactionMessage({ version: 0 }),
        (m) => setTransactionMessageFeePayerSigner(feePayer, m),
        (m) => setTransactionMessageLifetimeUsingBlockhash(blockhash, m),
        (m) => appendTransactionMessageInstructions(instructions, m),
    );
    const tx = await signTransactionMessageWithSigners(message);
    const signature = getSignatureFromTransaction(tx);
    await rpc
        .sendTransaction(getBase64EncodedWireTransaction(tx), { encoding: "base64", preflightCommitment: "confirmed" })
        .send();
    const deadline = Date.now() + 30_000;
    for (;;) {
        const { value } = await rpc.getSignatureStatuses([signature]).send();
        const status = value[0];
        if (status?.err) throw new Error(`transaction ${signature} failed: ${JSON.stringify(status.err)}`);
        if (status && (status.confirmationStatus === "confirmed" || status.confirmationStatus === "finalized")) {
            return signature;
        }
        if (Date.now() > deadline) throw new Error(`transaction ${signature} not confirmed within 30 s`);
        await new Promise((r) => setTimeout(r, 50));
    }
}

/**
 * Starts a surfnet and sets up the test token and wallets.
 *
 * @param {string|undefined} stateDir where keys are kept; fresh keys when undefined.
 * @param {(msg: string) => void} [log]
 * @returns {Promise<{net: object, info: object}>} `net` is the running Surfnet (call net.stop()),
 *          `info` the "solana" section of the devchain JSON.
 */
/**
 * Empties the SDK's event queue (one clock event per slot, more per transaction) every second: a
 * queue nobody drains fills after about a thousand slots and then stalls the node, RPC included.
 */
export function keepDraining(net) {
    const timer = setInterval(() => {
        try {
            net.drainEvents();
        } catch {
            clearInterval(timer); // stopped
        }
    }, 1000);
    timer.unref();
}

export async function startSolana(stateDir, log = () => {}) {
    const Surfnet = surfnetClass();
    const keys = loadOrCreateKeys(Surfnet, stateDir);

    // Offline (no remote RPC to clone accounts from); our saved payer becomes the pre-funded payer.
    const net = Surfnet.startWithConfig({ offline: true, payerSecretKey: Array.from(keys.payer.secretKey) });
    keepDraining(net);
    try {
        const info = await setupToken(net, keys, log);
        return { net, info };
    } catch (err) {
        try {
            net.stop();
        } catch {
            // already failing; keep the first error
        }
        throw err;
    }
}

async function setupToken(net, keys, log) {
    if (net.payer !== keys.payer.address) throw new Error(`surfnet payer is ${net.payer}, expected ${keys.payer.address}`);
    const rpc = createSolanaRpc(net.rpcUrl);
    const payer = await createKeyPairSignerFromBytes(keys.payer.secretKey);
    const mint = await createKeyPairSignerFromBytes(keys.mint.secretKey);
    const mintAuthority = await createKeyPairSignerFromBytes(keys.mintAuthority.secretKey);

    net.fundSolMany([
        { address: keys.payer.address, lamports: Number(PAYER_LAMPORTS) },
        ...keys.wallets.map((w) => ({ address: w.address, lamports: Number(WALLET_LAMPORTS) })),
    ]);

    // The mint: a rent-exempt 82-byte account owned by the Token program, initialised with 6
    // decimals, our mint authority and no freeze authority.
    const existing = await rpc.getAccountInfo(mint.address, { encoding: "base64" }).send();
    if (!existing.value) {
        const rent = await rpc.getMinimumBalanceForRentExemption(BigInt(getMintSize())).send();
        const plan = getCreateMintInstructionPlan({
            payer,
            newMint: mint,
            decimals: TOKEN_DECIMALS,
            mintAuthority: mintAuthority.address,
            mintAccountLamports: rent,
        });
        await sendAndConfirm(rpc, payer, plan.plans.map((p) => p.instruction));
    }
    const parsed = (await rpc.getAccountInfo(mint.address, { encoding: "jsonParsed" }).send()).value;
    const mintInfo = parsed?.data?.parsed?.info;
    if (parsed?.owner !== TOKEN_PROGRAM_ADDRESS || mintInfo?.decimals !== TOKEN_DECIMALS ||
        mintInfo?.mintAuthority !== mintAuthority.address) {
        throw new Error(`mint ${mint.address} is not the expected 6-decimal Token mint: ${JSON.stringify(parsed?.data)}`);
    }

    // The wallets' associated token accounts (created empty by cheatcode, see the header), then one
    // MintToChecked per wallet that holds less than WALLET_TOKENS, all in one transaction.
    const wallets = [];
    const mintTo = [];
    for (const w of keys.wallets) {
        const [ata] = await findAssociatedTokenPda({ mint: mint.address, owner: address(w.address), tokenProgram: TOKEN_PROGRAM_ADDRESS });
        const sdkAta = net.getAta(w.address, mint.address);
        if (sdkAta !== ata) throw new Error(`surfnet derives ATA ${sdkAta}, @solana-program/token ${ata}`);
        const account = await rpc.getAccountInfo(ata, { encoding: "base64" }).send();
        if (!account.value) net.fundToken(w.address, mint.address, 0);
        const { value: balance } = await rpc.getTokenAccountBalance(ata).send();
        if (BigInt(balance.amount) < WALLET_TOKENS) {
            mintTo.push(
                getMintToCheckedInstruction({
                    mint: mint.address,
                    token: ata,
                    mintAuthority,
                    amount: WALLET_TOKENS - BigInt(balance.amount),
                    decimals: TOKEN_DECIMALS,
                }),
            );
        }
        wallets.push({ ...w, ata });
    }
    if (mintTo.length) await sendAndConfirm(rpc, payer, mintTo);
    for (const w of wallets) {
        const { value } = await rpc.getTokenAccountBalance(w.ata).send();
        if (BigInt(value.amount) < WALLET_TOKENS) throw new Error(`ATA ${w.ata} holds ${value.amount} after minting`);
        w.tokens = value.amount;
    }
    log(`mint ${mint.address} ready, ${wallets.length} wallets funded`);

    // A CAIP-2 Solana id is "solana:" + the first 32 characters of the base58 genesis hash.
    const genesisHash = await rpc.getGenesisHash().send();
    const dump = (k) => ({ address: k.address, secretKey: b58encode(k.secretKey) });
    return {
        rpcUrl: net.rpcUrl,
        wsUrl: net.wsUrl,
        network: `solana:${genesisHash.slice(0, 32)}`,
        genesisHash,
        x402Network: SOLANA_DEVNET_CAIP2,
        mint: mint.address,
        tokenProgram: TOKEN_PROGRAM_ADDRESS,
        decimals: TOKEN_DECIMALS,
        mintAuthority: dump(keys.mintAuthority),
        payer: dump(keys.payer),
        wallets: wallets.map((w) => ({ ...dump(w), ata: w.ata, tokens: w.tokens })),
    };
}
