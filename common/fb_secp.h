/* fb_secp - the secp256k1 operations farebox needs, over libsecp256k1 (with
 * its recovery module): recover an Ethereum signer from a digest and a 65-byte
 * signature, sign a digest, derive an address.
 *
 * libsecp256k1 returns 1 for success; this module converts to 0 / -1. The
 * context is created once per process (randomized) and shared by threads. */
#ifndef FB_SECP_H
#define FB_SECP_H

#include "fb_evm.h"

#include <stdbool.h>
#include <stdint.h>

/* fb_secp_recover - the Ethereum address that signed digest.
 * In: sig - r (32) || s (32) || v (1), v in {27, 28} or {0, 1}.
 * Returns 0 and *signer, or -1 with *reason: "bad_v", "high_s" (s above half
 * the curve order: EIP-2 refuses such signatures, a second valid encoding of
 * the same one), "bad_signature" (r or s zero or out of range), or
 * "unrecoverable". */
int fb_secp_recover(fb_addr_t *signer, const uint8_t digest[32], const uint8_t sig[65], const char **reason);

/* fb_secp_sign - a recoverable signature of digest with a 32-byte secret key:
 * r || s || v with v in {0, 1} (yParity), s in the lower half.
 * Returns 0, or -1 when the key is invalid. */
int fb_secp_sign(uint8_t sig[65], const uint8_t digest[32], const uint8_t key[32]);

/* fb_secp_address - the Ethereum address of a secret key. Returns 0 or -1. */
int fb_secp_address(fb_addr_t *out, const uint8_t key[32]);

/* fb_secp_pubkey - the compressed public key (33 bytes) of a secret key.
 * Returns 0, or -1 when the key is not a valid scalar. */
int fb_secp_pubkey(uint8_t out[33], const uint8_t key[32]);
/* fb_secp_key_tweak_add - key := key + tweak (mod n), as BIP32 derives a
 * private child. Returns 0, or -1 when tweak is not below n or the sum is 0
 * (key is then unspecified). */
int fb_secp_key_tweak_add(uint8_t key[32], const uint8_t tweak[32]);
/* fb_secp_pub_tweak_add - pub := pub + tweak*G on a compressed point, as
 * BIP32 derives a public child. Returns 0, or -1 when pub is not a point,
 * tweak is not below n or the result is infinity. */
int fb_secp_pub_tweak_add(uint8_t pub[33], const uint8_t tweak[32]);
/* fb_secp_pub_address - the Ethereum address of a compressed public key.
 * Returns 0, or -1 when it is not a point. */
int fb_secp_pub_address(fb_addr_t *out, const uint8_t pub[33]);
int fb_secp_test(bool verbose);

#endif
