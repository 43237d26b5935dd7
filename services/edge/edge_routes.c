/* edge_routes - route table and handlers of the edge. */
#include "edge_routes.h"
#include "edge_admin.h"
#include "edge_auth.h"
#include "edge_catalog.h"
#include "edge_chat.h"
#include "edge_limit.h"
#include "edge_metrics.h"
#include "edge_topup.h"
#include "edge_facilitator.h"
#include "edge_reply.h"
#include "edge_worker.h"
#include "fb_http.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int(s_route_fn)(edge_worker_t *w, h2o_req_t *req, const char *rid);

typedef struct {
    const char *path;   /* exact path, or a prefix when it ends in '/' */
    const char *method; /* "GET", "POST", or "*" for any */
    s_route_fn *fn;     /* handler */
} s_route_t;

/* --- request ids and accounting ------------------------------------------------ */

static char s_rid_prefix[17];
static uv_once_t s_rid_once = UV_ONCE_INIT;
static __thread uint64_t s_rid_counter;

static void s_rid_init(void)
{
    fb_random_hex(s_rid_prefix, 6);
}

/* A caller's well-formed X-Request-Id (up to EDGE_REQUEST_ID_MAX) is kept;
 * otherwise one is made from a random per-process prefix, the worker and a
 * counter (no syscall per request). */
static const char *s_request_id(edge_worker_t *w, h2o_req_t *req)
{
    h2o_iovec_t given = fb_http_header(req, "x-request-id");
    char *rid;
    if (given.len <= EDGE_REQUEST_ID_MAX && edge_id_text_ok(given)) {
        rid = h2o_mem_alloc_pool(&req->pool, given.len + 1);
        memcpy(rid, given.base, given.len);
        rid[given.len] = '\0';
    } else {
        uv_once(&s_rid_once, s_rid_init);
        rid = h2o_mem_alloc_pool(&req->pool, 64);
        snprintf(rid, 64, "req_%s%02x%08" PRIx64, s_rid_prefix, (unsigned)w->index & 0xff, ++s_rid_counter);
    }
    fb_http_set_header(req, "x-request-id", rid, strlen(rid));
    return rid;
}

/* Counts requests in flight per worker: the pool-linked marker is disposed when
 * h2o is done with the request. */
typedef struct {
    edge_worker_t *worker;
    h2o_req_t *req;
    int route; /* index in s_routes, -1 for none */
    int64_t t0_us;
} s_active_t;

static void s_active_dispose(void *p)
{
    s_active_t *a = p;
    a->worker->active_requests--;
    edge_metrics_request(a->route, a->req->res.status, fb_mono_us() - a->t0_us);
}

static s_active_t *s_track(edge_worker_t *w, h2o_req_t *req)
{
    s_active_t *a = h2o_mem_alloc_shared(&req->pool, sizeof(*a), s_active_dispose);
    a->worker = w;
    a->req = req;
    a->route = -1;
    a->t0_us = fb_mono_us();
    w->active_requests++;
    return a;
}

/* --- JSON answers ---------------------------------------------------------------- */

/* --- /healthz ------------------------------------------------------------------------ */

static int s_healthz(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    FB_UNUSED(rid);
    char body[256], esc[160];
    const char *replica = fb_service_replica(w->edge->service);
    edge_json_escape(esc, sizeof(esc), replica, strlen(replica));
    /* a stopping edge fails its health checks (FAREBOX_STOP_DELAY_MS) */
    int n = snprintf(body, sizeof(body),
                     "{\"status\":\"%s\",\"service\":\"edge\",\"replica\":\"%s\",\"version\":\"%s\"}",
                     w->stopping ? "stopping" : "ok", esc, FAREBOX_VERSION);
    fb_http_send(req, w->stopping ? 503 : 200, "application/json", body, (size_t)n);
    return 0;
}

/* --- /readyz: the ledger and the verifier answer "health" within a deadline ---------- */

typedef struct {
    fb_http_guard_t *guard; /* the request, while it exists */
    int waiting;            /* health calls not yet answered */
    int64_t started_us;
    struct {
        bool ok;
        char replica[128];
        char error[256];
        int64_t latency_us;
    } check[2]; /* 0 ledger, 1 verifier */
} s_ready_t;

static void s_ready_finish(s_ready_t *r)
{
    h2o_req_t *req = r->guard->req;
    if (req) {
        static const char *names[] = {"ledger", "verifier"};
        bool ready = r->check[0].ok && r->check[1].ok;
        char body[2048];
        size_t o =
            (size_t)snprintf(body, sizeof(body), "{\"ready\":%s,\"checks\":{", ready ? "true" : "false");
        for (int i = 0; i < 2; i++) {
            char esc[300];
            if (r->check[i].ok)
                edge_json_escape(esc, sizeof(esc), r->check[i].replica, strlen(r->check[i].replica));
            else
                edge_json_escape(esc, sizeof(esc), r->check[i].error, strlen(r->check[i].error));
            o += (size_t)snprintf(body + o, sizeof(body) - o,
                                  "%s\"%s\":{\"ok\":%s,\"%s\":\"%s\",\"latency_ms\":%.3f}", i ? "," : "",
                                  names[i], r->check[i].ok ? "true" : "false",
                                  r->check[i].ok ? "replica" : "error", esc, r->check[i].latency_us / 1000.0);
        }
        o += (size_t)snprintf(body + o, sizeof(body) - o, "}}");
        fb_http_send(req, ready ? 200 : 503, "application/json", body, o);
    }
    fb_http_guard_release(&r->guard);
    free(r);
}

