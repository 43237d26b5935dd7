/* fb_keccak - Keccak-256 as Ethereum uses it (the original Keccak padding,
 * not SHA3-256's): the sponge is ours, the Keccak-f[1600] permutation is
 * nettle's sha3_permute. */
#ifndef FB_KECCAK_H
#define FB_KECCAK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t a[25];   /* the state, as nettle's struct sha3_state */
    uint8_t buf[136]; /* a partial block (rate of Keccak-256: 136 bytes) */
    size_t used;      /* bytes in buf */
} fb_keccak_t;

void fb_keccak_init(fb_keccak_t *k);
void fb_keccak_update(fb_keccak_t *k, const void *data, size_t len);
/* fb_keccak_final - write the 32-byte digest; k is then spent. */
void fb_keccak_final(fb_keccak_t *k, uint8_t out[32]);

/* fb_keccak256 - the digest of one buffer. */
void fb_keccak256(uint8_t out[32], const void *data, size_t len);

int fb_keccak_test(bool verbose);

#endif
