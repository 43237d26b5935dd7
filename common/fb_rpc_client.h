/* fb_rpc_client - the calling side of the internal RPC, for a scaled service.
 *
 * A client talks to every replica of one service. It finds them from an
 * endpoint list (DNS names are re-resolved, so `docker compose --scale` needs no
 * configuration change; port ranges cover replicas sharing one host), connects
 * one ROUTER socket to all of them, and sends each call to the connected,
 * responsive replica with the fewest calls in flight. A call that a replica
 * does not answer within the attempt timeout, or that was in flight on a
 * replica that disconnected or went silent, is sent again, with the same id
 * and idempotency key, to another replica until the caller's deadline. Calls
 * made while no replica is up wait for one. Silent replicas are found by
 * heartbeats (ZMTP at the transport, "health" pings at the application).
 *
 * The completion callback runs exactly once per call, always from the loop
 * (never inside fb_rpc_client_call). */
#ifndef FB_RPC_CLIENT_H
#define FB_RPC_CLIENT_H

#include "fb_curve.h"
#include "fb_rpc_msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct fb_rpc_client_t fb_rpc_client_t;

/* Completion: reply is valid only during the callback. Local failures have
 * ok=false with code "unavailable" (no replica could be reached) or
 * "deadline_exceeded" (sent, but no answer in time). */
typedef void(fb_rpc_done_fn)(void *arg, const fb_rpc_reply_t *reply);

typedef struct {
    const char *service;         /* service name, for logs and errors */
    const char *endpoints;       /* endpoint list (fb_endpoint.h) */
    uint32_t attempt_timeout_ms; /* wait this long for one replica before trying another */
    uint32_t heartbeat_ms;       /* ping interval; 3 silent intervals make a replica unresponsive */
    uint32_t resolve_ms;         /* DNS refresh interval */
    size_t max_message;          /* largest reply accepted */
    const fb_curve_t *curve;     /* own CURVE keys, or NULL */
    const char *server_key;      /* the service's Z85 public key when curve is set */
} fb_rpc_client_config_t;

typedef struct {
    const char *method;   /* method name */
    const char *idem;     /* idempotency key, or NULL */
    const char *trace;    /* request id for logs, or NULL */
    uint32_t deadline_ms; /* the whole budget, retries included */
    uint32_t attempt_ms;  /* per-attempt timeout; 0 = the client's default */
} fb_rpc_call_opts_t;

typedef struct {
    char endpoint[128]; /* replica endpoint */
    bool connected;     /* transport handshake done */
    bool responsive;    /* answered within the last 3 heartbeats */
    uint32_t inflight;  /* calls now assigned to it */
    uint64_t sent;      /* attempts sent to it */
    uint64_t answered;  /* replies received from it */
} fb_rpc_replica_stat_t;

/* fb_rpc_client_new - start connecting.
 * Returns the client (caller owns it), or NULL with a reason in err. */
fb_rpc_client_t *fb_rpc_client_new(uv_loop_t *loop, const fb_rpc_client_config_t *config, char *err,
                                   size_t errlen);

/* fb_rpc_client_destroy - every pending call completes with "unavailable"
 * first. Nulls *self_p. */
void fb_rpc_client_destroy(fb_rpc_client_t **self_p);

/* fb_rpc_client_call - start a call. body is an encoded msgpack map (copied) or
 * NULL. done runs exactly once, later, from the loop. */
void fb_rpc_client_call(fb_rpc_client_t *self, const fb_rpc_call_opts_t *opts, const char *body,
                        size_t body_len, fb_rpc_done_fn *done, void *arg);

/* fb_rpc_client_refuse - a call that is not sent: done gets code (an FB_RPC_E_
 * code) and why, from the loop, never inside this function (a request the
 * caller cannot encode, say). */
void fb_rpc_client_refuse(fb_rpc_client_t *self, const char *method, const char *code, const char *why,
                          fb_rpc_done_fn *done, void *arg);

/* fb_rpc_client_ready - replicas connected and responsive now. */
size_t fb_rpc_client_ready(const fb_rpc_client_t *self);

/* fb_rpc_client_stats - copy up to max replica statistics; returns the count. */
size_t fb_rpc_client_stats(const fb_rpc_client_t *self, fb_rpc_replica_stat_t *out, size_t max);

/* fb_rpc_client_pending - calls started and not yet completed. */
size_t fb_rpc_client_pending(const fb_rpc_client_t *self);

#endif
