/* verifier - entry points: parse the payment and its requirements once, then
 * hand them to the scheme of their network family. */
#include "verifier.h"
#include "fb_msgpack.h"
#include "fb_util.h"
#include "verifier_internal.h"

#include <stdio.h>
#include <string.h>

static void s_run(verifier_t *v, verifier_mode_t mode, uint32_t wait_ms, json_t *payload,
                  json_t *requirements, const char *trace, verifier_done_fn *done, void *arg)
{
    verifier_result_t res;
    memset(&res, 0, sizeof(res));
    fb_x402_payload_t p;
    fb_x402_requirements_t r;
    char why[256];
    if (fb_x402_parse_payload(payload, &p, why, sizeof(why)) != 0) {
        res.reason = "invalid_payload";
        snprintf(res.message, sizeof(res.message), "%s", why);
        done(arg, &res);
        return;
    }
    snprintf(res.network, sizeof(res.network), "%s", p.network);
    if (fb_x402_parse_requirements(requirements, p.version, &r, why, sizeof(why)) != 0) {
        res.reason = "invalid_payment_requirements";
        snprintf(res.message, sizeof(res.message), "%s", why);
        done(arg, &res);
        return;
    }
    if (r.net.family == FB_X402_EVM)
        verifier_evm_run(v, mode, wait_ms, payload, requirements, &p, &r, trace, done, arg);
    else
        verifier_svm_run(v, mode, wait_ms, payload, requirements, &p, &r, trace, done, arg);
}

void verifier_verify(verifier_t *v, json_t *payload, json_t *requirements, const char *trace,
                     verifier_done_fn *done, void *arg)
{
    s_run(v, VERIFIER_VERIFY, 0, payload, requirements, trace, done, arg);
}

void verifier_settle(verifier_t *v, json_t *payload, json_t *requirements, bool wait, bool once,
                     const char *trace, verifier_done_fn *done, void *arg)
{
    s_run(v, once ? VERIFIER_SETTLE_ONCE : VERIFIER_SETTLE, wait ? v->settle_wait_ms : 0, payload,
          requirements, trace, done, arg);
}

void verifier_result_key(verifier_result_t *res, json_t *key, int64_t amount_micro, const char *pay_to)
{
    const char *n = json_string_value(json_object_get(key, "network")),
               *p = json_string_value(json_object_get(key, "payer")),
               *o = json_string_value(json_object_get(key, "nonce"));
    snprintf(res->auth_network, sizeof(res->auth_network), "%s", n ? n : "");
    snprintf(res->auth_payer, sizeof(res->auth_payer), "%s", p ? p : "");
    snprintf(res->auth_nonce, sizeof(res->auth_nonce), "%s", o ? o : "");
    snprintf(res->pay_to, sizeof(res->pay_to), "%s", pay_to ? pay_to : "");
    res->amount_micro = amount_micro;
}

void verifier_result_recorded(verifier_result_t *res, const msgpack_object *view)
{
    const msgpack_object *id = fb_mp_get(view, "authorization_id");
    if (id && id->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        res->authorization_id = (int64_t)id->via.u64;
    const char *r;
    size_t n;
    if (fb_mp_str(fb_mp_get(view, "resource"), &r, &n) && n < sizeof(res->recorded_resource)) {
        memcpy(res->recorded_resource, r, n);
        res->recorded_resource[n] = '\0';
    }
}

void verifier_answer_ask(verifier_t *v, int64_t settlement_id, const char *trace, fb_rpc_done_fn *cb,
                         void *arg)
{
    verifier_ledger_call(v, "ledger.settlement_answer",
                         json_pack("{sI}", "settlement_id", (json_int_t)settlement_id), true, trace, cb, arg);
}

void verifier_answer_apply(verifier_result_t *res, const fb_rpc_reply_t *reply)
{
    bool claimed = false;
    if (!reply->ok) {
        res->ok = false;
        res->reason = "settlement_pending";
        snprintf(res->message, sizeof(res->message),
                 "the settlement is confirmed, but the ledger could not say whether this settle answers it "
                 "(%s): ask again",
                 reply->message);
    } else if (!fb_mp_get_bool(reply->body, "claimed", &claimed) || !claimed) {
        res->ok = false;
        res->reason = "duplicate_settlement";
        snprintf(res->message, sizeof(res->message),
                 "this payment's settlement was answered to an earlier settle: a payment settles once");
    }
}

void verifier_ledger_call(verifier_t *v, const char *method, json_t *body, bool write, const char *trace,
                          fb_rpc_done_fn *cb, void *arg)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (fb_mp_pack_json(&pk, body) != 0) {
        msgpack_sbuffer_destroy(&sb);
        json_decref(body);
        fb_rpc_client_refuse(v->ledger, method, FB_RPC_E_BAD_REQUEST, "the request nests too deep", cb, arg);
        return;
    }
    char idem[80] = "";
    if (write) {
        char rnd[33];
        fb_random_hex(rnd, 16);
        snprintf(idem, sizeof(idem), "verifier-%s", rnd);
    }
    fb_rpc_call_opts_t o = {.method = method,
                            .idem = write ? idem : NULL,
                            .trace = trace && trace[0] ? trace : NULL,
                            .deadline_ms = 10000};
    fb_rpc_client_call(v->ledger, &o, sb.data, sb.size, cb, arg);
    msgpack_sbuffer_destroy(&sb);
    json_decref(body);
}
