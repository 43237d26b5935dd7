/* edge_idem - idempotent paid calls: a call the caller can ask again without
 * paying again.
 *
 * A call is named when the caller sends an Idempotency-Key header: a prepaid
 * call by its API key and that key, an x402 call by its payment (the hash of
 * the payment header) and that key. The first serving claims the name in the ledger
 * with a lease as long as the call can run (ledger.call_claim); the prepaid
 * answer is stored with the call's charge, in the same transaction; an x402
 * answer once the payment settled (ledger.call_done). Asked again, the ledger
 * answers the stored answer (sent as it was, with Idempotent-Replayed: true),
 * idempotency_in_progress while another serving's lease runs (409 with
 * Retry-After), idempotency_key_mismatch when the name was used for another
 * request (422), or a fresh claim when the lease ran out with nothing stored.
 * proto/README.md has the ledger's side. */
#ifndef EDGE_IDEM_H
#define EDGE_IDEM_H

#include "edge.h"
#include "edge_reply.h"

#include <jansson.h>
#include <stdbool.h>

/* One call's name and claim. */
typedef struct {
    bool named;                       /* the call has a name: claim it */
    bool claimed;                     /* the ledger gave this serving the claim */
    bool resolved;                    /* done or released asked (or left to the charge) */
    char scope[80];                   /* "key:<id>" or "x402:<sha256 hex>" */
    char key[EDGE_ID_TEXT_MAX + 1];   /* the Idempotency-Key ("" for x402) */
    char hash[65];                    /* sha256 hex of the route and the body */
    char claim[EDGE_ID_TEXT_MAX + 1]; /* this serving's request id */
} edge_idem_t;

/* edge_idem_read - the Idempotency-Key of req into id (with the request's
 * hash over route and body, and a fresh random claim for this try). Returns 0
 * (none: id->named false), 1 (named), or -1: the header is malformed. */
int edge_idem_read(edge_idem_t *id, h2o_req_t *req, const char *route);

/* edge_idem_x402 - scope a named call by its payment header (an x402 call
 * is named by its payment and the caller's Idempotency-Key). */
void edge_idem_x402(edge_idem_t *id, const char *header);

/* edge_idem_call - {scope, idem_key, claim} for the ledger (a new object). */
json_t *edge_idem_call(const edge_idem_t *id);

/* edge_idem_claim_body - the body of ledger.call_claim with lease_ms. */
json_t *edge_idem_claim_body(const edge_idem_t *id, int64_t lease_ms, int64_t keep_ms);

/* edge_idem_refused - answer a refused claim (idempotency_in_progress,
 * idempotency_key_mismatch, or the ledger unreachable). */
void edge_idem_refused(h2o_req_t *req, edge_dialect_t dialect, const fb_rpc_reply_t *reply);

/* edge_idem_replay - send a done call's stored answer (body: the claim's
 * answer) with the x402 receipt header of pay_version when it has one. */
void edge_idem_replay(h2o_req_t *req, edge_dialect_t dialect, json_t *body, int pay_version);

/* edge_idem_release - ask the ledger to free an unpaid call's name (fire and
 * forget: an unanswered release leaves the name to its lease). */
void edge_idem_release(edge_worker_t *w, edge_idem_t *id);

#endif
