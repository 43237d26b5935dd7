/* svm_exact - the offline checks of the x402 "exact" scheme on Solana, in the
 * official implementation's order and with its reason strings
 * (docs/x402-notes.md section 6), plus farebox's stricter ones: the fee payer
 * appears in no instruction's accounts, and address lookup tables are refused
 * (every account must be in the message).
 *
 * The transaction is the client's: ComputeBudget limit, ComputeBudget price
 * (capped), one TransferChecked of exactly the amount of the mint into the
 * associated token account of payTo, then only Memo or Lighthouse
 * instructions; signed by every required signer but the fee payer. */
#ifndef SVM_EXACT_H
#define SVM_EXACT_H

#include "fb_solana.h"
#include "fb_x402.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *reason; /* NULL when every offline check passed */
    char message[256];
    uint8_t *wire; /* decoded transaction bytes (owned; svm_check_free) */
    size_t wire_len;
    fb_sol_tx_t tx; /* points into wire */
    bool decoded;
    fb_sol_key_t authority; /* the token owner who pays (payer) */
    char authority_text[48];
    uint64_t amount;
    uint64_t price; /* compute unit price, micro-lamports */
    uint32_t units; /* compute unit limit */
    uint64_t fee;   /* lamports the fee payer pays: each signature's, and the units at the price */
    fb_sol_key_t mint, destination, token_program;
    int stage; /* index in svm_exact_checks of the check that failed; all passed: their count */
} svm_check_t;

/* The offline checks in the order they run (NULL-terminated). */
extern const char *const svm_exact_checks[];

#define SVM_SIGNATURE_LAMPORTS 5000 /* Solana's base fee, a signature */

/* What the fee payer accepts to pay for a transaction. */
typedef struct {
    uint64_t max_price; /* the compute unit price, micro-lamports */
    uint64_t max_fee;   /* lamports in all: SVM_SIGNATURE_LAMPORTS a signature plus the
                         * compute unit limit at the price (Solana charges the limit asked, not
                         * the units used) */
} svm_limits_t;

/* svm_exact_check - run the offline checks. fee_payer is the facilitator's
 * key (NULL: only "present" is checked, as farebox-inspect does). */
void svm_exact_check(const fb_x402_payload_t *p, const fb_x402_requirements_t *r,
                     const fb_sol_key_t *fee_payer, const svm_limits_t *limits, svm_check_t *out);

void svm_check_free(svm_check_t *c);

int svm_exact_test(bool verbose);

#endif
