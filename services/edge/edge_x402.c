/* edge_x402 - quotes and requirements of x402 pay-per-call. */
#include "edge_x402.h"
#include "edge_reply.h"
#include "fb_log.h"
#include "fb_util.h"
#include "fb_x402.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NETWORKS_FRESH_MS    60000 /* the verifier's networks are asked again after this */
#define NETWORKS_DEADLINE_MS 3000
#define NETWORKS_MAX         8

typedef struct {
    char network[96]; /* CAIP-2 */
    bool evm;
    char asset[100];
    char pay_to[100];
    json_t *extra;
} s_net_t;

typedef struct s_waiter {
    struct s_waiter *next;
    edge_x402_ready_fn *fn;
    void *arg;
} s_waiter_t;

struct edge_x402_t {
    edge_worker_t *w;
    s_net_t nets[NETWORKS_MAX]; /* quotable: served, settled, with a payTo */
    size_t count;
    int64_t fetched_ms; /* monotonic; 0: never */
    bool asking;        /* verifier.networks in flight */
    bool dead;          /* destroyed while asking: the answer frees it */
    s_waiter_t *waiters;
};

bool edge_x402_enabled(const edge_t *edge)
{
    return edge->pay_to_evm[0] || edge->pay_to_solana[0];
}

edge_x402_t *edge_x402_new(edge_worker_t *w)
{
    edge_x402_t *self = fb_calloc(1, sizeof(*self));
    self->w = w;
    return self;
}

static void s_clear(edge_x402_t *self)
{
    for (size_t i = 0; i < self->count; i++)
        json_decref(self->nets[i].extra);
    self->count = 0;
}

void edge_x402_destroy(edge_x402_t **self_p)
{
    FB_ASSERT(self_p);
    edge_x402_t *self = *self_p;
    if (!self)
        return;
    s_clear(self);
    if (self->asking)
        self->dead = true; /* the pending answer frees it */
    else
        free(self);
    *self_p = NULL;
}

/* Keep the networks of a verifier.networks answer that can be quoted. */
static void s_read(edge_x402_t *self, json_t *doc)
{
    const edge_t *edge = self->w->edge;
    s_clear(self);
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(doc, "networks"), i, n)
    {
        const char *network = json_string_value(json_object_get(n, "network")),
                   *family = json_string_value(json_object_get(n, "family")),
                   *asset = json_string_value(json_object_get(n, "asset"));
        if (!network || !family || !asset || !json_is_true(json_object_get(n, "settles")) ||
            self->count == NETWORKS_MAX)
            continue;
        bool evm = strcmp(family, "evm") == 0;
        const char *pay_to = evm ? edge->pay_to_evm : edge->pay_to_solana;
        if (!pay_to[0])
            continue;
        s_net_t *s = &self->nets[self->count++];
        snprintf(s->network, sizeof(s->network), "%s", network);
        snprintf(s->asset, sizeof(s->asset), "%s", asset);
        snprintf(s->pay_to, sizeof(s->pay_to), "%s", pay_to);
        s->evm = evm;
        json_t *extra = json_object_get(n, "extra");
        s->extra = json_is_object(extra) ? json_deep_copy(extra) : json_object();
    }
}

static void s_on_networks(void *arg, const fb_rpc_reply_t *reply)
{
    edge_x402_t *self = arg;
    self->asking = false;
    if (self->dead) {
        /* the worker is gone: nobody waits any more */
        while (self->waiters) {
            s_waiter_t *wt = self->waiters;
            self->waiters = wt->next;
            free(wt);
        }
        free(self);
        return;
    }
    const char *error = NULL;
    if (reply->ok) {
        json_t *doc = edge_reply_json(reply);
        s_read(self, doc);
        json_decref(doc);
        self->fetched_ms = fb_mono_ms();
    } else if (!self->fetched_ms) {
        error = "the verifier cannot be reached";
        fb_log(FB_LOG_WARN, NULL, "x402 networks unknown", "code=%s message=%s", reply->code, reply->message);
    }
    s_waiter_t *list = self->waiters;
    self->waiters = NULL;
    while (list) {
        s_waiter_t *wt = list;
        list = wt->next;
        wt->fn(wt->arg, error);
        free(wt);
    }
}

