/* verifier_evm - verification and settlement of EIP-3009 payments against a
 * chain and the ledger.
 *
 * verify: the offline checks (evm_exact.c), then, in parallel, the ledger's
 * record of the authorization (a replay), its state on chain
 * (authorizationState), the payer's balance (balanceOf), code at the token,
 * and a simulation of the transfer (eth_call).
 *
 * settle: the offline checks again, then the ledger's settlement of this
 * authorization (created once, with an account nonce allocated for the
 * settlement wallet), the transaction signed by farebox and recorded in the
 * ledger before it is broadcast (a second settle of the same authorization,
 * from any replica, broadcasts the recorded transaction again), then the
 * receipt followed until it is final or the wait runs out (settlement_pending;
 * the tracker keeps following it). */
#include "evm_exact.h"
#include "fb_codec.h"
#include "fb_ethtx.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"
#include "verifier_internal.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RECEIPT_POLL_MS 200
#define CHAIN_CHECK_MS  60000 /* how often the endpoint's chain id is asked again */
#define TRANSFER_TOPIC  "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
/* EIP-3009's AuthorizationUsed(address,bytes32) and AuthorizationCanceled(address,bytes32) */
#define USED_TOPIC     "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"
#define CANCELED_TOPIC "0x1cdd46ff242716cdaa72d159d339a485b3438398348d68f09d7c8c0a59353d81"
/* How far back from a reverted settlement's block the transaction that used
 * its authorization is looked for: it came after the settlement's own chain
 * checks, which found the authorization unused, and before that block. */
#define USED_LOOKBACK_BLOCKS 5000

/* an authorization past its time window (evm_exact_check's reason) */
#define LATE_REASON "invalid_exact_evm_payload_authorization_valid_before"

typedef struct s_job {
    verifier_t *v;
    verifier_evm_t *net;
    bool settle;
    bool once;                     /* VERIFIER_SETTLE_ONCE */
    bool answer_asked;             /* ... and its success asked of the ledger */
    json_t *doc_payload, *doc_req; /* references held for the job */
    fb_x402_payload_t p;
    fb_x402_requirements_t r;
    evm_check_t chk;
    /* past its time window, every other check passed as of the window's end: only an
     * authorization the ledger recorded (settle: one with a settlement) in its window goes on */
    bool late;
    char late_msg[200];
    char trace[129];
    verifier_done_fn *done;
    void *arg;
    verifier_result_t res;
    int pending;                   /* outstanding calls of the current step */
    void (*after)(struct s_job *); /* runs when they are all answered */
    /* chain facts */
    bool rpc_failed;
    char rpc_error[200];
    bool used_ledger, used_chain, code_empty, sim_failed, balance_known;
    int64_t chain_seen; /* the endpoint's chain id when it is not the network's, else 0 */
    char sim_message[200];
    fb_u256_t balance;
    uint64_t chain_nonce;
    fb_u256_t base_fee, priority;
    /* settlement */
    int64_t settlement_id;
    uint64_t tx_nonce;
    char tx_hash[67];
    bool resigned; /* tx_hash is the settlement's re-signed transaction (its first one lost its nonce) */
    char *raw_hex;
    uint8_t *calldata;
    size_t calldata_len;
    int64_t wait_until;
    uint32_t wait_ms; /* how long a settlement waits for its final receipt */
    uv_timer_t poll;
    bool poll_open;
} s_job_t;

static void s_finish(s_job_t *j);

/* --- small helpers -------------------------------------------------------------------- */

static char *s_hex0x(const uint8_t *b, size_t n)
{
    char *out = fb_malloc(2 * n + 3);
    out[0] = '0';
    out[1] = 'x';
    fb_hex_encode(out + 2, b, n);
    return out;
}

static void s_lower_addr(char out[43], const fb_addr_t *a)
{
    fb_addr_lower(out, a);
}

static void s_nonce_hex(char out[67], const uint8_t nonce[32])
{
    out[0] = '0';
    out[1] = 'x';
    fb_hex_encode(out + 2, nonce, 32);
}

static void s_fail(s_job_t *j, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_fail(s_job_t *j, const char *reason, const char *fmt, ...)
{
    j->res.ok = false;
    j->res.reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->res.message, sizeof(j->res.message), fmt, ap);
    va_end(ap);
    s_finish(j);
}

static void s_unavailable(s_job_t *j, const char *what)
{
    j->res.ok = false;
    j->res.reason = NULL;
    j->res.error_code = "unavailable";
    snprintf(j->res.message, sizeof(j->res.message), "%s: %s", what,
             j->rpc_error[0] ? j->rpc_error : "no answer");
    s_finish(j);
}

static void s_closed(uv_handle_t *h)
{
    free(h->data);
}

static void s_on_answer(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    verifier_answer_apply(&j->res, reply);
    s_finish(j);
}

static void s_finish(s_job_t *j)
{
    if (j->res.ok && j->once && !j->answer_asked) {
        /* the payment's success is answered to one settle: is it this one? */
        j->answer_asked = true;
        verifier_answer_ask(j->v, j->settlement_id, j->trace, s_on_answer, j);
        return;
    }
    if (j->res.ok) {
        j->res.reason = NULL;
        j->res.message[0] = '\0';
    }
    j->done(j->arg, &j->res);
    json_decref(j->doc_payload);
    json_decref(j->doc_req);
    free(j->raw_hex);
    free(j->calldata);
    if (j->poll_open) {
        uv_timer_stop(&j->poll);
        j->poll.data = j;
        uv_close((uv_handle_t *)&j->poll, s_closed);
    } else {
        free(j);
    }
}

/* eth_call to the token with calldata (from the settlement wallet when there
 * is one: a simulation then runs as the settlement would). */
static void s_eth_call(s_job_t *j, const uint8_t *data, size_t len, fb_jsonrpc_done_fn *cb)
{
    char *hex = s_hex0x(data, len);
    json_t *call = json_pack("{ss ss}", "to", j->net->token_text, "data", hex);
    if (j->net->has_key)
        json_object_set_new(call, "from", json_string(j->net->sender_text));
    free(hex);
    fb_jsonrpc_call(j->net->rpc, "eth_call", json_pack("[o s]", call, "latest"), cb, j);
}

static void s_rpc_error(s_job_t *j, const char *error, const char *message)
{
    j->rpc_failed = true;
    snprintf(j->rpc_error, sizeof(j->rpc_error), "%s: %s", error, message ? message : "");
}

/* A 32-byte word of an eth_call answer as uint256; false when unreadable. */
static bool s_word(json_t *result, fb_u256_t *out)
{
    const char *s = json_string_value(result);
    return s && strlen(s) == 66 && fb_u256_from_hex(out, s, 66) == 0;
}

/* --- verify -------------------------------------------------------------------------------- */

static void s_auth_key(s_job_t *j, json_t *body);

/* A misconfigured endpoint is the operator's fault, not the payer's. */
static bool s_wrong_chain(s_job_t *j)
{
    if (!j->chain_seen)
        return false;
    snprintf(j->rpc_error, sizeof(j->rpc_error), "it serves chain id %lld, not %llu",
             (long long)j->chain_seen, (unsigned long long)j->net->chain_id);
    s_unavailable(j, "the chain endpoint serves another chain");
    return true;
}

/* The verified payment's key and amount in its result (what recording it needs). */
static void s_result_key(s_job_t *j)
{
    uint64_t amount = 0;
    fb_u256_to_u64(&j->chk.auth.value, &amount);
    json_t *key = json_object();
    s_auth_key(j, key);
    verifier_result_key(&j->res, key, amount > INT64_MAX ? INT64_MAX : (int64_t)amount, j->r.pay_to);
    json_decref(key);
}

static void s_verify_decide(s_job_t *j)
{
    if (s_wrong_chain(j))
        return;
    if (j->used_ledger) {
        s_fail(j, "invalid_exact_evm_nonce_already_used", "farebox has already accepted this authorization");
        return;
    }
    if (j->late) {
        s_fail(j, LATE_REASON, "%s", j->late_msg);
        return;
    }
    if (j->rpc_failed) {
        s_unavailable(j, "the chain could not be asked");
        return;
    }
    if (j->used_chain) {
        s_fail(j, "invalid_exact_evm_nonce_already_used",
               "the token reports this authorization as used or canceled");
        return;
    }
    if (j->balance_known && fb_u256_cmp(&j->balance, &j->chk.auth.value) < 0) {
        char have[80];
        fb_u256_to_dec(have, &j->balance);
        s_fail(j, "invalid_exact_evm_insufficient_balance", "the payer holds %s, the payment is %s", have,
               j->p.value);
        return;
    }
    if (j->code_empty) {
        s_fail(j, "asset_not_deployed_contract", "there is no contract at the asset address %s",
               j->net->token_text);
        return;
    }
    if (j->sim_failed) {
        s_fail(j, "invalid_exact_evm_transaction_simulation_failed", "the transfer would fail: %s",
               j->sim_message);
        return;
    }
    s_result_key(j);
    j->res.ok = true;
    s_finish(j);
}

