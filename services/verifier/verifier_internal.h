/* verifier_internal - what the verifier's modules call of each other. */
#ifndef VERIFIER_INTERNAL_H
#define VERIFIER_INTERNAL_H

#include "message_proof.h"
#include "verifier.h"

/* verifier_evm_run - verify or settle a parsed EVM payment (verifier_evm.c);
 * a settlement waits up to wait_ms for its receipt (0: answers once broadcast). */
void verifier_evm_run(verifier_t *v, verifier_mode_t mode, uint32_t wait_ms, json_t *payload,
                      json_t *requirements, const fb_x402_payload_t *p, const fb_x402_requirements_t *r,
                      const char *trace, verifier_done_fn *done, void *arg);

/* verifier_evm_track - one round of following settlements left pending. */
void verifier_evm_track(verifier_t *v);

/* verifier_svm_run - verify or settle a parsed Solana payment (verifier_svm.c),
 * waiting as verifier_evm_run does. */
void verifier_svm_run(verifier_t *v, verifier_mode_t mode, uint32_t wait_ms, json_t *payload,
                      json_t *requirements, const fb_x402_payload_t *p, const fb_x402_requirements_t *r,
                      const char *trace, verifier_done_fn *done, void *arg);

/* verifier_ledger_call - call the ledger with a JSON body (the reference is
 * stolen); writes get a fresh idempotency key (the operations themselves are
 * idempotent by the authorization). */
void verifier_ledger_call(verifier_t *v, const char *method, json_t *body, bool write, const char *trace,
                          fb_rpc_done_fn *cb, void *arg);

/* verifier_svm_track - one round of following Solana settlements left pending. */
void verifier_svm_track(verifier_t *v);

/* verifier_verify_message - check a signed-message proof at the current
 * time, then record its request id in the ledger (consume) or only ask
 * whether it was used. done runs once with the proof's verdict (reason NULL:
 * good), or with error_code "unavailable" when the ledger could not be asked;
 * authorization_id is the ledger's record when one was made. */
typedef void(verifier_message_done_fn)(void *arg, const msgproof_t *proof, const char *error_code,
                                       int64_t authorization_id);
void verifier_verify_message(verifier_t *v, const msgproof_t *proof, bool consume, const char *trace,
                             verifier_message_done_fn *done, void *arg);

#endif
