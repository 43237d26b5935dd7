/* edge_topup - POST /v1/topup: an x402 payment to the operator's treasury
 * credits the key's account.
 *
 *   key      the API key names the account
 *   quote    {"amount_micro": N} without a payment header: 402 with a quote
 *            of N on every network (the same PAYMENT-REQUIRED as paid calls)
 *   verify   the payment meets those requirements and is recorded in the
 *            ledger for "topup:account:<id>": a payment already used for a
 *            call, or for another account, is refused
 *   settle   the transfer is sent and confirmed (settle is idempotent)
 *   credit   ledger.credit kind topup, source (network, transaction, 0):
 *            credited once, whatever retries
 *
 * With FAREBOX_TOPUP_ADVANCE_MAX_MICRO, settle answers once the transfer is
 * broadcast, and a transfer not final yet is credited at once as an advance
 * (ledger.topup_advance, the same source): the ledger takes it back if the
 * transfer fails. An account over its limit of unsettled topups, or with an
 * advance taken back before, waits for the settlement as without it (202).
 *
 * Sending the same request again is safe: a payment recorded for this
 * account goes on to settle (the same transaction) and credit (answered
 * again with duplicate: true), so a caller that lost the answer, or got 202
 * while the transfer was pending, just retries. */
#include "edge_topup.h"
#include "edge_auth.h"
#include "edge_metrics.h"
#include "edge_reply.h"
#include "edge_x402.h"
#include "fb_log.h"
#include "fb_util.h"
#include "fb_x402.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPUP_MAX_MICRO    100000000000LL /* $100,000 in one topup */
#define VERIFY_DEADLINE_MS 10000
#define SETTLE_DEADLINE_MS 60000
#define CREDIT_DEADLINE_MS 10000

typedef struct {
    edge_worker_t *w;
    fb_http_guard_t *guard;
    char rid[EDGE_ID_TEXT_MAX + 1];
    int64_t amount, account_id;
    char *url;         /* the quote's resource */
    char resource[64]; /* what the ledger records the payment for */
    char *header;      /* PAYMENT-SIGNATURE or X-PAYMENT, or NULL */
    json_t *requirements;
    int version;
    char *pay_response; /* PAYMENT-RESPONSE of the settlement, once confirmed */
    char *tx;           /* the settlement's transaction */
} s_topup_t;

static void s_free(s_topup_t *t)
{
    fb_http_guard_release(&t->guard);
    free(t->url);
    free(t->header);
    json_decref(t->requirements);
    free(t->pay_response);
    free(t->tx);
    free(t);
}

static void s_quote(s_topup_t *t, const char *code, const char *reason, const char *message)
{
    char desc[80];
    snprintf(desc, sizeof(desc), "top up account %" PRId64, t->account_id);
    edge_x402_send_quote(t->w->x402, t->guard->req, EDGE_OPENAI, t->amount, t->url, desc, code, reason,
                         message);
}

/* The idempotency key of a topup's credit: "<kind>:<network>:<tx>" while it
 * fits the ledger's 128 bytes (EVM), else "<kind>:" and the SHA-256 of
 * "<network>:<tx>" (a Solana signature is 88 characters). */
static void s_credit_idem(char *out, size_t len, const char *kind, const char *network, const char *tx)
{
    char source[400];
    int n = snprintf(source, sizeof(source), "%s:%s", network, tx);
    edge_rpc_idem(out, len, kind, source, n > 0 && (size_t)n < sizeof(source) ? (size_t)n : strlen(source));
}

/* 202: the transfer is broadcast, its credit waits for it to be final. */
static void s_pending(s_topup_t *t, const char *why)
{
    char msg[600];
    snprintf(msg, sizeof(msg),
             "%s%sthe transfer is sent but not confirmed yet; send the same request again to "
             "credit it once it is",
             why ? why : "", why ? ": " : "");
    edge_send_json(t->guard->req, 202,
                   json_pack("{ss ss ss ss}", "object", "topup", "state", "pending", "transaction", t->tx,
                             "message", msg));
}

