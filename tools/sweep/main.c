/* farebox-sweep - moves the USDC held by deposit addresses to the operator's
 * treasury. An offline operator command: it is the one place that reads the
 * deposit seed to sign with deposit keys.
 *
 *   farebox-sweep [--dry-run] [--chain evm|solana|all]
 *   farebox-sweep keys     the two branch nodes the chain-watcher can hold
 *                          instead of the seed (FAREBOX_DEPOSIT_EVM_XPUB:
 *                          public; FAREBOX_DEPOSIT_SOLANA_NODE: secret)
 *
 * Deposit addresses come from the ledger (ledger.deposit_addresses); each one
 * is derived from the seed again and skipped when it does not match.
 *   EVM     a gasless transferWithAuthorization (EIP-3009) of the whole
 *           balance, signed by the deposit key and submitted by the settlement
 *           wallet (FAREBOX_SETTLEMENT_KEY pays the gas) to FAREBOX_SWEEP_EVM_TO.
 *           The authorization nonce is keccak256("farebox-sweep", from, value,
 *           k) for the first k the token has not seen used: running the sweep
 *           again while a transfer is pending signs the same authorization,
 *           which the token accepts once.
 *   Solana  a TransferChecked of the whole balance from the deposit token
 *           account to the treasury's, signed by the deposit owner; the
 *           treasury (FAREBOX_SWEEP_SOLANA_PAYER_KEY) pays the fee.
 * Idempotent: what was swept has a zero balance and is not swept again.
 * --dry-run lists what would move and signs nothing. One JSON line per
 * address on stdout; exit 0 when every sweep succeeded, 1 when one failed,
 * 2 on a usage or configuration error. */
#include "fb_codec.h"
#include "fb_config.h"
#include "fb_eip712.h"
#include "fb_ethtx.h"
#include "fb_hdkey.h"
#include "fb_keccak.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_rpc_client.h"
#include "fb_secp.h"
#include "fb_solana.h"
#include "fb_util.h"

#include <curl/curl.h>
#include <czmq.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_MAX (16 << 20)
#define EVM_GAS    150000

static const fb_config_var_t s_vars[] = {
    {"FAREBOX_LEDGER_ENDPOINT", FB_CFG_STRING, "tcp://127.0.0.1:7110-7119", 0, 0, NULL, NULL,
     "where the ledger is (deposit addresses)"},
    {"FAREBOX_DEPOSIT_SEED", FB_CFG_SECRET, NULL, 0, 0, NULL, NULL, "master seed of the deposit keys, hex"},
    {"FAREBOX_EVM_NETWORK", FB_CFG_STRING, "off", 0, 0, NULL, NULL, "\"off\" skips EVM"},
    {"FAREBOX_EVM_RPC_URL", FB_CFG_STRING, "http://127.0.0.1:8545", 0, 0, NULL, NULL,
     "EVM JSON-RPC endpoint"},
    {"FAREBOX_EVM_TOKEN", FB_CFG_STRING, "", 0, 0, NULL, NULL, "the USDC contract"},
    {"FAREBOX_EVM_TOKEN_NAME", FB_CFG_STRING, "USDC", 0, 0, NULL, NULL, "its EIP-712 domain name"},
    {"FAREBOX_EVM_TOKEN_VERSION", FB_CFG_STRING, "2", 0, 0, NULL, NULL, "its EIP-712 domain version"},
    {"FAREBOX_SETTLEMENT_KEY", FB_CFG_SECRET, "", 0, 0, NULL, NULL, "the wallet that pays the gas, hex"},
    {"FAREBOX_SWEEP_EVM_TO", FB_CFG_STRING, "", 0, 0, NULL, NULL, "the EVM treasury"},
    {"FAREBOX_SOLANA_NETWORK", FB_CFG_STRING, "off", 0, 0, NULL, NULL, "\"off\" skips Solana"},
    {"FAREBOX_SOLANA_RPC_URL", FB_CFG_STRING, "http://127.0.0.1:8899", 0, 0, NULL, NULL,
     "Solana JSON-RPC endpoint"},
    {"FAREBOX_SOLANA_MINT", FB_CFG_STRING, "", 0, 0, NULL, NULL, "the USDC mint"},
    {"FAREBOX_SWEEP_SOLANA_PAYER_KEY", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "the Solana treasury's keypair (base58, or solana-keygen's JSON array): receives, pays the fee"},
    {"FAREBOX_SWEEP_MIN_MICRO", FB_CFG_INT, "1", 1, INT64_MAX, NULL, NULL, "smallest balance swept"},
};

typedef struct {
    bool dry_run;
    const fb_config_t *cfg;
    fb_hd_node_t evm_root, sol_root; /* m (BIP32) and m (SLIP-0010) */
    int64_t min;
    int failures;
} s_sweep_t;

