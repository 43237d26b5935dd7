/* edge_worker - an event loop serving HTTP: listeners, h2o context, RPC
 * clients to the ledger and verifier, and a graceful stop that waits for the
 * requests in flight. */
#ifndef EDGE_WORKER_H
#define EDGE_WORKER_H

#include "edge.h"

/* edge_worker_new - prepare worker index (loop, h2o context, listeners, RPC
 * clients). Worker 0 uses the service's main loop. Returns NULL with err filled
 * when a listener cannot be opened. */
edge_worker_t *edge_worker_new(edge_t *edge, int index, char *err, size_t errlen);

/* edge_worker_start - start the thread of a worker other than the first. */
void edge_worker_start(edge_worker_t *self);

/* edge_worker_stop - stop accepting; the worker finishes what is in flight
 * (up to the edge's grace period) and its loop ends. Callable from any thread
 * for workers other than the first, from the main loop for the first. */
void edge_worker_stop(edge_worker_t *self);

/* edge_worker_join - wait for a worker thread to end. */
void edge_worker_join(edge_worker_t *self);

/* edge_worker_destroy - free a stopped worker. Nulls *self_p. */
void edge_worker_destroy(edge_worker_t **self_p);

/* edge_worker_of - the worker that owns an h2o context. */
edge_worker_t *edge_worker_of(h2o_context_t *ctx);

#endif