static void s_on_credit(void *arg, const fb_rpc_reply_t *reply)
{
    s_topup_t *t = arg;
    h2o_req_t *req = t->guard->req;
    json_t *b = edge_reply_json(reply);
    const char *code = reply->code;
    if (!reply->ok && t->tx && strcmp(code, "advance_refused") == 0) {
        if (req)
            s_pending(t, reply->message);
    } else if (!reply->ok && t->tx && strcmp(code, "settlement_failed") == 0) {
        if (req)
            s_quote(t, "payment_invalid", "settlement_failed", "the payment could not be settled: it failed");
    } else if (!reply->ok) {
        fb_log(FB_LOG_ERROR, t->rid, "topup not credited yet: the caller should retry",
               "account_id=%" PRId64 " code=%s message=%s", t->account_id, code, reply->message);
        if (req)
            edge_error(req, EDGE_OPENAI, 503, "unavailable", NULL,
                       "the payment was sent but the credit could not be written yet (%s: %s); send the same "
                       "request again to credit it (once)",
                       code, reply->message);
    } else if (req) {
        if (t->pay_response)
            edge_x402_set_receipt(req, t->version, t->pay_response);
        /* credited before: by this source (duplicate) or by this very retry's key (replayed) */
        bool dup =
            json_is_true(json_object_get(b, "duplicate")) || json_is_true(json_object_get(b, "replayed"));
        /* an advance's answer names the settlement's state; a plain credit follows a confirmed one */
        const char *state = json_string_value(json_object_get(b, "settlement_state"));
        bool settled = t->pay_response || (state && strcmp(state, "confirmed") == 0);
        json_t *doc = json_pack(
            "{ss sO sO sO sb sO? sO? ss}", "object", "topup", "account_id", json_object_get(b, "account_id"),
            "amount_micro", json_object_get(b, "amount_micro"), "credit_id", json_object_get(b, "credit_id"),
            "duplicate", dup, "balance_micro", json_object_get(b, "balance_micro"), "available_micro",
            json_object_get(b, "available_micro"), "settlement", settled ? "confirmed" : "pending");
        if (doc && t->tx)
            json_object_set_new(doc, "transaction", json_string(t->tx));
        if (!dup) {
            edge_metrics_money(EDGE_MONEY_TOPUP, t->amount);
            if (!settled)
                edge_metrics_money(EDGE_MONEY_ADVANCED, t->amount);
        }
        edge_send_json(req, doc ? 200 : 503,
                       doc ? doc : json_pack("{ss}", "error", "incomplete ledger answer"));
    }
    json_decref(b);
    s_free(t);
}

/* ledger.topup_advance: credited at once while the account is within its
 * limit (a confirmed transfer, or a source credited before, as it is). A
 * confirmed transfer's credit is asked under its own key, so that it is not
 * answered with the advance's earlier (pending) answer. */
static void s_advance(s_topup_t *t, const char *network, const char *tx)
{
    char idem[400];
    s_credit_idem(idem, sizeof(idem), t->pay_response ? "topup-advance-final" : "topup-advance", network, tx);
    json_t *body = json_pack("{sI sI s{ss ss si} sI}", "account_id", (json_int_t)t->account_id,
                             "amount_micro", (json_int_t)t->amount, "source", "chain", network, "tx", tx,
                             "index", 0, "advance_limit_micro", (json_int_t)t->w->edge->topup_advance_max);
    edge_rpc_json(t->w->ledger, "ledger.topup_advance", body, idem, t->rid, CREDIT_DEADLINE_MS, s_on_credit,
                  t);
}

