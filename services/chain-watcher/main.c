/* farebox-chain-watcher - finds USDC deposits to custodial deposit addresses
 * and has the ledger credit each exactly once.
 *
 *   configuration  the deposit seed, the EVM network, its RPC endpoints,
 *                  token, confirmation depth, scan sizes
 *   keys           watch_keys.c: BIP32 / SLIP-0010 deposit keys (public EVM
 *                  branch, Solana branch), the seed cleared after start
 *   evm            watch_evm.c: eth_getLogs scans, credits, cursor, reorgs
 *   solana         watch_svm.c: each deposit token account's signatures,
 *                  balance increases credited, a cursor per account
 *   rpc            watch_rpc.c: deposit_address, pending, status
 *   metrics        watch_metrics.c: Prometheus text on GET /metrics
 *   stop           SIGTERM: stop polling; credits in flight are idempotent
 *
 * Not built yet: the sweep command. Settlement transactions are followed by
 * the verifier's tracker. */
#include "fb_codec.h"
#include "fb_jsonrpc.h"
#include "fb_log.h"
#include "fb_service.h"
#include "fb_solana.h"
#include "fb_util.h"
#include "watch.h"
#include "fb_http.h"
#include "watch_evm.h"
#include "watch_metrics.h"
#include "watch_svm.h"
#include "watch_rpc.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

static watch_svm_t *s_svm(watcher_t *w, const fb_config_t *cfg)
{
    const char *net = fb_config_str(cfg, "FAREBOX_SOLANA_NETWORK");
    if (strcmp(net, "off") == 0)
        return NULL;
    if (strncmp(net, "solana:", 7) != 0 || strlen(net) > 60)
        fb_service_fail_config(
            "invalid configuration: FAREBOX_SOLANA_NETWORK: must be solana:<genesis hash prefix> or off");
    watch_svm_config_t c = {.network = net,
                            .rpc_urls = fb_config_str(cfg, "FAREBOX_SOLANA_RPC_URLS"),
                            .mint = fb_config_str(cfg, "FAREBOX_SOLANA_MINT"),
                            .genesis = fb_config_str(cfg, "FAREBOX_SOLANA_GENESIS_HASH"),
                            .commitment = fb_config_str(cfg, "FAREBOX_SOLANA_COMMITMENT"),
                            .poll_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_WATCH_POLL_MS"),
                            .timeout_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_CHAIN_TIMEOUT_MS"),
                            .signatures_max = (size_t)fb_config_int(cfg, "FAREBOX_SOLANA_SIGNATURES_MAX")};
    char err[256];
    watch_svm_t *svm = watch_svm_new(w, &c, err, sizeof(err));
    if (!svm) {
        char line[300];
        snprintf(line, sizeof(line), "invalid configuration: %s", err);
        fb_service_fail_config(line);
    }
    return svm;
}

static int s_seed(const char *value, uint8_t seed[FB_HD_SEED_MAX], size_t *len)
{
    size_t n = strlen(value);
    if (n >= 2 && value[0] == '0' && (value[1] == 'x' || value[1] == 'X'))
        value += 2, n -= 2;
    if (n % 2 || n / 2 < FB_HD_SEED_MIN || n / 2 > FB_HD_SEED_MAX ||
        fb_hex_decode(seed, n / 2, value, n) != 0)
        return -1;
    *len = n / 2;
    return 0;
}

static int s_check_seed(const char *value, char *err, size_t errlen)
{
    uint8_t seed[FB_HD_SEED_MAX];
    size_t len;
    int rc = s_seed(value, seed, &len);
    sodium_memzero(seed, sizeof(seed));
    if (rc != 0)
        snprintf(err, errlen, "must be 16..64 bytes in hex (a BIP32 master seed)");
    return rc;
}

