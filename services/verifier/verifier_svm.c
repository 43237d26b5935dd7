/* verifier_svm - verification and settlement of Solana "exact" payments.
 *
 * verify: the offline checks (svm_exact.c), then in parallel the ledger's
 * record of this transaction (a replay), the blockhash's validity, and a
 * simulation (sigVerify off: the fee payer has not signed yet).
 *
 * The transaction's id is the fee payer's signature over the message, and
 * ed25519 signatures are deterministic: farebox knows it before it signs for
 * real, and the ledger keys the authorization by it.
 *
 * settle: the checks again, the ledger's settlement of this transaction
 * (created once), farebox's signature added in the fee payer's slot, the
 * signed transaction recorded, sent (skipPreflight), and its status followed
 * until confirmed, failed, or the wait runs out (settlement_pending). */
#include "fb_codec.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"
#include "svm_exact.h"
#include "verifier_internal.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_POLL_MS 250
/* A transaction lands at most 150 blocks after its recent blockhash's block;
 * the settling endpoint's height when it knew the blockhash is at least that
 * block's, and as many again cover a height read from a node behind it. */
#define VALID_BLOCKS_MARGIN 300
#define CLUSTER_CHECK_MS    60000 /* how often the endpoint's genesis hash is asked again */

typedef struct s_job {
    verifier_t *v;
    verifier_svm_t *net;
    bool settle;
    bool once;         /* VERIFIER_SETTLE_ONCE */
    bool answer_asked; /* ... and its success asked of the ledger */
    json_t *doc_payload, *doc_req;
    fb_x402_payload_t p;
    fb_x402_requirements_t r;
    svm_check_t chk;
    char trace[129];
    verifier_done_fn *done;
    void *arg;
    verifier_result_t res;
    int pending;
    void (*after)(struct s_job *);
    bool rpc_failed, used_ledger, blockhash_expired, sim_failed;
    int64_t height; /* settle: the endpoint's block height at the checks (-1: not read) */
    char rpc_error[200], sim_message[300];
    char cluster_seen[64]; /* the endpoint's genesis hash when it is not the cluster's, else "" */
    char sig_text[100];    /* the transaction id: base58 of the fee payer's signature */
    char *signed_b64;      /* the fully signed wire transaction */
    int64_t settlement_id;
    int64_t wait_until;
    uint32_t wait_ms; /* how long a settlement waits for its final receipt */
    uv_timer_t poll;
    bool poll_open;
} s_job_t;

static void s_closed(uv_handle_t *h)
{
    free(h->data);
}

static void s_finish(s_job_t *j);

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
    svm_check_free(&j->chk);
    free(j->signed_b64);
    if (j->poll_open) {
        uv_timer_stop(&j->poll);
        j->poll.data = j;
        uv_close((uv_handle_t *)&j->poll, s_closed);
    } else {
        free(j);
    }
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
    j->res.error_code = "unavailable";
    snprintf(j->res.message, sizeof(j->res.message), "%s: %s", what,
             j->rpc_error[0] ? j->rpc_error : "no answer");
    s_finish(j);
}

static void s_step_done(s_job_t *j)
{
    if (--j->pending == 0)
        j->after(j);
}

/* The transaction with farebox's signature in the fee payer's slot, base64;
 * and its id. */
static void s_sign(s_job_t *j)
{
    uint8_t sig[64];
    const fb_sol_tx_t *tx = &j->chk.tx;
    crypto_sign_detached(sig, NULL, tx->message, tx->message_len, j->net->secret);
    uint8_t *wire = fb_malloc(j->chk.wire_len);
    memcpy(wire, j->chk.wire, j->chk.wire_len);
    memcpy(wire + (tx->sigs - j->chk.wire), sig, 64);
    size_t cap = sodium_base64_ENCODED_LEN(j->chk.wire_len, sodium_base64_VARIANT_ORIGINAL);
    j->signed_b64 = fb_malloc(cap);
    sodium_bin2base64(j->signed_b64, cap, wire, j->chk.wire_len, sodium_base64_VARIANT_ORIGINAL);
    fb_base58_encode(j->sig_text, sizeof(j->sig_text), sig, 64);
    free(wire);
}

static void s_auth_key(s_job_t *j, json_t *body)
{
    json_object_set_new(body, "network", json_string(j->net->caip2));
    json_object_set_new(body, "payer", json_string(j->chk.authority_text));
    json_object_set_new(body, "nonce", json_string(j->sig_text));
}