/* --- JSON-RPC over HTTP, blocking (a command line tool) ---------------------------------- */

typedef struct {
    char *buf;
    size_t len;
} s_buf_t;

static size_t s_write(char *p, size_t size, size_t n, void *arg)
{
    s_buf_t *b = arg;
    size_t add = size * n;
    if (b->len + add > ANSWER_MAX)
        return 0;
    b->buf = fb_realloc(b->buf, b->len + add + 1);
    memcpy(b->buf + b->len, p, add);
    b->len += add;
    b->buf[b->len] = '\0';
    return add;
}

/* one handle for the whole run: its connections are kept alive and reused */
static CURL *s_curl;

/* Returns the result (caller owns it), or NULL with why. params is stolen. */
static json_t *s_rpc(const char *url, const char *method, json_t *params, char *why, size_t whylen)
{
    FB_ASSERT(params); /* a json_pack format is a programming error */
    json_t *req =
        json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", 1, "method", method, "params", params);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!s_curl)
        s_curl = curl_easy_init();
    else
        curl_easy_reset(s_curl);
    CURL *c = s_curl;
    s_buf_t answer = {0};
    struct curl_slist *h = curl_slist_append(NULL, "content-type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 15000L);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    free(text);
    json_t *result = NULL;
    if (rc != CURLE_OK) {
        snprintf(why, whylen, "%s: %s", method, curl_easy_strerror(rc));
    } else {
        json_error_t jerr;
        json_t *doc = answer.buf ? json_loads(answer.buf, 0, &jerr) : NULL;
        json_t *err = json_object_get(doc, "error");
        if (!doc)
            snprintf(why, whylen, "%s: the answer is not JSON", method);
        else if (err)
            snprintf(why, whylen, "%s: %s", method, json_string_value(json_object_get(err, "message")));
        else if (!(result = json_incref(json_object_get(doc, "result"))))
            snprintf(why, whylen, "%s: no result", method);
        json_decref(doc);
    }
    free(answer.buf);
    return result;
}

static const char *s_str(json_t *v)
{
    const char *s = json_string_value(v);
    return s ? s : "";
}

static int s_qty(json_t *v, uint64_t *out)
{
    fb_u256_t u;
    const char *s = json_string_value(v);
    if (!s || fb_u256_from_hex(&u, s, strlen(s)) != 0 || !fb_u256_to_u64(&u, out))
        return -1;
    return 0;
}

/* --- the ledger's deposit addresses ---------------------------------------------------------- */

typedef struct {
    bool done;
    bool ok;
    json_t *list; /* [{account_id, address}] */
    int64_t last;
    bool more;
    char why[256];
} s_page_t;

static void s_on_page(void *arg, const fb_rpc_reply_t *reply)
{
    s_page_t *p = arg;
    p->done = true;
    if (!reply->ok) {
        snprintf(p->why, sizeof(p->why), "ledger.deposit_addresses: %s: %s", reply->code, reply->message);
        return;
    }
    char *text = fb_mp_to_json(reply->body);
    json_t *body = json_loads(text, 0, NULL);
    free(text);
    json_t *items = json_object_get(body, "addresses"), *d;
    size_t i;
    json_array_foreach(items, i, d) json_array_append(p->list, d);
    p->last = json_integer_value(json_object_get(body, "last_id"));
    p->more = json_is_true(json_object_get(body, "more"));
    p->ok = true;
    json_decref(body);
}

/* Every deposit address of chain; NULL with why when the ledger cannot tell. */
static json_t *s_addresses(const char *endpoint, const char *chain, char *why, size_t whylen)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    fb_rpc_client_config_t cc = {.service = "ledger",
                                 .endpoints = endpoint,
                                 .attempt_timeout_ms = 2000,
                                 .heartbeat_ms = 500,
                                 .resolve_ms = 1000,
                                 .max_message = 64 << 20};
    fb_rpc_client_t *c = fb_rpc_client_new(&loop, &cc, err, sizeof(err));
    if (!c) {
        snprintf(why, whylen, "FAREBOX_LEDGER_ENDPOINT: %s", err);
        uv_loop_close(&loop);
        return NULL;
    }
    json_t *all = json_array();
    s_page_t page = {.list = all, .more = true};
    while (page.more) {
        page.done = page.ok = page.more = false;
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        json_t *body =
            json_pack("{s:s, s:I, s:i}", "chain", chain, "after_id", (json_int_t)page.last, "limit", 5000);
        fb_mp_pack_json(&pk, body);
        json_decref(body);
        fb_rpc_call_opts_t o = {.method = "ledger.deposit_addresses", .deadline_ms = 15000};
        fb_rpc_client_call(c, &o, sb.data, sb.size, s_on_page, &page);
        msgpack_sbuffer_destroy(&sb);
        while (!page.done)
            uv_run(&loop, UV_RUN_ONCE);
        if (!page.ok) {
            snprintf(why, whylen, "%s", page.why);
            json_decref(all);
            all = NULL;
            break;
        }
    }
    fb_rpc_client_destroy(&c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return all;
}

static void s_report(const char *chain, int64_t account, const char *address, int64_t amount,
                     const char *status, const char *tx, const char *detail)
{
    json_t *line = json_pack("{s:s, s:I, s:s, s:I, s:s}", "chain", chain, "account_id", (json_int_t)account,
                             "address", address, "amount_micro", (json_int_t)amount, "status", status);
    if (tx && tx[0])
        json_object_set_new(line, "tx", json_string(tx));
    if (detail && detail[0])
        json_object_set_new(line, "detail", json_string(detail));
    char *text = json_dumps(line, JSON_COMPACT);
    puts(text);
    fflush(stdout);
    free(text);
    json_decref(line);
}

/* --- EVM ------------------------------------------------------------------------------------- */

static json_t *s_eth_call(const char *url, const fb_addr_t *to, const uint8_t *data, size_t len, char *why,
                          size_t whylen)
{
    char hexto[43], *hexdata = fb_malloc(2 * len + 3);
    fb_addr_lower(hexto, to);
    memcpy(hexdata, "0x", 2);
    fb_hex_encode(hexdata + 2, data, len);
    json_t *r = s_rpc(url, "eth_call", json_pack("[{s:s, s:s}, s]", "to", hexto, "data", hexdata, "latest"),
                      why, whylen);
    free(hexdata);
    return r;
}

/* a 32-byte word answer as u256 */
static int s_word(json_t *r, fb_u256_t *out)
{
    const char *s = json_string_value(r);
    return s && strlen(s) == 66 && fb_u256_from_hex(out, s, 66) == 0 ? 0 : -1;
}

static int s_wait_receipt(const char *url, const char *hash, char *why, size_t whylen)
{
    for (int i = 0; i < 200; i++) {
        json_t *r = s_rpc(url, "eth_getTransactionReceipt", json_pack("[s]", hash), why, whylen);
        if (r && json_is_object(r)) {
            int ok = strcmp(s_str(json_object_get(r, "status")), "0x1") == 0;
            json_decref(r);
            if (!ok)
                snprintf(why, whylen, "the transaction reverted");
            return ok ? 0 : -1;
        }
        json_decref(r);
        usleep(i < 50 ? 10000 : 250000); /* a dev chain mines at once, a real one in seconds */
    }
    snprintf(why, whylen, "no receipt within 38 s (it may still land: run the sweep again later)");
    return -1;
}

static void s_sweep_evm_one(s_sweep_t *s, int64_t account, const char *address, const fb_eip712_domain_t *dom,
                            const uint8_t settler_key[32], const fb_addr_t *treasury)
{
    const fb_config_t *cfg = s->cfg;
    const char *url = fb_config_str(cfg, "FAREBOX_EVM_RPC_URL");
    char why[300] = "", path[64];
    uint32_t idx[FB_HD_DEPTH_MAX];
    size_t n;
    snprintf(path, sizeof(path), "m/44'/60'/0'/0/%lld", (long long)account);
    fb_hd_node_t node;
    fb_addr_t from, stored;
    if (account < 1 || account >= (int64_t)FB_HD_HARDENED ||
        fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, path) != 0 ||
        fb_bip32_path(&node, &s->evm_root, idx, n) != 0 || fb_secp_address(&from, node.key) != 0 ||
        fb_addr_parse(&stored, address, strlen(address)) != 0 || !fb_addr_eq(&from, &stored)) {
        fb_hd_wipe(&node);
        s->failures++;
        return s_report("evm", account, address, 0, "skipped", NULL,
                        "the address does not derive from the seed");
    }
    uint8_t *data = NULL;
    size_t len = fb_abi_balance_of(&data, &from);
    json_t *r = s_eth_call(url, &dom->verifying_contract, data, len, why, sizeof(why));
    free(data);
    fb_u256_t bal;
    uint64_t amount = 0;
    if (!r || s_word(r, &bal) != 0 || !fb_u256_to_u64(&bal, &amount) || amount > INT64_MAX) {
        json_decref(r);
        fb_hd_wipe(&node);
        s->failures++;
        return s_report("evm", account, address, 0, "failed", NULL, why[0] ? why : "unreadable balance");
    }
    json_decref(r);
    if ((int64_t)amount < s->min) {
        fb_hd_wipe(&node);
        return s_report("evm", account, address, (int64_t)amount, "nothing", NULL, NULL);
    }
    if (s->dry_run) {
        fb_hd_wipe(&node);
        return s_report("evm", account, address, (int64_t)amount, "would_sweep", NULL, NULL);
    }
    /* the authorization: the first unused nonce of this (from, value) */
    fb_eip3009_t auth = {.from = from, .to = *treasury};
    fb_u256_from_u64(&auth.value, amount);
    fb_u256_from_u64(&auth.valid_after, 0);
    fb_u256_from_u64(&auth.valid_before, (uint64_t)time(NULL) + 3600);
    for (uint64_t k = 0;; k++) {
        fb_keccak_t kc;
        fb_keccak_init(&kc);
        fb_keccak_update(&kc, "farebox-sweep", 13);
        fb_keccak_update(&kc, from.b, 20);
        fb_keccak_update(&kc, auth.value.b, 32);
        fb_keccak_update(&kc, &k, sizeof(k));
        fb_keccak_final(&kc, auth.nonce);
        len = fb_abi_authorization_state(&data, &from, auth.nonce);
        r = s_eth_call(url, &dom->verifying_contract, data, len, why, sizeof(why));
        free(data);
        fb_u256_t used;
        if (!r || s_word(r, &used) != 0 || k > 64) {
            json_decref(r);
            fb_hd_wipe(&node);
            s->failures++;
            return s_report("evm", account, address, (int64_t)amount, "failed", NULL,
                            why[0] ? why : "no unused authorization nonce");
        }
        json_decref(r);
        fb_u256_t zero;
        fb_u256_from_u64(&zero, 0);
        if (fb_u256_cmp(&used, &zero) == 0)
            break;
    }
    uint8_t digest[32], sig[65];
    fb_eip3009_digest(digest, dom, &auth);
    int rc = fb_secp_sign(sig, digest, node.key);
    fb_hd_wipe(&node);
    FB_ASSERT(rc == 0);
    uint8_t *calldata = NULL;
    size_t calldata_len = fb_abi_transfer_with_authorization(&calldata, &auth, sig);
    /* the settlement wallet's transaction */
    fb_addr_t settler;
    FB_ASSERT(fb_secp_address(&settler, settler_key) == 0);
    char settler_hex[43];
    fb_addr_lower(settler_hex, &settler);
    uint64_t nonce = 0, base = 0;
    json_t *nr =
        s_rpc(url, "eth_getTransactionCount", json_pack("[s, s]", settler_hex, "pending"), why, sizeof(why));
    json_t *blk = s_rpc(url, "eth_getBlockByNumber", json_pack("[s, b]", "latest", 0), why, sizeof(why));
    if (!nr || s_qty(nr, &nonce) != 0 || !blk || s_qty(json_object_get(blk, "baseFeePerGas"), &base) != 0) {
        json_decref(nr);
        json_decref(blk);
        free(calldata);
        s->failures++;
        return s_report("evm", account, address, (int64_t)amount, "failed", NULL,
                        why[0] ? why : "no fee data");
    }
    json_decref(nr);
    json_decref(blk);
    fb_ethtx_t tx = {.chain_id = dom->chain_id,
                     .nonce = nonce,
                     .gas = EVM_GAS,
                     .to = dom->verifying_contract,
                     .data = calldata,
                     .data_len = calldata_len};
    fb_u256_from_u64(&tx.max_priority_fee, 1000000000ull);
    fb_u256_from_u64(&tx.max_fee, 2 * base + 1000000000ull);
    fb_u256_from_u64(&tx.value, 0);
    uint8_t *raw = NULL, hash[32];
    size_t raw_len = 0;
    FB_ASSERT(fb_ethtx_sign(&tx, settler_key, &raw, &raw_len, hash) == 0);
    free(calldata);
    char *raw_hex = fb_malloc(2 * raw_len + 3), hash_hex[67];
    memcpy(raw_hex, "0x", 2);
    fb_hex_encode(raw_hex + 2, raw, raw_len);
    memcpy(hash_hex, "0x", 2);
    fb_hex_encode(hash_hex + 2, hash, 32);
    free(raw);
    json_t *sent = s_rpc(url, "eth_sendRawTransaction", json_pack("[s]", raw_hex), why, sizeof(why));
    free(raw_hex);
    json_decref(sent);
    if (!sent || s_wait_receipt(url, hash_hex, why, sizeof(why)) != 0) {
        s->failures++;
        return s_report("evm", account, address, (int64_t)amount, "failed", hash_hex, why);
    }
    s_report("evm", account, address, (int64_t)amount, "swept", hash_hex, NULL);
}