static void s_step_done(s_job_t *j)
{
    if (--j->pending == 0)
        j->after(j);
}

static void s_on_auth_state(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    fb_u256_t w;
    if (error)
        s_rpc_error(j, error, message);
    else if (!s_word(result, &w))
        s_rpc_error(j, "bad answer", "authorizationState did not answer a word");
    else
        j->used_chain = w.b[31] != 0;
    s_step_done(j);
}

static void s_on_balance(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    if (error)
        s_rpc_error(j, error, message);
    else if (!s_word(result, &j->balance))
        s_rpc_error(j, "bad answer", "balanceOf did not answer a word");
    else
        j->balance_known = true;
    s_step_done(j);
}

static void s_on_code(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    const char *s = json_string_value(result);
    if (error)
        s_rpc_error(j, error, message);
    else if (!s || strlen(s) <= 2)
        j->code_empty = true;
    else
        j->net->code_checked = true;
    s_step_done(j);
}

/* The endpoint must serve the network's chain: its reads would otherwise
 * judge the payment on another chain's state. */
static void s_on_chain_id(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    const char *text = json_string_value(result);
    fb_u256_t n;
    uint64_t id = 0;
    if (error)
        s_rpc_error(j, error, message);
    else if (!text || fb_u256_from_hex(&n, text, strlen(text)) != 0 || !fb_u256_to_u64(&n, &id) ||
             id > INT64_MAX)
        s_rpc_error(j, "bad answer", "eth_chainId did not answer a quantity");
    else if (id != j->net->chain_id) {
        j->chain_seen = (int64_t)id;
        fb_log(FB_LOG_ERROR, j->trace[0] ? j->trace : NULL, "evm endpoint serves another chain",
               "network=%s chain_id=%llu", j->net->caip2, (unsigned long long)id);
    } else
        j->net->chain_checked_ms = fb_mono_ms();
    s_step_done(j);
}

static void s_on_simulation(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(result);
    FB_UNUSED(code);
    s_job_t *j = arg;
    if (error && strcmp(error, "rpc_error") == 0) {
        /* the node ran the call and it reverted */
        j->sim_failed = true;
        snprintf(j->sim_message, sizeof(j->sim_message), "%s", message ? message : "reverted");
    } else if (error) {
        s_rpc_error(j, error, message);
    }
    s_step_done(j);
}

static void s_on_ledger_auth(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    if (reply->ok) {
        j->used_ledger = true;
        verifier_result_recorded(&j->res, reply->body);
    } else if (strcmp(reply->code, "authorization_not_found") != 0)
        s_rpc_error(j, "ledger", reply->message);
    s_step_done(j);
}

/* The ledger's key of an authorization: CAIP-2 network, lowercase payer,
 * lowercase nonce. */
static void s_auth_key(s_job_t *j, json_t *body)
{
    char payer[43], nonce[67];
    s_lower_addr(payer, &j->chk.auth.from);
    s_nonce_hex(nonce, j->chk.auth.nonce);
    json_object_set_new(body, "network", json_string(j->net->caip2));
    json_object_set_new(body, "payer", json_string(payer));
    json_object_set_new(body, "nonce", json_string(nonce));
}

static void s_ledger_call(s_job_t *j, const char *method, json_t *body, bool write, fb_rpc_done_fn *cb)
{
    verifier_ledger_call(j->v, method, body, write, j->trace, cb, j);
}

/* The chain's view of the payment, in parallel: its state, the payer's
 * balance, a simulation of the transfer, the token's code. */
static void s_chain_checks(s_job_t *j)
{
    uint8_t *data;
    size_t n;
    n = fb_abi_authorization_state(&data, &j->chk.auth.from, j->chk.auth.nonce);
    s_eth_call(j, data, n, s_on_auth_state);
    free(data);
    n = fb_abi_balance_of(&data, &j->chk.auth.from);
    s_eth_call(j, data, n, s_on_balance);
    free(data);
    n = fb_abi_transfer_with_authorization(&data, &j->chk.auth, j->chk.sig);
    s_eth_call(j, data, n, s_on_simulation);
    free(data);
    if (!j->net->chain_checked_ms || fb_mono_ms() - j->net->chain_checked_ms >= CHAIN_CHECK_MS) {
        j->pending++;
        fb_jsonrpc_call(j->net->rpc, "eth_chainId", json_array(), s_on_chain_id, j);
    }
    if (!j->net->code_checked) {
        j->pending++;
        fb_jsonrpc_call(j->net->rpc, "eth_getCode", json_pack("[s s]", j->net->token_text, "latest"),
                        s_on_code, j);
    }
}

static void s_verify_chain(s_job_t *j)
{
    j->pending = 4;
    j->after = s_verify_decide;
    json_t *key = json_object();
    s_auth_key(j, key);
    s_ledger_call(j, "ledger.authorization", key, false, s_on_ledger_auth);
    s_chain_checks(j);
}

/* --- settle ------------------------------------------------------------------------------------ */

static void s_settle_fail(s_job_t *j, const char *reason, const char *msg)
{
    s_fail(j, reason, "%s", msg);
}

static void s_on_result_recorded(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    if (!reply->ok)
        fb_log(FB_LOG_WARN, j->trace[0] ? j->trace : NULL, "settlement result not recorded",
               "code=%s message=%s", reply->code, reply->message);
    s_finish(j);
}

static void s_record_result(s_job_t *j, bool confirmed, const char *reason, const char *settled_by)
{
    json_t *body = json_pack("{sI ss ss}", "settlement_id", (json_int_t)j->settlement_id, "state",
                             confirmed ? "confirmed" : "failed", "reason", reason ? reason : "");
    if (settled_by)
        json_object_set_new(body, "settled_by", json_string(settled_by));
    s_ledger_call(j, "ledger.settlement_result", body, true, s_on_result_recorded);
}

/* --- the verdict on a settlement transaction ------------------------------------------------ */

/* VERDICT_UNUSED (asked for only): the authorization is still unused */
/* VERDICT_SHALLOW: decided by blocks not FAREBOX_EVM_SETTLE_CONFIRMATIONS
 * deep yet (a reorg could still change it): asked again later. */
typedef enum {
    VERDICT_CONFIRMED,
    VERDICT_FAILED,
    VERDICT_UNKNOWN,
    VERDICT_UNUSED,
    VERDICT_SHALLOW
} s_verdict_t;

/* settled_by: the transaction that executed the authorization when it is not
 * the settlement's own (whose receipt was judged), else NULL; reason and
 * message: why it failed, or why the verdict is not known yet. */
typedef void(s_judged_fn)(void *arg, s_verdict_t verdict, const char *settled_by, const char *reason,
                          const char *message);

typedef struct {
    verifier_evm_t *net;
    fb_eip3009_t auth;   /* from, to, value and nonce are what is judged */
    uint64_t block;      /* of the reverted receipt, or the head */
    bool unused_verdict; /* an unused authorization is VERDICT_UNUSED, not a failure */
    char other_tx[67];
    uint64_t used_index; /* the logIndex of other_tx's AuthorizationUsed of this authorization */
    uint64_t decisive;   /* the highest block the verdict rests on (0: none) */
    s_verdict_t verdict;
    char settled_by[67];
    const char *reason;
    char message[300];
    s_judged_fn *fn;
    void *arg;
} s_judge_t;

static bool s_quantity(const char *text, uint64_t *out);

static void s_judge_deliver(s_judge_t *g, s_verdict_t verdict, const char *settled_by, const char *reason,
                            const char *message)
{
    s_judged_fn *fn = g->fn;
    void *arg = g->arg;
    char by[67], msg[300];
    snprintf(by, sizeof(by), "%s", settled_by ? settled_by : "");
    snprintf(msg, sizeof(msg), "%s", message ? message : "");
    free(g);
    fn(arg, verdict, settled_by ? by : NULL, reason, message ? msg : NULL);
}

static void s_on_judge_head(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_judge_t *g = arg;
    uint64_t head;
    if (error || !s_quantity(json_string_value(result), &head)) {
        s_judge_deliver(g, VERDICT_UNKNOWN, NULL, "settlement_pending", "the chain's head could not be read");
        return;
    }
    if (head + 1 < g->decisive + g->net->confirmations) {
        char why[160];
        snprintf(why, sizeof(why), "decided in block %llu, %llu of %llu confirmations so far",
                 (unsigned long long)g->decisive,
                 (unsigned long long)(head >= g->decisive ? head - g->decisive + 1 : 0),
                 (unsigned long long)g->net->confirmations);
        s_judge_deliver(g, VERDICT_SHALLOW, NULL, "settlement_pending", why);
        return;
    }
    s_judge_deliver(g, g->verdict, g->settled_by[0] ? g->settled_by : NULL, g->reason,
                    g->message[0] ? g->message : NULL);
}

/* A final verdict (confirmed, failed) stands once the blocks it rests on are
 * FAREBOX_EVM_SETTLE_CONFIRMATIONS deep (their own block counts as one). */