void edge_x402_when_ready(edge_x402_t *self, edge_x402_ready_fn *fn, void *arg)
{
    if (self->fetched_ms && fb_mono_ms() - self->fetched_ms < NETWORKS_FRESH_MS) {
        fn(arg, NULL);
        return;
    }
    s_waiter_t *wt = fb_calloc(1, sizeof(*wt));
    wt->fn = fn;
    wt->arg = arg;
    wt->next = self->waiters;
    self->waiters = wt;
    if (!self->asking) {
        self->asking = true;
        edge_rpc_json(self->w->verifier, "verifier.networks", NULL, NULL, NULL, NETWORKS_DEADLINE_MS,
                      s_on_networks, self);
    }
}

/* One requirement of version (1 or 2) for a network. */
static json_t *s_requirement(const edge_t *edge, const s_net_t *n, int version, int64_t amount,
                             const char *url, const char *description)
{
    char amount_text[24];
    snprintf(amount_text, sizeof(amount_text), "%" PRId64, amount);
    if (version == 1) {
        const char *name = fb_x402_v1_name(n->network);
        return json_pack("{ss ss ss ss ss ss ss sI ss sO}", "scheme", "exact", "network",
                         name ? name : n->network, "maxAmountRequired", amount_text, "resource", url,
                         "description", description, "mimeType", "application/json", "payTo", n->pay_to,
                         "maxTimeoutSeconds", (json_int_t)edge->x402_timeout_s, "asset", n->asset, "extra",
                         n->extra);
    }
    return json_pack("{ss ss ss ss ss sI sO}", "scheme", "exact", "network", n->network, "amount",
                     amount_text, "asset", n->asset, "payTo", n->pay_to, "maxTimeoutSeconds",
                     (json_int_t)edge->x402_timeout_s, "extra", n->extra);
}

json_t *edge_x402_quote(edge_x402_t *self, int64_t amount, const char *url, const char *description,
                        const char *error)
{
    if (self->count == 0)
        return NULL;
    json_t *accepts = json_array();
    for (size_t i = 0; i < self->count; i++)
        json_array_append_new(accepts,
                              s_requirement(self->w->edge, &self->nets[i], 2, amount, url, description));
    json_t *doc = json_pack("{si}", "x402Version", 2);
    if (error)
        json_object_set_new(doc, "error", json_string(error));
    json_object_set_new(
        doc, "resource",
        json_pack("{ss ss ss}", "url", url, "description", description, "mimeType", "application/json"));
    json_object_set_new(doc, "accepts", accepts);
    return doc;
}

json_t *edge_x402_requirements(edge_x402_t *self, const char *header, size_t len, int64_t amount,
                               const char *url, const char *description, int *version, char *err,
                               size_t errlen)
{
    json_t *payload = fb_x402_decode_header(header, len, err, errlen);
    if (!payload)
        return NULL;
    fb_x402_payload_t p;
    if (fb_x402_parse_payload(payload, &p, err, errlen) != 0) {
        json_decref(payload);
        return NULL;
    }
    fb_x402_network_t net;
    json_t *out = NULL;
    if (fb_x402_network(p.network, &net) != 0) {
        snprintf(err, errlen, "network %.96s is not known", p.network);
    } else {
        for (size_t i = 0; i < self->count && !out; i++)
            if (strcmp(self->nets[i].network, net.caip2) == 0)
                out = s_requirement(self->w->edge, &self->nets[i], p.version, amount, url, description);
        if (!out)
            snprintf(err, errlen, "network %.96s is not accepted here", p.network);
    }
    *version = p.version;
    json_decref(payload);
    return out;
}

void edge_x402_send_quote(edge_x402_t *self, h2o_req_t *req, int dialect, int64_t amount, const char *url,
                          const char *description, const char *code, const char *reason, const char *message)
{
    json_t *q = edge_x402_quote(self, amount, url, description, reason ? reason : "payment required");
    if (!q) {
        edge_error(req, (edge_dialect_t)dialect, 503, "unavailable", NULL,
                   "no payment network can be quoted now (the verifier settles none)");
        return;
    }
    h2o_iovec_t v = edge_x402_header_value(req, q);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("payment-required"), 0, NULL, v.base,
                          v.len);
    json_t *details = json_pack("{sO sO sO}", "x402Version", json_object_get(q, "x402Version"), "resource",
                                json_object_get(q, "resource"), "accepts", json_object_get(q, "accepts"));
    if (reason)
        json_object_set_new(details, "reason", json_string(reason));
    json_decref(q);
    edge_error(req, (edge_dialect_t)dialect, 402, code, details, "%s", message);
}

