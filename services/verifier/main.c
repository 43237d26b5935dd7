/* farebox-verifier - checks and settles x402 payments.
 *
 *   configuration  networks, tokens, chain RPC endpoints, settlement keys
 *   schemes        evm_exact.c + verifier_evm.c (EIP-3009), verifier_svm.c
 *   messages       message_proof.c + verifier_message.c: signed-message proofs
 *   rpc            verifier_rpc.c: verify, settle, supported, verify_message
 *   tracker        follows settlements left pending, in every replica
 *   stop           SIGTERM: stop taking calls, exit */
#include "fb_codec.h"
#include "fb_evm.h"
#include "fb_jsonrpc.h"
#include "fb_log.h"
#include "fb_secp.h"
#include "fb_solana.h"
#include "fb_service.h"
#include "fb_util.h"
#include "verifier.h"
#include "verifier_internal.h"
#include "verifier_rpc.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

/* The verifier's chain calls answer a few kilobytes (a latest block's header
 * with its transaction hashes at most): a larger answer is a broken node, not
 * parsed (a JSON document takes ~20 times its text in memory). */
#define CHAIN_ANSWER_MAX (2u << 20)

static int s_check_key_hex(const char *value, char *err, size_t errlen)
{
    uint8_t k[32];
    if (fb_hex_decode(k, 32, value, strlen(value)) != 0) {
        snprintf(err, errlen, "must be a 32-byte secp256k1 secret key in hex (0x optional)");
        return -1;
    }
    fb_addr_t a;
    int rc = fb_secp_address(&a, k);
    sodium_memzero(k, sizeof(k));
    if (rc != 0) {
        snprintf(err, errlen, "is not a valid secp256k1 secret key");
        return -1;
    }
    return 0;
}

static int s_check_sol_key(const char *value, char *err, size_t errlen)
{
    fb_sol_key_t k;
    if (fb_sol_key_parse(&k, value, strlen(value)) != 0) {
        snprintf(err, errlen, "must be a base58 Solana address");
        return -1;
    }
    return 0;
}

/* A Solana secret key: 64 bytes, the seed then the public key it derives. */
static int s_check_sol_secret(const char *value, char *err, size_t errlen)
{
    uint8_t secret[64];
    int rc = fb_sol_secret_parse(secret, NULL, value);
    sodium_memzero(secret, sizeof(secret));
    if (rc != 0)
        snprintf(err, errlen,
                 "must be a 64-byte ed25519 secret key (seed then public key): base58, or a JSON "
                 "array of the bytes as solana-keygen writes it");
    return rc;
}

