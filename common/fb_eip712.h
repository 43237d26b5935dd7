/* fb_eip712 - the typed-data digests of EIP-3009 authorizations (EIP-712) and
 * of personal messages (EIP-191).
 *
 * TransferWithAuthorization(address from,address to,uint256 value,
 *   uint256 validAfter,uint256 validBefore,bytes32 nonce)
 * under the domain EIP712Domain(string name,string version,uint256 chainId,
 *   address verifyingContract). */
#ifndef FB_EIP712_H
#define FB_EIP712_H

#include "fb_evm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name; /* e.g. "USDC" (counted) */
    size_t name_len;
    const char *version; /* e.g. "2" (counted) */
    size_t version_len;
    uint64_t chain_id;
    fb_addr_t verifying_contract; /* the token */
} fb_eip712_domain_t;

typedef struct {
    fb_addr_t from, to;
    fb_u256_t value, valid_after, valid_before;
    uint8_t nonce[32];
} fb_eip3009_t;

/* fb_eip712_domain_separator - hashStruct(EIP712Domain). */
void fb_eip712_domain_separator(uint8_t out[32], const fb_eip712_domain_t *d);

/* fb_eip3009_struct_hash - hashStruct(TransferWithAuthorization). */
void fb_eip3009_struct_hash(uint8_t out[32], const fb_eip3009_t *a);

/* fb_eip712_digest - keccak256(0x19 0x01 || domain separator || struct hash). */
void fb_eip712_digest(uint8_t out[32], const uint8_t domain_separator[32], const uint8_t struct_hash[32]);

/* fb_eip3009_digest - the digest an EIP-3009 signer signs. */
void fb_eip3009_digest(uint8_t out[32], const fb_eip712_domain_t *d, const fb_eip3009_t *a);

/* fb_eip191_digest - keccak256("\x19Ethereum Signed Message:\n" || len || msg),
 * what personal_sign signs. */
void fb_eip191_digest(uint8_t out[32], const void *msg, size_t len);

int fb_eip712_test(bool verbose);

#endif