static void s_judged(s_judge_t *g, s_verdict_t verdict, const char *settled_by, const char *reason,
                     const char *message)
{
    if ((verdict != VERDICT_CONFIRMED && verdict != VERDICT_FAILED) || g->net->confirmations <= 1 ||
        g->decisive == 0) {
        s_judge_deliver(g, verdict, settled_by, reason, message);
        return;
    }
    g->verdict = verdict;
    snprintf(g->settled_by, sizeof(g->settled_by), "%s", settled_by ? settled_by : "");
    g->reason = reason;
    snprintf(g->message, sizeof(g->message), "%s", message ? message : "");
    fb_jsonrpc_call(g->net->rpc, "eth_blockNumber", json_array(), s_on_judge_head, g);
}

/* The block a receipt or log names (0: none). */
static uint64_t s_block_of(json_t *o)
{
    uint64_t block = 0;
    return s_quantity(json_string_value(json_object_get(o, "blockNumber")), &block) ? block : 0;
}

/* The chain could not tell (what: the question; error/message/fallback: why). */
static void s_judged_unknown(s_judge_t *g, const char *what, const char *error, const char *message,
                             const char *fallback)
{
    char why[300];
    snprintf(why, sizeof(why), "%s: %s", what, error ? (message ? message : error) : fallback);
    s_judged(g, VERDICT_UNKNOWN, NULL, "settlement_pending", why);
}

static const char *s_jstr(json_t *v)
{
    const char *s = json_string_value(v);
    return s ? s : "";
}

static void s_topic_addr(char out[67], const fb_addr_t *a)
{
    memcpy(out, "0x000000000000000000000000", 26);
    fb_hex_encode(out + 26, a->b, 20);
}

/* Does the receipt carry the token's Transfer(from, to, value)? With at set,
 * only its log of that logIndex counts. */
static bool s_transfer_logged(const verifier_evm_t *net, const fb_eip3009_t *auth, json_t *receipt,
                              const uint64_t *at)
{
    char from[67], to[67], token[43];
    s_topic_addr(from, &auth->from);
    s_topic_addr(to, &auth->to);
    s_lower_addr(token, &net->token);
    size_t i;
    json_t *log;
    json_array_foreach(json_object_get(receipt, "logs"), i, log)
    {
        json_t *topics = json_object_get(log, "topics");
        const char *addr = json_string_value(json_object_get(log, "address"));
        const char *data = json_string_value(json_object_get(log, "data"));
        fb_u256_t v;
        uint64_t index;
        if (at && (!s_quantity(json_string_value(json_object_get(log, "logIndex")), &index) || index != *at))
            continue;
        if (!addr || strcasecmp(addr, token) != 0 || json_array_size(topics) != 3 || !data)
            continue;
        if (strcasecmp(s_jstr(json_array_get(topics, 0)), TRANSFER_TOPIC) == 0 &&
            strcasecmp(s_jstr(json_array_get(topics, 1)), from) == 0 &&
            strcasecmp(s_jstr(json_array_get(topics, 2)), to) == 0 && strlen(data) == 66 &&
            fb_u256_from_hex(&v, data, 66) == 0 && fb_u256_cmp(&v, &auth->value) == 0)
            return true;
    }
    return false;
}

static bool s_quantity(const char *text, uint64_t *out)
{
    fb_u256_t n;
    return text && fb_u256_from_hex(&n, text, strlen(text)) == 0 && fb_u256_to_u64(&n, out);
}

static void s_on_other_receipt(void *arg, json_t *result, const char *error, int64_t code,
                               const char *message)
{
    FB_UNUSED(code);
    s_judge_t *g = arg;
    if (error || !json_is_object(result)) {
        s_judged_unknown(g, "the receipt of the transaction that used the authorization could not be read",
                         error, message, "none yet");
        return;
    }
    uint64_t block = s_block_of(result);
    if (block > g->decisive)
        g->decisive = block;
    /* the Transfer of this authorization's own execution: the token logs it right after the
     * execution's AuthorizationUsed (FiatToken: mark used, then transfer). Any Transfer of the
     * receipt would do otherwise, and one transaction executing this authorization's nonce
     * with a zero transfer beside another authorization's real one to the payee would have
     * that one payment confirm each settlement whose nonce it used. */
    uint64_t transfer_at = g->used_index + 1;
    const char *status = json_string_value(json_object_get(result, "status"));
    if (status && strcmp(status, "0x1") == 0 && s_transfer_logged(g->net, &g->auth, result, &transfer_at)) {
        char tx[67];
        memcpy(tx, g->other_tx, sizeof(tx));
        s_judged(g, VERDICT_CONFIRMED, tx, NULL, NULL);
        return;
    }
    /* the nonce went to another authorization of the payer's (another payee or amount) */
    s_judged(g, VERDICT_FAILED, NULL, "invalid_exact_evm_nonce_already_used",
             "the authorization's nonce was used by another transfer");
}

static void s_on_used_logs(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_judge_t *g = arg;
    if (error || !json_is_array(result)) {
        s_judged_unknown(g, "the transaction that used the authorization could not be looked up", error,
                         message, "not a list");
        return;
    }
    char token[43];
    s_lower_addr(token, &g->net->token);
    bool canceled = false;
    size_t i;
    json_t *log;
    json_array_foreach(result, i, log)
    {
        const char *addr = json_string_value(json_object_get(log, "address"));
        const char *topic = s_jstr(json_array_get(json_object_get(log, "topics"), 0));
        const char *tx = json_string_value(json_object_get(log, "transactionHash"));
        if (!addr || strcasecmp(addr, token) != 0 || json_is_true(json_object_get(log, "removed")))
            continue;
        if (strcasecmp(topic, CANCELED_TOPIC) == 0) {
            canceled = true;
            if (s_block_of(log) > g->decisive)
                g->decisive = s_block_of(log);
        } else if (strcasecmp(topic, USED_TOPIC) == 0 && tx && strlen(tx) == 66 && tx[0] == '0' &&
                   tx[1] == 'x' && strspn(tx + 2, "0123456789abcdefABCDEF") == 64 &&
                   s_quantity(json_string_value(json_object_get(log, "logIndex")), &g->used_index) &&
                   g->used_index < UINT64_MAX) {
            for (size_t k = 0; k < 66; k++)
                g->other_tx[k] = (char)(tx[k] >= 'A' && tx[k] <= 'F' ? tx[k] + 32 : tx[k]);
            g->other_tx[66] = '\0';
            fb_jsonrpc_call(g->net->rpc, "eth_getTransactionReceipt", json_pack("[s]", g->other_tx),
                            s_on_other_receipt, g);
            return;
        }
    }
    if (canceled) {
        s_judged(g, VERDICT_FAILED, NULL, "invalid_exact_evm_nonce_already_used",
                 "the payer canceled the authorization");
        return;
    }
    s_judged(g, VERDICT_UNKNOWN, NULL, "settlement_pending",
             "the token reports the authorization used, but no event of it was found yet");
}

static void s_on_used_state(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_judge_t *g = arg;
    fb_u256_t w;
    if (error || !s_word(result, &w)) {
        s_judged_unknown(g, "the authorization's state could not be read", error, message, "not a word");
        return;
    }
    if (w.b[31] == 0) {
        /* still unused: nothing moved (the payer's balance, the time window...) */
        s_judged(g, g->unused_verdict ? VERDICT_UNUSED : VERDICT_FAILED, NULL,
                 "invalid_exact_evm_transaction_failed", "the settlement transaction reverted");
        return;
    }
    /* used or canceled: by whom, its events say */
    char from[67], nonce[67], lo[24], hi[24];
    s_topic_addr(from, &g->auth.from);
    s_nonce_hex(nonce, g->auth.nonce);
    snprintf(lo, sizeof(lo), "0x%llx",
             (unsigned long long)(g->block > USED_LOOKBACK_BLOCKS ? g->block - USED_LOOKBACK_BLOCKS : 0));
    /* up to the head, as the state was read there: an execution after block (ours reverted,
     * then the payer's own transaction used it) is the payment too; searched only to block,
     * it was never found and the settlement stayed open for good */
    snprintf(hi, sizeof(hi), "latest");
    json_t *filter = json_pack("{ss ss ss s[[ss] s s]}", "address", g->net->token_text, "fromBlock", lo,
                               "toBlock", hi, "topics", USED_TOPIC, CANCELED_TOPIC, from, nonce);
    fb_jsonrpc_call(g->net->rpc, "eth_getLogs", json_pack("[o]", filter), s_on_used_logs, g);
}

/* Judges by the chain's state now: the token's authorizationState, then the
 * transaction that used the authorization (its AuthorizationUsed event from
 * USED_LOOKBACK_BLOCKS before block to the head, and its Transfer to the payee). */
