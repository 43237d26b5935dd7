/* edge_auth - API key authentication through the ledger, and /v1/balance. */
#include "edge_auth.h"
#include "edge_catalog.h"
#include "edge_limit.h"
#include "edge_reply.h"
#include "fb_apikey.h"
#include "fb_codec.h"
#include "fb_log.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LOOKUP_DEADLINE_MS 5000

int edge_request_key(h2o_req_t *req, h2o_iovec_t *key)
{
    h2o_iovec_t auth = fb_http_header(req, "authorization");
    if (auth.base && auth.len > 7 && strncasecmp(auth.base, "bearer ", 7) == 0) {
        *key = h2o_iovec_init(auth.base + 7, auth.len - 7);
        return 1;
    }
    h2o_iovec_t x = fb_http_header(req, "x-api-key");
    if (x.base && x.len > 0) {
        *key = x;
        return 1;
    }
    return 0;
}

bool edge_bearer_matches(h2o_req_t *req, const uint8_t token_sha256[32])
{
    h2o_iovec_t auth = fb_http_header(req, "authorization");
    if (auth.len < 8 || auth.len > 1024 || strncasecmp(auth.base, "bearer ", 7) != 0)
        return false;
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const uint8_t *)auth.base + 7, auth.len - 7);
    return sodium_memcmp(digest, token_sha256, sizeof(digest)) == 0;
}

typedef struct {
    edge_key_fn *done;
    void *arg;
    edge_limit_t *limits;
} s_lookup_t;

void edge_retry_after(h2o_req_t *req, int64_t ms)
{
    char v[24];
    int n = snprintf(v, sizeof(v), "%lld", (long long)(ms <= 0 ? 1 : (ms + 999) / 1000));
    fb_http_set_header(req, "retry-after", v, (size_t)n);
}

void edge_key_error(h2o_req_t *req, int dialect, const edge_key_t *k)
{
    if (k->status == 429)
        edge_retry_after(req, k->retry_after_ms);
    edge_error(req, (edge_dialect_t)dialect, k->status, k->code, NULL, "%s", k->message);
}

static void s_refuse(edge_key_fn *done, void *arg, int status, const char *code, const char *message)
{
    edge_key_t k = {.status = status, .code = code};
    snprintf(k.message, sizeof(k.message), "%s", message);
    done(arg, &k);
}

static void s_on_lookup(void *arg, const fb_rpc_reply_t *reply)
{
    s_lookup_t *l = arg;
    edge_key_fn *done = l->done;
    void *darg = l->arg;
    edge_limit_t *limits = l->limits;
    free(l);
    if (!reply->ok) {
        if (strcmp(reply->code, "key_not_found") == 0)
            s_refuse(done, darg, 401, "invalid_key", "the API key is not valid");
        else
            s_refuse(done, darg, 503, "unavailable", "the ledger cannot be reached; nothing was charged");
        return;
    }
    edge_key_t k = {.status = 200};
    k.view = edge_reply_json(reply);
    k.key_id = json_integer_value(json_object_get(k.view, "key_id"));
    k.account_id = json_integer_value(json_object_get(k.view, "account_id"));
    const char *status = json_string_value(json_object_get(k.view, "status"));
    if (!status || strcmp(status, "active") != 0) {
        k.status = 401;
        k.code = "key_revoked";
        snprintf(k.message, sizeof(k.message), "the API key was revoked");
    } else if (limits) {
        int64_t wait = edge_limit_take(limits, 1, &k.key_id, sizeof(k.key_id), fb_mono_ms());
        if (wait > 0) {
            k.status = 429;
            k.code = "rate_limited";
            k.retry_after_ms = wait;
            snprintf(k.message, sizeof(k.message),
                     "this API key is sending too many requests; retry in %lld ms", (long long)wait);
        }
    }
    done(darg, &k);
    json_decref(k.view);
}