static void s_ready_done(s_ready_t *r, int which, const fb_rpc_reply_t *reply)
{
    r->check[which].ok = reply->ok;
    r->check[which].latency_us = fb_mono_us() - r->started_us;
    snprintf(r->check[which].replica, sizeof(r->check[which].replica), "%s", reply->replica);
    snprintf(r->check[which].error, sizeof(r->check[which].error), "%s: %s", reply->code, reply->message);
    if (--r->waiting == 0)
        s_ready_finish(r);
}

static void s_ready_ledger(void *arg, const fb_rpc_reply_t *reply)
{
    s_ready_done(arg, 0, reply);
}

static void s_ready_verifier(void *arg, const fb_rpc_reply_t *reply)
{
    s_ready_done(arg, 1, reply);
}

static int s_readyz(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    if (w->stopping) {
        static const char body[] = "{\"ready\":false,\"stopping\":true}";
        fb_http_send(req, 503, "application/json", body, sizeof(body) - 1);
        return 0;
    }
    s_ready_t *r = fb_calloc(1, sizeof(*r));
    r->guard = fb_http_guard_new(req);
    r->waiting = 2;
    r->started_us = fb_mono_us();
    uint32_t t = w->edge->ready_timeout_ms;
    /* one attempt per replica set: the deadline is the readiness budget */
    fb_rpc_call_opts_t opts = {.method = "health", .trace = rid, .deadline_ms = t, .attempt_ms = t};
    fb_rpc_client_call(w->ledger, &opts, NULL, 0, s_ready_ledger, r);
    fb_rpc_client_call(w->verifier, &opts, NULL, 0, s_ready_verifier, r);
    return 0;
}

/* --- the catalog: /v1/models (OpenAI's list, or Anthropic's for callers that
 * send anthropic-version) and /v1/pricing, public, made once at start ------------- */

static int s_models(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    FB_UNUSED(rid);
    size_t n;
    const char *body = fb_http_header(req, "anthropic-version").base
                           ? edge_catalog_models_anthropic(w->edge->catalog, &n)
                           : edge_catalog_models_openai(w->edge->catalog, &n);
    fb_http_send(req, 200, "application/json", body, n);
    return 0;
}

static int s_pricing(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    FB_UNUSED(rid);
    size_t n;
    const char *body = edge_catalog_pricing(w->edge->catalog, &n);
    fb_http_send(req, 200, "application/json", body, n);
    return 0;
}

/* --- /openapi.json: services/edge/api/openapi.json, embedded at build time ---------------- */

extern const char edge_openapi_json[];
extern const size_t edge_openapi_json_len;

static int s_openapi(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    FB_UNUSED(w);
    FB_UNUSED(rid);
    fb_http_send(req, 200, "application/json", edge_openapi_json, edge_openapi_json_len);
    return 0;
}

static const s_route_t s_routes[] = {
    {"/healthz", "GET", s_healthz},
    {"/readyz", "GET", s_readyz},
    {"/v1/chat/completions", "POST", edge_chat_completions},
    {"/api/v1/chat/completions", "POST", edge_chat_completions},
    {"/v1/messages", "POST", edge_chat_messages},
    {"/v1/models", "GET", s_models},
    {"/v1/pricing", "GET", s_pricing},
    {"/api/v1/prompt", "POST", edge_chat_prompt},
    {"/v1/topup", "POST", edge_topup},
    {"/v1/balance", "GET", edge_balance},
    {"/admin/", "*", edge_admin},
    {"/facilitator/verify", "POST", edge_facilitator_verify},
    {"/facilitator/settle", "POST", edge_facilitator_settle},
    {"/facilitator/supported", "GET", edge_facilitator_supported},
    {"/metrics", "GET", edge_metrics_serve},
    {"/openapi.json", "GET", s_openapi},
};

static bool s_path_matches(const s_route_t *r, h2o_iovec_t path)
{
    size_t n = strlen(r->path);
    if (r->path[n - 1] == '/')
        return path.len >= n && memcmp(path.base, r->path, n) == 0;
    return path.len == n && memcmp(path.base, r->path, n) == 0;
}

static bool s_method_matches(const s_route_t *r, h2o_iovec_t method)
{
    if (strcmp(r->method, "*") == 0)
        return true;
    if (method.len == 4 && memcmp(method.base, "HEAD", 4) == 0 && strcmp(r->method, "GET") == 0)
        return true;
    return fb_streq_n(method.base, method.len, r->method);
}

/* The client IP's token bucket; /healthz and /metrics (answered from the
 * edge's memory) are not counted, /readyz (an RPC to the ledger and one to
 * the verifier) is. Returns true when the request may go on (else 429 was
 * answered). */
