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

int fb_secp_test(bool verbose);

#endif
