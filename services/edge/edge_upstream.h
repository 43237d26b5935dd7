/* edge_upstream - calls to the model providers: OpenAI's chat completions and
 * Anthropic's messages API, or the built-in mock model when no provider key
 * is configured. Each call is a libcurl transfer on the worker's loop
 * (fb_curlm): nothing blocks, any number run side by side, and the body
 * arrives in pieces as the provider sends it (streams pass through as they
 * come). */
#ifndef EDGE_UPSTREAM_H
#define EDGE_UPSTREAM_H

#include "edge.h"
#include "edge_catalog.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct edge_call_t edge_call_t;

typedef enum {
    EDGE_CALL_OK = 0,  /* the provider answered completely (any status) */
    EDGE_CALL_TIMEOUT, /* no complete answer within the deadline */
    EDGE_CALL_FAILED,  /* connection refused or lost, or the answer was cut */
    EDGE_CALL_ABORTED, /* the data callback asked to stop */
} edge_call_result_t;

typedef struct {
    /* Body bytes as they arrive; status is the provider's HTTP status. Returns
     * 0 to go on, -1 to abort the transfer (done follows with ABORTED). */
    int (*on_data)(void *arg, long status, const char *data, size_t len);
    /* The end: exactly once unless the call is cancelled first. why is a
     * short reason when result is not OK. */
    void (*on_done)(void *arg, edge_call_result_t result, long status, const char *why);
} edge_call_fn_t;

/* edge_route_prepare - fill r's built parts (URL, fixed headers, proxy) from
 * its provider, base URL and key once, at start, so that no call builds them:
 * read-only afterwards, shared by the workers. The proxy comes from the
 * environment as libcurl itself would read it on every call (<scheme>_proxy,
 * HTTPS_PROXY for https, all_proxy, ALL_PROXY; no_proxy, NO_PROXY), read once. */
void edge_route_prepare(edge_route_t *r);

/* edge_route_release - free what edge_route_prepare built. */
void edge_route_release(edge_route_t *r);

/* edge_call_start - POST body (len bytes, copied) to route (an index of
 * edge_t's routes) or, with fallback, to that route's second route
 * (edge_call_has_fallback): /v1/chat/completions in OpenAI's dialect,
 * /v1/messages in Anthropic's (with anthropic_version and anthropic_beta,
 * which may be NULL), within timeout_ms (0: the edge's whole-call limit).
 * Returns the call; callbacks run from the loop, never inside this function. */
edge_call_t *edge_call_start(edge_worker_t *w, int route, bool fallback, uint32_t timeout_ms,
                             const char *body, size_t len, const char *anthropic_version,
                             const char *anthropic_beta, const edge_call_fn_t *fn, void *arg);

/* edge_call_has_fallback - route has a second route. */
bool edge_call_has_fallback(const edge_worker_t *w, int route);

/* edge_call_retryable - whether a call that ended so, before any output went
 * to the caller, is worth one try on another route: the provider could not be
 * reached (no answer at all, elapsed_ms short of the whole-call deadline) or
 * answered 429, 500, 502, 503, 504 or 529 (overloaded). A refusal (other 4xx)
 * or a whole-call timeout is not. */
bool edge_call_retryable(edge_call_result_t result, long status, int64_t elapsed_ms, int64_t deadline_ms);

/* edge_call_cancel - stop a call that has not ended (its on_done will not run)
 * and free it. Not from inside its on_data (return -1 there). Nulls *call_p. */
void edge_call_cancel(edge_call_t **call_p);

int edge_upstream_test(bool verbose);

#endif