static void s_sweep_evm(s_sweep_t *s)
{
    const fb_config_t *cfg = s->cfg;
    if (strcmp(fb_config_str(cfg, "FAREBOX_EVM_NETWORK"), "off") == 0)
        return;
    char why[300] = "";
    const char *token = fb_config_str(cfg, "FAREBOX_EVM_TOKEN"),
               *to = fb_config_str(cfg, "FAREBOX_SWEEP_EVM_TO");
    const char *key_hex = fb_config_str(cfg, "FAREBOX_SETTLEMENT_KEY");
    fb_eip712_domain_t dom = {.name = fb_config_str(cfg, "FAREBOX_EVM_TOKEN_NAME"),
                              .version = fb_config_str(cfg, "FAREBOX_EVM_TOKEN_VERSION")};
    dom.name_len = strlen(dom.name);
    dom.version_len = strlen(dom.version);
    fb_addr_t treasury;
    uint8_t key[32];
    if (fb_addr_parse(&dom.verifying_contract, token, strlen(token)) != 0 ||
        fb_addr_parse(&treasury, to, strlen(to)) != 0) {
        fprintf(stderr, "farebox-sweep: FAREBOX_EVM_TOKEN and FAREBOX_SWEEP_EVM_TO must be addresses\n");
        exit(2);
    }
    if (!s->dry_run && fb_hex_decode(key, 32, key_hex, strlen(key_hex)) != 0) {
        fprintf(stderr, "farebox-sweep: FAREBOX_SETTLEMENT_KEY must be a 32-byte key in hex\n");
        exit(2);
    }
    json_t *id =
        s_rpc(fb_config_str(cfg, "FAREBOX_EVM_RPC_URL"), "eth_chainId", json_array(), why, sizeof(why));
    if (!id || s_qty(id, &dom.chain_id) != 0) {
        json_decref(id);
        fprintf(stderr, "farebox-sweep: %s\n", why[0] ? why : "eth_chainId: not a quantity");
        exit(2);
    }
    json_decref(id);
    if (fb_evm_dev_account(&treasury) && !fb_evm_test_chain(dom.chain_id)) {
        fprintf(stderr,
                "farebox-sweep: FAREBOX_SWEEP_EVM_TO is a public development account (anvil's): "
                "refused on chain %llu, where anyone could take what it is sent\n",
                (unsigned long long)dom.chain_id);
        exit(2);
    }
    json_t *list = s_addresses(fb_config_str(cfg, "FAREBOX_LEDGER_ENDPOINT"), "evm", why, sizeof(why));
    if (!list) {
        fprintf(stderr, "farebox-sweep: %s\n", why);
        exit(2);
    }
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        s_sweep_evm_one(s, json_integer_value(json_object_get(d, "account_id")),
                        s_str(json_object_get(d, "address")), &dom, key, &treasury);
    }
    json_decref(list);
    sodium_memzero(key, sizeof(key));
}