static void s_on_settled(void *arg, const fb_rpc_reply_t *reply)
{
    s_topup_t *t = arg;
    h2o_req_t *req = t->guard->req;
    json_t *b = edge_reply_json(reply);
    const char *tx = json_string_value(json_object_get(b, "transaction"));
    const char *network = json_string_value(json_object_get(b, "network"));
    const char *payer = json_string_value(json_object_get(b, "payer"));
    /* the receipt names the network as the payment did (a v1 name for X-PAYMENT); the
     * credit's source names it as the settlement does (CAIP-2), the one source its
     * sweeper (ledger 0017) credits under: a v1 name made a second credit of it */
    fb_x402_network_t net;
    const char *source = network && fb_x402_network(network, &net) == 0 ? net.caip2 : NULL;
    const char *reason = json_string_value(json_object_get(b, "errorReason"));
    if (!reply->ok) {
        if (req)
            edge_error(req, EDGE_OPENAI, 503, "unavailable", NULL,
                       "the payment could not be settled now; send the same request again");
    } else if (json_is_true(json_object_get(b, "success")) && tx && tx[0] && source) {
        t->pay_response = edge_x402_receipt(tx, network, payer);
        t->tx = fb_strdup(tx);
        if (t->w->edge->topup_advance_max > 0) {
            s_advance(t, source, tx); /* the credit may be an advance already: its answer tells */
        } else {
            char idem[400];
            s_credit_idem(idem, sizeof(idem), "topup", source, tx);
            json_t *body = json_pack("{sI sI ss s{ss ss si}}", "account_id", (json_int_t)t->account_id,
                                     "amount_micro", (json_int_t)t->amount, "kind", "topup", "source",
                                     "chain", source, "tx", tx, "index", 0);
            edge_rpc_json(t->w->ledger, "ledger.credit", body, idem, t->rid, CREDIT_DEADLINE_MS, s_on_credit,
                          t);
        }
        json_decref(b);
        return;
    } else if (reason && strcmp(reason, "settlement_pending") == 0 && tx && tx[0] && source) {
        t->tx = fb_strdup(tx);
        if (t->w->edge->topup_advance_max > 0) {
            s_advance(t, source, tx);
            json_decref(b);
            return;
        }
        if (req)
            s_pending(t, NULL);
    } else if (req) {
        char msg[400];
        const char *m = json_string_value(json_object_get(b, "errorMessage"));
        snprintf(msg, sizeof(msg), "the payment could not be settled: %s%s%s", reason ? reason : "failed",
                 m ? ": " : "", m ? m : "");
        s_quote(t, "payment_invalid", reason ? reason : "settlement_failed", msg);
    }
    json_decref(b);
    s_free(t);
}

static void s_settle(s_topup_t *t)
{
    char idem[80];
    snprintf(idem, sizeof(idem), "topup-settle:%.60s", t->rid);
    edge_rpc_json_long(t->w->verifier, "verifier.settle",
                       json_pack("{ss sO sb}", "header", t->header, "requirements", t->requirements, "wait",
                                 t->w->edge->topup_advance_max == 0),
                       idem, t->rid, SETTLE_DEADLINE_MS, s_on_settled, t);
}

static void s_on_verified(void *arg, const fb_rpc_reply_t *reply)
{
    s_topup_t *t = arg;
    h2o_req_t *req = t->guard->req;
    json_t *b = edge_reply_json(reply);
    const char *recorded = json_string_value(json_object_get(b, "authorizationResource"));
    if (!req) {
        s_free(t);
    } else if (!reply->ok && strcmp(reply->code, "bad_request") == 0) {
        /* the payment as it is cannot be taken (a reserved resource, say): not worth a retry */
        char msg[400];
        snprintf(msg, sizeof(msg), "the payment was refused: invalid_payload: %s", reply->message);
        s_quote(t, "payment_invalid", "invalid_payload", msg);
        s_free(t);
    } else if (!reply->ok) {
        edge_error(req, EDGE_OPENAI, 503, "unavailable", NULL, "the payment could not be checked now");
        s_free(t);
    } else if (json_is_true(json_object_get(b, "isValid")) ||
               (recorded && strcmp(recorded, t->resource) == 0)) {
        s_settle(t); /* new, or this account's own payment again: settle and credit are idempotent */
    } else {
        const char *reason = json_string_value(json_object_get(b, "invalidReason"));
        const char *m = json_string_value(json_object_get(b, "invalidMessage"));
        char msg[400];
        snprintf(msg, sizeof(msg), "the payment was refused: %s%s%s", reason ? reason : "invalid",
                 recorded ? ": it was used for something else" : (m ? ": " : ""),
                 recorded ? "" : (m ? m : ""));
        s_quote(t, "payment_invalid", reason ? reason : "invalid_payment", msg);
        s_free(t);
    }
    json_decref(b);
}

