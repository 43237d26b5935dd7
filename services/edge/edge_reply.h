/* edge_reply - answers of the public API: JSON bodies, and errors in the
 * caller's dialect (PRODUCT.md, Errors): OpenAI's envelope on OpenAI routes,
 * Anthropic's on /v1/messages, Chat402's on /api/v1/prompt. Every error has
 * a farebox code (invalid_request, invalid_key, insufficient_balance, ...)
 * and may carry details (required_micro, balance_micro, ...). */
#ifndef EDGE_REPLY_H
#define EDGE_REPLY_H

#include "fb_rpc_client.h"

#include <h2o.h>
#include <jansson.h>
#include <stddef.h>

typedef enum { EDGE_OPENAI = 0, EDGE_ANTHROPIC, EDGE_CHAT402 } edge_dialect_t;

/* edge_send_json - send doc (stolen) with status as compact JSON. */
void edge_send_json(h2o_req_t *req, int status, json_t *doc);

/* edge_error - send an error. details (stolen, may be NULL) is an object whose
 * members join the error: OpenAI and Anthropic put them inside "error",
 * Chat402 under "details". */
void edge_error(h2o_req_t *req, edge_dialect_t dialect, int status, const char *code, json_t *details,
                const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* edge_json_escape - s (n bytes) as the inside of a JSON string into out
 * (cap bytes, NUL-terminated, cut short when full). Returns the length. */
size_t edge_json_escape(char *out, size_t cap, const char *s, size_t n);

/* edge_id_text_ok - v is 1..128 characters of A-Z a-z 0-9 - _ . : (what the
 * edge accepts as a caller's X-Request-Id or Idempotency-Key). */
#define EDGE_ID_TEXT_MAX 128
/* A caller's X-Request-Id is kept up to this many characters: it becomes the
 * ref of the call's charge and the claim of its name in the ledger, which
 * keeps 100 (a longer one refused a whole charge write: its calls unpaid). */
#define EDGE_REQUEST_ID_MAX 100
bool edge_id_text_ok(h2o_iovec_t v);

/* edge_rpc_json - call method on an RPC client with doc (stolen, may be NULL
 * for an empty body) packed as msgpack. idem and trace may be NULL. */
void edge_rpc_json(fb_rpc_client_t *client, const char *method, json_t *doc, const char *idem,
                   const char *trace, uint32_t deadline_ms, fb_rpc_done_fn *done, void *arg);

/* edge_rpc_json_long - the same for a call that may take long by nature (a
 * settlement waiting for its receipt, a verification reading the chain): one
 * attempt for the whole deadline, not resent to another replica after the
 * client's attempt timeout (the verifier would start the same work again). */
void edge_rpc_json_long(fb_rpc_client_t *client, const char *method, json_t *doc, const char *idem,
                        const char *trace, uint32_t deadline_ms, fb_rpc_done_fn *done, void *arg);

/* edge_rpc_outcome_unknown - a failed reply that does not say what became of
 * the call (not reached, no answer in time, overloaded, or an internal error
 * that may follow a commit): a write may have been applied, so it is asked
 * again under its key rather than taken as refused. */
bool edge_rpc_outcome_unknown(const fb_rpc_reply_t *reply);

/* edge_rpc_idem - an RPC idempotency key: "<prefix>:<value>" when it fits
 * (FB_RPC_STR_MAX bytes), else "<prefix>:" and the SHA-256 (hex) of value. */
void edge_rpc_idem(char *out, size_t len, const char *prefix, const char *value, size_t value_len);

/* edge_reply_json - a reply body as a JSON document (caller owns it). */
json_t *edge_reply_json(const fb_rpc_reply_t *reply);

int edge_reply_test(bool verbose);

#endif
