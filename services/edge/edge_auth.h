/* edge_auth - API keys on the public API: the key comes in
 * "Authorization: Bearer <key>" or "x-api-key: <key>" (one code path), is
 * turned into its HMAC (FAREBOX_KEY_HMAC_SECRET) and looked up in the ledger
 * in one round trip: the key's state and limits and its account's balance.
 * Also GET /v1/balance, which is just that answer. */
#ifndef EDGE_AUTH_H
#define EDGE_AUTH_H

#include "edge.h"

#include <jansson.h>

typedef struct {
    int status;       /* 200 when the key is good and active */
    const char *code; /* NULL, or invalid_key, key_revoked, unavailable */
    char message[256];
    json_t *view; /* the ledger's key view and balances (valid during the callback) */
    int64_t key_id, account_id;
    int64_t retry_after_ms; /* 429 rate_limited: when the key may call again */
    uint8_t mac[32];        /* the key's HMAC (to look it up again) */
} edge_key_t;

/* A worker's memory of recent lookups: an answer is reused for at most a
 * second from when it was asked (a revoked key is refused by the ledger's
 * hold at once anyway; its streams in flight are cut by edge_chat's watch
 * within a second). Misses of a key whose lookup is in flight wait for it; an
 * answer in use is asked again when half a second old. */
typedef struct edge_key_cache_t edge_key_cache_t;

/* edge_keys_changed - a key was revoked or changed through this edge: every
 * worker drops its remembered lookups and closes its prepaid slices (other
 * edges follow within the cache's second). Any thread. */
void edge_keys_changed(edge_t *edge);
edge_key_cache_t *edge_key_cache_new(void);
void edge_key_cache_destroy(edge_key_cache_t **self_p);

typedef void(edge_key_fn)(void *arg, const edge_key_t *key);

/* edge_request_key - the API key the request carries. Returns 1 with key
 * set, 0 when it carries none. */
int edge_request_key(h2o_req_t *req, h2o_iovec_t *key);

/* edge_auth_key - authenticate the request's key; done is called exactly
 * once, perhaps before this returns (a missing or malformed key is refused
 * without a round trip; an answer less than a second old is reused). */
void edge_auth_key(edge_worker_t *w, h2o_req_t *req, const char *rid, edge_key_fn *done, void *arg);

/* edge_auth_lookup - the state of the key whose HMAC is mac: from the
 * worker's cache unless fresh, else from the ledger (and remembered). */
void edge_auth_lookup(edge_worker_t *w, const uint8_t mac[32], bool fresh, const char *rid, edge_key_fn *done,
                      void *arg);

/* edge_key_error - answer a refused key (k->status != 200) in dialect, with
 * Retry-After when it was rate limited. */
void edge_key_error(h2o_req_t *req, int dialect, const edge_key_t *k);

/* edge_retry_after - set Retry-After to ms rounded up to whole seconds. */
void edge_retry_after(h2o_req_t *req, int64_t ms);

/* edge_bearer_matches - "Authorization: Bearer <token>" whose SHA-256 is
 * token_sha256 (compared in constant time). */
bool edge_bearer_matches(h2o_req_t *req, const uint8_t token_sha256[32]);

/* GET /v1/balance */
int edge_balance(edge_worker_t *w, h2o_req_t *req, const char *rid);

int edge_auth_test(bool verbose);

#endif