/* --- Solana ---------------------------------------------------------------------------------- */

/* A legacy message with one TransferChecked: accounts [payer, owner, source,
 * destination, mint, token program]; signed by payer and owner. */
static size_t s_sol_transfer_tx(uint8_t *out, const uint8_t payer_sk[64], const uint8_t owner_sk[64],
                                const fb_sol_key_t *source, const fb_sol_key_t *dest,
                                const fb_sol_key_t *mint, const fb_sol_key_t *program,
                                const uint8_t blockhash[32], uint64_t amount, uint8_t decimals)
{
    uint8_t msg[512];
    size_t m = 0;
    msg[m++] = 2; /* signatures */
    msg[m++] = 1; /* read-only signed: the owner */
    msg[m++] = 2; /* read-only unsigned: mint, program */
    msg[m++] = 6;
    memcpy(msg + m, payer_sk + 32, 32);
    memcpy(msg + m + 32, owner_sk + 32, 32);
    memcpy(msg + m + 64, source->b, 32);
    memcpy(msg + m + 96, dest->b, 32);
    memcpy(msg + m + 128, mint->b, 32);
    memcpy(msg + m + 160, program->b, 32);
    m += 192;
    memcpy(msg + m, blockhash, 32);
    m += 32;
    msg[m++] = 1; /* instructions */
    msg[m++] = 5; /* program */
    msg[m++] = 4; /* accounts: source, mint, destination, authority */
    msg[m++] = 2;
    msg[m++] = 4;
    msg[m++] = 3;
    msg[m++] = 1;
    msg[m++] = 10; /* data bytes */
    msg[m++] = 12; /* TransferChecked */
    for (int i = 0; i < 8; i++)
        msg[m++] = (uint8_t)(amount >> (8 * i));
    msg[m++] = decimals;
    size_t o = 0;
    out[o++] = 2;
    crypto_sign_detached(out + o, NULL, msg, m, payer_sk);
    crypto_sign_detached(out + o + 64, NULL, msg, m, owner_sk);
    o += 128;
    memcpy(out + o, msg, m);
    return o + m;
}

