/* edge_metrics - per-worker counters, summed at scrape time. */
#include "edge_metrics.h"
#include "edge_limit.h"
#include "fb_http.h"
#include "fb_util.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* histogram bounds in microseconds (le= in seconds) */
static const int64_t s_bounds_us[] = {500,     1000,     2500,     5000,     10000,     25000,
                                      50000,   100000,   250000,   500000,   1000000,   2500000,
                                      5000000, 10000000, 30000000, 60000000, 120000000, 300000000};
#define BUCKETS ((int)(sizeof(s_bounds_us) / sizeof(s_bounds_us[0])))

/* statuses counted one by one; others count as "other" */
static const int s_statuses[] = {0,   200, 201, 202, 400, 401, 402, 403, 404,
                                 405, 409, 413, 429, 500, 501, 502, 503, 504};
#define STATUSES ((int)(sizeof(s_statuses) / sizeof(s_statuses[0])))

typedef struct {
    uint64_t bucket[BUCKETS]; /* not cumulative: cumulated at scrape */
    uint64_t count, sum_us;
} s_hist_t;

struct edge_metrics_t {
    const void *ledger, *verifier;
    uint64_t requests[EDGE_METRICS_ROUTES + 1][STATUSES + 1];
    s_hist_t latency[EDGE_METRICS_ROUTES + 1];
    s_hist_t upstream[2];
    uint64_t upstream_failures[2];
    uint64_t upstream_fallbacks[2];
    s_hist_t rpc[2];
    uint64_t money[EDGE_MONEY_KINDS];
    uint64_t idem[EDGE_IDEM_KINDS];
    uint64_t keys[EDGE_KEY_KINDS];
    uint64_t slices[EDGE_SLICE_KINDS];
    s_hist_t journal_sync[2]; /* ok, failed */
    uint64_t journal_synced_calls;
    int64_t open_streams;
    uint64_t conns_refused;
};

static __thread edge_metrics_t *s_mine;
static const char *s_route_names[EDGE_METRICS_ROUTES];
static int s_route_count;

#define ADD(field, v) __atomic_fetch_add(&(field), (v), __ATOMIC_RELAXED)
#define GET(field)    __atomic_load_n(&(field), __ATOMIC_RELAXED)

edge_metrics_t *edge_metrics_new(const void *ledger, const void *verifier)
{
    edge_metrics_t *self = fb_calloc(1, sizeof(*self));
    self->ledger = ledger;
    self->verifier = verifier;
    return self;
}

void edge_metrics_destroy(edge_metrics_t **self_p)
{
    FB_ASSERT(self_p);
    if (*self_p && s_mine == *self_p)
        s_mine = NULL;
    free(*self_p);
    *self_p = NULL;
}

void edge_metrics_bind(edge_metrics_t *self)
{
    s_mine = self;
}

void edge_metrics_routes(const char *const *names, int count)
{
    s_route_count = count > EDGE_METRICS_ROUTES ? EDGE_METRICS_ROUTES : count;
    for (int i = 0; i < s_route_count; i++)
        s_route_names[i] = names[i];
}

static void s_observe(s_hist_t *h, int64_t us)
{
    if (us < 0)
        us = 0;
    int b = 0;
    while (b < BUCKETS && us > s_bounds_us[b])
        b++;
    if (b < BUCKETS)
        ADD(h->bucket[b], 1);
    ADD(h->count, 1);
    ADD(h->sum_us, (uint64_t)us);
}

void edge_metrics_request(int route, int status, int64_t us)
{
    edge_metrics_t *m = s_mine;
    if (!m)
        return;
    if (route < 0 || route >= s_route_count)
        route = EDGE_METRICS_ROUTES; /* other */
    int s = STATUSES;
    for (int i = 0; i < STATUSES; i++)
        if (s_statuses[i] == status)
            s = i;
    ADD(m->requests[route][s], 1);
    s_observe(&m->latency[route], us);
}

void edge_metrics_upstream_fallback(int provider)
{
    edge_metrics_t *m = s_mine;
    if (m && provider >= 0 && provider <= 1)
        ADD(m->upstream_fallbacks[provider], 1);
}

