/* verifier_message - signed-message proofs: the offline verdict
 * (message_proof.c), then the request id recorded in the ledger so that it is
 * accepted once per wallet, also when proofs race on several replicas. */
#include "fb_msgpack.h"
#include "fb_util.h"
#include "message_proof.h"
#include "verifier_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    msgproof_t m;
    bool consume; /* record the request id (else only ask whether it was used) */
    verifier_message_done_fn *done;
    void *arg;
} s_job_t;

static void s_answer(s_job_t *j, const char *error_code, int64_t authorization_id)
{
    j->done(j->arg, &j->m, error_code, authorization_id);
    free(j);
}

static void s_used(s_job_t *j)
{
    j->m.reason = "request_id_used";
    snprintf(j->m.detail, sizeof(j->m.detail), "request id %s was already used by %s", j->m.request_id,
             j->m.from);
    s_answer(j, NULL, 0);
}

static void s_on_ledger(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    int64_t id = 0;
    if (reply->ok && j->consume) {
        fb_mp_get_int64(reply->body, "authorization_id", &id);
        s_answer(j, NULL, id);
    } else if (reply->ok || strcmp(reply->code, "authorization_used") == 0) {
        s_used(j);
    } else if (!j->consume && strcmp(reply->code, "authorization_not_found") == 0) {
        s_answer(j, NULL, 0);
    } else {
        snprintf(j->m.detail, sizeof(j->m.detail), "the ledger could not be asked: %s", reply->message);
        s_answer(j, "unavailable", 0);
    }
}

void verifier_verify_message(verifier_t *v, const msgproof_t *proof, bool consume, const char *trace,
                             verifier_message_done_fn *done, void *arg)
{
    s_job_t *j = fb_calloc(1, sizeof(*j));
    j->m = *proof;
    j->consume = consume;
    j->done = done;
    j->arg = arg;
    msgproof_check(&j->m, fb_now_ms(), v->message_max_age_ms, v->message_max_skew_ms);
    if (j->m.reason) {
        s_answer(j, NULL, 0);
        return;
    }
    char nonce[MSGPROOF_REQUEST_ID_MAX + 16];
    snprintf(nonce, sizeof(nonce), "message:%s", j->m.request_id);
    json_t *body = json_pack("{ss ss ss}", "network", j->m.namespace_, "payer", j->m.from, "nonce", nonce);
    if (consume) {
        json_object_set_new(body, "amount_micro", json_integer(j->m.amount_micro));
        json_object_set_new(body, "resource", json_string("message"));
        verifier_ledger_call(v, "ledger.record_authorization", body, true, trace, s_on_ledger, j);
    } else {
        verifier_ledger_call(v, "ledger.authorization", body, false, trace, s_on_ledger, j);
    }
}
