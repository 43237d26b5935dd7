/* evm_exact - the offline checks of the x402 "exact" scheme on EVM chains
 * (EIP-3009 transferWithAuthorization), in the official implementation's
 * order and with its reason strings: scheme, EIP-712 domain, network,
 * signature (EIP-712 digest, secp256k1 recovery, high-s refused), recipient,
 * time window, amount. Nothing here touches a chain or the ledger: the
 * verifier adds those checks, farebox-inspect shows these. */
#ifndef EVM_EXACT_H
#define EVM_EXACT_H

#include "fb_eip712.h"
#include "fb_evm.h"
#include "fb_x402.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *reason; /* NULL when every offline check passed */
    char message[256];  /* what failed, for people */
    bool parsed;        /* the authorization fields were readable */
    fb_eip3009_t auth;
    uint8_t sig[65];
    bool digest_known;
    uint8_t digest[32]; /* EIP-712 digest */
    uint8_t domain_separator[32];
    bool recovered;
    fb_addr_t signer;
    fb_addr_t asset, pay_to;
    uint64_t chain_id;
    int stage; /* index in evm_exact_checks of the check that failed; all passed: their count */
} evm_check_t;

/* The offline checks in the order they run (NULL-terminated). */
extern const char *const evm_exact_checks[];

/* evm_exact_check - run the offline checks at time now (Unix seconds), with
 * validBefore required to be at least now + margin_s. */
void evm_exact_check(const fb_x402_payload_t *p, const fb_x402_requirements_t *r, int64_t now,
                     int64_t margin_s, evm_check_t *out);

int evm_exact_test(bool verbose);

#endif
