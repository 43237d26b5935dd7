// compile.mjs - compiles contracts/TestUSDC.sol with solc-js, with an on-disk cache.
//
// solc-js (the `solc` npm package, 0.8.30) compiles offline from its bundled emscripten build; it is
// slow to load (~1 s) and to compile (~1-2 s), so the result is cached as JSON keyed by a hash of the
// source text, the compiler version and the settings. A restart with an unchanged source reads the
// cache and never loads the compiler.

import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));

/** Path of the token source inside the repository. */
export const TOKEN_SOURCE = path.resolve(here, "../../contracts/TestUSDC.sol");
const CONTRACT_NAME = "TestUSDC";

// Fixed settings: the runtime bytecode must be reproducible, because the launcher recognises an
// already deployed token by comparing its on-chain code with the compiled runtime code.
const SETTINGS = {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { [CONTRACT_NAME]: ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

/** The installed compiler's version string, read without loading the (large) compiler itself. */
function solcVersion() {
    return require("solc/package.json").version;
}

/**
 * Compiles TestUSDC.sol, or reads a cached result.
 *
 * @param {string|undefined} cacheDir directory for the cache file; no caching when undefined.
 * @returns {{abi: object[], bytecode: `0x${string}`, deployedBytecode: `0x${string}`, sourceHash: string, cached: boolean}}
 * @throws when the source does not compile (the message lists solc's errors).
 */
export function compileTestUSDC(cacheDir) {
    const source = fs.readFileSync(TOKEN_SOURCE, "utf8");
    const sourceHash = createHash("sha256")
        .update(source)
        .update("\0" + solcVersion() + "\0" + JSON.stringify(SETTINGS))
        .digest("hex");
    const cacheFile = cacheDir ? path.join(cacheDir, `TestUSDC.${sourceHash.slice(0, 16)}.json`) : undefined;

    if (cacheFile && fs.existsSync(cacheFile)) {
        try {
            const cached = JSON.parse(fs.readFileSync(cacheFile, "utf8"));
            if (cached.sourceHash === sourceHash) return { ...cached, cached: true };
        } catch {
            // A torn or foreign file: fall through and recompile over it.
        }
    }

    const solc = require("solc");
    const input = {
        language: "Solidity",
        sources: { "TestUSDC.sol": { content: source } },
        settings: SETTINGS,
    };
    const output = JSON.parse(solc.compile(JSON.stringify(input)));
    const errors = (output.errors || []).filter((e) => e.severity === "error");
    if (errors.length) {
        throw new Error("TestUSDC.sol does not compile:\n" + errors.map((e) => e.formattedMessage).join("\n"));
    }
    const contract = output.contracts["TestUSDC.sol"][CONTRACT_NAME];
    const result = {
        sourceHash,
        compiler: solc.version(),
        abi: contract.abi,
        bytecode: "0x" + contract.evm.bytecode.object,
        deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
    };
    if (cacheFile) {
        const tmp = `${cacheFile}.${process.pid}.tmp`;
        fs.writeFileSync(tmp, JSON.stringify(result));
        fs.renameSync(tmp, cacheFile);
    }
    return { ...result, cached: false };
}