static s_judge_t *s_judge_new(verifier_evm_t *net, const fb_eip3009_t *auth, uint64_t block,
                              bool unused_verdict, s_judged_fn *fn, void *arg)
{
    s_judge_t *g = fb_calloc(1, sizeof(*g));
    g->net = net;
    g->auth = *auth;
    g->block = block;
    g->unused_verdict = unused_verdict;
    g->fn = fn;
    g->arg = arg;
    return g;
}

static void s_judge_state_of(s_judge_t *g)
{
    verifier_evm_t *net = g->net;
    const fb_eip3009_t *auth = &g->auth;
    uint8_t *data;
    size_t n = fb_abi_authorization_state(&data, &auth->from, auth->nonce);
    char *hex = s_hex0x(data, n);
    free(data);
    fb_jsonrpc_call(net->rpc, "eth_call",
                    json_pack("[{ss ss} s]", "to", net->token_text, "data", hex, "latest"), s_on_used_state,
                    g);
    free(hex);
}

static void s_judge_state(verifier_evm_t *net, const fb_eip3009_t *auth, uint64_t block, bool unused_verdict,
                          s_judged_fn *fn, void *arg)
{
    s_judge_state_of(s_judge_new(net, auth, block, unused_verdict, fn, arg));
}

/* Judges a settlement transaction by its receipt: confirmed when it logged the
 * token's Transfer(from, to, value); when it reverted, confirmed all the same
 * if another transaction executed the same authorization (anyone holding it
 * can, and the money goes to the signed payee: the payment was made), failed
 * if the authorization is still unused, was canceled or its nonce paid
 * another transfer, unknown when the chain could not tell. */
static void s_judge_receipt(verifier_evm_t *net, const fb_eip3009_t *auth, json_t *receipt, s_judged_fn *fn,
                            void *arg)
{
    uint64_t block = s_block_of(receipt);
    if (block == 0) {
        fn(arg, VERDICT_UNKNOWN, NULL, "settlement_pending", "the receipt names no block");
        return;
    }
    s_judge_t *g = s_judge_new(net, auth, block, false, fn, arg);
    g->decisive = block;
    const char *status = json_string_value(json_object_get(receipt, "status"));
    if (status && strcmp(status, "0x1") == 0) {
        if (s_transfer_logged(net, auth, receipt, NULL)) /* its own transaction: one transfer */
            s_judged(g, VERDICT_CONFIRMED, NULL, NULL, NULL);
        else
            s_judged(g, VERDICT_FAILED, NULL, "invalid_exact_evm_transfer_event_mismatch",
                     "the transaction did not log the expected Transfer");
        return;
    }
    s_judge_state_of(g);
}

static void s_on_poll_timer(uv_timer_t *t);

static void s_on_judged(void *arg, s_verdict_t verdict, const char *settled_by, const char *reason,
                        const char *message)
{
    s_job_t *j = arg;
    if (verdict == VERDICT_SHALLOW && fb_mono_ms() < j->wait_until) {
        uv_timer_start(&j->poll, s_on_poll_timer, RECEIPT_POLL_MS, 0); /* its receipt again, deeper */
        return;
    }
    if (verdict == VERDICT_SHALLOW) {
        s_fail(j, "settlement_pending", "the transaction is not confirmed yet: %s", message);
        return;
    }
    if (verdict == VERDICT_UNKNOWN) {
        /* not decided yet: the caller may ask again; the tracker follows it */
        fb_log(FB_LOG_WARN, j->trace[0] ? j->trace : NULL, "settlement reverted, its outcome not known yet",
               "tx=%s why=%s", j->tx_hash, message);
        s_fail(j, "settlement_pending", "%s", message);
        return;
    }
    j->res.ok = verdict == VERDICT_CONFIRMED;
    if (j->res.ok && !settled_by && j->resigned)
        settled_by = j->tx_hash; /* the re-signed transaction moved the money */
    if (settled_by && strcmp(settled_by, j->tx_hash) != 0) {
        fb_log(FB_LOG_WARN, j->trace[0] ? j->trace : NULL,
               "settlement reverted: another transaction executed its authorization first",
               "tx=%s settled_by=%s", j->tx_hash, settled_by);
        snprintf(j->res.transaction, sizeof(j->res.transaction), "%s", settled_by);
    }
    if (!j->res.ok) {
        j->res.reason = reason;
        snprintf(j->res.message, sizeof(j->res.message), "%s", message);
    }
    s_record_result(j, j->res.ok, reason, settled_by);
}

static void s_on_receipt(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_job_t *j = arg;
    snprintf(j->res.transaction, sizeof(j->res.transaction), "%s", j->tx_hash);
    if (!error && json_is_object(result)) {
        s_judge_receipt(j->net, &j->chk.auth, result, s_on_judged, j);
        return;
    }
    if (fb_mono_ms() >= j->wait_until) {
        /* not final yet: the caller may ask again; the tracker follows it */
        s_fail(j, "settlement_pending", "the transaction is not confirmed yet");
        return;
    }
    uv_timer_start(&j->poll, s_on_poll_timer, RECEIPT_POLL_MS, 0);
}

static void s_poll_receipt(s_job_t *j)
{
    fb_jsonrpc_call(j->net->rpc, "eth_getTransactionReceipt", json_pack("[s]", j->tx_hash), s_on_receipt, j);
}

static void s_on_poll_timer(uv_timer_t *t)
{
    s_poll_receipt(t->data);
}

static void s_on_broadcast(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(result);
    FB_UNUSED(code);
    s_job_t *j = arg;
    if (error)
        /* "already known", "nonce too low" (it was mined): the receipt decides */
        fb_log(FB_LOG_INFO, j->trace[0] ? j->trace : NULL, "settlement broadcast answered an error",
               "tx=%s reason=%s", j->tx_hash, message ? message : error);
    uv_timer_init(j->v->loop, &j->poll);
    j->poll.data = j;
    j->poll_open = true;
    uv_timer_start(&j->poll, s_on_poll_timer, 0, 0);
}

static void s_broadcast(s_job_t *j)
{
    fb_log(FB_LOG_INFO, j->trace[0] ? j->trace : NULL, "settlement broadcast", "network=%s tx=%s nonce=%llu",
           j->net->caip2, j->tx_hash, (unsigned long long)j->tx_nonce);
    fb_jsonrpc_call(j->net->rpc, "eth_sendRawTransaction", json_pack("[s]", j->raw_hex), s_on_broadcast, j);
}

static void s_on_signed(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    if (!reply->ok) {
        s_rpc_error(j, "ledger", reply->message);
        s_unavailable(j, "the ledger did not record the settlement transaction");
        return;
    }
    /* the recorded transaction wins: it may be another replica's */
    const char *hash, *raw;
    size_t hl, rl;
    if (!fb_mp_get_str(reply->body, "tx_hash", &hash, &hl) ||
        !fb_mp_get_str(reply->body, "raw_tx", &raw, &rl) || hl >= sizeof(j->tx_hash)) {
        s_rpc_error(j, "ledger", "settlement without a transaction");
        s_unavailable(j, "the ledger answered an incomplete settlement");
        return;
    }
    memcpy(j->tx_hash, hash, hl);
    j->tx_hash[hl] = '\0';
    free(j->raw_hex);
    j->raw_hex = fb_strndup(raw, rl);
    s_broadcast(j);
}

/* Signs the settlement transaction for the allocated nonce; its max fee at
 * least min_max_fee (a replacement's). */
static int s_sign(verifier_evm_t *net, uint64_t nonce, const fb_u256_t *base_fee, const fb_u256_t *priority,
                  uint64_t min_max_fee, const uint8_t *calldata, size_t calldata_len, char tx_hash[67],
                  char **raw_hex)
{
    fb_ethtx_t tx = {.chain_id = net->chain_id,
                     .nonce = nonce,
                     .gas = net->gas,
                     .to = net->token,
                     .data = calldata,
                     .data_len = calldata_len};
    tx.max_priority_fee = *priority;
    /* max fee: three times the base fee plus the tip, generous enough to stay
     * includable while the base fee rises */
    uint64_t bf = 0, tip = 0;
    if (!fb_u256_to_u64(base_fee, &bf) || !fb_u256_to_u64(priority, &tip) || bf > UINT64_MAX / 4 - tip)
        return -1;
    fb_u256_from_u64(&tx.max_fee, bf * 3 + tip > min_max_fee ? bf * 3 + tip : min_max_fee);
    uint8_t *raw, hash[32];
    size_t rl;
    if (fb_ethtx_sign(&tx, net->key, &raw, &rl, hash) != 0)
        return -1;
    tx_hash[0] = '0';
    tx_hash[1] = 'x';
    fb_hex_encode(tx_hash + 2, hash, 32);
    *raw_hex = s_hex0x(raw, rl);
    free(raw);
    return 0;
}