void edge_auth_key(edge_worker_t *w, h2o_req_t *req, const char *rid, edge_key_fn *done, void *arg)
{
    const edge_t *edge = w->edge;
    h2o_iovec_t key;
    if (!edge_request_key(req, &key)) {
        s_refuse(done, arg, 401, "invalid_key",
                 "an API key is required: Authorization: Bearer <key> or x-api-key: <key>");
        return;
    }
    if (!fb_apikey_well_formed(key.base, key.len)) {
        s_refuse(done, arg, 401, "invalid_key", "the API key is not valid");
        return;
    }
    if (!edge->key_hmac_secret) {
        s_refuse(done, arg, 503, "unavailable",
                 "API keys are not configured on this edge (FAREBOX_KEY_HMAC_SECRET)");
        return;
    }
    uint8_t mac[32];
    fb_apikey_hmac(mac, edge->key_hmac_secret, strlen(edge->key_hmac_secret), key.base, key.len);
    char hex[65];
    fb_hex_encode(hex, mac, sizeof(mac));
    s_lookup_t *l = fb_calloc(1, sizeof(*l));
    l->done = done;
    l->arg = arg;
    l->limits = edge->limits;
    edge_rpc_json(w->ledger, "ledger.lookup_key", json_pack("{ss}", "hmac", hex), NULL, rid,
                  LOOKUP_DEADLINE_MS, s_on_lookup, l);
}

/* --- GET /v1/balance -------------------------------------------------------- */

static void s_balance_done(void *arg, const edge_key_t *k)
{
    fb_http_guard_t *guard = arg;
    h2o_req_t *req = guard->req;
    if (req) {
        if (k->status != 200) {
            edge_key_error(req, EDGE_OPENAI, k);
        } else {
            json_t *v = k->view;
            json_t *doc = json_pack(
                "{ss sI sI sO sO sO sO sO sO sO sO}", "object", "balance", "account_id",
                (json_int_t)k->account_id, "key_id", (json_int_t)k->key_id, "balance_micro",
                json_object_get(v, "balance_micro"), "held_micro", json_object_get(v, "account_held_micro"),
                "available_micro", json_object_get(v, "available_micro"), "key_spent_micro",
                json_object_get(v, "spent_micro"), "key_held_micro", json_object_get(v, "held_micro"),
                "spend_cap_micro", json_object_get(v, "spend_cap_micro"), "models",
                json_object_get(v, "models"), "label", json_object_get(v, "label"));
            if (!doc) {
                edge_error(req, EDGE_OPENAI, 503, "unavailable", NULL, "the ledger's answer was incomplete");
            } else {
                char usd[32];
                edge_usd_text(usd, json_integer_value(json_object_get(v, "available_micro")));
                json_object_set_new(doc, "available_usd", json_string(usd));
                edge_send_json(req, 200, doc);
            }
        }
    }
    fb_http_guard_release(&guard);
}

int edge_balance(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    edge_auth_key(w, req, rid, s_balance_done, fb_http_guard_new(req));
    return 0;
}

int edge_auth_test(bool verbose)
{
    FB_UNUSED(verbose);
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    struct {
        const char *header, *value, *key;
    } cases[] = {
        {"authorization", "Bearer fbx_abc", "fbx_abc"},
        {"authorization", "bearer fbx_abc", "fbx_abc"},
        {"x-api-key", "fbx_def", "fbx_def"},
        {"authorization", "Basic Zm9v", NULL},
        {"authorization", "Bearer ", NULL},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(cases); i++) {
        h2o_req_t req;
        memset(&req, 0, sizeof(req));
        const h2o_token_t *t = strcmp(cases[i].header, "authorization") == 0 ? H2O_TOKEN_AUTHORIZATION : NULL;
        if (t)
            h2o_add_header(&pool, &req.headers, t, NULL, cases[i].value, strlen(cases[i].value));
        else
            h2o_add_header_by_str(&pool, &req.headers, cases[i].header, strlen(cases[i].header), 0, NULL,
                                  cases[i].value, strlen(cases[i].value));
        h2o_iovec_t key;
        int got = edge_request_key(&req, &key);
        FB_ASSERT(got == (cases[i].key != NULL));
        if (got)
            FB_ASSERT(fb_streq_n(key.base, key.len, cases[i].key));
    }
    h2o_mem_clear_pool(&pool);
    return 0;
}