static const fb_config_var_t s_vars[] = {
    {"FAREBOX_EVM_NETWORK", FB_CFG_STRING, "eip155:84532", 0, 0, NULL, NULL,
     "CAIP-2 id of the EVM chain served, or off"},
    {"FAREBOX_EVM_RPC_URLS", FB_CFG_STRING, "http://127.0.0.1:8545", 0, 0, NULL, fb_jsonrpc_check_urls,
     "JSON-RPC endpoints of that chain, comma-separated, tried in order with failover"},
    {"FAREBOX_EVM_TOKEN", FB_CFG_STRING, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", 0, 0, NULL, NULL,
     "the EIP-3009 token accepted (default: Base Sepolia USDC)"},
    {"FAREBOX_EVM_TOKEN_NAME", FB_CFG_STRING, "USDC", 0, 0, NULL, NULL, "the token's EIP-712 domain name"},
    {"FAREBOX_EVM_TOKEN_VERSION", FB_CFG_STRING, "2", 0, 0, NULL, NULL, "the token's EIP-712 domain version"},
    {"FAREBOX_SETTLEMENT_KEY", FB_CFG_SECRET, "", 0, 0, NULL, s_check_key_hex,
     "secret key (hex) of the wallet that submits settlements and pays their gas (unset: verify only)"},
    {"FAREBOX_EVM_SETTLE_GAS", FB_CFG_INT, "150000", 50000, 2000000, NULL, NULL, "gas limit of a settlement"},
    {"FAREBOX_EVM_SETTLE_CONFIRMATIONS", FB_CFG_INT, "1", 1, 1000, NULL, NULL,
     "blocks a settlement's receipt (and any transaction that decided it) must be deep before it is "
     "confirmed or "
     "failed, its own block counting as one: settle keeps waiting for them, the tracker after it"},
    {"FAREBOX_EVM_REPRICE_AFTER_MS", FB_CFG_INT, "60000", 0, 86400000, NULL, NULL,
     "a settlement transaction next in its wallet's line, priced over the base fee and still not mined this "
     "long "
     "after it was signed, is replaced at its own nonce with its tip raised by an eighth (0: never)"},
    {"FAREBOX_EVM_TIP_MAX_WEI", FB_CFG_INT, "10000000000", 1, INT64_MAX, NULL, NULL,
     "the highest tip (wei per gas) a settlement transaction offers: a node's suggested tip is capped to it, "
     "and a re-priced one goes no higher (past it, it waits as it is)"},
    {"FAREBOX_EVM_VALID_BEFORE_MARGIN_S", FB_CFG_INT, "6", 0, 3600, NULL, NULL,
     "an authorization must stay valid at least this many seconds after now"},
    {"FAREBOX_VERIFY_CHAIN_CHECKS", FB_CFG_BOOL, "true", 0, 0, NULL, NULL,
     "verify asks the chain: authorization state, balance, code, simulation (false: only the signature, the "
     "payment's terms and the ledger's record of it are checked)"},
    {"FAREBOX_SETTLE_WAIT_MS", FB_CFG_INT, "30000", 1000, 50000, NULL, NULL,
     "settle waits this long for the receipt, then answers settlement_pending (at most 50 s: the edge "
     "gives a settle 60 s)"},
    {"FAREBOX_SOLANA_NETWORK", FB_CFG_STRING, "off", 0, 0, NULL, NULL,
     "CAIP-2 id of the Solana cluster served (devnet: solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1), or off"},
    {"FAREBOX_SOLANA_RPC_URLS", FB_CFG_STRING, "http://127.0.0.1:8899", 0, 0, NULL, fb_jsonrpc_check_urls,
     "Solana JSON-RPC endpoints, comma-separated, tried in order with failover"},
    {"FAREBOX_SOLANA_MINT", FB_CFG_STRING, "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", 0, 0, NULL,
     s_check_sol_key, "the SPL mint accepted (default: devnet USDC)"},
    {"FAREBOX_SOLANA_GENESIS_HASH", FB_CFG_STRING, "", 0, 0, NULL, NULL,
     "the genesis hash the Solana endpoints must answer (getGenesisHash, asked again each minute; "
     "another: verify and settle answer unavailable and pending settlements are left alone). Unset: "
     "mainnet's when FAREBOX_SOLANA_NETWORK is mainnet's id, which no other cluster can serve under; no "
     "check for another id (devnet, testnet, a local validator under a borrowed id)"},
    {"FAREBOX_SOLANA_FEE_PAYER_KEY", FB_CFG_SECRET, "", 0, 0, NULL, s_check_sol_secret,
     "64-byte secret key (base58, or solana-keygen's JSON array) of the fee payer that co-signs and pays "
     "for settlements (unset: verify only)"},
    {"FAREBOX_SOLANA_MAX_PRICE", FB_CFG_INT, "5000000", 0, 1000000000, NULL, NULL,
     "highest compute unit price (micro-lamports) the fee payer accepts to pay"},
    {"FAREBOX_SOLANA_MAX_FEE_LAMPORTS", FB_CFG_INT, "110000", 5000, 1000000000, NULL, NULL,
     "most lamports the fee payer pays for one settlement: 5,000 a signature plus the compute unit limit "
     "the payer asked at its price (Solana charges the limit, not the units used); the default lets two "
     "signatures and the x402 client's 20,000 units at the highest price through"},
    {"FAREBOX_MESSAGE_MAX_AGE_S", FB_CFG_INT, "300", 1, 86400, NULL, NULL,
     "signed-message proofs: the oldest timestamp accepted, in seconds before now"},
    {"FAREBOX_MESSAGE_MAX_SKEW_S", FB_CFG_INT, "60", 0, 3600, NULL, NULL,
     "signed-message proofs: how far ahead of this clock a timestamp may be"},
    {"FAREBOX_CHAIN_TIMEOUT_MS", FB_CFG_INT, "5000", 100, 120000, NULL, NULL,
     "timeout of one chain JSON-RPC call"},
};