static bool s_ip_allowed(edge_worker_t *w, h2o_req_t *req, h2o_iovec_t path)
{
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/healthz")) ||
        h2o_memis(path.base, path.len, H2O_STRLIT("/metrics")))
        return true;
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof(sa));
    req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&sa);
    /* every line: a proxy may append its own line after the caller's (HAProxy's option forwardfor) */
    h2o_iovec_t xff = fb_http_header_all(req, "x-forwarded-for");
    uint8_t ip[16];
    size_t iplen = edge_limit_client(w->edge->limits, (struct sockaddr *)&sa, xff.base, xff.len, ip);
    if (!iplen)
        return true;
    int64_t wait = edge_limit_take(w->edge->limits, 0, ip, iplen, fb_mono_ms());
    if (wait == 0)
        return true;
    edge_retry_after(req, wait);
    edge_dialect_t d = h2o_memis(path.base, path.len, H2O_STRLIT("/v1/messages"))     ? EDGE_ANTHROPIC
                       : h2o_memis(path.base, path.len, H2O_STRLIT("/api/v1/prompt")) ? EDGE_CHAT402
                                                                                      : EDGE_OPENAI;
    edge_error(req, d, 429, "rate_limited", NULL, "too many requests from this address; retry in %lld ms",
               (long long)wait);
    return false;
}

static int s_on_req(h2o_handler_t *handler, h2o_req_t *req)
{
    FB_UNUSED(handler);
    edge_worker_t *w = edge_worker_of(req->conn->ctx);
    s_active_t *active = s_track(w, req);
    const char *rid = s_request_id(w, req);
    h2o_iovec_t path = req->path_normalized;
    if (!s_ip_allowed(w, req, path))
        return 0;
    const s_route_t *path_match = NULL;
    for (size_t i = 0; i < FB_ARRAY_SIZE(s_routes); i++) {
        const s_route_t *r = &s_routes[i];
        if (!s_path_matches(r, path))
            continue;
        path_match = r;
        active->route = (int)i;
        if (s_method_matches(r, req->method))
            return r->fn(w, req, rid);
    }
    if (path_match) {
        fb_http_set_header(req, "allow", path_match->method, strlen(path_match->method));
        edge_error(req, EDGE_OPENAI, 405, "method_not_allowed", NULL, "%.*s is not allowed on %.*s (use %s)",
                   (int)req->method.len, req->method.base, (int)path.len, path.base, path_match->method);
        return 0;
    }
    edge_error(req, EDGE_OPENAI, 404, "not_found", NULL, "no route for %.*s %.*s", (int)req->method.len,
               req->method.base, (int)path.len, path.base);
    return 0;
}

void edge_routes_register(edge_t *edge)
{
    const char *names[FB_ARRAY_SIZE(s_routes)];
    for (size_t i = 0; i < FB_ARRAY_SIZE(s_routes); i++)
        names[i] = s_routes[i].path;
    edge_metrics_routes(names, (int)FB_ARRAY_SIZE(s_routes));
    h2o_hostconf_t *host = h2o_config_register_host(&edge->h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(path, sizeof(*h));
    h->on_req = s_on_req;
}

int edge_routes_test(bool verbose)
{
    FB_UNUSED(verbose);
    s_route_t prefix = {"/admin/", "*", NULL}, exact = {"/readyz", "GET", NULL};
    FB_ASSERT(s_path_matches(&prefix, h2o_iovec_init(H2O_STRLIT("/admin/keys"))));
    FB_ASSERT(!s_path_matches(&prefix, h2o_iovec_init(H2O_STRLIT("/admin"))));
    FB_ASSERT(s_path_matches(&exact, h2o_iovec_init(H2O_STRLIT("/readyz"))));
    FB_ASSERT(!s_path_matches(&exact, h2o_iovec_init(H2O_STRLIT("/readyz/x"))));
    FB_ASSERT(s_method_matches(&exact, h2o_iovec_init(H2O_STRLIT("HEAD"))));
    FB_ASSERT(!s_method_matches(&exact, h2o_iovec_init(H2O_STRLIT("POST"))));

    /* the OpenAPI document is JSON and describes every route */
    json_error_t jerr;
    json_t *doc = json_loadb(edge_openapi_json, edge_openapi_json_len, JSON_REJECT_DUPLICATES, &jerr);
    FB_ASSERT(doc);
    json_t *paths = json_object_get(doc, "paths");
    for (size_t i = 0; i < FB_ARRAY_SIZE(s_routes); i++) {
        const char *p = s_routes[i].path;
        size_t n = strlen(p);
        bool found = false;
        const char *key;
        json_t *v;
        json_object_foreach(paths, key, v)
        {
            if (p[n - 1] == '/' ? strncmp(key, p, n) == 0 : strcmp(key, p) == 0)
                found = true;
        }
        if (!found)
            fprintf(stderr, "openapi.json lacks %s\n", p);
        FB_ASSERT(found);
    }
    json_decref(doc);

    return 0;
}
