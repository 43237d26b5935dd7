/* verifier_rpc - RPC methods of the verifier. */
#include "verifier_rpc.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"
#include "verifier_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    fb_rpc_call_t *call;
    verifier_t *v;
    bool settle;
    bool record; /* verify: record a valid payment's authorization in the ledger */
    char resource[512];
    verifier_result_t res; /* a valid verify, while it is recorded */
} s_pending_t;

static void s_reply_json(fb_rpc_call_t **call, json_t *out)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fb_mp_pack_json(&pk, out);
    json_decref(out);
    fb_rpc_call_reply(call, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* The payment and requirements of a request body, as JSON documents. */
static int s_read(const msgpack_object *body, json_t **payload, json_t **req, char *err, size_t errlen)
{
    *payload = *req = NULL;
    const msgpack_object *p = fb_mp_get(body, "payload"), *h = fb_mp_get(body, "header"),
                         *r = fb_mp_get(body, "requirements");
    const char *s;
    size_t n;
    if (p && p->type == MSGPACK_OBJECT_MAP) {
        char *text = fb_mp_to_json(p);
        json_error_t jerr;
        *payload = json_loads(text, 0, &jerr);
        free(text);
    } else if (fb_mp_str(h, &s, &n)) {
        *payload = fb_x402_decode_header(s, n, err, errlen);
        if (!*payload)
            return -1;
    } else {
        snprintf(err, errlen,
                 "payload (a map) or header (the PAYMENT-SIGNATURE or X-PAYMENT value) is required");
        return -1;
    }
    if (!r || r->type != MSGPACK_OBJECT_MAP) {
        snprintf(err, errlen, "requirements (a map of PaymentRequirements) is required");
        json_decref(*payload);
        *payload = NULL;
        return -1;
    }
    char *text = fb_mp_to_json(r);
    json_error_t jerr;
    *req = json_loads(text, 0, &jerr);
    free(text);
    if (!*payload || !*req) {
        snprintf(err, errlen, "payload or requirements could not be read");
        json_decref(*payload);
        json_decref(*req);
        return -1;
    }
    /* the resource a settlement records comes from the payment when no
     * authorization was recorded first; "topup:account:<id>" is what makes the
     * ledger credit an account once the settlement confirms, and only the
     * edge's POST /v1/topup may name it (through "resource", after checking the
     * payment pays its treasury): a facilitator caller naming it, paying
     * itself, was credited that much */
    const char *named[] = {json_string_value(json_object_get(json_object_get(*payload, "resource"), "url")),
                           json_string_value(json_object_get(*payload, "resource")),
                           json_string_value(json_object_get(*req, "resource"))};
    for (size_t i = 0; i < FB_ARRAY_SIZE(named); i++) {
        if (named[i] && strncmp(named[i], "topup:", 6) == 0) {
            snprintf(err, errlen,
                     "the resource \"%.60s\" is reserved: topups are paid through POST /v1/topup", named[i]);
            json_decref(*payload);
            json_decref(*req);
            *payload = *req = NULL;
            return -1;
        }
    }
    return 0;
}

static void s_answer(s_pending_t *pend, const verifier_result_t *r);

/* The ledger recorded (or refused) a valid payment's authorization: accepted
 * once, whatever races it, so that one payment buys one call. */
static void s_on_recorded(void *arg, const fb_rpc_reply_t *reply)
{
    s_pending_t *pend = arg;
    verifier_result_t *r = &pend->res;
    if (reply->ok) {
        const msgpack_object *id = fb_mp_get(reply->body, "authorization_id");
        r->authorization_id = id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)id->via.u64 : 0;
    } else if (strcmp(reply->code, "authorization_used") == 0) {
        r->ok = false;
        verifier_result_recorded(r, reply->body);
        r->reason = strncmp(r->auth_network, "solana:", 7) == 0 ? "duplicate_settlement"
                                                                : "invalid_exact_evm_nonce_already_used";
        snprintf(r->message, sizeof(r->message), "farebox has already accepted this payment");
    } else {
        r->error_code = FB_RPC_E_UNAVAILABLE;
        snprintf(r->message, sizeof(r->message), "the ledger could not record the payment: %s",
                 reply->message);
    }
    s_answer(pend, r);
}

