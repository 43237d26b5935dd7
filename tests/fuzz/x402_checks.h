/* x402_checks.h - what the x402 drivers do with a decoded document: parse it
 * as the verifier does and run every offline check it reaches. */
#ifndef FAREBOX_FUZZ_X402_CHECKS_H
#define FAREBOX_FUZZ_X402_CHECKS_H

#include "fb_x402.h"

/* fuzz_x402_check - run the scheme's offline checks of p against r (the
 * verifier's choice of scheme by r's network family), with farebox's fee
 * payer for Solana; asserts what a passing verdict implies. */
void fuzz_x402_check(const fb_x402_payload_t *p, const fb_x402_requirements_t *r);

/* fuzz_x402_document - everything the verifier, the facilitator and
 * farebox-inspect do with one decoded document: a PaymentPayload (checked
 * against its own v2 "accepted"), a facilitator request
 * ({paymentPayload, paymentRequirements}), a PaymentRequired ("accepts"),
 * and its trip through the internal RPC (JSON -> msgpack -> JSON). */
void fuzz_x402_document(json_t *doc);

#endif
