/* edge_metrics - the edge's Prometheus metrics (GET /metrics, text format
 * 0.0.4): requests by route and status, request latency by route, provider
 * call latency and failures, RPC latency to the ledger and the verifier,
 * money held / committed / released, x402 settlements, topups, open
 * streams, requests in flight.
 *
 * Each worker thread counts into its own block (bound to the thread with
 * edge_metrics_bind), so counting is an uncontended relaxed atomic add; a
 * scrape sums the blocks of every worker. */
#ifndef EDGE_METRICS_H
#define EDGE_METRICS_H

#include "edge.h"

#include <stdbool.h>
#include <stdint.h>

#define EDGE_METRICS_ROUTES 32 /* routes counted by name; more share "other" */

typedef struct edge_metrics_t edge_metrics_t;

typedef enum {
    EDGE_MONEY_HELD = 0,  /* prepaid holds made */
    EDGE_MONEY_COMMITTED, /* charged from holds */
    EDGE_MONEY_RELEASED,  /* returned from holds (the rest of a commit, voids) */
    EDGE_MONEY_X402,      /* x402 payments settled for calls */
    EDGE_MONEY_TOPUP,     /* topups credited */
    EDGE_MONEY_ADVANCED,  /* ... of them, credited before their settlement was final */
    EDGE_MONEY_UNBILLED,  /* deferred charges of answered calls that could not be written */
    EDGE_MONEY_CAPPED,    /* reported usage above a call's hold or quote: not charged */
    EDGE_MONEY_KINDS
} edge_money_t;

/* edge_metrics_new - a worker's block (caller owns it). ledger and verifier
 * are the worker's RPC clients, to tell RPC latencies apart. */
/* What became of a claim on a named (Idempotency-Key) call. */
typedef enum {
    EDGE_IDEM_CLAIMED = 0, /* a first try: served now */
    EDGE_IDEM_REPLAYED,    /* answered from the kept answer */
    EDGE_IDEM_IN_PROGRESS, /* 409: another try's lease runs */
    EDGE_IDEM_MISMATCH,    /* 422: the name was used for another request */
    EDGE_IDEM_TAKEN_OVER,  /* an earlier try's lease ran out with nothing kept: served now */
    EDGE_IDEM_KINDS
} edge_idem_outcome_t;

/* How a paid call's API key was known, and how its prepaid slice was found. */
typedef enum {
    EDGE_KEY_CACHED = 0, /* a remembered answer */
    EDGE_KEY_JOINED,     /* waited for a lookup of the same key already in flight */
    EDGE_KEY_ASKED,      /* asked the ledger */
    EDGE_KEY_REFRESHED,  /* a remembered answer in use asked again before it got too old */
    EDGE_KEY_KINDS
} edge_key_outcome_t;

typedef enum {
    EDGE_SLICE_READY = 0, /* reserved at once in the key's open slice */
    EDGE_SLICE_WAITED,    /* waited for a slice to be opened */
    EDGE_SLICE_OPENED,    /* slices opened when a call did not fit */
    EDGE_SLICE_AHEAD,     /* slices opened before the current one ran out */
    EDGE_SLICE_KINDS
} edge_slice_outcome_t;

edge_metrics_t *edge_metrics_new(const void *ledger, const void *verifier);
void edge_metrics_destroy(edge_metrics_t **self_p);

/* edge_metrics_bind - count what this thread does into self. */
void edge_metrics_bind(edge_metrics_t *self);

/* edge_metrics_routes - name the routes (index -> path); once, at start. */
void edge_metrics_routes(const char *const *names, int count);

/* Counting, on the calling thread's block (nothing when none is bound). */
void edge_metrics_request(int route, int status, int64_t us);
void edge_metrics_upstream(int provider, int64_t us, bool ok);

/* A failed provider call retried on its provider's second route. */
void edge_metrics_upstream_fallback(int provider);
void edge_metrics_rpc(const void *client, int64_t us);
void edge_metrics_money(edge_money_t kind, int64_t micro);
void edge_metrics_streams(int delta);
void edge_metrics_connection_refused(void);
void edge_metrics_idem(edge_idem_outcome_t outcome);
void edge_metrics_key(edge_key_outcome_t outcome);
void edge_metrics_slice(edge_slice_outcome_t outcome);
/* An fdatasync of the charge journal that took us; ok: calls were answered after it. */
void edge_metrics_journal_sync(int64_t us, bool ok, size_t calls);

/* GET /metrics */
int edge_metrics_serve(edge_worker_t *w, h2o_req_t *req, const char *rid);

int edge_metrics_test(bool verbose);

#endif
