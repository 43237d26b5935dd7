/* fb_rlp - Recursive Length Prefix encoding (Ethereum's serialization), for
 * the transactions farebox signs. Lists are opened and closed around their
 * items; the encoder grows its buffer as needed. */
#ifndef FB_RLP_H
#define FB_RLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_RLP_DEPTH 8

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    size_t open[FB_RLP_DEPTH]; /* start offsets of the open lists' payloads */
    int depth;
} fb_rlp_t;

void fb_rlp_init(fb_rlp_t *r);
void fb_rlp_free(fb_rlp_t *r);

/* fb_rlp_bytes - a byte string. */
void fb_rlp_bytes(fb_rlp_t *r, const void *data, size_t len);

/* fb_rlp_uint - an unsigned integer given big-endian: leading zeros are
 * dropped (zero is the empty string). */
void fb_rlp_uint(fb_rlp_t *r, const uint8_t *be, size_t len);
void fb_rlp_u64(fb_rlp_t *r, uint64_t v);

void fb_rlp_list_begin(fb_rlp_t *r);
void fb_rlp_list_end(fb_rlp_t *r);

/* fb_rlp_raw - append bytes as they are (a type prefix). */
void fb_rlp_raw(fb_rlp_t *r, const void *data, size_t len);

int fb_rlp_test(bool verbose);

#endif