int edge_x402_payment_header(h2o_req_t *req, h2o_iovec_t *out)
{
    *out = fb_http_header(req, "payment-signature");
    if (!out->base)
        *out = fb_http_header(req, "x-payment");
    if (!out->base)
        return 0;
    return out->len == 0 || out->len > FB_X402_HEADER_MAX ? -1 : 1;
}

char *edge_x402_receipt(const char *transaction, const char *network, const char *payer)
{
    json_t *doc = json_pack("{sb ss ss ss}", "success", 1, "transaction", transaction ? transaction : "",
                            "network", network ? network : "", "payer", payer ? payer : "");
    char *b64 = fb_x402_encode_header(doc);
    json_decref(doc);
    return b64;
}

void edge_x402_set_receipt(h2o_req_t *req, int version, const char *receipt)
{
    if (receipt)
        fb_http_set_header(req, version == 1 ? "x-payment-response" : "payment-response", receipt,
                           strlen(receipt));
}

char *edge_x402_resource_url(h2o_req_t *req)
{
    char url[700];
    snprintf(url, sizeof(url), "%.*s://%.*s%.*s", (int)req->scheme->name.len, req->scheme->name.base,
             (int)(req->authority.len > 200 ? 200 : req->authority.len), req->authority.base,
             (int)(req->path.len > 400 ? 400 : req->path.len), req->path.base);
    return fb_strdup(url);
}

h2o_iovec_t edge_x402_header_value(h2o_req_t *req, const json_t *doc)
{
    char *b64 = fb_x402_encode_header(doc);
    size_t n = strlen(b64);
    char *v = h2o_mem_alloc_pool(&req->pool, n);
    memcpy(v, b64, n);
    free(b64);
    return h2o_iovec_init(v, n);
}

int edge_x402_test(bool verbose)
{
    FB_UNUSED(verbose);
    edge_t edge = {0};
    snprintf(edge.pay_to_evm, sizeof(edge.pay_to_evm), "0x209693Bc6afc0C5328bA36FaF03C514EF312287C");
    edge.x402_timeout_s = 300;
    edge_worker_t w = {.edge = &edge};
    edge_x402_t *x = edge_x402_new(&w);
    FB_ASSERT(edge_x402_enabled(&edge));
    FB_ASSERT(!edge_x402_quote(x, 10, "http://h/v1/chat/completions", "", NULL));
    json_error_t jerr;
    json_t *doc =
        json_loads("{\"networks\":[{\"network\":\"eip155:84532\",\"family\":\"evm\",\"asset\":\"0xT\","
                   "\"settles\":true,\"extra\":{\"name\":\"USDC\",\"version\":\"2\"}},"
                   "{\"network\":\"solana:x\",\"family\":\"solana\",\"asset\":\"M\",\"settles\":true}]}",
                   0, &jerr);
    s_read(x, doc);
    json_decref(doc);
    FB_ASSERT(x->count == 1); /* no Solana payTo: not quoted */
    json_t *q = edge_x402_quote(x, 1234, "http://h/v1/chat/completions", "chat", "payment required");
    FB_ASSERT(json_integer_value(json_object_get(q, "x402Version")) == 2);
    json_t *a = json_array_get(json_object_get(q, "accepts"), 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(a, "amount")), "1234") == 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(a, "payTo")), edge.pay_to_evm) == 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_object_get(a, "extra"), "name")), "USDC") == 0);
    /* the requirements parse as x402's own */
    fb_x402_requirements_t r;
    char err[200];
    FB_ASSERT(fb_x402_parse_requirements(a, 2, &r, err, sizeof(err)) == 0);
    json_t *v1 = s_requirement(&edge, &x->nets[0], 1, 1234, "http://h/x", "d");
    FB_ASSERT(fb_x402_parse_requirements(v1, 1, &r, err, sizeof(err)) == 0);
    FB_ASSERT(strcmp(r.network, "base-sepolia") == 0);
    json_decref(v1);
    json_decref(q);
    /* a header that is not a payment */
    int version;
    FB_ASSERT(!edge_x402_requirements(x, "e30=", 4, 1, "u", "d", &version, err, sizeof(err)));
    edge_x402_destroy(&x);
    FB_ASSERT(!x);
    return 0;
}
