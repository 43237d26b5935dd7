/* fb_ethtx - EIP-1559 (type 2) transactions: build, sign with libsecp256k1,
 * serialize for eth_sendRawTransaction, and know the hash before broadcast;
 * and the ABI calldata farebox sends (EIP-3009 transferWithAuthorization,
 * balanceOf, authorizationState). */
#ifndef FB_ETHTX_H
#define FB_ETHTX_H

#include "fb_eip712.h"
#include "fb_evm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t chain_id;
    uint64_t nonce;
    fb_u256_t max_priority_fee; /* wei per gas */
    fb_u256_t max_fee;          /* wei per gas */
    uint64_t gas;
    fb_addr_t to;
    fb_u256_t value;
    const uint8_t *data;
    size_t data_len;
} fb_ethtx_t;

/* fb_ethtx_sign - sign tx with a 32-byte secret key.
 * Out: *raw (caller frees) and *raw_len: the signed serialization (0x02 ||
 * RLP), hash: keccak256 of it (the transaction hash).
 * Returns 0, or -1 when the key is invalid. */
int fb_ethtx_sign(const fb_ethtx_t *tx, const uint8_t key[32], uint8_t **raw, size_t *raw_len,
                  uint8_t hash[32]);

/* fb_ethtx_signing_hash - keccak256(0x02 || RLP(unsigned fields)). */
void fb_ethtx_signing_hash(const fb_ethtx_t *tx, uint8_t out[32]);

/* ABI calldata. Each writes to out (caller frees) and returns its length. */
size_t fb_abi_transfer_with_authorization(uint8_t **out, const fb_eip3009_t *a, const uint8_t sig[65]);
size_t fb_abi_balance_of(uint8_t **out, const fb_addr_t *owner);
size_t fb_abi_authorization_state(uint8_t **out, const fb_addr_t *authorizer, const uint8_t nonce[32]);

/* fb_abi_selector - the first 4 bytes of keccak256(signature). */
void fb_abi_selector(uint8_t out[4], const char *signature);

int fb_ethtx_test(bool verbose);

#endif