static void s_sweep_solana_one(s_sweep_t *s, int64_t account, const char *owner_text,
                               const uint8_t payer_sk[64], const fb_sol_key_t *mint,
                               const fb_sol_key_t *program, const fb_sol_key_t *dest)
{
    const char *url = fb_config_str(s->cfg, "FAREBOX_SOLANA_RPC_URL");
    char why[300] = "", path[64], ata_text[48];
    uint32_t idx[FB_HD_DEPTH_MAX];
    size_t n;
    snprintf(path, sizeof(path), "m/44'/501'/%lld'/0'", (long long)account);
    fb_hd_node_t node;
    uint8_t pk[32], sk[64];
    fb_sol_key_t owner, ata;
    if (account < 1 || account >= (int64_t)FB_HD_HARDENED ||
        fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, path) != 0 ||
        fb_slip10_path(&node, &s->sol_root, idx, n) != 0) {
        s->failures++;
        return s_report("solana", account, owner_text, 0, "skipped", NULL, "no deposit key for this account");
    }
    crypto_sign_seed_keypair(pk, sk, node.key);
    fb_hd_wipe(&node);
    if (fb_sol_key_parse(&owner, owner_text, strlen(owner_text)) != 0 || memcmp(owner.b, pk, 32) != 0) {
        sodium_memzero(sk, sizeof(sk));
        s->failures++;
        return s_report("solana", account, owner_text, 0, "skipped", NULL,
                        "the owner does not derive from the seed");
    }
    FB_ASSERT(fb_sol_ata(&ata, &owner, mint, program) == 0);
    fb_sol_key_format(ata_text, &ata);
    json_t *r = s_rpc(url, "getTokenAccountBalance",
                      json_pack("[s, {s:s}]", ata_text, "commitment", "confirmed"), why, sizeof(why));
    const char *units = json_string_value(json_object_get(json_object_get(r, "value"), "amount"));
    int64_t decimals = json_integer_value(json_object_get(json_object_get(r, "value"), "decimals"));
    char *end = NULL;
    long long amount = units ? strtoll(units, &end, 10) : -1;
    if (units && (end == units || *end)) /* checked here: units belongs to r */
        amount = -1;
    if (r && amount < 0) {
        char *raw = json_dumps(r, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(why, sizeof(why), "getTokenAccountBalance: unexpected answer %.200s", raw ? raw : "");
        free(raw);
    }
    bool no_account = r && json_is_null(json_object_get(r, "value"));
    json_decref(r);
    if (no_account ||
        (!r && strstr(why, "could not find account"))) { /* no token account: nothing deposited */
        sodium_memzero(sk, sizeof(sk));
        return s_report("solana", account, owner_text, 0, "nothing", NULL, NULL);
    }
    if (amount < 0) {
        sodium_memzero(sk, sizeof(sk));
        s->failures++;
        return s_report("solana", account, owner_text, 0, "failed", NULL,
                        why[0] ? why : "unreadable balance");
    }
    if (amount < s->min || s->dry_run) {
        sodium_memzero(sk, sizeof(sk));
        return s_report("solana", account, owner_text, amount, amount < s->min ? "nothing" : "would_sweep",
                        NULL, NULL);
    }
    json_t *bh =
        s_rpc(url, "getLatestBlockhash", json_pack("[{s:s}]", "commitment", "confirmed"), why, sizeof(why));
    const char *bh_text = json_string_value(json_object_get(json_object_get(bh, "value"), "blockhash"));
    fb_sol_key_t blockhash;
    if (!bh_text || fb_sol_key_parse(&blockhash, bh_text, strlen(bh_text)) != 0) {
        json_decref(bh);
        sodium_memzero(sk, sizeof(sk));
        s->failures++;
        return s_report("solana", account, owner_text, amount, "failed", NULL, why[0] ? why : "no blockhash");
    }
    json_decref(bh);
    uint8_t wire[700];
    size_t wlen = s_sol_transfer_tx(wire, payer_sk, sk, &ata, dest, mint, program, blockhash.b,
                                    (uint64_t)amount, (uint8_t)decimals);
    sodium_memzero(sk, sizeof(sk));
    char sig_text[100], b64[1000];
    fb_base58_encode(sig_text, sizeof(sig_text), wire + 1, 64);
    sodium_bin2base64(b64, sizeof(b64), wire, wlen, sodium_base64_VARIANT_ORIGINAL);
    json_t *sent =
        s_rpc(url, "sendTransaction",
              json_pack("[s, {s:s, s:s}]", b64, "encoding", "base64", "preflightCommitment", "confirmed"),
              why, sizeof(why));
    json_decref(sent);
    if (!sent) {
        s->failures++;
        return s_report("solana", account, owner_text, amount, "failed", sig_text, why);
    }
    for (int i = 0; i < 120; i++) {
        json_t *st = s_rpc(url, "getSignatureStatuses", json_pack("[[s]]", sig_text), why, sizeof(why));
        json_t *v = json_array_get(json_object_get(st, "value"), 0);
        const char *level = json_string_value(json_object_get(v, "confirmationStatus"));
        bool landed = level && (strcmp(level, "confirmed") == 0 || strcmp(level, "finalized") == 0);
        /* a status without an "err" says nothing yet (json_is_null(NULL) is
         * false: it read as a failure with no reason), and an error seen
         * before confirmation may be on a fork that is dropped */
        json_t *e = json_object_get(v, "err");
        bool failed = landed && e && !json_is_null(e);
        if (failed) {
            /* the chain's reason, as it gave it */
            char *err = json_dumps(json_object_get(v, "err"), JSON_COMPACT | JSON_ENCODE_ANY);
            snprintf(why, sizeof(why), "the transaction failed: %.200s", err ? err : "");
            free(err);
            json_decref(st);
            s->failures++;
            return s_report("solana", account, owner_text, amount, "failed", sig_text, why);
        }
        json_decref(st);
        if (landed)
            return s_report("solana", account, owner_text, amount, "swept", sig_text, NULL);
        usleep(i < 50 ? 20000 : 250000);
    }
    s->failures++;
    s_report("solana", account, owner_text, amount, "failed", sig_text,
             "not confirmed within 30 s (it may still land: run the sweep again later)");
}