void edge_metrics_upstream(int provider, int64_t us, bool ok)
{
    edge_metrics_t *m = s_mine;
    if (!m || provider < 0 || provider > 1)
        return;
    s_observe(&m->upstream[provider], us);
    if (!ok)
        ADD(m->upstream_failures[provider], 1);
}

void edge_metrics_rpc(const void *client, int64_t us)
{
    edge_metrics_t *m = s_mine;
    if (!m)
        return;
    if (client == m->ledger)
        s_observe(&m->rpc[0], us);
    else if (client == m->verifier)
        s_observe(&m->rpc[1], us);
}

void edge_metrics_money(edge_money_t kind, int64_t micro)
{
    edge_metrics_t *m = s_mine;
    if (m && micro > 0 && kind < EDGE_MONEY_KINDS)
        ADD(m->money[kind], (uint64_t)micro);
}

void edge_metrics_idem(edge_idem_outcome_t outcome)
{
    edge_metrics_t *m = s_mine;
    if (m && outcome < EDGE_IDEM_KINDS)
        ADD(m->idem[outcome], 1);
}

void edge_metrics_key(edge_key_outcome_t outcome)
{
    edge_metrics_t *m = s_mine;
    if (m && outcome < EDGE_KEY_KINDS)
        ADD(m->keys[outcome], 1);
}

void edge_metrics_slice(edge_slice_outcome_t outcome)
{
    edge_metrics_t *m = s_mine;
    if (m && outcome < EDGE_SLICE_KINDS)
        ADD(m->slices[outcome], 1);
}

void edge_metrics_journal_sync(int64_t us, bool ok, size_t calls)
{
    edge_metrics_t *m = s_mine;
    if (!m)
        return;
    s_observe(&m->journal_sync[ok ? 0 : 1], us);
    if (ok)
        ADD(m->journal_synced_calls, calls);
}

void edge_metrics_connection_refused(void)
{
    edge_metrics_t *m = s_mine;
    if (m)
        ADD(m->conns_refused, 1);
}

void edge_metrics_streams(int delta)
{
    edge_metrics_t *m = s_mine;
    if (m)
        ADD(m->open_streams, delta);
}

/* --- rendering ----------------------------------------------------------------------- */