/* The chain's objection to a new settlement, or NULL. */
static const char *s_chain_objection(s_job_t *j, char *msg, size_t msglen)
{
    if (j->late) {
        snprintf(msg, msglen, "%s", j->late_msg);
        return LATE_REASON;
    }
    if (j->used_chain) {
        snprintf(msg, msglen, "the token reports this authorization as used or canceled");
        return "invalid_exact_evm_nonce_already_used";
    }
    if (j->balance_known && fb_u256_cmp(&j->balance, &j->chk.auth.value) < 0) {
        snprintf(msg, msglen, "the payer's balance does not cover the payment");
        return "invalid_exact_evm_insufficient_balance";
    }
    if (j->code_empty) {
        snprintf(msg, msglen, "there is no contract at the asset address");
        return "asset_not_deployed_contract";
    }
    if (j->sim_failed) {
        snprintf(msg, msglen, "the transfer would fail: %s", j->sim_message);
        return "invalid_exact_evm_transaction_simulation_failed";
    }
    return NULL;
}

static void s_on_begin(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    if (!reply->ok) {
        char msg[300];
        const char *objection = s_chain_objection(j, msg, sizeof(msg));
        if (objection && strcmp(reply->code, "settlement_not_found") == 0) {
            s_settle_fail(j, objection, msg); /* nothing to follow, nothing sent */
            return;
        }
        if (strcmp(reply->code, "invalid_state") == 0) {
            s_settle_fail(j, "invalid_exact_evm_transaction_failed", reply->message);
            return;
        }
        if (strcmp(reply->code, "authorization_conflict") == 0) {
            /* another authorization with this nonce: only one can ever execute */
            s_settle_fail(j, "invalid_exact_evm_nonce_already_used", reply->message);
            return;
        }
        s_rpc_error(j, "ledger", reply->message);
        s_unavailable(j, "the ledger did not begin the settlement");
        return;
    }
    const char *state, *hash, *raw;
    size_t sl, hl, rl;
    int64_t nonce = 0;
    fb_mp_get_int64(reply->body, "settlement_id", &j->settlement_id);
    fb_mp_get_int64(reply->body, "nonce", &nonce);
    j->tx_nonce = (uint64_t)nonce;
    if (!fb_mp_get_str(reply->body, "state", &state, &sl)) {
        s_unavailable(j, "the ledger answered a settlement without a state");
        return;
    }
    bool has_tx = fb_mp_get_str(reply->body, "tx_hash", &hash, &hl) && hl < sizeof(j->tx_hash) &&
                  fb_mp_get_str(reply->body, "raw_tx", &raw, &rl);
    const char *rhash, *rraw;
    size_t rhl, rrl;
    if (fb_mp_get_str(reply->body, "resigned_tx", &rhash, &rhl) && rhl < sizeof(j->tx_hash) &&
        fb_mp_get_str(reply->body, "resigned_raw", &rraw, &rrl)) {
        /* its first transaction lost its nonce: the re-signed one is followed */
        hash = rhash, hl = rhl, raw = rraw, rl = rrl;
        j->resigned = true;
    }
    if (has_tx) {
        memcpy(j->tx_hash, hash, hl);
        j->tx_hash[hl] = '\0';
        j->raw_hex = fb_strndup(raw, rl);
        snprintf(j->res.transaction, sizeof(j->res.transaction), "%s", j->tx_hash);
    }
    if (fb_streq_n(state, sl, "confirmed")) {
        j->res.ok = true; /* settled before: the same answer again */
        const char *by;
        size_t bl;
        if (fb_mp_get_str(reply->body, "settled_by", &by, &bl) && bl > 0 && bl < sizeof(j->res.transaction))
            snprintf(j->res.transaction, sizeof(j->res.transaction), "%.*s", (int)bl, by);
        s_finish(j);
        return;
    }
    if (fb_streq_n(state, sl, "failed")) {
        const char *why;
        size_t wl;
        char reason[120] = "invalid_exact_evm_transaction_failed";
        if (fb_mp_get_str(reply->body, "reason", &why, &wl) && wl > 0 && wl < sizeof(reason))
            snprintf(reason, sizeof(reason), "%.*s", (int)wl, why);
        j->res.ok = false;
        j->res.reason = strcmp(reason, "invalid_exact_evm_transfer_event_mismatch") == 0
                            ? "invalid_exact_evm_transfer_event_mismatch"
                            : "invalid_exact_evm_transaction_failed";
        snprintf(j->res.message, sizeof(j->res.message), "this authorization's settlement failed before");
        s_finish(j);
        return;
    }
    if (has_tx && fb_streq_n(state, sl, "begun")) {
        /* its transaction lost its nonce and it is being signed again: the
         * tracker does that, and follows it */
        s_fail(j, "settlement_pending",
               "the settlement is being signed again: its transaction's nonce was taken");
        return;
    }
    if (has_tx) {
        s_broadcast(j); /* recorded before: broadcast the same transaction again */
        return;
    }
    char hex_hash[67];
    char *raw_hex = NULL;
    if (s_sign(j->net, j->tx_nonce, &j->base_fee, &j->priority, 0, j->calldata, j->calldata_len, hex_hash,
               &raw_hex) != 0) {
        /* nothing was sent, but the settlement stays begun: the tracker signs
         * it later, so the outcome is not a failure (the caller asks again) */
        s_unavailable(j, "the settlement transaction could not be signed");
        return;
    }
    json_t *body = json_pack("{sI ss ss}", "settlement_id", (json_int_t)j->settlement_id, "tx_hash", hex_hash,
                             "raw_tx", raw_hex);
    free(raw_hex);
    s_ledger_call(j, "ledger.settlement_signed", body, true, s_on_signed);
}

static void s_settle_begin(s_job_t *j)
{
    if (s_wrong_chain(j))
        return;
    if (j->rpc_failed) {
        s_unavailable(j, "the chain could not be asked");
        return;
    }
    uint64_t amount;
    if (!fb_u256_to_u64(&j->chk.auth.value, &amount) || amount > 1000000000000000ULL || amount == 0) {
        s_settle_fail(j, "invalid_payment_requirements", "the amount is outside 1..10^15 atomic units");
        return;
    }
    /* when the chain objects, only an existing settlement (a re-settle of a
     * payment already settled) may go on; nothing new is sent */
    char msg[300];
    bool existing_only = s_chain_objection(j, msg, sizeof(msg)) != NULL;
    char *calldata = s_hex0x(j->calldata, j->calldata_len);
    json_t *body =
        json_pack("{sI ss ss ss sb sI ss}", "amount_micro", (json_int_t)amount, "pay_to", j->r.pay_to,
                  "resource", j->p.resource_url ? j->p.resource_url : (j->r.resource ? j->r.resource : ""),
                  "sender", "", "evm", 1, "chain_nonce", (json_int_t)j->chain_nonce, "calldata", calldata);
    free(calldata);
    char sender[43];
    s_lower_addr(sender, &j->net->sender);
    json_object_set_new(body, "sender", json_string(sender));
    json_object_set_new(body, "existing_only", json_boolean(existing_only));
    json_object_set_new(body, "answer_once", json_boolean(j->once));
    s_auth_key(j, body);
    s_ledger_call(j, "ledger.settlement_begin", body, true, s_on_begin);
}

static void s_settle_step(s_job_t *j)
{
    s_step_done(j);
}

static void s_on_tx_count(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    fb_u256_t n;
    const char *s = json_string_value(result);
    if (error)
        s_rpc_error(j, error, message);
    else if (!s || fb_u256_from_hex(&n, s, strlen(s)) != 0 || !fb_u256_to_u64(&n, &j->chain_nonce))
        s_rpc_error(j, "bad answer", "eth_getTransactionCount");
    s_settle_step(j);
}

/* The base fee of an eth_getBlockByNumber answer. */
static bool s_base_fee(json_t *block, fb_u256_t *out)
{
    const char *s = json_string_value(json_object_get(block, "baseFeePerGas"));
    return s && fb_u256_from_hex(out, s, strlen(s)) == 0;
}

/* The tip of an eth_maxPriorityFeePerGas answer: 0.001 gwei when the node
 * has no opinion, and never more than FAREBOX_EVM_TIP_MAX_WEI (a node's
 * suggestion is only that: the tip is what the settlement wallet pays on top
 * of the base fee, to whoever builds the block). */
static void s_tip(const verifier_evm_t *net, json_t *result, const char *error, fb_u256_t *out)
{
    const char *s = json_string_value(result);
    uint64_t tip;
    if (error || !s || fb_u256_from_hex(out, s, strlen(s)) != 0)
        fb_u256_from_u64(out, 1000000);
    if (!fb_u256_to_u64(out, &tip) || tip > net->tip_max)
        fb_u256_from_u64(out, net->tip_max);
}

static void s_on_block(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    if (error)
        s_rpc_error(j, error, message);
    else if (!s_base_fee(result, &j->base_fee))
        s_rpc_error(j, "bad answer", "eth_getBlockByNumber without baseFeePerGas");
    s_settle_step(j);
}

static void s_on_priority(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_job_t *j = arg;
    s_tip(j->net, result, error, &j->priority);
    s_settle_step(j);
}

