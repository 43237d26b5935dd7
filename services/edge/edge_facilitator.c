/* edge_facilitator - the x402 facilitator HTTP API, answered by the verifier. */
#include "edge_facilitator.h"
#include "edge_auth.h"
#include "fb_http.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERIFY_DEADLINE_MS    20000
#define SETTLE_DEADLINE_MS    120000 /* the verifier waits FAREBOX_SETTLE_WAIT_MS for a receipt */
#define SUPPORTED_DEADLINE_MS 5000

typedef struct {
    fb_http_guard_t *guard;
    const char *what; /* "verify", "settle", "supported" */
} s_call_t;

/* {"error": message}, the reference facilitators' error body. */
static void s_error(h2o_req_t *req, int status, const char *message)
{
    json_t *j = json_pack("{ss}", "error", message);
    char *text = json_dumps(j, JSON_COMPACT);
    fb_http_send(req, status, "application/json", text, strlen(text));
    free(text);
    json_decref(j);
}

bool edge_facilitator_token_ok(const edge_t *edge, h2o_req_t *req)
{
    return edge->facilitator_token_set && edge_bearer_matches(req, edge->facilitator_token_sha256);
}

static void s_on_reply(void *arg, const fb_rpc_reply_t *reply)
{
    s_call_t *c = arg;
    h2o_req_t *req = c->guard->req;
    if (req) {
        if (reply->ok) {
            char *text = fb_mp_to_json(reply->body);
            fb_http_send(req, 200, "application/json", text, strlen(text));
            free(text);
        } else {
            char msg[600];
            snprintf(msg, sizeof(msg), "%s: %s", reply->code, reply->message);
            bool bad = strcmp(reply->code, "bad_request") == 0;
            if (!bad)
                fb_log(FB_LOG_WARN, NULL, "facilitator call failed", "op=%s code=%s", c->what, reply->code);
            s_error(req, bad ? 400 : 503, msg);
        }
    }
    fb_http_guard_release(&c->guard);
    free(c);
}

static void s_call(edge_worker_t *w, h2o_req_t *req, const char *rid, const char *what, const char *method,
                   uint32_t deadline_ms, const char *body, size_t len)
{
    s_call_t *c = fb_calloc(1, sizeof(*c));
    c->guard = fb_http_guard_new(req);
    c->what = what;
    /* one attempt per replica while it lives: a settle may take long (a
     * replica that dies in it leaves the settlement begun: the next one's
     * settle is told duplicate_settlement, and the tracker finishes it) */
    fb_rpc_call_opts_t o = {
        .method = method, .trace = rid, .deadline_ms = deadline_ms, .attempt_ms = deadline_ms};
    fb_rpc_client_call(w->verifier, &o, body, len, s_on_reply, c);
}

/* verify and settle: authorization, the body, then the verifier. */
static int s_payment(edge_worker_t *w, h2o_req_t *req, const char *rid, bool settle)
{
    const edge_t *edge = w->edge;
    if (!edge->facilitator_open && !edge_facilitator_token_ok(edge, req)) {
        if (!edge->facilitator_token_set) {
            s_error(req, 403,
                    "this farebox does not act as a public facilitator (the operator sets "
                    "FAREBOX_FACILITATOR_TOKEN or FAREBOX_FACILITATOR_OPEN)");
            return 0;
        }
        fb_http_set_header(req, "www-authenticate", "Bearer", 6);
        s_error(req, 401, "a valid facilitator token is required: Authorization: Bearer <token>");
        return 0;
    }
    if (req->entity.base == NULL || req->entity.len == 0) {
        s_error(req, 400, "the body must be JSON: {x402Version, paymentPayload, paymentRequirements}");
        return 0;
    }
    if (req->entity.len > EDGE_FACILITATOR_MAX_BODY) {
        s_error(req, 413, "the body is larger than 65536 bytes");
        return 0;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *payload = json_object_get(doc, "paymentPayload"),
           *reqs = json_object_get(doc, "paymentRequirements");
    if (!json_is_object(doc) || !json_is_object(payload) || !json_is_object(reqs)) {
        json_decref(doc);
        s_error(req, 400,
                doc ? "Missing paymentPayload or paymentRequirements" : "the body is not valid JSON");
        return 0;
    }
    /* the extensions a client copies from the server's 402 (bazaar's schemas) are not the
     * verifier's to read, and may nest deeper than an RPC message can */
    json_object_del(payload, "extensions");
    json_t *body = json_pack("{sO sO}", "payload", payload, "requirements", reqs);
    if (settle) /* one settle of a payment is answered its success, as on chain */
        json_object_set_new(body, "once", json_true());
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int packed = fb_mp_pack_json(&pk, body);
    json_decref(body);
    json_decref(doc);
    if (packed != 0) {
        msgpack_sbuffer_destroy(&sb);
        s_error(req, 400, "the paymentPayload or paymentRequirements nests too deep");
        return 0;
    }
    if (settle)
        s_call(w, req, rid, "settle", "verifier.settle", SETTLE_DEADLINE_MS, sb.data, sb.size);
    else
        s_call(w, req, rid, "verify", "verifier.verify", VERIFY_DEADLINE_MS, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return 0;
}

int edge_facilitator_verify(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    return s_payment(w, req, rid, false);
}

int edge_facilitator_settle(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    return s_payment(w, req, rid, true);
}

int edge_facilitator_supported(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    s_call(w, req, rid, "supported", "verifier.supported", SUPPORTED_DEADLINE_MS, NULL, 0);
    return 0;
}

int edge_facilitator_test(bool verbose)
{
    FB_UNUSED(verbose);
    FB_ASSERT(sodium_init() >= 0);
    edge_t edge = {0};
    crypto_hash_sha256(edge.facilitator_token_sha256, (const uint8_t *)"s3cret", 6);
    edge.facilitator_token_set = true;
    /* a request with just the headers the check reads */
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    struct {
        const char *value;
        bool ok;
    } cases[] = {{"Bearer s3cret", true},   {"bearer s3cret", true}, {"Bearer s3cre", false},
                 {"Bearer s3cret ", false}, {"Basic s3cret", false}, {"", false}};
    for (size_t i = 0; i < FB_ARRAY_SIZE(cases); i++) {
        h2o_req_t req;
        memset(&req, 0, sizeof(req));
        if (cases[i].value[0])
            h2o_add_header(&pool, &req.headers, H2O_TOKEN_AUTHORIZATION, NULL, cases[i].value,
                           strlen(cases[i].value));
        FB_ASSERT(edge_facilitator_token_ok(&edge, &req) == cases[i].ok);
    }
    edge.facilitator_token_set = false;
    h2o_req_t req;
    memset(&req, 0, sizeof(req));
    h2o_add_header(&pool, &req.headers, H2O_TOKEN_AUTHORIZATION, NULL, "Bearer s3cret", 13);
    FB_ASSERT(!edge_facilitator_token_ok(&edge, &req));
    h2o_mem_clear_pool(&pool);
    return 0;
}
