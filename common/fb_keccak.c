/* fb_keccak - Keccak-256 sponge over nettle's Keccak-f[1600]. */
#include "fb_keccak.h"
#include "fb_codec.h"
#include "fb_util.h"

#include <nettle/sha3.h>
#include <string.h>

#define RATE 136

_Static_assert(sizeof(struct sha3_state) == 25 * sizeof(uint64_t), "nettle's sha3_state is 25 lanes");

/* XORs one full block into the state (lanes are little-endian) and permutes. */
static void s_absorb(fb_keccak_t *k, const uint8_t *block)
{
    for (size_t i = 0; i < RATE / 8; i++) {
        uint64_t lane = 0;
        for (int b = 7; b >= 0; b--)
            lane = (lane << 8) | block[i * 8 + (size_t)b];
        k->a[i] ^= lane;
    }
    sha3_permute((struct sha3_state *)k->a);
}

void fb_keccak_init(fb_keccak_t *k)
{
    memset(k, 0, sizeof(*k));
}

void fb_keccak_update(fb_keccak_t *k, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (k->used) {
        size_t take = RATE - k->used < len ? RATE - k->used : len;
        memcpy(k->buf + k->used, p, take);
        k->used += take;
        p += take;
        len -= take;
        if (k->used < RATE)
            return;
        s_absorb(k, k->buf);
        k->used = 0;
    }
    while (len >= RATE) {
        s_absorb(k, p);
        p += RATE;
        len -= RATE;
    }
    memcpy(k->buf, p, len);
    k->used = len;
}

void fb_keccak_final(fb_keccak_t *k, uint8_t out[32])
{
    /* Keccak's multi-rate padding: 0x01, zeros, 0x80 (0x81 when they meet) */
    memset(k->buf + k->used, 0, RATE - k->used);
    k->buf[k->used] ^= 0x01;
    k->buf[RATE - 1] ^= 0x80;
    s_absorb(k, k->buf);
    for (size_t i = 0; i < 4; i++)
        for (int b = 0; b < 8; b++)
            out[i * 8 + (size_t)b] = (uint8_t)(k->a[i] >> (8 * b));
    memset(k, 0, sizeof(*k));
}

void fb_keccak256(uint8_t out[32], const void *data, size_t len)
{
    fb_keccak_t k;
    fb_keccak_init(&k);
    fb_keccak_update(&k, data, len);
    fb_keccak_final(&k, out);
}

int fb_keccak_test(bool verbose)
{
    FB_UNUSED(verbose);
    static const struct {
        const char *in, *hex;
    } v[] = {
        {"", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"},
        {"abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"},
        {"The quick brown fox jumps over the lazy dog",
         "4d741b6f1eb29cb2a9b9911c82f56fa8d73b04959d3d9d222895df6c0b28aa15"},
        {"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 "
         "validBefore,bytes32 nonce)",
         "7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267"},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(v); i++) {
        uint8_t h[32];
        char hex[65];
        fb_keccak256(h, v[i].in, strlen(v[i].in));
        fb_hex_encode(hex, h, 32);
        FB_ASSERT(strcmp(hex, v[i].hex) == 0);
    }
    /* streaming in uneven pieces across the 136-byte rate equals one shot */
    uint8_t data[1000], one[32], many[32];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + 3);
    for (size_t len = 0; len <= 300; len += 17) {
        fb_keccak256(one, data, len);
        fb_keccak_t k;
        fb_keccak_init(&k);
        for (size_t off = 0; off < len;) {
            size_t step = (off % 5) + 1 + (off % 137);
            if (off + step > len)
                step = len - off;
            fb_keccak_update(&k, data + off, step);
            off += step;
        }
        fb_keccak_final(&k, many);
        FB_ASSERT(memcmp(one, many, 32) == 0);
    }
    return 0;
}