static void s_printf(fb_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_printf(fb_buf_t *b, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        fb_buf_append(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void s_sum_hist(s_hist_t *out, const s_hist_t *in)
{
    for (int i = 0; i < BUCKETS; i++)
        out->bucket[i] += GET(in->bucket[i]);
    out->count += GET(in->count);
    out->sum_us += GET(in->sum_us);
}

static void s_hist(fb_buf_t *b, const char *name, const char *label, const char *value, const s_hist_t *h)
{
    uint64_t cum = 0;
    for (int i = 0; i < BUCKETS; i++) {
        cum += h->bucket[i];
        s_printf(b, "%s_bucket{%s=\"%s\",le=\"%g\"} %" PRIu64 "\n", name, label, value, s_bounds_us[i] / 1e6,
                 cum);
    }
    s_printf(b, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name, label, value, h->count);
    s_printf(b, "%s_sum{%s=\"%s\"} %.6f\n", name, label, value, h->sum_us / 1e6);
    s_printf(b, "%s_count{%s=\"%s\"} %" PRIu64 "\n", name, label, value, h->count);
}

/* A counter family with one label, one series per name. */
static void s_counters(fb_buf_t *b, const char *family, const char *help, const char *label,
                       const char *const *names, const uint64_t *values, int count)
{
    s_printf(b, "# HELP %s %s.\n# TYPE %s counter\n", family, help, family);
    for (int k = 0; k < count; k++)
        s_printf(b, "%s{%s=\"%s\"} %" PRIu64 "\n", family, label, names[k], values[k]);
}

static void s_render(const edge_t *edge, fb_buf_t *b)
{
    static const char *money_names[EDGE_MONEY_KINDS] = {"held",         "committed",      "released",
                                                        "x402_settled", "topup_credited", "topup_advanced",
                                                        "unbilled",     "capped"};
    static const char *money_help[EDGE_MONEY_KINDS] = {
        "micro-USDC held for prepaid calls",
        "micro-USDC charged from holds",
        "micro-USDC returned from holds",
        "micro-USDC of x402 payments settled for calls",
        "micro-USDC of topups credited",
        "micro-USDC of topups credited before their settlement was final (included in topup_credited)",
        "micro-USDC of answered calls whose deferred charges could not be written (never charged, though "
        "counted in committed when answered)",
        "micro-USDC of reported usage above calls' holds or x402 quotes (not charged: a call pays at most "
        "its ceiling; the provider may bill it)"};
    static const char *providers[2] = {"openai", "anthropic"};
    static const char *services[2] = {"ledger", "verifier"};
    uint64_t requests[EDGE_METRICS_ROUTES + 1][STATUSES + 1] = {{0}};
    s_hist_t latency[EDGE_METRICS_ROUTES + 1], upstream[2], rpc[2], journal_sync[2];
    memset(journal_sync, 0, sizeof(journal_sync));
    memset(latency, 0, sizeof(latency));
    memset(upstream, 0, sizeof(upstream));
    memset(rpc, 0, sizeof(rpc));
    uint64_t failures[2] = {0}, fallbacks[2] = {0}, money[EDGE_MONEY_KINDS] = {0},
             idem[EDGE_IDEM_KINDS] = {0}, keys[EDGE_KEY_KINDS] = {0}, slices[EDGE_SLICE_KINDS] = {0},
             in_flight = 0, journal_synced_calls = 0, conns_refused = 0;
    int64_t streams = 0;
    for (int w = 0; w < edge->worker_count; w++) {
        edge_worker_t *wk = edge->workers[w];
        if (!wk || !wk->metrics)
            continue;
        edge_metrics_t *m = wk->metrics;
        for (int r = 0; r <= EDGE_METRICS_ROUTES; r++) {
            for (int s = 0; s <= STATUSES; s++)
                requests[r][s] += GET(m->requests[r][s]);
            s_sum_hist(&latency[r], &m->latency[r]);
        }
        for (int p = 0; p < 2; p++) {
            s_sum_hist(&upstream[p], &m->upstream[p]);
            failures[p] += GET(m->upstream_failures[p]);
            fallbacks[p] += GET(m->upstream_fallbacks[p]);
            s_sum_hist(&rpc[p], &m->rpc[p]);
        }
        for (int k = 0; k < EDGE_MONEY_KINDS; k++)
            money[k] += GET(m->money[k]);
        for (int k = 0; k < EDGE_IDEM_KINDS; k++)
            idem[k] += GET(m->idem[k]);
        for (int k = 0; k < EDGE_KEY_KINDS; k++)
            keys[k] += GET(m->keys[k]);
        for (int k = 0; k < EDGE_SLICE_KINDS; k++)
            slices[k] += GET(m->slices[k]);
        for (int k = 0; k < 2; k++)
            s_sum_hist(&journal_sync[k], &m->journal_sync[k]);
        journal_synced_calls += GET(m->journal_synced_calls);
        streams += GET(m->open_streams);
        conns_refused += GET(m->conns_refused);
        in_flight += GET(wk->active_requests);
    }
    s_printf(b, "# HELP farebox_edge_requests_total HTTP requests answered, by route and status.\n"
                "# TYPE farebox_edge_requests_total counter\n");
    for (int r = 0; r <= EDGE_METRICS_ROUTES; r++) {
        const char *route = r < s_route_count ? s_route_names[r] : "other";
        if (r >= s_route_count && r != EDGE_METRICS_ROUTES)
            continue;
        for (int s = 0; s <= STATUSES; s++) {
            if (!requests[r][s])
                continue;
            char status[8];
            if (s < STATUSES)
                snprintf(status, sizeof(status), "%d", s_statuses[s]);
            else
                snprintf(status, sizeof(status), "other");
            s_printf(b, "farebox_edge_requests_total{route=\"%s\",status=\"%s\"} %" PRIu64 "\n", route,
                     status, requests[r][s]);
        }
    }
    s_printf(b, "# HELP farebox_edge_request_duration_seconds Time from a request to its end, by route.\n"
                "# TYPE farebox_edge_request_duration_seconds histogram\n");
    for (int r = 0; r <= EDGE_METRICS_ROUTES; r++) {
        if (!latency[r].count || (r >= s_route_count && r != EDGE_METRICS_ROUTES))
            continue;
        s_hist(b, "farebox_edge_request_duration_seconds", "route",
               r < s_route_count ? s_route_names[r] : "other", &latency[r]);
    }
    s_printf(b, "# HELP farebox_edge_upstream_duration_seconds Provider calls, start to end, by provider.\n"
                "# TYPE farebox_edge_upstream_duration_seconds histogram\n");
    for (int p = 0; p < 2; p++)
        s_hist(b, "farebox_edge_upstream_duration_seconds", "provider", providers[p], &upstream[p]);
    s_printf(b, "# HELP farebox_edge_upstream_failures_total Provider calls that failed (transport, timeout, "
                "error status).\n# TYPE farebox_edge_upstream_failures_total counter\n");
    for (int p = 0; p < 2; p++)
        s_printf(b, "farebox_edge_upstream_failures_total{provider=\"%s\"} %" PRIu64 "\n", providers[p],
                 failures[p]);
    s_printf(b,
             "# HELP farebox_edge_upstream_fallbacks_total Failed provider calls retried on the provider's "
             "second route.\n# TYPE farebox_edge_upstream_fallbacks_total counter\n");
    for (int p = 0; p < 2; p++)
        s_printf(b, "farebox_edge_upstream_fallbacks_total{provider=\"%s\"} %" PRIu64 "\n", providers[p],
                 fallbacks[p]);
    s_printf(b, "# HELP farebox_edge_rpc_duration_seconds Internal RPC calls, by service.\n"
                "# TYPE farebox_edge_rpc_duration_seconds histogram\n");
    for (int p = 0; p < 2; p++)
        s_hist(b, "farebox_edge_rpc_duration_seconds", "service", services[p], &rpc[p]);
    for (int k = 0; k < EDGE_MONEY_KINDS; k++)
        s_printf(
            b,
            "# HELP farebox_edge_money_%s_micro_total %s.\n# TYPE farebox_edge_money_%s_micro_total counter\n"
            "farebox_edge_money_%s_micro_total %" PRIu64 "\n",
            money_names[k], money_help[k], money_names[k], money_names[k], money[k]);
    static const char *idem_names[EDGE_IDEM_KINDS] = {"claimed", "replayed", "in_progress", "mismatch",
                                                      "taken_over"};
    s_counters(b, "farebox_edge_idempotent_calls_total",
               "Claims of paid calls sent with an Idempotency-Key, by outcome", "outcome", idem_names, idem,
               EDGE_IDEM_KINDS);
    static const char *key_names[EDGE_KEY_KINDS] = {"cached", "joined", "asked", "refreshed"};
    s_counters(
        b, "farebox_edge_key_lookups_total",
        "API key lookups answered from the worker's memory, by waiting for the same lookup in flight, or "
        "by asking the ledger; and remembered answers asked again while in use",
        "outcome", key_names, keys, EDGE_KEY_KINDS);
    static const char *slice_names[EDGE_SLICE_KINDS] = {"ready", "waited", "opened", "ahead"};
    s_counters(b, "farebox_edge_prepaid_slices_total",
               "Prepaid calls reserved at once in their key's open slice or after waiting for one to open; "
               "slices opened for a call that did not fit, and ahead of the current one running out",
               "outcome", slice_names, slices, EDGE_SLICE_KINDS);
    s_printf(b,
             "# HELP farebox_edge_journal_fsync_duration_seconds fdatasyncs of the charge journal (before "
             "the writes it records are sent; with FAREBOX_PREPAID_JOURNAL_FSYNC, before deferred answers), "
             "by result.\n"
             "# TYPE farebox_edge_journal_fsync_duration_seconds histogram\n");
    static const char *sync_results[2] = {"ok", "failed"};
    for (int k = 0; k < 2; k++)
        s_hist(b, "farebox_edge_journal_fsync_duration_seconds", "result", sync_results[k], &journal_sync[k]);
    s_printf(b,
             "# HELP farebox_edge_journal_fsynced_calls_total Deferred prepaid calls answered once their "
             "journal record was on the disk.\n# TYPE farebox_edge_journal_fsynced_calls_total counter\n"
             "farebox_edge_journal_fsynced_calls_total %" PRIu64 "\n",
             journal_synced_calls);
    s_printf(b,
             "# HELP farebox_edge_open_streams Streams being answered now.\n# TYPE farebox_edge_open_streams "
             "gauge\nfarebox_edge_open_streams %" PRId64 "\n",
             streams);
    s_printf(b,
             "# HELP farebox_edge_connections_open Client connections open now.\n"
             "# TYPE farebox_edge_connections_open gauge\nfarebox_edge_connections_open %" PRId64 "\n"
             "# HELP farebox_edge_connections_refused_total Client connections closed as they came, over "
             "FAREBOX_HTTP_MAX_CONNECTIONS or its per-address cap.\n"
             "# TYPE farebox_edge_connections_refused_total counter\n"
             "farebox_edge_connections_refused_total %" PRIu64 "\n",
             edge->limits ? edge_limit_open_connections(edge->limits) : 0, conns_refused);
    s_printf(b,
             "# HELP farebox_edge_requests_in_flight Requests received and not finished (paid calls until "
             "their money is resolved).\n# TYPE farebox_edge_requests_in_flight gauge\n"
             "farebox_edge_requests_in_flight %" PRIu64 "\n",
             in_flight);
}

int edge_metrics_serve(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    FB_UNUSED(rid);
    fb_buf_t b = {0};
    s_render(w->edge, &b);
    fb_http_send(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    fb_buf_free(&b);
    return 0;
}

int edge_metrics_test(bool verbose)
{
    FB_UNUSED(verbose);
    static const char *names[] = {"/v1/chat/completions", "/v1/models"};
    edge_metrics_routes(names, 2);
    int ledger, verifier;
    edge_metrics_t *m = edge_metrics_new(&ledger, &verifier);
    edge_worker_t wk = {.metrics = m};
    edge_worker_t *workers[] = {&wk};
    edge_t edge = {.worker_count = 1, .workers = workers};
    edge_metrics_bind(m);
    edge_metrics_request(0, 200, 700);   /* in the 1 ms bucket */
    edge_metrics_request(0, 200, 20000); /* 25 ms */
    edge_metrics_request(1, 429, 100);   /* 0.5 ms */
    edge_metrics_request(7, 999, 100);   /* an unnamed route, an odd status */
    edge_metrics_rpc(&ledger, 300);
    edge_metrics_money(EDGE_MONEY_COMMITTED, 1234);
    edge_metrics_streams(1);
    edge_metrics_idem(EDGE_IDEM_REPLAYED);
    edge_metrics_key(EDGE_KEY_JOINED);
    edge_metrics_slice(EDGE_SLICE_AHEAD);
    edge_metrics_slice(EDGE_SLICE_AHEAD);
    fb_buf_t b = {0};
    s_render(&edge, &b);
    FB_ASSERT(
        strstr(b.data, "farebox_edge_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_requests_total{route=\"/v1/models\",status=\"429\"} 1\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_requests_total{route=\"other\",status=\"other\"} 1\n"));
    FB_ASSERT(
        strstr(b.data, "request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.001\"} 1\n"));
    FB_ASSERT(
        strstr(b.data, "request_duration_seconds_bucket{route=\"/v1/chat/completions\",le=\"0.025\"} 2\n"));
    FB_ASSERT(strstr(b.data, "request_duration_seconds_count{route=\"/v1/chat/completions\"} 2\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_rpc_duration_seconds_count{service=\"ledger\"} 1\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_money_committed_micro_total 1234\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_open_streams 1\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_idempotent_calls_total{outcome=\"replayed\"} 1\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_key_lookups_total{outcome=\"joined\"} 1\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_key_lookups_total{outcome=\"asked\"} 0\n"));
    FB_ASSERT(strstr(b.data, "farebox_edge_prepaid_slices_total{outcome=\"ahead\"} 2\n"));
    fb_buf_free(&b);
    edge_metrics_destroy(&m);
    FB_ASSERT(!m);
    return 0;
}