static void s_settle_chain(s_job_t *j)
{
    j->calldata_len = fb_abi_transfer_with_authorization(&j->calldata, &j->chk.auth, j->chk.sig);
    j->pending = 6;
    j->after = s_settle_begin;
    s_chain_checks(j);
    fb_jsonrpc_call(j->net->rpc, "eth_getTransactionCount",
                    json_pack("[s s]", j->net->sender_text, "pending"), s_on_tx_count, j);
    fb_jsonrpc_call(j->net->rpc, "eth_getBlockByNumber", json_pack("[s b]", "latest", 0), s_on_block, j);
    fb_jsonrpc_call(j->net->rpc, "eth_maxPriorityFeePerGas", json_array(), s_on_priority, j);
}

/* --- entry ----------------------------------------------------------------------------------------- */

void verifier_evm_run(verifier_t *v, verifier_mode_t mode, uint32_t wait_ms, json_t *payload,
                      json_t *requirements, const fb_x402_payload_t *p, const fb_x402_requirements_t *r,
                      const char *trace, verifier_done_fn *done, void *arg)
{
    s_job_t *j = fb_calloc(1, sizeof(*j));
    j->v = v;
    j->net = &v->evm;
    j->settle = mode != VERIFIER_VERIFY;
    j->once = mode == VERIFIER_SETTLE_ONCE;
    j->wait_ms = wait_ms;
    j->doc_payload = json_incref(payload);
    j->doc_req = json_incref(requirements);
    j->p = *p;
    j->r = *r;
    j->done = done;
    j->arg = arg;
    snprintf(j->trace, sizeof(j->trace), "%s", trace ? trace : "");
    snprintf(j->res.network, sizeof(j->res.network), "%s", p->network);
    snprintf(j->res.payer, sizeof(j->res.payer), "%s", p->from ? p->from : "");

    /* farebox serves its configured network only (decided first, as routing
     * to a scheme is), then the scheme's own checks, then its token */
    fb_x402_network_t n;
    fb_x402_network(r->network, &n);
    if (!v->evm.caip2[0] || strcmp(n.caip2, v->evm.caip2) != 0) {
        s_fail(j, "invalid_network", "farebox does not serve %s", r->network);
        return;
    }
    int64_t margin = v->evm.valid_before_margin_s;
    evm_exact_check(&j->p, &j->r, fb_now_ms() / 1000, margin, &j->chk);
    uint64_t vb;
    if (j->chk.reason && strcmp(j->chk.reason, LATE_REASON) == 0 &&
        fb_u256_to_u64(&j->chk.auth.valid_before, &vb) && vb >= (uint64_t)margin && vb < INT64_MAX) {
        /* past its window, it may still have been accepted within it (a retry of a call
         * served, or of a topup, whose answer was lost): the other checks as of the window's
         * end, then only the ledger's record of it can answer (evm_exact_check's stages) */
        snprintf(j->late_msg, sizeof(j->late_msg), "%s", j->chk.message);
        evm_exact_check(&j->p, &j->r, (int64_t)(vb - (uint64_t)margin), margin, &j->chk);
        j->late = j->chk.reason == NULL;
    }
    if (j->chk.reason) {
        s_fail(j, j->chk.reason, "%s", j->chk.message);
        return;
    }
    if (!fb_addr_eq(&j->chk.asset, &v->evm.token)) {
        s_fail(j, "invalid_exact_evm_asset_mismatch", "the asset must be %s on %s", v->evm.token_text,
               v->evm.caip2);
        return;
    }
    if (strcmp(r->extra_name, v->evm.name) != 0 || strcmp(r->extra_version, v->evm.version) != 0) {
        s_fail(j, "invalid_exact_evm_token_name_mismatch",
               "the token's EIP-712 domain is \"%s\", version \"%s\"", v->evm.name, v->evm.version);
        return;
    }
    if (j->settle) {
        if (!v->evm.has_key) {
            s_fail(j, "settlement_not_configured", "no settlement key is configured for %s", v->evm.caip2);
            return;
        }
        j->wait_until = fb_mono_ms() + j->wait_ms;
        s_settle_chain(j);
        return;
    }
    if (!v->chain_checks) {
        /* the chain is not asked, the ledger still is: an authorization farebox
         * accepted before is used, whatever the chain would say */
        j->pending = 1;
        j->after = s_verify_decide;
        json_t *key = json_object();
        s_auth_key(j, key);
        s_ledger_call(j, "ledger.authorization", key, false, s_on_ledger_auth);
        return;
    }
    s_verify_chain(j);
}

/* --- tracker: settlements left pending ------------------------------------------------------------------ */

/* One open settlement followed: its current transaction (the re-signed one,
 * once the first lost its nonce or was re-priced) rebroadcast and its receipt
 * judged; with no receipt while the wallet's mined nonce passed the
 * transaction's, that transaction can never be mined: the authorization's
 * state decides (used: judged by the transaction that used it; unused: the
 * settlement gets a new nonce and is signed again). With no receipt and its
 * nonce not mined yet, a transaction whose max fee is under the chain's base
 * fee cannot be included: it is replaced at its own nonce, signed at the
 * current fees (its tip raised by at least an eighth, as nodes require of a
 * replacement). One the base fee admits, next in its wallet's line and still
 * not mined FAREBOX_EVM_REPRICE_AFTER_MS after it was signed is left out for
 * its tip: it is replaced the same way, its tip and max fee each raised by
 * an eighth at least, the tip no higher than FAREBOX_EVM_TIP_MAX_WEI.
 * Whichever transaction of a settlement is mined, the judge finds it. */
typedef struct {
    verifier_t *v;
    int64_t settlement_id;
    uint64_t nonce;    /* the current transaction's */
    char tx_hash[67];  /* the current transaction */
    bool resigned;     /* it is not the settlement's first */
    bool nonce_taken;  /* the wallet's mined nonce passed it */
    bool reprice;      /* replaced at its own nonce: priced under the base fee */
    bool low_tip;      /* replaced at its own nonce: admitted, next in line, and left out */
    bool head;         /* next in its wallet's line: the wallet's mined nonce is its own */
    int64_t signed_ms; /* when it was signed (the settlement's updated_at while it is signed) */
    uint64_t max_fee;  /* the transaction's */
    uint64_t min_tip;  /* a replacement's tip at least */
    char *calldata;    /* hex, to sign again */
    fb_eip3009_t auth; /* from, to, value, nonce: read from the settlement's calldata */
} s_track_t;

static void s_track_free(s_track_t *t)
{
    free(t->calldata);
    free(t);
}

static void s_track_recorded(void *arg, const fb_rpc_reply_t *reply)
{
    s_track_t *t = arg;
    if (reply->ok)
        fb_log(FB_LOG_INFO, NULL, "pending settlement resolved", "settlement_id=%lld tx=%s",
               (long long)t->settlement_id, t->tx_hash);
    s_track_free(t);
}

static void s_tsign_start(verifier_t *v, int64_t settlement_id, int64_t nonce, bool resign, uint64_t min_tip,
                          uint64_t min_max_fee, const char *calldata, size_t cl);

static void s_track_renonced(void *arg, const fb_rpc_reply_t *reply)
{
    s_track_t *t = arg;
    int64_t nonce = -1;
    const msgpack_object *renonced = fb_mp_get(reply->body, "renonced");
    if (reply->ok && renonced && renonced->type == MSGPACK_OBJECT_BOOLEAN && renonced->via.boolean &&
        fb_mp_get_int64(reply->body, "nonce", &nonce)) {
        fb_log(FB_LOG_WARN, NULL,
               t->reprice   ? "settlement signed again: its transaction is priced under the base fee"
               : t->low_tip ? "settlement signed again: its transaction waited unmined, its tip raised"
                            : "settlement signed again: its transaction's wallet nonce was taken",
               "settlement_id=%lld replaced=%s nonce=%lld", (long long)t->settlement_id, t->tx_hash,
               (long long)nonce);
        /* a replacement of a transaction the base fee admits raises its
         * max fee by an eighth too (nodes require both raised), and its tip
         * goes no higher than the ceiling */
        s_tsign_start(t->v, t->settlement_id, nonce, true, t->min_tip,
                      t->low_tip ? t->max_fee + t->max_fee / 8 + 1 : 0, t->calldata, strlen(t->calldata));
    }
    s_track_free(t);
}

/* The wallet's pending nonce: the new nonce is at least that. */
static void s_track_pending_nonce(void *arg, json_t *result, const char *error, int64_t code,
                                  const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    uint64_t pending;
    if (error || !s_quantity(json_string_value(result), &pending) || pending > INT64_MAX) {
        s_track_free(t);
        return;
    }
    json_t *body = json_pack("{sI ss sI}", "settlement_id", (json_int_t)t->settlement_id, "tx_hash",
                             t->tx_hash, "chain_nonce", (json_int_t)pending);
    verifier_ledger_call(t->v, "ledger.settlement_renonce", body, true, NULL, s_track_renonced, t);
}

