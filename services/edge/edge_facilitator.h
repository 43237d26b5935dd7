/* edge_facilitator - farebox as an x402 facilitator over HTTP, so that any
 * x402 resource server (@x402/express, @x402/hono, ...) can verify and settle
 * through it: POST /facilitator/verify and /facilitator/settle take x402 v2's
 * {x402Version, paymentPayload, paymentRequirements} and answer a
 * VerifyResponse / SettleResponse (200 also when the payment is refused, as
 * the reference facilitators do); GET /facilitator/supported lists the kinds.
 * The work is the verifier's (verifier.verify, .settle, .supported).
 *
 * verify and settle spend the operator's chain calls and gas, so they need
 * "Authorization: Bearer <FAREBOX_FACILITATOR_TOKEN>" unless the operator opens
 * them with FAREBOX_FACILITATOR_OPEN=true; supported is public. */
#ifndef EDGE_FACILITATOR_H
#define EDGE_FACILITATOR_H

#include "edge.h"

#define EDGE_FACILITATOR_MAX_BODY 65536 /* bytes of a verify or settle request */

int edge_facilitator_verify(edge_worker_t *w, h2o_req_t *req, const char *rid);
int edge_facilitator_settle(edge_worker_t *w, h2o_req_t *req, const char *rid);
int edge_facilitator_supported(edge_worker_t *w, h2o_req_t *req, const char *rid);

/* edge_facilitator_token_ok - whether a request's Authorization header holds
 * the facilitator token (compared in constant time, by SHA-256). */
bool edge_facilitator_token_ok(const edge_t *edge, h2o_req_t *req);

int edge_facilitator_test(bool verbose);

#endif