static void s_sweep_solana(s_sweep_t *s)
{
    const fb_config_t *cfg = s->cfg;
    if (strcmp(fb_config_str(cfg, "FAREBOX_SOLANA_NETWORK"), "off") == 0)
        return;
    char why[300] = "";
    const char *mint_text = fb_config_str(cfg, "FAREBOX_SOLANA_MINT");
    const char *payer_text = fb_config_str(cfg, "FAREBOX_SWEEP_SOLANA_PAYER_KEY");
    fb_sol_key_t mint, program, payer, dest;
    uint8_t payer_sk[64];
    if (fb_sol_key_parse(&mint, mint_text, strlen(mint_text)) != 0 ||
        fb_sol_secret_parse(payer_sk, &payer, payer_text) != 0) {
        fprintf(stderr,
                "farebox-sweep: FAREBOX_SOLANA_MINT must be an address and FAREBOX_SWEEP_SOLANA_PAYER_KEY a "
                "64-byte keypair whose public half is its seed's (base58, or solana-keygen's JSON array)\n");
        exit(2);
    }
    const char *url = fb_config_str(cfg, "FAREBOX_SOLANA_RPC_URL");
    json_t *info = s_rpc(url, "getAccountInfo", json_pack("[s, {s:s}]", mint_text, "encoding", "base64"), why,
                         sizeof(why));
    const char *owner = json_string_value(json_object_get(json_object_get(info, "value"), "owner"));
    if (!owner || fb_sol_key_parse(&program, owner, strlen(owner)) != 0) {
        json_decref(info);
        fprintf(stderr, "farebox-sweep: the mint account: %s\n", why[0] ? why : "not found");
        exit(2);
    }
    json_decref(info);
    FB_ASSERT(fb_sol_ata(&dest, &payer, &mint, &program) == 0);
    json_t *list = s_addresses(fb_config_str(cfg, "FAREBOX_LEDGER_ENDPOINT"), "solana", why, sizeof(why));
    if (!list) {
        fprintf(stderr, "farebox-sweep: %s\n", why);
        exit(2);
    }
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        s_sweep_solana_one(s, json_integer_value(json_object_get(d, "account_id")),
                           s_str(json_object_get(d, "address")), payer_sk, &mint, &program, &dest);
    }
    json_decref(list);
    sodium_memzero(payer_sk, sizeof(payer_sk));
}