static void s_done(void *arg, const verifier_result_t *r)
{
    s_pending_t *pend = arg;
    if (!pend->settle && pend->record && r->ok && !r->error_code) {
        pend->res = *r;
        json_t *body = json_pack("{ss ss sI ss ss ss}", "network", r->auth_network, "nonce", r->auth_nonce,
                                 "amount_micro", (json_int_t)r->amount_micro, "payer", r->auth_payer,
                                 "pay_to", r->pay_to, "resource", pend->resource);
        verifier_ledger_call(pend->v, "ledger.record_authorization", body, true,
                             fb_rpc_call_trace(pend->call), s_on_recorded, pend);
        return;
    }
    s_answer(pend, r);
}

static void s_answer(s_pending_t *pend, const verifier_result_t *r)
{
    if (r->error_code) {
        fb_rpc_call_error(&pend->call, r->error_code, NULL, 0, "%s", r->message);
        free(pend);
        return;
    }
    json_t *out;
    if (pend->settle) {
        out = json_pack("{sb ss ss ss}", "success", r->ok, "transaction", r->transaction, "network",
                        r->network, "payer", r->payer);
        if (!r->ok) {
            json_object_set_new(out, "errorReason",
                                json_string(r->reason ? r->reason : "unexpected_settle_error"));
            if (r->message[0])
                json_object_set_new(out, "errorMessage", json_string(r->message));
        }
    } else {
        out = json_pack("{sb ss ss}", "isValid", r->ok, "payer", r->payer, "network", r->network);
        if (r->ok && pend->record)
            json_object_set_new(out, "authorizationId", json_integer(r->authorization_id));
        if (!r->ok && pend->record && r->authorization_id) {
            /* refused as already accepted: which record, for what */
            json_object_set_new(out, "authorizationId", json_integer(r->authorization_id));
            json_object_set_new(out, "authorizationResource", json_string(r->recorded_resource));
        }
        if (!r->ok) {
            json_object_set_new(out, "invalidReason",
                                json_string(r->reason ? r->reason : "unexpected_verify_error"));
            if (r->message[0])
                json_object_set_new(out, "invalidMessage", json_string(r->message));
        }
    }
    s_reply_json(&pend->call, out);
    free(pend);
}

static void s_handle(verifier_t *v, fb_rpc_call_t *call, bool settle)
{
    json_t *payload, *req;
    char err[300];
    if (s_read(fb_rpc_call_request(call)->body, &payload, &req, err, sizeof(err)) != 0) {
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "%s", err);
        return;
    }
    s_pending_t *pend = fb_calloc(1, sizeof(*pend));
    pend->call = call;
    pend->v = v;
    pend->settle = settle;
    const msgpack_object *body = fb_rpc_call_request(call)->body;
    const msgpack_object *record = fb_mp_get(body, "record");
    pend->record = record && record->type == MSGPACK_OBJECT_BOOLEAN && record->via.boolean;
    const char *res;
    size_t n;
    if (fb_mp_str(fb_mp_get(body, "resource"), &res, &n) && n < sizeof(pend->resource))
        memcpy(pend->resource, res, n);
    const msgpack_object *wait = fb_mp_get(body, "wait");
    bool once = false;
    fb_mp_get_bool(body, "once", &once);
    if (settle)
        verifier_settle(v, payload, req,
                        !(wait && wait->type == MSGPACK_OBJECT_BOOLEAN && !wait->via.boolean), once,
                        fb_rpc_call_trace(call), s_done, pend);
    else
        verifier_verify(v, payload, req, fb_rpc_call_trace(call), s_done, pend);
    json_decref(payload);
    json_decref(req);
}

static void s_verify(void *arg, fb_rpc_call_t *call)
{
    s_handle(arg, call, false);
}

static void s_settle(void *arg, fb_rpc_call_t *call)
{
    s_handle(arg, call, true);
}

/* The networks this verifier serves with their assets and scheme extras:
 * what a resource server (the edge) needs to quote a price. */
static void s_networks(void *arg, fb_rpc_call_t *call)
{
    verifier_t *v = arg;
    json_t *nets = json_array();
    if (v->evm.caip2[0])
        json_array_append_new(nets, json_pack("{ss ss ss sb s{ss ss}}", "network", v->evm.caip2, "family",
                                              "evm", "asset", v->evm.token_text, "settles", v->evm.has_key,
                                              "extra", "name", v->evm.name, "version", v->evm.version));
    if (v->svm.caip2[0]) {
        json_t *extra = v->svm.has_key ? json_pack("{ss}", "feePayer", v->svm.fee_payer_text) : json_object();
        json_array_append_new(nets, json_pack("{ss ss ss sb so}", "network", v->svm.caip2, "family", "solana",
                                              "asset", v->svm.mint_text, "settles", v->svm.has_key, "extra",
                                              extra));
    }
    s_reply_json(&call, json_pack("{so}", "networks", nets));
}