static const fb_service_def_t s_def = {
    .name = "verifier",
    .summary = "verification and on-chain settlement of x402 payments",
    .rpc_bind = "tcp://127.0.0.1:7120-7129",
    .peers = FB_PEER_LEDGER,
    .vars = s_vars,
    .var_count = FB_ARRAY_SIZE(s_vars),
};

static void s_on_tracker(uv_timer_t *t)
{
    verifier_evm_track(t->data);
    verifier_svm_track(t->data);
}

/* With several endpoints, each one's chain is checked on its own and an
 * endpoint is used only once it answered the network's (fb_jsonrpc_check): the
 * per-call checks of verifier_evm.c and verifier_svm.c see only the endpoint
 * that answers them. One endpoint is left to those (they say what it serves). */
#define ENDPOINT_CHECK_MS 60000

static bool s_evm_chain_verdict(void *arg, json_t *result, char *why, size_t whylen)
{
    const verifier_evm_t *e = arg;
    const char *text = json_string_value(result);
    fb_u256_t n;
    uint64_t id = 0;
    if (!text || fb_u256_from_hex(&n, text, strlen(text)) != 0 || !fb_u256_to_u64(&n, &id)) {
        snprintf(why, whylen, "eth_chainId did not answer a quantity");
        return false;
    }
    if (id != e->chain_id) {
        snprintf(why, whylen, "it serves chain id %llu, not %llu", (unsigned long long)id,
                 (unsigned long long)e->chain_id);
        return false;
    }
    return true;
}

static bool s_svm_cluster_verdict(void *arg, json_t *result, char *why, size_t whylen)
{
    const verifier_svm_t *s = arg;
    const char *hash = json_string_value(result);
    if (hash && fb_sol_cluster_ok(s->caip2, s->genesis, hash))
        return true;
    snprintf(why, whylen, "its genesis hash is %.64s, not %s's", hash ? hash : "(not a string)",
             s->genesis[0] ? s->genesis : s->caip2);
    return false;
}

static void s_check_endpoints(fb_jsonrpc_t *rpc, const char *method, fb_jsonrpc_verdict_fn *verdict,
                              void *arg)
{
    fb_jsonrpc_endpoint_stat_t st[2];
    if (fb_jsonrpc_stats(rpc, st, 2) < 2)
        return;
    fb_jsonrpc_check_t check = {
        .method = method, .params = "[]", .verdict = verdict, .arg = arg, .every_ms = ENDPOINT_CHECK_MS};
    fb_jsonrpc_check(rpc, &check);
}

