/* fb_rpc_server - the serving side of the internal RPC: a ZeroMQ ROUTER socket
 * in a libuv loop, dispatching version-1 requests to method handlers.
 *
 * Every request gets exactly one reply (or, for frames that cannot be a
 * request at all, a logged drop). Handlers may answer at once or later (after
 * a database or chain round trip): the call object lives until it is answered.
 * Built-in method: "health". */
#ifndef FB_RPC_SERVER_H
#define FB_RPC_SERVER_H

#include "fb_curve.h"
#include "fb_rpc_msg.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct fb_rpc_server_t fb_rpc_server_t;
typedef struct fb_rpc_call_t fb_rpc_call_t;

/* A method handler. It owns call until it answers with fb_rpc_call_reply() or
 * fb_rpc_call_error(). */
typedef void(fb_rpc_handler_fn)(void *arg, fb_rpc_call_t *call);
/* Called after each burst of incoming requests has been dispatched (group
 * commit hooks in here). */
typedef void(fb_rpc_batch_fn)(void *arg);
/* Adds service fields to the health reply: pk is inside a map; the function
 * packs key/value pairs and returns how many it packed. */
typedef int(fb_rpc_health_fn)(void *arg, msgpack_packer *pk);

typedef struct {
    const char *service;     /* "ledger", for health and logs */
    const char *replica;     /* this replica's name */
    const char *bind;        /* endpoint list; a port range binds its first free port */
    size_t max_message;      /* bigger requests get too_large */
    uint32_t max_inflight;   /* above this, requests get overloaded */
    uint32_t heartbeat_ms;   /* ZMTP heartbeat interval */
    const fb_curve_t *curve; /* CURVE server key, or NULL for plain TCP */
} fb_rpc_server_config_t;

/* fb_rpc_server_new - bind and start serving on loop.
 * Returns the server (caller owns it), or NULL with a reason in err (no free
 * port, bad endpoint). */
fb_rpc_server_t *fb_rpc_server_new(uv_loop_t *loop, const fb_rpc_server_config_t *config, char *err,
                                   size_t errlen);

/* fb_rpc_server_destroy - stop serving; unanswered calls are dropped (their
 * callers retry elsewhere with the same idempotency key). Nulls *self_p. */
void fb_rpc_server_destroy(fb_rpc_server_t **self_p);

/* fb_rpc_server_endpoint - the endpoint actually bound ("tcp://127.0.0.1:7111"). */
const char *fb_rpc_server_endpoint(const fb_rpc_server_t *self);

/* fb_rpc_server_handle - route method to fn. Method names are unique. */
void fb_rpc_server_handle(fb_rpc_server_t *self, const char *method, fb_rpc_handler_fn *fn, void *arg);

void fb_rpc_server_on_batch(fb_rpc_server_t *self, fb_rpc_batch_fn *fn, void *arg);
void fb_rpc_server_on_health(fb_rpc_server_t *self, fb_rpc_health_fn *fn, void *arg);

/* fb_rpc_server_pause - stop taking new requests (for a graceful stop): calls
 * already received are still answered, and health (so that callers wait for
 * them, not send them elsewhere); any other request is answered overloaded,
 * which callers take as "try another replica". */
void fb_rpc_server_pause(fb_rpc_server_t *self);

/* fb_rpc_server_inflight - calls received and not yet answered. */
size_t fb_rpc_server_inflight(const fb_rpc_server_t *self);

/* Reading a call. The request and everything it points to stay valid until the
 * call is answered. */
const fb_rpc_request_t *fb_rpc_call_request(const fb_rpc_call_t *call);
/* fb_rpc_call_deadline - monotonic time (fb_mono_ms) after which the caller no
 * longer waits. */
int64_t fb_rpc_call_deadline(const fb_rpc_call_t *call);
/* fb_rpc_call_trace - the caller's request id as a C string ("" if none). */
const char *fb_rpc_call_trace(const fb_rpc_call_t *call);

/* fb_rpc_call_reply - answer success with an encoded msgpack map body (NULL for
 * an empty map). Frees the call and nulls *call_p. */
void fb_rpc_call_reply(fb_rpc_call_t **call_p, const char *body, size_t body_len);

/* fb_rpc_call_error - answer an error with a code, an optional encoded map body
 * of details, and a printf-style message. Frees the call and nulls *call_p. */
void fb_rpc_call_error(fb_rpc_call_t **call_p, const char *code, const char *body, size_t body_len,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