/* --- chain checks --------------------------------------------------------------------- */

static void s_rpc_error(s_job_t *j, const char *error, const char *message)
{
    j->rpc_failed = true;
    snprintf(j->rpc_error, sizeof(j->rpc_error), "%s: %s", error, message ? message : "");
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

static void s_on_blockhash(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    json_t *value = json_object_get(result, "value");
    if (error)
        s_rpc_error(j, error, message);
    else if (json_is_false(value))
        j->blockhash_expired = true;
    s_step_done(j);
}

static void s_on_simulation(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    json_t *err = json_object_get(json_object_get(result, "value"), "err");
    if (error) {
        s_rpc_error(j, error, message);
    } else if (err && !json_is_null(err)) {
        j->sim_failed = true;
        char *text = json_dumps(err, JSON_COMPACT);
        snprintf(j->sim_message, sizeof(j->sim_message), "%s", text ? text : "error");
        free(text);
    }
    s_step_done(j);
}

/* The endpoint's block height (processed), from getBlockHeight's answer;
 * -1 when it is not a height. */
static int64_t s_height(json_t *result)
{
    return json_is_integer(result) && json_integer_value(result) >= 0 ? (int64_t)json_integer_value(result)
                                                                      : -1;
}

static void s_on_height(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    if (error)
        s_rpc_error(j, error, message);
    else if ((j->height = s_height(result)) < 0)
        s_rpc_error(j, "bad answer", "getBlockHeight did not answer a height");
    s_step_done(j);
}

/* The endpoint must serve the network's cluster: its reads would otherwise
 * judge the payment on another cluster's state (fb_sol_cluster_checked). */
static bool s_cluster_due(const verifier_svm_t *net)
{
    return net->cluster_check &&
           (!net->cluster_checked_ms || fb_mono_ms() - net->cluster_checked_ms >= CLUSTER_CHECK_MS);
}

static void s_on_genesis(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    const char *hash = json_string_value(result);
    if (error)
        s_rpc_error(j, error, message);
    else if (!hash || strlen(hash) >= sizeof(j->cluster_seen))
        s_rpc_error(j, "bad answer", "getGenesisHash did not answer a hash");
    else if (!fb_sol_cluster_ok(j->net->caip2, j->net->genesis, hash)) {
        snprintf(j->cluster_seen, sizeof(j->cluster_seen), "%s", hash);
        fb_log(FB_LOG_ERROR, j->trace[0] ? j->trace : NULL, "solana endpoint serves another cluster",
               "network=%s genesis_hash=%s", j->net->caip2, hash);
    } else
        j->net->cluster_checked_ms = fb_mono_ms();
    s_step_done(j);
}

/* A misconfigured endpoint is the operator's fault, not the payer's. */
static bool s_wrong_cluster(s_job_t *j)
{
    if (!j->cluster_seen[0])
        return false;
    snprintf(j->rpc_error, sizeof(j->rpc_error), "its genesis hash is %s, not %s's", j->cluster_seen,
             j->net->genesis[0] ? j->net->genesis : j->net->caip2);
    s_unavailable(j, "the chain endpoint serves another cluster");
    return true;
}

static void s_chain_checks(s_job_t *j, bool with_ledger)
{
    char blockhash[48];
    fb_sol_key_format(blockhash, &j->chk.tx.blockhash);
    j->pending = with_ledger ? 3 : 2;
    j->height = -1;
    if (j->settle) {
        /* the height the transaction cannot land after, recorded with it */
        j->pending++;
        fb_jsonrpc_call(j->net->rpc, "getBlockHeight", json_pack("[{ss}]", "commitment", "processed"),
                        s_on_height, j);
    }
    if (with_ledger) {
        json_t *key = json_object();
        s_auth_key(j, key);
        verifier_ledger_call(j->v, "ledger.authorization", key, false, j->trace, s_on_ledger_auth, j);
    }
    if (s_cluster_due(j->net)) {
        j->pending++;
        fb_jsonrpc_call(j->net->rpc, "getGenesisHash", json_array(), s_on_genesis, j);
    }
    fb_jsonrpc_call(j->net->rpc, "isBlockhashValid",
                    json_pack("[s {ss}]", blockhash, "commitment", "processed"), s_on_blockhash, j);
    fb_jsonrpc_call(j->net->rpc, "simulateTransaction",
                    /* the bytes farebox checked, in its own encoding (the payer's text may be base64
                     * the node reads otherwise, or refuses: unpadded) */
                    json_pack("[s {ss sb sb ss}]", j->signed_b64, "encoding", "base64", "sigVerify", 0,
                              "replaceRecentBlockhash", 0, "commitment", "confirmed"),
                    s_on_simulation, j);
}

static const char *s_objection(s_job_t *j, char *msg, size_t msglen)
{
    if (j->blockhash_expired) {
        snprintf(msg, msglen, "the transaction's recent blockhash has expired");
        return "invalid_exact_svm_blockhash_expired";
    }
    if (j->sim_failed) {
        snprintf(msg, msglen, "Simulation failed: %s", j->sim_message);
        return j->p.version == 1 ? "transaction_simulation_failed"
                                 : "invalid_exact_svm_transaction_simulation_failed";
    }
    return NULL;
}

static void s_verify_decide(s_job_t *j)
{
    if (s_wrong_cluster(j))
        return;
    if (j->used_ledger) {
        s_fail(j, "duplicate_settlement", "farebox has already accepted this transaction");
        return;
    }
    if (j->rpc_failed) {
        s_unavailable(j, "the chain could not be asked");
        return;
    }
    char msg[400];
    const char *objection = s_objection(j, msg, sizeof(msg));
    if (objection) {
        s_fail(j, objection, "%s", msg);
        return;
    }
    json_t *key = json_object();
    s_auth_key(j, key);
    verifier_result_key(&j->res, key, (int64_t)j->chk.amount, j->r.pay_to);
    json_decref(key);
    j->res.ok = true;
    s_finish(j);
}

/* --- settle ----------------------------------------------------------------------------- */

static void s_on_result(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    if (!reply->ok)
        fb_log(FB_LOG_WARN, j->trace[0] ? j->trace : NULL, "settlement result not recorded", "code=%s",
               reply->code);
    s_finish(j);
}

static void s_record(s_job_t *j, bool confirmed)
{
    json_t *body = json_pack("{sI ss ss}", "settlement_id", (json_int_t)j->settlement_id, "state",
                             confirmed ? "confirmed" : "failed", "reason", confirmed ? "" : j->res.reason);
    verifier_ledger_call(j->v, "ledger.settlement_result", body, true, j->trace, s_on_result, j);
}

static void s_on_poll_timer(uv_timer_t *t);

static void s_on_status(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_job_t *j = arg;
    json_t *st = json_array_get(json_object_get(result, "value"), 0);
    if (!error && json_is_object(st)) {
        json_t *err = json_object_get(st, "err");
        const char *level = json_string_value(json_object_get(st, "confirmationStatus"));
        bool settled_level = level && (strcmp(level, "confirmed") == 0 || strcmp(level, "finalized") == 0);
        /* an error seen at "processed" may be on a fork that is dropped: only a
         * confirmed one is the transaction's outcome */
        if (err && !json_is_null(err) && settled_level) {
            j->res.ok = false;
            j->res.reason = "invalid_exact_svm_transaction_failed";
            char *text = json_dumps(err, JSON_COMPACT);
            snprintf(j->res.message, sizeof(j->res.message), "Transaction failed onchain: %s",
                     text ? text : "");
            free(text);
            s_record(j, false);
            return;
        }
        if (settled_level && (!err || json_is_null(err))) {
            j->res.ok = true;
            s_record(j, true);
            return;
        }
    }
    if (fb_mono_ms() >= j->wait_until) {
        j->res.ok = false;
        j->res.reason = "settlement_pending";
        snprintf(j->res.message, sizeof(j->res.message), "the transaction is not confirmed yet");
        s_finish(j);
        return;
    }
    uv_timer_start(&j->poll, s_on_poll_timer, STATUS_POLL_MS, 0);
}

static void s_on_poll_timer(uv_timer_t *t)
{
    s_job_t *j = t->data;
    fb_jsonrpc_call(j->net->rpc, "getSignatureStatuses",
                    json_pack("[[s] {sb}]", j->sig_text, "searchTransactionHistory", 1), s_on_status, j);
}

static void s_on_sent(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(result);
    FB_UNUSED(code);
    s_job_t *j = arg;
    if (error)
        fb_log(FB_LOG_INFO, j->trace[0] ? j->trace : NULL, "settlement send answered an error",
               "tx=%s reason=%s", j->sig_text, message ? message : error);
    uv_timer_init(j->v->loop, &j->poll);
    j->poll.data = j;
    j->poll_open = true;
    uv_timer_start(&j->poll, s_on_poll_timer, 0, 0);
}

static void s_send(s_job_t *j)
{
    snprintf(j->res.transaction, sizeof(j->res.transaction), "%s", j->sig_text);
    fb_log(FB_LOG_INFO, j->trace[0] ? j->trace : NULL, "settlement sent", "network=%s tx=%s", j->net->caip2,
           j->sig_text);
    fb_jsonrpc_call(j->net->rpc, "sendTransaction",
                    json_pack("[s {ss sb ss}]", j->signed_b64, "encoding", "base64", "skipPreflight", 1,
                              "preflightCommitment", "confirmed"),
                    s_on_sent, j);
}

static void s_on_signed(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    if (!reply->ok) {
        s_rpc_error(j, "ledger", reply->message);
        s_unavailable(j, "the ledger did not record the settlement transaction");
        return;
    }
    s_send(j);
}

static void s_on_begin(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    char msg[400];
    const char *objection = s_objection(j, msg, sizeof(msg));
    if (!reply->ok) {
        if (objection && strcmp(reply->code, "settlement_not_found") == 0) {
            s_fail(j, objection, "%s", msg);
            return;
        }
        if (strcmp(reply->code, "invalid_state") == 0) {
            s_fail(j, "invalid_exact_svm_transaction_failed", "%s", reply->message);
            return;
        }
        if (strcmp(reply->code, "authorization_conflict") == 0) {
            s_fail(j, "invalid_exact_svm_transaction_failed", "%s", reply->message);
            return;
        }
        s_rpc_error(j, "ledger", reply->message);
        s_unavailable(j, "the ledger did not begin the settlement");
        return;
    }
    const char *state;
    size_t sl;
    fb_mp_get_int64(reply->body, "settlement_id", &j->settlement_id);
    if (!fb_mp_get_str(reply->body, "state", &state, &sl)) {
        s_unavailable(j, "the ledger answered a settlement without a state");
        return;
    }
    snprintf(j->res.transaction, sizeof(j->res.transaction), "%s", j->sig_text);
    if (fb_streq_n(state, sl, "confirmed")) {
        j->res.ok = true;
        s_finish(j);
        return;
    }
    if (fb_streq_n(state, sl, "failed")) {
        s_fail(j, "invalid_exact_svm_transaction_failed", "this transaction's settlement failed before");
        return;
    }
    if (fb_streq_n(state, sl, "signed")) {
        s_send(j); /* the same signed transaction again */
        return;
    }
    json_t *body = json_pack("{sI ss ss}", "settlement_id", (json_int_t)j->settlement_id, "tx_hash",
                             j->sig_text, "raw_tx", j->signed_b64);
    if (j->height >= 0)
        json_object_set_new(body, "last_valid_height",
                            json_integer((json_int_t)(j->height + VALID_BLOCKS_MARGIN)));
    verifier_ledger_call(j->v, "ledger.settlement_signed", body, true, j->trace, s_on_signed, j);
}

static void s_settle_begin(s_job_t *j)
{
    if (s_wrong_cluster(j))
        return;
    if (j->rpc_failed) {
        s_unavailable(j, "the chain could not be asked");
        return;
    }
    char msg[400];
    bool existing_only = s_objection(j, msg, sizeof(msg)) != NULL;
    if (j->chk.amount == 0 || j->chk.amount > 1000000000000000ULL) {
        s_fail(j, "invalid_payment_requirements", "the amount is outside 1..10^15 atomic units");
        return;
    }
    /* the signed transaction goes with the settlement (its calldata), so that
     * a tracker can record and send it if this replica stops before it does */
    json_t *body =
        json_pack("{sI ss ss ss sb sb ss}", "amount_micro", (json_int_t)j->chk.amount, "pay_to", j->r.pay_to,
                  "resource", j->p.resource_url ? j->p.resource_url : "", "sender", j->net->fee_payer_text,
                  "evm", 0, "existing_only", existing_only, "calldata", j->signed_b64);
    json_object_set_new(body, "answer_once", json_boolean(j->once));
    s_auth_key(j, body);
    verifier_ledger_call(j->v, "ledger.settlement_begin", body, true, j->trace, s_on_begin, j);
}

/* --- entry --------------------------------------------------------------------------------- */

void verifier_svm_run(verifier_t *v, verifier_mode_t mode, uint32_t wait_ms, json_t *payload,
                      json_t *requirements, const fb_x402_payload_t *p, const fb_x402_requirements_t *r,
                      const char *trace, verifier_done_fn *done, void *arg)
{
    s_job_t *j = fb_calloc(1, sizeof(*j));
    j->v = v;
    j->net = &v->svm;
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
    if (!v->svm.caip2[0] || strcmp(r->net.caip2, v->svm.caip2) != 0) {
        s_fail(j, "invalid_network", "farebox does not serve %s", r->network);
        return;
    }
    svm_exact_check(&j->p, &j->r, v->svm.has_key ? &v->svm.fee_payer : NULL, &v->svm.limits, &j->chk);
    snprintf(j->res.payer, sizeof(j->res.payer), "%s", j->chk.authority_text);
    if (j->chk.reason) {
        s_fail(j, j->chk.reason, "%s", j->chk.message);
        return;
    }
    if (!v->svm.has_key) {
        s_fail(j, "settlement_not_configured", "no fee payer key is configured for %s", v->svm.caip2);
        return;
    }
    if (!fb_sol_key_eq(&j->chk.mint, &v->svm.mint)) {
        s_fail(j, "invalid_exact_svm_payload_mint_mismatch", "the mint must be %s", v->svm.mint_text);
        return;
    }
    s_sign(j); /* deterministic: this is the transaction's id */
    if (j->settle) {
        j->wait_until = fb_mono_ms() + j->wait_ms;
        j->after = s_settle_begin;
        s_chain_checks(j, false);
        return;
    }
    if (!v->chain_checks) {
        j->pending = 1;
        j->after = s_verify_decide;
        json_t *key = json_object();
        s_auth_key(j, key);
        verifier_ledger_call(v, "ledger.authorization", key, false, j->trace, s_on_ledger_auth, j);
        return;
    }
    j->after = s_verify_decide;
    s_chain_checks(j, true);
}

/* --- tracker ----------------------------------------------------------------------------------
 *
 * For each settlement signed but not resolved: is its blockhash still valid
 * (asked first), then what is its status. Confirmed or failed on chain is
 * recorded; no status while the blockhash is valid sends it again; no status
 * after the blockhash expired means it can never land: recorded as failed.
 * An endpoint that has not seen the blockhash yet (behind the one the
 * settlement was checked on) also calls it not valid: expiry is believed only
 * once the endpoint's block height has passed the height recorded with the
 * transaction (migration 0022; a settlement recorded before has none). */

typedef struct {
    verifier_t *v;
    int64_t id;
    char sig[100];
    char *raw;
    bool expired;
    int64_t last_valid; /* the height it cannot land after (-1: not recorded) */
} s_track_t;

static void s_track_free(s_track_t *t)
{
    free(t->raw);
    free(t);
}

static void s_track_done(void *arg, const fb_rpc_reply_t *reply)
{
    s_track_t *t = arg;
    if (!reply->ok)
        fb_log(FB_LOG_WARN, NULL, "settlement result not recorded", "id=%lld code=%s", (long long)t->id,
               reply->code);
    s_track_free(t);
}

static void s_track_record(s_track_t *t, const char *state, const char *reason)
{
    fb_log(FB_LOG_INFO, NULL, "pending settlement resolved", "network=%s tx=%s state=%s", t->v->svm.caip2,
           t->sig, state);
    json_t *body =
        json_pack("{sI ss ss}", "settlement_id", (json_int_t)t->id, "state", state, "reason", reason);
    verifier_ledger_call(t->v, "ledger.settlement_result", body, true, NULL, s_track_done, t);
}

static void s_track_sent(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(result);
    FB_UNUSED(error);
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_free(arg);
}

/* Sends the settlement's recorded transaction (again); t is done with. */
static void s_track_send(s_track_t *t)
{
    fb_jsonrpc_call(t->v->svm.rpc, "sendTransaction",
                    json_pack("[s {ss sb}]", t->raw, "encoding", "base64", "skipPreflight", 1), s_track_sent,
                    t);
}

/* The endpoint's height from a getBlockHeight answer; when there is none,
 * t is freed (the next round asks again) and -1 returned. */
static int64_t s_track_height_of(s_track_t *t, json_t *result, const char *error)
{
    int64_t height = error ? -1 : s_height(result);
    if (height < 0)
        s_track_free(t);
    return height;
}

static void s_track_status(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    if (error) {
        s_track_free(t);
        return;
    }
    json_t *st = json_array_get(json_object_get(result, "value"), 0);
    if (json_is_object(st)) {
        const char *level = json_string_value(json_object_get(st, "confirmationStatus"));
        json_t *err = json_object_get(st, "err");
        if (!level || strcmp(level, "processed") == 0)
            s_track_free(t); /* processed (its fork may be dropped): wait for confirmation, error or not */
        else if (err && !json_is_null(err))
            s_track_record(t, "failed", "invalid_exact_svm_transaction_failed");
        else
            s_track_record(t, "confirmed", "");
        return;
    }
    if (t->expired) {
        s_track_record(t, "failed", "invalid_exact_svm_blockhash_expired");
        return;
    }
    s_track_send(t);
}

static void s_track_statuses(s_track_t *t)
{
    fb_jsonrpc_call(t->v->svm.rpc, "getSignatureStatuses",
                    json_pack("[[s] {sb}]", t->sig, "searchTransactionHistory", 1), s_track_status, t);
}

static void s_track_height(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    int64_t height = s_track_height_of(t, result, error);
    if (height < 0)
        return;
    t->expired = height > t->last_valid;
    if (!t->expired)
        fb_log(FB_LOG_INFO, NULL,
               "settlement's blockhash unknown to the endpoint before its last valid height",
               "network=%s tx=%s height=%lld last_valid_height=%lld", t->v->svm.caip2, t->sig,
               (long long)height, (long long)t->last_valid);
    s_track_statuses(t);
}

static void s_track_blockhash(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    if (error) {
        s_track_free(t);
        return;
    }
    if (json_is_false(json_object_get(result, "value")) && t->last_valid >= 0) {
        fb_jsonrpc_call(t->v->svm.rpc, "getBlockHeight", json_pack("[{ss}]", "commitment", "processed"),
                        s_track_height, t);
        return;
    }
    t->expired = json_is_false(json_object_get(result, "value"));
    s_track_statuses(t);
}

/* The blockhash of a signed transaction (base64 wire), as text; with
 * fee_payer, also its id (the first signature, base58) once that signature
 * is the fee payer's, by its key, over the message. */
static int s_raw_blockhash(const char *raw, size_t rl, char out[48], const fb_sol_key_t *fee_payer,
                           char id[100])
{
    uint8_t *wire = fb_malloc(FB_SOL_TX_MAX);
    fb_sol_tx_t tx;
    const char *why;
    int rc = -1, n = fb_base64_decode(wire, FB_SOL_TX_MAX, raw, rl);
    if (n >= 0 && fb_sol_tx_decode(&tx, wire, (size_t)n, &why) == 0 &&
        (!fee_payer || (tx.nsigs > 0 && fb_sol_key_eq(&tx.keys[0], fee_payer) && fb_sol_sig_verify(&tx, 0) &&
                        fb_base58_encode(id, 100, tx.sigs, 64) > 0))) {
        fb_sol_key_format(out, &tx.blockhash);
        rc = 0;
    }
    free(wire);
    return rc;
}

/* A settlement begun whose replica stopped before recording its signed
 * transaction (that transaction is its calldata, 0027: nothing was sent):
 * recorded signed, with the height it cannot land after read now (the
 * blockhash's block is at or below an endpoint's height unless that endpoint
 * lags, which the margin covers), then sent. The next rounds judge it as any
 * other: confirmed, failed on chain, or expired. */
static void s_unsigned_recorded(void *arg, const fb_rpc_reply_t *reply)
{
    s_track_t *t = arg;
    if (!reply->ok) {
        fb_log(FB_LOG_WARN, NULL, "an unsigned settlement's transaction was not recorded", "id=%lld code=%s",
               (long long)t->id, reply->code);
        s_track_free(t);
        return;
    }
    fb_log(FB_LOG_INFO, NULL,
           "unsigned settlement found; its replica stopped before sending it: recorded and sent",
           "network=%s tx=%s id=%lld", t->v->svm.caip2, t->sig, (long long)t->id);
    s_track_send(t);
}

static void s_unsigned_height(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_track_t *t = arg;
    int64_t height = s_track_height_of(t, result, error);
    if (height < 0)
        return;
    json_t *body = json_pack("{sI ss ss sI}", "settlement_id", (json_int_t)t->id, "tx_hash", t->sig, "raw_tx",
                             t->raw, "last_valid_height", (json_int_t)(height + VALID_BLOCKS_MARGIN));
    verifier_ledger_call(t->v, "ledger.settlement_signed", body, true, NULL, s_unsigned_recorded, t);
}

static void s_track_unsigned(verifier_t *v, int64_t id, const char *raw, size_t rl)
{
    char blockhash[48], sig[100];
    if (s_raw_blockhash(raw, rl, blockhash, &v->svm.fee_payer, sig) != 0) {
        fb_log(FB_LOG_ERROR, NULL,
               "an unsigned settlement's transaction is not one signed by this fee payer; it is left alone",
               "network=%s id=%lld", v->svm.caip2, (long long)id);
        return;
    }
    s_track_t *t = fb_calloc(1, sizeof(*t));
    t->v = v;
    t->id = id;
    memcpy(t->sig, sig, sizeof(t->sig));
    t->raw = fb_strndup(raw, rl);
    fb_jsonrpc_call(v->svm.rpc, "getBlockHeight", json_pack("[{ss}]", "commitment", "processed"),
                    s_unsigned_height, t);
}

static void s_on_open(void *arg, const fb_rpc_reply_t *reply)
{
    verifier_t *v = arg;
    const msgpack_object *list = fb_mp_get(reply->body, "settlements");
    if (!reply->ok || !list || list->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *s = &list->via.array.ptr[i];
        const char *raw, *hash, *state;
        size_t rl, hl, sl;
        int64_t id;
        char blockhash[48];
        if (!fb_mp_get_int64(s, "settlement_id", &id))
            continue;
        if (!fb_mp_get_str(s, "raw_tx", &raw, &rl)) {
            if (fb_mp_get_str(s, "state", &state, &sl) && fb_streq_n(state, sl, "begun") &&
                fb_mp_get_str(s, "calldata", &raw, &rl) && rl > 0)
                s_track_unsigned(v, id, raw, rl);
            continue;
        }
        if (!fb_mp_get_str(s, "tx_hash", &hash, &hl) || hl >= 100 ||
            s_raw_blockhash(raw, rl, blockhash, NULL, NULL) != 0)
            continue;
        s_track_t *t = fb_calloc(1, sizeof(*t));
        t->v = v;
        t->id = id;
        memcpy(t->sig, hash, hl);
        t->raw = fb_strndup(raw, rl);
        t->last_valid = -1;
        fb_mp_get_int64(s, "last_valid_height", &t->last_valid);
        fb_jsonrpc_call(v->svm.rpc, "isBlockhashValid",
                        json_pack("[s {ss}]", blockhash, "commitment", "processed"), s_track_blockhash, t);
    }
}

static void s_track_open(verifier_t *v);

/* Before settlements are judged on an endpoint's word, its cluster (once a
 * minute): on another cluster a transaction's blockhash is unknown and its
 * height unrelated, and a settlement would be recorded failed. */
static void s_track_genesis(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    verifier_t *v = arg;
    verifier_svm_t *net = &v->svm;
    const char *hash = json_string_value(result);
    if (error || !hash)
        return; /* the next round asks again */
    if (fb_sol_cluster_ok(net->caip2, net->genesis, hash)) {
        net->cluster_checked_ms = fb_mono_ms();
        net->cluster_logged[0] = '\0';
        s_track_open(v);
        return;
    }
    if (strncmp(net->cluster_logged, hash, sizeof(net->cluster_logged) - 1) != 0) {
        snprintf(net->cluster_logged, sizeof(net->cluster_logged), "%s", hash);
        fb_log(FB_LOG_ERROR, NULL,
               "solana endpoint serves another cluster; pending settlements are left alone",
               "network=%s genesis_hash=%s", net->caip2, hash);
    }
}

void verifier_svm_track(verifier_t *v)
{
    if (!v->svm.caip2[0] || !v->svm.has_key)
        return;
    if (s_cluster_due(&v->svm)) {
        fb_jsonrpc_call(v->svm.rpc, "getGenesisHash", json_array(), s_track_genesis, v);
        return;
    }
    s_track_open(v);
}

static void s_track_open(verifier_t *v)
{
    json_t *body = json_pack("{ss sI sI}", "network", v->svm.caip2, "older_than_ms",
                             (json_int_t)v->settle_wait_ms + 3000, "limit", (json_int_t)20);
    verifier_ledger_call(v, "ledger.open_settlements", body, false, NULL, s_on_open, v);
}
