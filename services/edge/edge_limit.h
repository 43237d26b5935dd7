/* edge_limit - the edge's limits on callers, shared by every worker thread:
 * token buckets per client IP and per API key (a refused request answers 429
 * rate_limited with Retry-After), and a cap on the paid calls one key has in
 * flight at once.
 *
 * Buckets live in a fixed table of slots keyed by a hash of the caller
 * (an IP address, or a key id); a slot is reused by another caller once its
 * bucket has refilled completely, so the memory is bounded whatever the
 * number of callers. Slots are guarded by striped mutexes. */
#ifndef EDGE_LIMIT_H
#define EDGE_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct edge_limit_t edge_limit_t;

typedef struct {
    int64_t per_s; /* tokens added per second; 0 turns the bucket off */
    int64_t burst; /* bucket size */
} edge_bucket_conf_t;

/* edge_limit_new - Returns the limits (caller owns them). key_concurrency 0
 * turns the in-flight cap off. */
edge_limit_t *edge_limit_new(edge_bucket_conf_t ip, edge_bucket_conf_t key, int64_t key_concurrency);
void edge_limit_destroy(edge_limit_t **self_p);

/* edge_limit_take - take one token from the bucket of who (len bytes; kind 0
 * for an IP address, 1 for a key) at now_ms. Returns 0 when allowed, or the
 * milliseconds until a token will be there. */
int64_t edge_limit_take(edge_limit_t *self, int kind, const void *who, size_t len, int64_t now_ms);

/* edge_limit_enter - count one more call in flight for key_id. Returns true
 * when under the cap (then edge_limit_leave must follow), false when full. */
bool edge_limit_enter(edge_limit_t *self, int64_t key_id);
void edge_limit_leave(edge_limit_t *self, int64_t key_id);

/* edge_limit_connections - caps on open client connections: max in the
 * whole process, per_peer from one address (an IPv4 address, or an IPv6 /64:
 * one host's usual share) unless it is a trusted proxy. 0 turns a cap off.
 * Set before the workers start. */
void edge_limit_connections(edge_limit_t *self, int64_t max, int64_t per_peer);

/* edge_limit_connect - count a new connection from peer. Returns -1 when a
 * cap is reached (the connection is to be closed), else a token for
 * edge_limit_disconnect, which must follow when it closes. */
int edge_limit_connect(edge_limit_t *self, const struct sockaddr *peer);
void edge_limit_disconnect(edge_limit_t *self, const struct sockaddr *peer, int token);

/* edge_limit_open_connections - the connections counted now. */
int64_t edge_limit_open_connections(edge_limit_t *self);

/* edge_limit_trust - the proxies whose X-Forwarded-For names the client: a
 * comma-separated list of addresses or CIDR blocks (IPv4 or IPv6, at most
 * 16). Returns 0, or -1 with the offending entry in err. self may be NULL to
 * only check the text. */
int edge_limit_trust(edge_limit_t *self, const char *list, char *err, size_t errlen);

/* edge_limit_client - the client's address for the buckets: the peer, or,
 * when the peer is a trusted proxy, the right-most address of xff (len bytes,
 * may be NULL) that is not a trusted proxy. Writes 4 or 16 bytes to out and
 * returns their count, or 0 when there is no usable address. */
size_t edge_limit_client(const edge_limit_t *self, const struct sockaddr *peer, const char *xff, size_t len,
                         uint8_t out[16]);
/* (IPv4 shown as IPv6 by a dual-stack socket, ::ffff:a.b.c.d, is IPv4; an
 * IPv6 address is its /64, the rest zero.) */

int edge_limit_test(bool verbose);

#endif