static const fb_config_var_t s_vars[] = {
    {"FAREBOX_DEPOSIT_SEED", FB_CFG_SECRET, "", 0, 0, NULL, s_check_seed,
     "master seed of the deposit keys, hex (16..64 bytes; empty: addresses cannot be made)"},
    {"FAREBOX_DEPOSIT_EVM_XPUB", FB_CFG_STRING, "", 0, 0, NULL, NULL,
     "instead of the seed: the public EVM branch m/44'/60'/0'/0 (farebox-sweep keys)"},
    {"FAREBOX_DEPOSIT_SOLANA_NODE", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "with FAREBOX_DEPOSIT_EVM_XPUB: the Solana branch m/44'/501' (farebox-sweep keys)"},
    {"FAREBOX_EVM_NETWORK", FB_CFG_STRING, "eip155:84532", 0, 0, NULL, NULL,
     "CAIP-2 id of the EVM network watched for deposits, or \"off\""},
    {"FAREBOX_EVM_RPC_URLS", FB_CFG_STRING, "http://127.0.0.1:8545", 0, 0, NULL, fb_jsonrpc_check_urls,
     "JSON-RPC endpoints of the EVM network, comma-separated (failover)"},
    {"FAREBOX_EVM_TOKEN", FB_CFG_STRING, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", 0, 0, NULL, NULL,
     "the USDC contract whose Transfer events are deposits"},
    {"FAREBOX_EVM_CONFIRMATIONS", FB_CFG_STRING, "10", 0, 0, NULL, NULL,
     "confirmations a deposit needs (its own block counts as 1), or the \"safe\" / \"finalized\" block"},
    {"FAREBOX_EVM_START_BLOCK", FB_CFG_STRING, "latest", 0, 0, NULL, NULL,
     "first block scanned on a network never scanned before: \"latest\" (the confirmed head) or a number"},
    {"FAREBOX_EVM_LOG_RANGE", FB_CFG_INT, "2000", 1, 1000000, NULL, NULL,
     "blocks per eth_getLogs at most (halves on a provider's refusal, grows back)"},
    {"FAREBOX_EVM_ADDRESSES_PER_CALL", FB_CFG_INT, "1000", 1, 10000, NULL, NULL,
     "deposit addresses per eth_getLogs call"},
    {"FAREBOX_METRICS_LISTEN", FB_CFG_STRING, "", 0, 0, NULL, fb_http_check_hostport,
     "HOST:PORT of the Prometheus /metrics listener (empty: none)"},
    {"FAREBOX_WATCH_POLL_MS", FB_CFG_INT, "2000", 50, 600000, NULL, NULL,
     "pause between polls when caught up"},
    {"FAREBOX_CHAIN_TIMEOUT_MS", FB_CFG_INT, "10000", 100, 120000, NULL, NULL,
     "timeout of one chain JSON-RPC attempt"},
    {"FAREBOX_SOLANA_NETWORK", FB_CFG_STRING, "off", 0, 0, NULL, NULL,
     "CAIP-2 id of the Solana network (\"off\": no Solana)"},
    {"FAREBOX_SOLANA_RPC_URLS", FB_CFG_STRING, "http://127.0.0.1:8899", 0, 0, NULL, fb_jsonrpc_check_urls,
     "JSON-RPC endpoints of the Solana network, comma-separated (failover)"},
    {"FAREBOX_SOLANA_COMMITMENT", FB_CFG_ENUM, "finalized", 0, 0, "finalized|confirmed", NULL,
     "commitment a Solana deposit needs before it is credited"},
    {"FAREBOX_SOLANA_MINT", FB_CFG_STRING, "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", 0, 0, NULL, NULL,
     "the USDC mint: deposit token accounts are its associated token accounts"},
    {"FAREBOX_SOLANA_GENESIS_HASH", FB_CFG_STRING, "", 0, 0, NULL, NULL,
     "the genesis hash the Solana endpoints must answer (getGenesisHash, asked again each minute; "
     "another: nothing is scanned). Unset: mainnet's when FAREBOX_SOLANA_NETWORK is mainnet's id, which no "
     "other cluster can serve under; no check for another id (devnet, testnet, a local validator under a "
     "borrowed id)"},
    {"FAREBOX_SOLANA_SIGNATURES_MAX", FB_CFG_INT, "20000", 1, 1000000, NULL, NULL,
     "new transactions of one deposit account handled in one poll, the oldest first (a flood of transfers to "
     "an "
     "address delays its deposits by polls, never stops them)"},
};

static const fb_service_def_t s_def = {
    .name = "chain-watcher",
    .summary = "USDC deposit detection on Base and Solana",
    .rpc_bind = "tcp://127.0.0.1:7130-7139",
    .peers = FB_PEER_LEDGER,
    .vars = s_vars,
    .var_count = sizeof(s_vars) / sizeof(s_vars[0]),
};