static void s_track_judged(void *arg, s_verdict_t verdict, const char *settled_by, const char *reason,
                           const char *message)
{
    s_track_t *t = arg;
    if (verdict == VERDICT_SHALLOW) {
        fb_log(FB_LOG_INFO, NULL, "pending settlement not confirmed deep enough yet",
               "settlement_id=%lld tx=%s why=%s", (long long)t->settlement_id, t->tx_hash, message);
        s_track_free(t);
        return;
    }
    if (verdict == VERDICT_UNKNOWN) {
        fb_log(FB_LOG_WARN, NULL, "pending settlement's outcome not known yet",
               "settlement_id=%lld tx=%s why=%s", (long long)t->settlement_id, t->tx_hash, message);
        s_track_free(t);
        return;
    }
    if (verdict == VERDICT_UNUSED) {
        /* nothing moved and this transaction never will: a new nonce */
        fb_jsonrpc_call(t->v->evm.rpc, "eth_getTransactionCount",
                        json_pack("[s s]", t->v->evm.sender_text, "pending"), s_track_pending_nonce, t);
        return;
    }
    bool ok = verdict == VERDICT_CONFIRMED;
    if (ok && !settled_by && t->resigned)
        settled_by = t->tx_hash; /* the re-signed transaction moved the money */
    json_t *body = json_pack("{sI ss ss}", "settlement_id", (json_int_t)t->settlement_id, "state",
                             ok ? "confirmed" : "failed", "reason", reason ? reason : "");
    if (settled_by) {
        if (strcmp(settled_by, t->tx_hash) != 0)
            fb_log(FB_LOG_WARN, NULL, "pending settlement: another transaction executed its authorization",
                   "settlement_id=%lld tx=%s settled_by=%s", (long long)t->settlement_id, t->tx_hash,
                   settled_by);
        json_object_set_new(body, "settled_by", json_string(settled_by));
    }
    verifier_ledger_call(t->v, "ledger.settlement_result", body, true, NULL, s_track_recorded, t);
}

static void s_track_head(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    uint64_t head;
    if (error || !s_quantity(json_string_value(result), &head)) {
        s_track_free(t);
        return;
    }
    s_judge_state(&t->v->evm, &t->auth, head, true, s_track_judged, t);
}

static void s_track_receipt(void *arg, json_t *result, const char *error, int64_t code, const char *message);

/* The chain's base fee against the pending transaction's max fee; or, the
 * transaction next in line and admitted, how long it has waited. */
static void s_track_base(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    const verifier_evm_t *e = &t->v->evm;
    uint64_t base;
    if (error || !s_quantity(json_string_value(json_object_get(result, "baseFeePerGas")), &base)) {
        s_track_free(t);
        return;
    }
    if (base <= t->max_fee) {
        /* includable. Left out for longer than the wait (blocks kept being
         * made without it: a tip too low to compete), and next in line (a
         * transaction before it would be holding it back instead), its tip
         * is raised, up to the ceiling. */
        bool waited =
            e->reprice_after_ms > 0 && t->signed_ms > 0 && fb_now_ms() - t->signed_ms >= e->reprice_after_ms;
        if (!waited || !t->head || t->max_fee == UINT64_MAX || t->min_tip > e->tip_max ||
            t->max_fee > UINT64_MAX / 4) {
            if (waited && t->head && t->min_tip > e->tip_max)
                fb_log(FB_LOG_WARN, NULL, "settlement transaction waits unmined with its tip at the ceiling",
                       "settlement_id=%lld tx=%s", (long long)t->settlement_id, t->tx_hash);
            s_track_free(t); /* followed again next round */
            return;
        }
        t->low_tip = true;
    } else {
        if (t->min_tip > e->tip_max) {
            /* a replacement must raise the tip too (nodes refuse one that does not): past the
             * ceiling, it waits for the base fee to come back under its max fee */
            fb_log(FB_LOG_WARN, NULL,
                   "settlement transaction priced under the base fee waits: a replacement's tip would pass "
                   "the ceiling",
                   "settlement_id=%lld tx=%s", (long long)t->settlement_id, t->tx_hash);
            s_track_free(t);
            return;
        }
        t->reprice = true;
    }
    json_t *body = json_pack("{sI ss sb}", "settlement_id", (json_int_t)t->settlement_id, "tx_hash",
                             t->tx_hash, "keep_nonce", 1);
    verifier_ledger_call(t->v, "ledger.settlement_renonce", body, true, NULL, s_track_renonced, t);
}

/* The wallet's mined nonce: past the transaction's, its nonce went to
 * another transaction, or to it, mined since its receipt was asked: the
 * receipt is asked again. */
static void s_track_count(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    uint64_t mined;
    if (error || !s_quantity(json_string_value(result), &mined)) {
        s_track_free(t);
        return;
    }
    if (mined <= t->nonce) {
        /* not mined yet: can it be, at its max fee? (a node may also have
         * dropped it, and refuse it again, for that) */
        t->head = mined == t->nonce;
        fb_jsonrpc_call(t->v->evm.rpc, "eth_getBlockByNumber", json_pack("[s b]", "latest", 0), s_track_base,
                        t);
        return;
    }
    t->nonce_taken = true;
    fb_jsonrpc_call(t->v->evm.rpc, "eth_getTransactionReceipt", json_pack("[s]", t->tx_hash), s_track_receipt,
                    t);
}

/* Its receipt decides; without one, the wallet's mined nonce is asked, and
 * once that passed it (the receipt asked again, still none) the transaction
 * was displaced: the chain's state at the head decides. */
static void s_track_receipt(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    if (error) {
        s_track_free(t);
        return;
    }
    if (json_is_object(result))
        s_judge_receipt(&t->v->evm, &t->auth, result, s_track_judged, t);
    else if (t->nonce_taken)
        fb_jsonrpc_call(t->v->evm.rpc, "eth_blockNumber", json_array(), s_track_head, t);
    else
        fb_jsonrpc_call(t->v->evm.rpc, "eth_getTransactionCount",
                        json_pack("[s s]", t->v->evm.sender_text, "latest"), s_track_count, t);
}

/* from, to, value and nonce of transferWithAuthorization calldata (selector,
 * then from, to, value, validAfter, validBefore, nonce, v, r, s: nine words) */
static bool s_auth_from_calldata(fb_eip3009_t *a, const char *hex, size_t len)
{
    uint8_t data[4 + 9 * 32];
    if (len != 2 + 2 * sizeof(data) || hex[0] != '0' || hex[1] != 'x' ||
        fb_hex_decode(data, sizeof(data), hex + 2, len - 2) != 0)
        return false;
    const uint8_t *w = data + 4;
    memset(a, 0, sizeof(*a));
    memcpy(a->from.b, w + 12, 20);
    memcpy(a->to.b, w + 32 + 12, 20);
    memcpy(a->value.b, w + 64, 32);
    memcpy(a->nonce, w + 5 * 32, 32);
    return true;
}

static void s_track_sent(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(result);
    FB_UNUSED(error);
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    fb_jsonrpc_call(t->v->evm.rpc, "eth_getTransactionReceipt", json_pack("[s]", t->tx_hash), s_track_receipt,
                    t);
}

/* A settlement to sign (never signed: its replica stopped between allocating
 * the nonce and recording the signed transaction; or begun again with a new
 * nonce): signed now with the chain's current fees, as the settle path signs,
 * and recorded. Every later settlement of the wallet waits behind this nonce,
 * so a transaction priced under the base fee would hold them all. */
typedef struct {
    verifier_t *v;
    int64_t settlement_id;
    uint64_t nonce;
    bool resign;          /* a new nonce for a settlement signed before, or a re-priced one */
    uint64_t min_tip;     /* the tip at least (a replacement's) */
    uint64_t min_max_fee; /* the max fee at least (a replacement's; 0: as the fees give it) */
    uint8_t *calldata;
    size_t calldata_len;
    fb_u256_t base_fee, priority;
    int pending; /* fee answers still to come */
    bool no_fee; /* the base fee could not be read: signed on a later round */
} s_tsign_t;

static void s_tsign_sent(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(arg);
    FB_UNUSED(result);
    FB_UNUSED(error);
    FB_UNUSED(code);
    FB_UNUSED(message); /* the receipt is looked for on the next round */
}

/* Recorded: the recorded transaction (ours, or another replica's that came
 * first) is broadcast at once; the next round follows it. */
static void s_tsign_recorded(void *arg, const fb_rpc_reply_t *reply)
{
    s_tsign_t *g = arg;
    const char *raw = NULL, *state = NULL;
    size_t rl = 0, sl = 0;
    if (!reply->ok) {
        fb_log(FB_LOG_WARN, NULL, "signed settlement not recorded", "settlement_id=%lld why=%s",
               (long long)g->settlement_id, reply->message);
    } else if (fb_mp_get_str(reply->body, "state", &state, &sl) && fb_streq_n(state, sl, "signed") &&
               (fb_mp_get_str(reply->body, "resigned_raw", &raw, &rl) ||
                fb_mp_get_str(reply->body, "raw_tx", &raw, &rl))) {
        char *rawz = fb_strndup(raw, rl);
        fb_jsonrpc_call(g->v->evm.rpc, "eth_sendRawTransaction", json_pack("[s]", rawz), s_tsign_sent, NULL);
        free(rawz);
    }
    free(g->calldata);
    free(g);
}