/* --- main ------------------------------------------------------------------------------------ */

/* Prints the chain-watcher's branch nodes: the EVM account node's xpub and the
 * Solana branch node (key then chain code, hex). */
static int s_keys(const s_sweep_t *s)
{
    static const uint32_t evm_path[] = {44 | FB_HD_HARDENED, 60 | FB_HD_HARDENED, 0 | FB_HD_HARDENED, 0};
    static const uint32_t sol_path[] = {44 | FB_HD_HARDENED, 501 | FB_HD_HARDENED};
    fb_hd_node_t node;
    fb_hd_pub_t pub;
    char xpub[FB_HD_XKEY_CHARS], hex[129];
    uint8_t raw[64];
    if (fb_bip32_path(&node, &s->evm_root, evm_path, 4) != 0 || fb_bip32_neuter(&pub, &node) != 0) {
        fb_hd_wipe(&node);
        fprintf(stderr, "farebox-sweep: the seed gives no EVM branch\n");
        return 2;
    }
    fb_hd_wipe(&node);
    fb_bip32_xpub(xpub, &pub);
    fb_slip10_path(&node, &s->sol_root, sol_path, 2);
    memcpy(raw, node.key, 32);
    memcpy(raw + 32, node.chain, 32);
    fb_hd_wipe(&node);
    fb_hex_encode(hex, raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    printf("{\"evm_xpub\":\"%s\",\"evm_path\":\"m/44'/60'/0'/0\",\"solana_node\":\"%s\",\"solana_path\":\"m/"
           "44'/501'\"}\n",
           xpub, hex);
    sodium_memzero(hex, sizeof(hex));
    return 0;
}

static int s_usage(void)
{
    fprintf(stderr,
            "usage: farebox-sweep [--dry-run] [--chain evm|solana|all] | farebox-sweep keys\n"
            "environment: FAREBOX_LEDGER_ENDPOINT, FAREBOX_DEPOSIT_SEED(_FILE); EVM: FAREBOX_EVM_NETWORK, "
            "FAREBOX_EVM_RPC_URL, FAREBOX_EVM_TOKEN(_NAME, _VERSION), FAREBOX_SETTLEMENT_KEY(_FILE), "
            "FAREBOX_SWEEP_EVM_TO; Solana: FAREBOX_SOLANA_NETWORK, FAREBOX_SOLANA_RPC_URL, "
            "FAREBOX_SOLANA_MINT, FAREBOX_SWEEP_SOLANA_PAYER_KEY(_FILE); FAREBOX_SWEEP_MIN_MICRO\n");
    return 2;
}

int main(int argc, char **argv)
{
    bool dry = false, keys = false;
    const char *chain = "all";
    for (int i = 1; i < argc; i++) {
        if (i == 1 && argc == 2 && strcmp(argv[i], "keys") == 0)
            keys = true;
        else if (strcmp(argv[i], "--dry-run") == 0)
            dry = true;
        else if (strcmp(argv[i], "--chain") == 0 && i + 1 < argc)
            chain = argv[++i];
        else
            return s_usage();
    }
    if (strcmp(chain, "evm") != 0 && strcmp(chain, "solana") != 0 && strcmp(chain, "all") != 0)
        return s_usage();
    FB_ASSERT(sodium_init() >= 0);
    fb_log_init("sweep", "");
    fb_log_set_fd(2); /* stdout carries the report */
    fb_log_set_level(FB_LOG_WARN);
    char err[512];
    fb_config_t *cfg = fb_config_load(s_vars, FB_ARRAY_SIZE(s_vars), err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "farebox-sweep: %s\n", err);
        return 2;
    }
    s_sweep_t s = {.dry_run = dry, .cfg = cfg, .min = fb_config_int(cfg, "FAREBOX_SWEEP_MIN_MICRO")};
    const char *seed_text = fb_config_str(cfg, "FAREBOX_DEPOSIT_SEED");
    uint8_t seed[FB_HD_SEED_MAX];
    size_t seed_len = strlen(seed_text) / 2;
    if (strncmp(seed_text, "0x", 2) == 0)
        seed_text += 2, seed_len = strlen(seed_text) / 2;
    if (seed_len < FB_HD_SEED_MIN || seed_len > FB_HD_SEED_MAX ||
        fb_hex_decode(seed, seed_len, seed_text, strlen(seed_text)) != 0 ||
        fb_bip32_master(&s.evm_root, seed, seed_len) != 0 ||
        fb_slip10_master(&s.sol_root, seed, seed_len) != 0) {
        sodium_memzero(seed, sizeof(seed));
        fprintf(stderr, "farebox-sweep: FAREBOX_DEPOSIT_SEED: must be 16..64 bytes in hex\n");
        return 2;
    }
    sodium_memzero(seed, sizeof(seed));
    if (keys) {
        int rc = s_keys(&s);
        fb_hd_wipe(&s.evm_root);
        fb_hd_wipe(&s.sol_root);
        fb_config_destroy(&cfg);
        return rc;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (strcmp(chain, "solana") != 0)
        s_sweep_evm(&s);
    if (strcmp(chain, "evm") != 0)
        s_sweep_solana(&s);
    if (s_curl)
        curl_easy_cleanup(s_curl);
    curl_global_cleanup();
    fb_hd_wipe(&s.evm_root);
    fb_hd_wipe(&s.sol_root);
    fb_config_destroy(&cfg);
    zsys_shutdown();
    return s.failures ? 1 : 0;
}
