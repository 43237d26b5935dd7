/* message_proof - signed-message payment proofs ("pay from your own wallet",
 * Chat402's form): the payer signs the text
 *
 *     PromptPort Payment\n
 *     Request ID: <requestId>\n
 *     Amount: <amount> USDC cents\n
 *     Timestamp: <timestamp in ms>
 *
 * with EIP-191 personal_sign (EVM wallets) or ed25519 (Solana wallets). A
 * proof is good when the signature is the claimed wallet's over exactly that
 * text, and its timestamp is neither older than the allowed age nor too far
 * ahead. That a request id is used once is the ledger's job (the verifier
 * records it); nothing here touches a chain or the ledger. */
#ifndef MESSAGE_PROOF_H
#define MESSAGE_PROOF_H

#include "fb_x402.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MSGPROOF_REQUEST_ID_MAX 128
#define MSGPROOF_MAX_CENTS      100000000LL /* $1,000,000 */

typedef struct {
    fb_x402_family_t family;
    char network[96];    /* CAIP-2 of the network named, e.g. "eip155:1" */
    char namespace_[16]; /* "eip155" or "solana": the scope of request ids */
    char from[100];      /* the claimed wallet, normalized (EIP-55, base58) */
    char request_id[MSGPROOF_REQUEST_ID_MAX + 1];
    int64_t amount_cents; /* as signed */
    int64_t amount_micro; /* amount_cents * 10,000 micro-USDC */
    int64_t timestamp_ms; /* as signed */
    char text[300];       /* the exact text that must have been signed */
    char sig_text[200];   /* the signature as sent: EVM 0x-hex; Solana base58, base64 or 0x-hex */
    bool has_message;     /* the caller also sent the text it signed */
    bool message_matches; /* ... and it is the text above */
    /* results of msgproof_check */
    const char *reason; /* NULL when the proof is good */
    char detail[256];
    char signer[100]; /* who signed (EVM: recovered; Solana: from, when it verifies) */
} msgproof_t;

/* msgproof_parse - read a proof: network, from, amount (USDC cents, integer),
 * timestamp (ms, integer), requestId, signature; optional message.
 * Returns 0, or -1 with err naming the field (malformed input: a bad
 * request, not an invalid proof). */
int msgproof_parse(json_t *body, msgproof_t *out, char *err, size_t errlen);

/* msgproof_check - the offline verdict at now_ms: reason is NULL, or one of
 * "message_mismatch" (the text sent is not the canonical one),
 * "invalid_message_signature" (malformed or not verifying),
 * "message_signer_mismatch" (signed by another wallet),
 * "message_expired" (older than max_age_ms), "message_from_future" (more than
 * max_skew_ms ahead). */
void msgproof_check(msgproof_t *m, int64_t now_ms, int64_t max_age_ms, int64_t max_skew_ms);

int message_proof_test(bool verbose);

#endif
