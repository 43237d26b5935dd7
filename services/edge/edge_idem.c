/* edge_idem - idempotent paid calls: names, claims, stored answers. */
#include "edge_idem.h"
#include "edge_auth.h"
#include "edge_x402.h"
#include "fb_http.h"
#include "fb_log.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define RELEASE_DEADLINE_MS 10000

/* sha256 over the route, a newline, and the body: a retry must be the same request. */
static void s_hash(edge_idem_t *id, h2o_req_t *req, const char *route)
{
    crypto_hash_sha256_state st;
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const uint8_t *)route, strlen(route));
    crypto_hash_sha256_update(&st, (const uint8_t *)"\n", 1);
    if (req->entity.base)
        crypto_hash_sha256_update(&st, (const uint8_t *)req->entity.base, req->entity.len);
    crypto_hash_sha256_final(&st, d);
    sodium_bin2hex(id->hash, sizeof(id->hash), d, sizeof(d));
}

int edge_idem_read(edge_idem_t *id, h2o_req_t *req, const char *route)
{
    memset(id, 0, sizeof(*id));
    h2o_iovec_t v = fb_http_header(req, "idempotency-key");
    if (!v.base)
        return 0;
    if (!edge_id_text_ok(v))
        return -1;
    id->named = true;
    snprintf(id->key, sizeof(id->key), "%.*s", (int)v.len, v.base);
    /* this try's claim: unique, whatever X-Request-Id the caller sent */
    uint8_t token[16];
    randombytes_buf(token, sizeof(token));
    sodium_bin2hex(id->claim, sizeof(id->claim), token, sizeof(token));
    s_hash(id, req, route);
    return 1;
}

void edge_idem_x402(edge_idem_t *id, const char *header)
{
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const uint8_t *)header, strlen(header));
    char hex[65];
    sodium_bin2hex(hex, sizeof(hex), d, sizeof(d));
    snprintf(id->scope, sizeof(id->scope), "x402:%s", hex);
}

json_t *edge_idem_call(const edge_idem_t *id)
{
    return json_pack("{ss ss ss}", "scope", id->scope, "idem_key", id->key, "claim", id->claim);
}

json_t *edge_idem_claim_body(const edge_idem_t *id, int64_t lease_ms, int64_t keep_ms)
{
    json_t *b = edge_idem_call(id);
    json_object_set_new(b, "request_hash", json_string(id->hash));
    json_object_set_new(b, "lease_ms", json_integer(lease_ms));
    json_object_set_new(b, "keep_ms", json_integer(keep_ms > lease_ms ? keep_ms : lease_ms));
    return b;
}

void edge_idem_refused(h2o_req_t *req, edge_dialect_t dialect, const fb_rpc_reply_t *reply)
{
    if (strcmp(reply->code, "idempotency_in_progress") == 0) {
        json_t *b = edge_reply_json(reply);
        int64_t ms = json_integer_value(json_object_get(b, "retry_after_ms"));
        json_decref(b);
        edge_retry_after(req, ms);
        char v[24];
        int n = snprintf(v, sizeof(v), "%lld", (long long)(ms > 0 ? ms : 1));
        fb_http_set_header(req, "retry-after-ms", v, (size_t)n);
        edge_error(req, dialect, 409, "idempotency_in_progress",
                   json_pack("{sI}", "retry_after_ms", (json_int_t)(ms > 0 ? ms : 1)),
                   "a call with this Idempotency-Key (or this payment) is still running; retry after it "
                   "ends");
    } else if (strcmp(reply->code, "idempotency_key_mismatch") == 0) {
        edge_error(req, dialect, 422, "idempotency_key_mismatch", NULL,
                   "this Idempotency-Key (or this payment) was used for a different request");
    } else {
        edge_error(req, dialect, 503, "unavailable", NULL,
                   "the ledger cannot be reached to claim this call; nothing was charged");
    }
}

void edge_idem_replay(h2o_req_t *req, edge_dialect_t dialect, json_t *body, int pay_version)
{
    json_t *answer = json_object_get(body, "answer");
    int status = (int)json_integer_value(json_object_get(body, "status"));
    const char *type = json_string_value(json_object_get(body, "content_type"));
    if (!json_is_string(answer) || status < 100 || !type) {
        edge_error(
            req, dialect, 409, "idempotency_key_used",
            json_pack("{sI}", "answer_bytes", json_integer_value(json_object_get(body, "answer_bytes"))),
            "the call with this Idempotency-Key (or this payment) was served and paid; its answer was "
            "not kept for a retry (too large, or cut short when the client left)");
        return;
    }
    fb_http_set_header(req, "idempotent-replayed", "true", 4);
    const char *receipt = json_string_value(json_object_get(body, "receipt"));
    if (receipt)
        edge_x402_set_receipt(req, pay_version, receipt);
    if (strcmp(type, "text/event-stream") == 0)
        fb_http_set_header(req, "cache-control", "no-cache", 8);
    fb_http_send(req, status, type, json_string_value(answer), json_string_length(answer));
}

static void s_on_released(void *arg, const fb_rpc_reply_t *reply)
{
    FB_UNUSED(arg);
    if (!reply->ok)
        fb_log(FB_LOG_WARN, NULL, "an unpaid call's name was not released: it is left to its lease",
               "code=%s message=%s", reply->code, reply->message);
}

void edge_idem_release(edge_worker_t *w, edge_idem_t *id)
{
    if (!id->claimed || id->resolved)
        return;
    id->resolved = true;
    char idem[EDGE_ID_TEXT_MAX + 32];
    snprintf(idem, sizeof(idem), "call-release:%s", id->claim);
    edge_rpc_json(w->ledger, "ledger.call_release", edge_idem_call(id), idem, id->claim, RELEASE_DEADLINE_MS,
                  s_on_released, NULL);
}