static watch_keys_t *s_keys(const fb_config_t *cfg)
{
    const char *text = fb_config_str(cfg, "FAREBOX_DEPOSIT_SEED");
    const char *xpub = fb_config_str(cfg, "FAREBOX_DEPOSIT_EVM_XPUB");
    const char *node = fb_config_str(cfg, "FAREBOX_DEPOSIT_SOLANA_NODE");
    if (text[0] && (xpub[0] || node[0]))
        fb_service_fail_config(
            "invalid configuration: FAREBOX_DEPOSIT_SEED: give the seed or the two branches "
            "(FAREBOX_DEPOSIT_EVM_XPUB, FAREBOX_DEPOSIT_SOLANA_NODE), not both");
    if (xpub[0] || node[0]) {
        watch_keys_t *keys = xpub[0] && node[0] ? watch_keys_from_branches(xpub, node) : NULL;
        if (!keys)
            fb_service_fail_config(
                "invalid configuration: FAREBOX_DEPOSIT_EVM_XPUB / FAREBOX_DEPOSIT_SOLANA_NODE: "
                "both are needed, as farebox-sweep keys prints them");
        return keys;
    }
    if (!text[0])
        return NULL;
    uint8_t seed[FB_HD_SEED_MAX];
    size_t len = 0;
    FB_ASSERT(s_seed(text, seed, &len) == 0); /* checked at load */
    watch_keys_t *keys = watch_keys_new(seed, len);
    sodium_memzero(seed, sizeof(seed));
    if (!keys)
        fb_service_fail_config("invalid configuration: FAREBOX_DEPOSIT_SEED: the seed gives an invalid BIP32 "
                               "master key; use another");
    return keys;
}

static watch_evm_t *s_evm(watcher_t *w, const fb_config_t *cfg)
{
    const char *net = fb_config_str(cfg, "FAREBOX_EVM_NETWORK");
    if (strcmp(net, "off") == 0)
        return NULL;
    if (strncmp(net, "eip155:", 7) != 0 || strlen(net) > 40)
        fb_service_fail_config(
            "invalid configuration: FAREBOX_EVM_NETWORK: must be eip155:<chain id> or off");
    watch_evm_config_t c = {.network = net,
                            .rpc_urls = fb_config_str(cfg, "FAREBOX_EVM_RPC_URLS"),
                            .token = fb_config_str(cfg, "FAREBOX_EVM_TOKEN"),
                            .confirm = fb_config_str(cfg, "FAREBOX_EVM_CONFIRMATIONS"),
                            .start = fb_config_str(cfg, "FAREBOX_EVM_START_BLOCK"),
                            .range_max = (uint32_t)fb_config_int(cfg, "FAREBOX_EVM_LOG_RANGE"),
                            .per_call = (uint32_t)fb_config_int(cfg, "FAREBOX_EVM_ADDRESSES_PER_CALL"),
                            .poll_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_WATCH_POLL_MS"),
                            .timeout_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_CHAIN_TIMEOUT_MS")};
    char err[256];
    watch_evm_t *evm = watch_evm_new(w, &c, err, sizeof(err));
    if (!evm) {
        char line[300];
        snprintf(line, sizeof(line), "invalid configuration: %s", err);
        fb_service_fail_config(line);
    }
    return evm;
}

int main(int argc, char **argv)
{
    FB_ASSERT(sodium_init() >= 0);
    fb_service_t *svc = fb_service_new(argc, argv, &s_def);
    const fb_config_t *cfg = fb_service_config(svc);
    watcher_t w = {0};
    w.loop = fb_service_loop(svc);
    snprintf(w.replica, sizeof(w.replica), "%s", fb_service_replica(svc));
    w.keys = s_keys(cfg);
    if (strcmp(fb_config_str(cfg, "FAREBOX_SOLANA_NETWORK"), "off") != 0)
        snprintf(w.solana_mint, sizeof(w.solana_mint), "%s", fb_config_str(cfg, "FAREBOX_SOLANA_MINT"));
    w.ledger = fb_service_client(svc, FB_PEER_LEDGER, w.loop);
    w.evm = s_evm(&w, cfg);
    w.svm = s_svm(&w, cfg);
    watch_rpc_register(fb_service_rpc(svc), &w);
    watch_metrics_t *metrics = NULL;
    const char *listen = fb_config_str(cfg, "FAREBOX_METRICS_LISTEN");
    if (listen[0]) {
        char err[256], line[320];
        if (!(metrics = watch_metrics_new(&w, listen, err, sizeof(err)))) {
            snprintf(line, sizeof(line), "invalid configuration: FAREBOX_METRICS_LISTEN: %s", err);
            fb_service_fail_config(line);
        }
    }

    int code = fb_service_run(svc);

    watch_metrics_destroy(&metrics);
    if (w.evm)
        watch_evm_stop(w.evm);
    if (w.svm)
        watch_svm_stop(w.svm);
    fb_rpc_client_destroy(&w.ledger);
    watch_evm_destroy(&w.evm);
    watch_svm_destroy(&w.svm);
    watch_keys_destroy(&w.keys);
    fb_service_destroy(&svc);
    return code;
}