static void s_config_evm(verifier_t *v, const fb_config_t *cfg)
{
    verifier_evm_t *e = &v->evm;
    const char *net = fb_config_str(cfg, "FAREBOX_EVM_NETWORK");
    if (strcmp(net, "off") == 0)
        return;
    fb_x402_network_t n;
    if (fb_x402_network(net, &n) != 0 || n.family != FB_X402_EVM)
        fb_service_fail_config("invalid configuration: FAREBOX_EVM_NETWORK must be eip155:<chain id>");
    snprintf(e->caip2, sizeof(e->caip2), "%s", n.caip2);
    e->chain_id = n.chain_id;
    const char *token = fb_config_str(cfg, "FAREBOX_EVM_TOKEN");
    if (fb_addr_parse(&e->token, token, strlen(token)) != 0)
        fb_service_fail_config("invalid configuration: FAREBOX_EVM_TOKEN is not an EVM address");
    fb_addr_checksum(e->token_text, &e->token);
    snprintf(e->name, sizeof(e->name), "%s", fb_config_str(cfg, "FAREBOX_EVM_TOKEN_NAME"));
    snprintf(e->version, sizeof(e->version), "%s", fb_config_str(cfg, "FAREBOX_EVM_TOKEN_VERSION"));
    e->gas = (uint64_t)fb_config_int(cfg, "FAREBOX_EVM_SETTLE_GAS");
    e->confirmations = (uint64_t)fb_config_int(cfg, "FAREBOX_EVM_SETTLE_CONFIRMATIONS");
    e->reprice_after_ms = fb_config_int(cfg, "FAREBOX_EVM_REPRICE_AFTER_MS");
    e->tip_max = (uint64_t)fb_config_int(cfg, "FAREBOX_EVM_TIP_MAX_WEI");
    e->valid_before_margin_s = fb_config_int(cfg, "FAREBOX_EVM_VALID_BEFORE_MARGIN_S");
    const char *key = fb_config_str(cfg, "FAREBOX_SETTLEMENT_KEY");
    if (key[0]) {
        FB_ASSERT(fb_hex_decode(e->key, 32, key, strlen(key)) == 0);
        FB_ASSERT(fb_secp_address(&e->sender, e->key) == 0);
        fb_addr_checksum(e->sender_text, &e->sender);
        e->has_key = true;
        if (fb_evm_dev_account(&e->sender) && !fb_evm_test_chain(e->chain_id))
            fb_service_fail_config("invalid configuration: FAREBOX_SETTLEMENT_KEY is a public development "
                                   "account's key (anvil's), on a chain whose money is real");
    }
    fb_jsonrpc_config_t rc = {.chain = e->caip2,
                              .urls = fb_config_str(cfg, "FAREBOX_EVM_RPC_URLS"),
                              .timeout_ms = v->chain_timeout_ms,
                              .max_response = CHAIN_ANSWER_MAX};
    char err[256];
    e->rpc = fb_jsonrpc_new(v->loop, &rc, err, sizeof(err));
    if (!e->rpc)
        fb_service_fail_config("invalid configuration: FAREBOX_EVM_RPC_URLS");
    s_check_endpoints(e->rpc, "eth_chainId", s_evm_chain_verdict, e);
    fb_log(FB_LOG_INFO, NULL, "evm network served", "network=%s token=%s settlement_wallet=%s", e->caip2,
           e->token_text, e->has_key ? e->sender_text : "none");
}

