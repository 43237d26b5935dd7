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

/* edge_call_start - POST body (len bytes, copied) to the provider serving
 * provider: /v1/chat/completions for OpenAI, /v1/messages for Anthropic (with
 * anthropic_version and anthropic_beta, which may be NULL). Returns the call;
 * callbacks run from the loop, never inside this function. */
edge_call_t *edge_call_start(edge_worker_t *w, edge_provider_t provider, const char *body, size_t len,
                             const char *anthropic_version, const char *anthropic_beta,
                             const edge_call_fn_t *fn, void *arg);

/* edge_call_cancel - stop a call that has not ended (its on_done will not run)
 * and free it. Not from inside its on_data (return -1 there). Nulls *call_p. */
void edge_call_cancel(edge_call_t **call_p);

int edge_upstream_test(bool verbose);

#endif