static void s_on_ready(void *arg, const char *error)
{
    s_topup_t *t = arg;
    h2o_req_t *req = t->guard->req;
    if (!req) {
        s_free(t);
        return;
    }
    if (error) {
        edge_error(req, EDGE_OPENAI, 503, "unavailable", NULL, "payments cannot be quoted now: %s", error);
        s_free(t);
        return;
    }
    if (!t->header) {
        s_quote(t, "payment_required", NULL, "pay the quoted amount with x402 (PAYMENT-SIGNATURE) to top up");
        s_free(t);
        return;
    }
    char err[300], desc[80];
    snprintf(desc, sizeof(desc), "top up account %" PRId64, t->account_id);
    t->requirements = edge_x402_requirements(t->w->x402, t->header, strlen(t->header), t->amount, t->url,
                                             desc, &t->version, err, sizeof(err));
    if (!t->requirements) {
        char msg[400];
        snprintf(msg, sizeof(msg), "the payment header cannot be used: %s", err);
        s_quote(t, "payment_invalid", "invalid_payload", msg);
        s_free(t);
        return;
    }
    edge_rpc_json_long(t->w->verifier, "verifier.verify",
                       json_pack("{ss sO sb ss}", "header", t->header, "requirements", t->requirements,
                                 "record", 1, "resource", t->resource),
                       NULL, t->rid, VERIFY_DEADLINE_MS, s_on_verified, t);
}

static void s_on_key(void *arg, const edge_key_t *k)
{
    s_topup_t *t = arg;
    h2o_req_t *req = t->guard->req;
    if (!req) {
        s_free(t);
    } else if (k->status != 200) {
        edge_key_error(req, EDGE_OPENAI, k);
        s_free(t);
    } else {
        t->account_id = k->account_id;
        snprintf(t->resource, sizeof(t->resource), "topup:account:%" PRId64, t->account_id);
        edge_x402_when_ready(t->w->x402, s_on_ready, t);
    }
}

int edge_topup(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    if (!edge_x402_enabled(w->edge)) {
        edge_error(req, EDGE_OPENAI, 503, "unavailable", NULL,
                   "topups need a treasury: FAREBOX_PAY_TO_EVM or FAREBOX_PAY_TO_SOLANA");
        return 0;
    }
    json_error_t jerr;
    json_t *body =
        json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *amount = json_object_get(body, "amount_micro");
    if (!json_is_object(body) || json_object_size(body) != 1 || !json_is_integer(amount) ||
        json_integer_value(amount) < 1 || json_integer_value(amount) > TOPUP_MAX_MICRO) {
        edge_error(req, EDGE_OPENAI, 400, "invalid_request", NULL,
                   "the body must be {\"amount_micro\": N}, N from 1 to %lld micro-USDC",
                   (long long)TOPUP_MAX_MICRO);
        json_decref(body);
        return 0;
    }
    h2o_iovec_t pay;
    int has = edge_x402_payment_header(req, &pay);
    if (has < 0) {
        edge_error(req, EDGE_OPENAI, 400, "invalid_request", NULL,
                   "the payment header is empty or too large");
        json_decref(body);
        return 0;
    }
    s_topup_t *t = fb_calloc(1, sizeof(*t));
    t->w = w;
    t->guard = fb_http_guard_new(req);
    snprintf(t->rid, sizeof(t->rid), "%s", rid);
    t->amount = json_integer_value(amount);
    json_decref(body);
    t->url = edge_x402_resource_url(req);
    if (has)
        t->header = fb_strndup(pay.base, pay.len);
    edge_auth_key(w, req, rid, s_on_key, t);
    return 0;
}