/* The kinds this verifier serves: exact, v2 (CAIP-2) and v1 (names). */
static void s_supported(void *arg, fb_rpc_call_t *call)
{
    verifier_t *v = arg;
    json_t *kinds = json_array(), *signers = json_object();
    if (v->evm.caip2[0]) {
        json_array_append_new(
            kinds, json_pack("{si ss ss}", "x402Version", 2, "scheme", "exact", "network", v->evm.caip2));
        const char *v1 = fb_x402_v1_name(v->evm.caip2);
        if (v1)
            json_array_append_new(
                kinds, json_pack("{si ss ss}", "x402Version", 1, "scheme", "exact", "network", v1));
        if (v->evm.has_key)
            json_object_set_new(signers, "eip155:*", json_pack("[s]", v->evm.sender_text));
    }
    if (v->svm.caip2[0]) {
        json_t *extra = v->svm.has_key ? json_pack("{ss}", "feePayer", v->svm.fee_payer_text) : json_object();
        json_array_append_new(kinds, json_pack("{si ss ss sO}", "x402Version", 2, "scheme", "exact",
                                               "network", v->svm.caip2, "extra", extra));
        const char *v1 = fb_x402_v1_name(v->svm.caip2);
        if (v1)
            json_array_append_new(kinds, json_pack("{si ss ss sO}", "x402Version", 1, "scheme", "exact",
                                                   "network", v1, "extra", extra));
        json_decref(extra);
        if (v->svm.has_key)
            json_object_set_new(signers, "solana:*", json_pack("[s]", v->svm.fee_payer_text));
    }
    json_t *out = json_pack("{so s[] so}", "kinds", kinds, "extensions", "signers", signers);
    s_reply_json(&call, out);
}

static void s_message_done(void *arg, const msgproof_t *m, const char *error_code, int64_t authorization_id)
{
    fb_rpc_call_t *call = arg;
    if (error_code) {
        fb_rpc_call_error(&call, error_code, NULL, 0, "%s", m->detail);
        return;
    }
    json_t *out = json_pack("{sb ss ss ss ss sI}", "valid", m->reason == NULL, "from", m->from, "signer",
                            m->signer, "network", m->network, "requestId", m->request_id, "amount_micro",
                            (json_int_t)m->amount_micro);
    if (m->reason) {
        json_object_set_new(out, "reason", json_string(m->reason));
        json_object_set_new(out, "message", json_string(m->detail));
    }
    if (authorization_id)
        json_object_set_new(out, "authorization_id", json_integer(authorization_id));
    s_reply_json(&call, out);
}

/* A signed-message proof: checked, and its request id used up. */
static void s_verify_message(void *arg, fb_rpc_call_t *call)
{
    verifier_t *v = arg;
    const msgpack_object *body = fb_rpc_call_request(call)->body;
    if (!body || body->type != MSGPACK_OBJECT_MAP) {
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "the body must be a map");
        return;
    }
    char *text = fb_mp_to_json(body);
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    msgproof_t m;
    char err[300];
    json_t *consume = json_object_get(doc, "consume");
    if (consume && !json_is_boolean(consume)) {
        json_decref(doc);
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "consume must be a boolean");
        return;
    }
    if (msgproof_parse(doc, &m, err, sizeof(err)) != 0) {
        json_decref(doc);
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "%s", err);
        return;
    }
    bool use = !consume || json_is_true(consume);
    json_decref(doc);
    verifier_verify_message(v, &m, use, fb_rpc_call_trace(call), s_message_done, call);
}

void verifier_rpc_register(fb_rpc_server_t *server, verifier_t *v)
{
    fb_rpc_server_handle(server, "verifier.verify", s_verify, v);
    fb_rpc_server_handle(server, "verifier.networks", s_networks, v);
    fb_rpc_server_handle(server, "verifier.settle", s_settle, v);
    fb_rpc_server_handle(server, "verifier.supported", s_supported, v);
    fb_rpc_server_handle(server, "verifier.verify_message", s_verify_message, v);
}
