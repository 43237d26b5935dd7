/* edge - shared definitions of the edge service: the configuration every
 * worker reads and the worker type. */
#ifndef EDGE_H
#define EDGE_H

#include "edge_catalog.h"
#include "fb_config.h"
#include "fb_http.h"
#include "fb_rpc_client.h"
#include "fb_service.h"

#include <h2o.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct edge_t edge_t;

/* Where calls go: a base URL in one provider's dialect and its key. The
 * built-in routes are the providers' (their base URLs and keys, or the mock
 * model), the catalog adds its own, and FAREBOX_*_FALLBACK_URL add the
 * built-in routes' second routes (indices in edge_catalog.h). */
typedef struct {
    const char *name;         /* "openai", "anthropic", a catalog route's, "openai-fallback", ... */
    edge_provider_t provider; /* its dialect */
    const char *base_url;     /* "https://api.openai.com", or the mock model's URL */
    const char *api_key;      /* NULL: none sent */
    bool mock;
    int fallback; /* the route a failed call is retried on once, or -1 */
    /* built once by edge_route_prepare */
    char *url;                  /* where the calls go */
    struct Curl_URL *curlu;     /* the same, parsed once (CURLOPT_CURLU) */
    struct curl_slist *headers; /* the request headers when none vary by call (OpenAI's) */
    char *proxy;                /* libcurl's proxy from the environment, "" for none */
    const char *no_proxy;       /* no_proxy / NO_PROXY from the environment, "" for none */
} edge_route_t;

/* the built-in routes, the catalog's, and the built-in routes' second routes */
#define EDGE_ROUTES_MAX (EDGE_ROUTE_CATALOG + EDGE_CATALOG_ROUTES + 2)
typedef struct edge_worker_t edge_worker_t;

/* What all workers share; written before the workers start, read-only after. */
struct edge_t {
    fb_service_t *service;     /* configuration, main loop, RPC server */
    h2o_globalconf_t h2o;      /* h2o configuration: hosts, paths, handler */
    SSL_CTX *tls;              /* TLS context, or NULL when TLS is off */
    const char *http_listen;   /* cleartext HTTP/1.1 and h2c listen address */
    const char *https_listen;  /* TLS listen address (h2 and http/1.1 by ALPN) */
    uint32_t ready_timeout_ms; /* /readyz deadline for the dependency checks */
    uint32_t grace_ms;         /* how long a stop waits for requests in flight */
    uint32_t stop_delay_ms;    /* a stop's health checks fail this long before it stops serving */
    int worker_count;          /* worker threads, the first runs on the main loop */
    bool facilitator_open;     /* /facilitator/verify and /settle need no token */
    bool facilitator_token_set;
    uint8_t facilitator_token_sha256[32]; /* SHA-256 of FAREBOX_FACILITATOR_TOKEN */
    bool admin_token_set;
    uint8_t admin_token_sha256[32];       /* SHA-256 of FAREBOX_ADMIN_TOKEN */
    struct fb_apikey_mac *key_mac;        /* FAREBOX_KEY_HMAC_SECRET keyed once, or NULL: API keys are off */
    struct edge_catalog_t *catalog;       /* the models and prices */
    edge_route_t routes[EDGE_ROUTES_MAX]; /* by index (edge_catalog.h: EDGE_ROUTE_CATALOG) */
    int route_count;
    char *route_keys[EDGE_CATALOG_ROUTES]; /* the catalog routes' keys, read from the environment */
    uint32_t upstream_timeout_ms;          /* a whole provider call, streams included */
    uint32_t upstream_connect_ms;          /* connecting to a provider */
    size_t upstream_keepalive;             /* idle provider connections kept per worker */
    char pay_to_evm[64];                   /* x402 payTo on EVM networks, or "" */
    char pay_to_solana[64];                /* ... on Solana, or "" */
    int64_t x402_timeout_s;                /* maxTimeoutSeconds of a quote */
    bool x402_serve_broadcast;             /* x402 calls are served once their transfer is sent, not final */
    struct edge_limit_t *limits;           /* rate limits and in-flight caps, shared by the workers */
    int64_t key_concurrency;               /* the in-flight cap per key (0: none) */
    int64_t slice_calls;                   /* prepaid slices: ceilings a new slice covers (edge_purse) */
    int64_t slice_max_micro;               /* ... the most money one slice holds */
    int64_t slice_idle_ms;                 /* ... closed after this long unused */
    int64_t charge_defer_ms;               /* ... answers wait for their charge (0) or not (edge_purse) */
    const char *journal_dir;   /* ... deferred charges journaled there first ("": not; edge_journal) */
    size_t journal_max_bytes;  /* ... each journal replaced by a shorter one past this */
    bool journal_fsync;        /* ... and answers wait for their records' fdatasync */
    int64_t slice_age_ms;      /* ... take no new call after this long */
    int64_t idem_keep_ms;      /* idempotent calls: how long a name and its answer are kept */
    size_t idem_answer_max;    /* ... the largest answer kept for a retry */
    int64_t topup_advance_max; /* topups credited before settlement: an account's most (0: none) */
    size_t rpc_max_message;    /* FAREBOX_RPC_MAX_MESSAGE */
    edge_worker_t **workers;
    atomic_uint_fast64_t key_epoch; /* bumped when this edge revokes or changes a key (edge_keys_changed) */
};

/* One event loop with its own h2o context, listeners and RPC clients. */
struct edge_worker_t {
    edge_t *edge;       /* shared state */
    int index;          /* 0 runs on the service's main loop */
    uv_loop_t *loop;    /* the loop this worker runs */
    uv_loop_t own_loop; /* storage for threads other than the first */
    uv_thread_t thread; /* thread of workers other than the first */
    uv_async_t wake;    /* tells a worker thread to stop */
    uv_timer_t drain;   /* checks whether requests in flight are done */
    h2o_context_t ctx;  /* h2o per-loop context */
    h2o_accept_ctx_t accept_plain, accept_tls;
    uv_tcp_t *listen_plain, *listen_tls;
    fb_rpc_client_t *ledger; /* RPC clients owned by this worker */
    fb_rpc_client_t *verifier;
    fb_rpc_client_t *watcher;           /* the chain-watcher: deposit addresses */
    struct fb_curlm_t *curlm;           /* provider calls on this loop */
    struct edge_x402_t *x402;           /* x402 networks known to this worker */
    struct edge_metrics_t *metrics;     /* this worker's counters */
    struct edge_key_cache_t *key_cache; /* recent key lookups */
    struct edge_purse_t *purse;         /* prepaid slices of this worker's keys */
    uv_timer_t key_watch;               /* re-checks the keys of calls in flight */
    struct s_chat *chats;               /* prepaid calls in flight (edge_chat) */
    uint64_t active_requests;           /* requests received and not yet disposed */
    int64_t stop_deadline;              /* monotonic ms when a stop gives up waiting */
    bool stopping;
    bool conns_closing;        /* a stop has shut the remaining connections down */
    fb_http_conns_t conns;     /* connections open on this worker's listeners */
    int http_port, https_port; /* ports actually bound */
};

#endif
