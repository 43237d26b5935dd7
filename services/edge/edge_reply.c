/* edge_reply - JSON answers and errors in the caller's dialect. */
#include "edge_reply.h"
#include "edge_metrics.h"
#include "fb_http.h"
#include "fb_msgpack.h"
#include "fb_rpc_msg.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void edge_send_json(h2o_req_t *req, int status, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    FB_ASSERT(text);
    fb_http_send(req, status, "application/json", text, strlen(text));
    free(text);
    json_decref(doc);
}

/* OpenAI's error types by status */
static const char *s_openai_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        return "payment_required";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* Anthropic's error types by status */
static const char *s_anthropic_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

void edge_error(h2o_req_t *req, edge_dialect_t dialect, int status, const char *code, json_t *details,
                const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* messages quote the caller (a path, a method, a model's name), possibly cut mid-character:
     * jansson takes only valid UTF-8 */
    fb_utf8_clean(msg);
    json_t *doc;
    if (dialect == EDGE_CHAT402) {
        doc = json_pack("{sb ss ss}", "success", 0, "error", msg, "code", code);
        if (details)
            json_object_set_new(doc, "details", details);
    } else {
        json_t *err = json_pack("{ss ss ss}", "message", msg, "type",
                                dialect == EDGE_ANTHROPIC ? s_anthropic_type(status) : s_openai_type(status),
                                "code", code);
        if (details) {
            json_object_update_missing(err, details);
            json_decref(details);
        }
        if (dialect == EDGE_ANTHROPIC)
            doc = json_pack("{ss so}", "type", "error", "error", err);
        else
            doc = json_pack("{so}", "error", err);
    }
    FB_ASSERT(doc);
    edge_send_json(req, status, doc);
}

size_t edge_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return o;
}

bool edge_id_text_ok(h2o_iovec_t v)
{
    if (v.base == NULL || v.len == 0 || v.len > EDGE_ID_TEXT_MAX)
        return false;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.base[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == ':'))
            return false;
    }
    return true;
}

/* A call in flight, timed for the metrics. */
typedef struct {
    fb_rpc_done_fn *done;
    void *arg;
    const void *client;
    int64_t t0_us;
} s_timed_t;

static void s_timed_done(void *arg, const fb_rpc_reply_t *reply)
{
    s_timed_t t = *(s_timed_t *)arg;
    free(arg);
    edge_metrics_rpc(t.client, fb_mono_us() - t.t0_us);
    t.done(t.arg, reply);
}

static void s_rpc_json(fb_rpc_client_t *client, const char *method, json_t *doc, const char *idem,
                       const char *trace, uint32_t deadline_ms, uint32_t attempt_ms, fb_rpc_done_fn *done,
                       void *arg)
{
    s_timed_t *t = fb_malloc(sizeof(*t));
    *t = (s_timed_t){done, arg, client, fb_mono_us()};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (doc) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        int packed = fb_mp_pack_json(&pk, doc);
        json_decref(doc);
        if (packed != 0) {
            /* what a caller sent, nested deeper than a message may be: refused, nothing sent */
            msgpack_sbuffer_destroy(&sb);
            fb_rpc_client_refuse(client, method, FB_RPC_E_BAD_REQUEST,
                                 "the request is nested deeper than an RPC message may be", s_timed_done, t);
            return;
        }
    }
    fb_rpc_call_opts_t o = {
        .method = method, .idem = idem, .trace = trace, .deadline_ms = deadline_ms, .attempt_ms = attempt_ms};
    fb_rpc_client_call(client, &o, sb.data, sb.size, s_timed_done, t);
    msgpack_sbuffer_destroy(&sb);
}

void edge_rpc_json(fb_rpc_client_t *client, const char *method, json_t *doc, const char *idem,
                   const char *trace, uint32_t deadline_ms, fb_rpc_done_fn *done, void *arg)
{
    s_rpc_json(client, method, doc, idem, trace, deadline_ms, 0, done, arg);
}

void edge_rpc_json_long(fb_rpc_client_t *client, const char *method, json_t *doc, const char *idem,
                        const char *trace, uint32_t deadline_ms, fb_rpc_done_fn *done, void *arg)
{
    s_rpc_json(client, method, doc, idem, trace, deadline_ms, deadline_ms, done, arg);
}

bool edge_rpc_outcome_unknown(const fb_rpc_reply_t *reply)
{
    return !reply->ok &&
           (strcmp(reply->code, FB_RPC_E_DEADLINE) == 0 || strcmp(reply->code, FB_RPC_E_UNAVAILABLE) == 0 ||
            strcmp(reply->code, FB_RPC_E_OVERLOADED) == 0 || strcmp(reply->code, FB_RPC_E_INTERNAL) == 0);
}

json_t *edge_reply_json(const fb_rpc_reply_t *reply)
{
    char *text = fb_mp_to_json(reply->body);
    json_t *doc = json_loads(text, 0, NULL);
    free(text);
    return doc ? doc : json_object();
}

void edge_rpc_idem(char *out, size_t len, const char *prefix, const char *value, size_t value_len)
{
    int n = snprintf(out, len, "%s:%.*s", prefix, (int)value_len, value);
    if (n >= 0 && (size_t)n <= FB_RPC_STR_MAX && (size_t)n < len)
        return;
    uint8_t d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const uint8_t *)value, value_len);
    char hex[2 * sizeof(d) + 1];
    sodium_bin2hex(hex, sizeof(hex), d, sizeof(d));
    snprintf(out, len, "%s:%s", prefix, hex);
}

int edge_reply_test(bool verbose)
{
    FB_UNUSED(verbose);
    char out[64];
    edge_json_escape(out, sizeof(out), "a\"b\\c\n", 6);
    FB_ASSERT(strcmp(out, "a\\\"b\\\\c\\u000a") == 0);
    char idem[FB_RPC_STR_MAX + 1];
    edge_rpc_idem(idem, sizeof(idem), "admin", "k1", 2);
    FB_ASSERT(strcmp(idem, "admin:k1") == 0);
    char long_key[130];
    memset(long_key, 'k', sizeof(long_key));
    edge_rpc_idem(idem, sizeof(idem), "admin", long_key, sizeof(long_key));
    FB_ASSERT(strlen(idem) == 6 + 64 && strncmp(idem, "admin:", 6) == 0);
    FB_ASSERT(strcmp(s_openai_type(402), "payment_required") == 0);
    FB_ASSERT(strcmp(s_openai_type(502), "api_error") == 0);
    FB_ASSERT(strcmp(s_anthropic_type(413), "request_too_large") == 0);
    FB_ASSERT(strcmp(s_anthropic_type(400), "invalid_request_error") == 0);
    FB_ASSERT(edge_id_text_ok(h2o_iovec_init(H2O_STRLIT("abc-123_x.y:z"))));
    FB_ASSERT(!edge_id_text_ok(h2o_iovec_init(H2O_STRLIT("has space"))));
    FB_ASSERT(!edge_id_text_ok(h2o_iovec_init(H2O_STRLIT(""))));
    char long_id[EDGE_ID_TEXT_MAX + 1];
    memset(long_id, 'a', sizeof(long_id));
    FB_ASSERT(!edge_id_text_ok(h2o_iovec_init(long_id, sizeof(long_id))));
    FB_ASSERT(edge_id_text_ok(h2o_iovec_init(long_id, EDGE_ID_TEXT_MAX)));
    return 0;
}
