/* edge_x402 - x402 pay-per-call on the paid routes (docs/x402-notes.md).
 *
 * The edge quotes every network the verifier serves and settles on
 * (verifier.networks, asked once a minute per worker) for which the operator
 * configured a payTo address (FAREBOX_PAY_TO_EVM, FAREBOX_PAY_TO_SOLANA). A
 * quote is x402 v2's PaymentRequired: base64 JSON in the PAYMENT-REQUIRED
 * header, "exact" requirements whose amount is the call's ceiling. A payment
 * comes back in PAYMENT-SIGNATURE (v2) or X-PAYMENT (v1); it is checked
 * against the requirements the edge builds again for that network. */
#ifndef EDGE_X402_H
#define EDGE_X402_H

#include "edge.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct edge_x402_t edge_x402_t;

/* edge_x402_new - the per-worker cache of networks (caller owns it). */
edge_x402_t *edge_x402_new(edge_worker_t *w);
void edge_x402_destroy(edge_x402_t **self_p);

/* edge_x402_enabled - a payTo address is configured: x402 is offered. */
bool edge_x402_enabled(const edge_t *edge);

/* Called when the networks are known (error NULL) or could not be learnt
 * (error says why; no network is quoted). */
typedef void(edge_x402_ready_fn)(void *arg, const char *error);

/* edge_x402_when_ready - run fn once the networks are known: at once when
 * the cache is fresh, else after the verifier answered. */
void edge_x402_when_ready(edge_x402_t *self, edge_x402_ready_fn *fn, void *arg);

/* edge_x402_quote - PaymentRequired v2 for amount (micro-USDC) on every
 * quotable network: {x402Version, error, resource: {url, description,
 * mimeType}, accepts}. Returns the document (caller owns it), or NULL when no
 * network can be quoted. */
json_t *edge_x402_quote(edge_x402_t *self, int64_t amount, const char *url, const char *description,
                        const char *error);

/* edge_x402_requirements - the requirements a payment header (len bytes of
 * PAYMENT-SIGNATURE or X-PAYMENT) must meet for amount: v2 ones for a v2
 * payment (matched by the network of its accepted requirements), v1 ones for
 * v1. Returns them (caller owns), with *version set, or NULL with the reason
 * in err. */
json_t *edge_x402_requirements(edge_x402_t *self, const char *header, size_t len, int64_t amount,
                               const char *url, const char *description, int *version, char *err,
                               size_t errlen);

/* edge_x402_send_quote - answer 402 with code (payment_required,
 * payment_invalid) and message in the caller's dialect, a PAYMENT-REQUIRED
 * quote for amount, and the quote's fields in the error (reason, when given,
 * too). Answers 503 when no network can be quoted. */
void edge_x402_send_quote(edge_x402_t *self, h2o_req_t *req, int dialect, int64_t amount, const char *url,
                          const char *description, const char *code, const char *reason, const char *message);

/* edge_x402_resource_url - the URL a quote names for this request:
 * scheme://authority/path (caller frees). */
char *edge_x402_resource_url(h2o_req_t *req);

/* edge_x402_payment_header - the payment a request carries: PAYMENT-SIGNATURE
 * (v2) or X-PAYMENT (v1). Returns 1 with out set, 0 when it carries none, -1
 * when the value is empty or longer than FB_X402_HEADER_MAX. */
int edge_x402_payment_header(h2o_req_t *req, h2o_iovec_t *out);

/* edge_x402_receipt - the PAYMENT-RESPONSE value of a settled payment: base64
 * of {success, transaction, network, payer} (caller frees). */
char *edge_x402_receipt(const char *transaction, const char *network, const char *payer);

/* edge_x402_set_receipt - add receipt (may be NULL: nothing) to the answer
 * under the name of the payment's x402 version (v1: X-PAYMENT-RESPONSE). */
void edge_x402_set_receipt(h2o_req_t *req, int version, const char *receipt);

/* edge_x402_header_value - base64 of doc's compact JSON, copied into the
 * request's pool. */
h2o_iovec_t edge_x402_header_value(h2o_req_t *req, const json_t *doc);

int edge_x402_test(bool verbose);

#endif