static void s_config_svm(verifier_t *v, const fb_config_t *cfg)
{
    verifier_svm_t *s = &v->svm;
    const char *net = fb_config_str(cfg, "FAREBOX_SOLANA_NETWORK");
    if (strcmp(net, "off") == 0)
        return;
    fb_x402_network_t n;
    if (fb_x402_network(net, &n) != 0 || n.family != FB_X402_SVM)
        fb_service_fail_config(
            "invalid configuration: FAREBOX_SOLANA_NETWORK must be solana:<genesis hash prefix>");
    snprintf(s->caip2, sizeof(s->caip2), "%s", n.caip2);
    const char *genesis = fb_config_str(cfg, "FAREBOX_SOLANA_GENESIS_HASH"), *why;
    if (strlen(genesis) >= sizeof(s->genesis) || fb_sol_cluster_config(s->caip2, genesis, &why) != 0) {
        char line[300];
        snprintf(line, sizeof(line), "invalid configuration: FAREBOX_SOLANA_GENESIS_HASH: %s",
                 strlen(genesis) >= sizeof(s->genesis) ? "too long" : why);
        fb_service_fail_config(line);
    }
    snprintf(s->genesis, sizeof(s->genesis), "%s", genesis);
    s->cluster_check = fb_sol_cluster_checked(s->caip2, s->genesis);
    const char *mint = fb_config_str(cfg, "FAREBOX_SOLANA_MINT");
    FB_ASSERT(fb_sol_key_parse(&s->mint, mint, strlen(mint)) == 0);
    fb_sol_key_format(s->mint_text, &s->mint);
    s->limits.max_price = (uint64_t)fb_config_int(cfg, "FAREBOX_SOLANA_MAX_PRICE");
    s->limits.max_fee = (uint64_t)fb_config_int(cfg, "FAREBOX_SOLANA_MAX_FEE_LAMPORTS");
    const char *key = fb_config_str(cfg, "FAREBOX_SOLANA_FEE_PAYER_KEY");
    if (key[0]) {
        FB_ASSERT(fb_sol_secret_parse(s->secret, &s->fee_payer, key) == 0);
        fb_sol_key_format(s->fee_payer_text, &s->fee_payer);
        s->has_key = true;
    }
    fb_jsonrpc_config_t rc = {.chain = s->caip2,
                              .urls = fb_config_str(cfg, "FAREBOX_SOLANA_RPC_URLS"),
                              .timeout_ms = v->chain_timeout_ms,
                              .max_response = CHAIN_ANSWER_MAX};
    char err[256];
    s->rpc = fb_jsonrpc_new(v->loop, &rc, err, sizeof(err));
    if (!s->rpc)
        fb_service_fail_config("invalid configuration: FAREBOX_SOLANA_RPC_URLS");
    if (s->cluster_check)
        s_check_endpoints(s->rpc, "getGenesisHash", s_svm_cluster_verdict, s);
    fb_log(FB_LOG_INFO, NULL, "solana network served", "network=%s mint=%s fee_payer=%s", s->caip2,
           s->mint_text, s->has_key ? s->fee_payer_text : "none");
}

int main(int argc, char **argv)
{
    FB_ASSERT(sodium_init() >= 0);
    fb_service_t *svc = fb_service_new(argc, argv, &s_def);
    const fb_config_t *cfg = fb_service_config(svc);
    verifier_t v = {0};
    v.loop = fb_service_loop(svc);
    v.chain_checks = fb_config_bool(cfg, "FAREBOX_VERIFY_CHAIN_CHECKS");
    v.settle_wait_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_SETTLE_WAIT_MS");
    v.chain_timeout_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_CHAIN_TIMEOUT_MS");
    v.message_max_age_ms = fb_config_int(cfg, "FAREBOX_MESSAGE_MAX_AGE_S") * 1000;
    v.message_max_skew_ms = fb_config_int(cfg, "FAREBOX_MESSAGE_MAX_SKEW_S") * 1000;
    v.ledger = fb_service_client(svc, FB_PEER_LEDGER, v.loop);
    s_config_evm(&v, cfg);
    s_config_svm(&v, cfg);
    verifier_rpc_register(fb_service_rpc(svc), &v);
    uv_timer_init(v.loop, &v.tracker);
    v.tracker.data = &v;
    uv_timer_start(&v.tracker, s_on_tracker, 3000, 3000);

    int code = fb_service_run(svc);

    uv_close((uv_handle_t *)&v.tracker, NULL);
    fb_jsonrpc_destroy(&v.evm.rpc);
    fb_jsonrpc_destroy(&v.svm.rpc);
    fb_rpc_client_destroy(&v.ledger);
    sodium_memzero(v.evm.key, sizeof(v.evm.key));
    sodium_memzero(v.svm.secret, sizeof(v.svm.secret));
    fb_service_destroy(&svc);
    return code;
}