static void s_tsign_step(s_tsign_t *g)
{
    if (--g->pending > 0)
        return;
    uint64_t tip;
    if (!fb_u256_to_u64(&g->priority, &tip) || tip < g->min_tip)
        fb_u256_from_u64(&g->priority, g->min_tip > 0 ? g->min_tip : 1000000);
    char tx_hash[67];
    char *raw_hex = NULL;
    if (g->no_fee || s_sign(&g->v->evm, g->nonce, &g->base_fee, &g->priority, g->min_max_fee, g->calldata,
                            g->calldata_len, tx_hash, &raw_hex) != 0) {
        fb_log(FB_LOG_WARN, NULL, "settlement not signed this round", "settlement_id=%lld why=%s",
               (long long)g->settlement_id, g->no_fee ? "no base fee from the chain" : "signing failed");
    } else {
        json_t *body = json_pack("{sI ss ss}", "settlement_id", (json_int_t)g->settlement_id, "tx_hash",
                                 tx_hash, "raw_tx", raw_hex);
        if (g->resign)
            json_object_set_new(body, "nonce", json_integer((json_int_t)g->nonce));
        free(raw_hex);
        verifier_ledger_call(g->v, "ledger.settlement_signed", body, true, NULL, s_tsign_recorded, g);
        return;
    }
    free(raw_hex);
    free(g->calldata);
    free(g);
}

static void s_tsign_block(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_tsign_t *g = arg;
    g->no_fee = error || !s_base_fee(result, &g->base_fee);
    s_tsign_step(g);
}

static void s_tsign_priority(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_tsign_t *g = arg;
    s_tip(&g->v->evm, result, error, &g->priority);
    s_tsign_step(g);
}

static void s_tsign_start(verifier_t *v, int64_t settlement_id, int64_t nonce, bool resign, uint64_t min_tip,
                          uint64_t min_max_fee, const char *calldata, size_t cl)
{
    if (!v->evm.has_key || nonce < 0 || cl < 4 || cl % 2 != 0 || calldata[0] != '0' || calldata[1] != 'x')
        return;
    s_tsign_t *g = fb_calloc(1, sizeof(*g));
    g->v = v;
    g->settlement_id = settlement_id;
    g->nonce = (uint64_t)nonce;
    g->resign = resign;
    g->min_tip = min_tip;
    g->min_max_fee = min_max_fee;
    g->calldata_len = (cl - 2) / 2;
    g->calldata = fb_malloc(g->calldata_len + 1);
    if (fb_hex_decode(g->calldata, g->calldata_len, calldata + 2, cl - 2) != 0) {
        free(g->calldata);
        free(g);
        return;
    }
    g->pending = 2;
    fb_jsonrpc_call(v->evm.rpc, "eth_getBlockByNumber", json_pack("[s b]", "latest", 0), s_tsign_block, g);
    fb_jsonrpc_call(v->evm.rpc, "eth_maxPriorityFeePerGas", json_array(), s_tsign_priority, g);
}

/* The tip and max fee of a signed EIP-1559 transaction (0x02 || rlp([chain
 * id, nonce, max priority fee, max fee, ...])), from its hex. */
static bool s_rlp_u64(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    if (*p >= end)
        return false;
    uint8_t x = **p;
    (*p)++;
    if (x < 0x80) {
        *out = x;
        return true;
    }
    size_t n = (size_t)(x - 0x80);
    if (x > 0x88 || (size_t)(end - *p) < n)
        return false;
    *out = 0;
    for (size_t i = 0; i < n; i++)
        *out = *out << 8 | (*p)[i];
    *p += n;
    return true;
}

static bool s_tx_fees(const char *hex, size_t len, uint64_t *tip, uint64_t *max_fee)
{
    if (len < 6 || len % 2 != 0 || hex[0] != '0' || hex[1] != 'x' || len > 2 + 2 * 20000)
        return false;
    size_t n = (len - 2) / 2;
    uint8_t *b = fb_malloc(n);
    bool ok = fb_hex_decode(b, n, hex, len) == 0 && b[0] == 0x02;
    const uint8_t *p = b + 2, *end = b + n;
    if (ok && b[1] >= 0xf8 && b[1] <= 0xfa) /* a list of more than 55 bytes: 1..3 length bytes */
        p += b[1] - 0xf7;
    else
        ok = ok && b[1] >= 0xc0 && b[1] <= 0xf7;
    uint64_t chain, nonce;
    ok = ok && s_rlp_u64(&p, end, &chain) && s_rlp_u64(&p, end, &nonce) && s_rlp_u64(&p, end, tip) &&
         s_rlp_u64(&p, end, max_fee);
    free(b);
    return ok;
}

/* One open settlement: rebroadcast its current transaction (harmless if it
 * is known or mined) and judge it by its receipt, or the chain's state once
 * its nonce was taken; when it is to be signed (never signed, or begun again
 * with a new nonce), sign and record it now. */
static void s_track_one(verifier_t *v, const msgpack_object *s)
{
    int64_t id = 0, nonce = -1;
    const char *raw = NULL, *hash = NULL, *calldata = NULL, *state = NULL;
    size_t rl = 0, hl = 0, cl = 0, sl = 0;
    fb_mp_get_int64(s, "settlement_id", &id);
    fb_mp_get_int64(s, "nonce", &nonce);
    fb_mp_get_str(s, "state", &state, &sl);
    bool has_calldata = fb_mp_get_str(s, "calldata", &calldata, &cl);
    bool has_tx = fb_mp_get_str(s, "raw_tx", &raw, &rl) && fb_mp_get_str(s, "tx_hash", &hash, &hl) && hl < 67;
    if (!has_calldata)
        return;
    if (!has_tx || (state && fb_streq_n(state, sl, "begun"))) {
        fb_log(FB_LOG_WARN, NULL,
               has_tx ? "settlement begun again with a new nonce, signing it"
                      : "unsigned settlement found; its replica stopped before signing",
               "settlement_id=%lld nonce=%lld", (long long)id, (long long)nonce);
        s_tsign_start(v, id, nonce, has_tx, 0, 0, calldata, cl);
        return;
    }
    s_track_t *t = fb_calloc(1, sizeof(*t));
    t->v = v;
    t->settlement_id = id;
    t->nonce = nonce < 0 ? 0 : (uint64_t)nonce;
    const char *rhash, *rraw;
    size_t rhl, rrl;
    if (fb_mp_get_str(s, "resigned_tx", &rhash, &rhl) && rhl < 67 &&
        fb_mp_get_str(s, "resigned_raw", &rraw, &rrl)) {
        hash = rhash, hl = rhl, raw = rraw, rl = rrl;
        t->resigned = true;
    }
    memcpy(t->tx_hash, hash, hl);
    if (!s_auth_from_calldata(&t->auth, calldata, cl)) {
        fb_log(FB_LOG_ERROR, NULL, "an open settlement's calldata is not a transferWithAuthorization",
               "settlement_id=%lld", (long long)id);
        s_track_free(t);
        return;
    }
    t->calldata = fb_strndup(calldata, cl);
    uint64_t tip = 0;
    if (!s_tx_fees(raw, rl, &tip, &t->max_fee) || tip > UINT64_MAX / 2)
        t->max_fee = UINT64_MAX; /* not one of ours: never re-priced */
    t->min_tip = tip + tip / 8 + 1;
    fb_mp_get_int64(s, "updated_at_ms", &t->signed_ms); /* a signed settlement's last change: its signing */
    char *rawz = fb_strndup(raw, rl);
    fb_jsonrpc_call(v->evm.rpc, "eth_sendRawTransaction", json_pack("[s]", rawz), s_track_sent, t);
    free(rawz);
}

static void s_on_open(void *arg, const fb_rpc_reply_t *reply)
{
    verifier_t *v = arg;
    v->tracking = false;
    const msgpack_object *list = fb_mp_get(reply->body, "settlements");
    if (!reply->ok || !list || list->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const char *net;
        size_t nl;
        if (fb_mp_get_str(&list->via.array.ptr[i], "network", &net, &nl) && fb_streq_n(net, nl, v->evm.caip2))
            s_track_one(v, &list->via.array.ptr[i]);
    }
}

void verifier_evm_track(verifier_t *v)
{
    if (v->tracking || !v->evm.caip2[0] || !v->evm.has_key)
        return;
    v->tracking = true;
    json_t *body = json_pack("{ss sI sI}", "network", v->evm.caip2, "older_than_ms",
                             (json_int_t)v->settle_wait_ms + 3000, "limit", (json_int_t)20);
    verifier_ledger_call(v, "ledger.open_settlements", body, false, NULL, s_on_open, v);
}
