/* fb_rlp - RLP encoder. */
#include "fb_rlp.h"
#include "fb_codec.h"
#include "fb_util.h"

#include <stdlib.h>
#include <string.h>

void fb_rlp_init(fb_rlp_t *r)
{
    memset(r, 0, sizeof(*r));
}

void fb_rlp_free(fb_rlp_t *r)
{
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

static void s_reserve(fb_rlp_t *r, size_t more)
{
    if (r->len + more > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap < r->len + more)
            cap *= 2;
        r->buf = fb_realloc(r->buf, cap);
        r->cap = cap;
    }
}

void fb_rlp_raw(fb_rlp_t *r, const void *data, size_t len)
{
    if (len == 0)
        return; /* data may be NULL then */
    s_reserve(r, len);
    memcpy(r->buf + r->len, data, len);
    r->len += len;
}

/* The header of a string or list of len bytes: short (offset + len) up to 55,
 * long (offset + 55 + length of len, then len big-endian) above. */
static size_t s_header(uint8_t out[9], size_t len, uint8_t offset)
{
    if (len <= 55) {
        out[0] = (uint8_t)(offset + len);
        return 1;
    }
    uint8_t be[8];
    int n = 0;
    for (size_t v = len; v; v >>= 8)
        be[n++] = (uint8_t)v;
    out[0] = (uint8_t)(offset + 55 + n);
    for (int i = 0; i < n; i++)
        out[1 + i] = be[n - 1 - i];
    return (size_t)n + 1;
}

void fb_rlp_bytes(fb_rlp_t *r, const void *data, size_t len)
{
    const uint8_t *p = data;
    if (len == 1 && p[0] < 0x80) {
        fb_rlp_raw(r, p, 1);
        return;
    }
    uint8_t h[9];
    size_t hl = s_header(h, len, 0x80);
    fb_rlp_raw(r, h, hl);
    fb_rlp_raw(r, p, len);
}

void fb_rlp_uint(fb_rlp_t *r, const uint8_t *be, size_t len)
{
    while (len > 0 && be[0] == 0) {
        be++;
        len--;
    }
    fb_rlp_bytes(r, be, len);
}

void fb_rlp_u64(fb_rlp_t *r, uint64_t v)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(v >> (56 - 8 * i));
    fb_rlp_uint(r, be, 8);
}

void fb_rlp_list_begin(fb_rlp_t *r)
{
    FB_ASSERT(r->depth < FB_RLP_DEPTH);
    r->open[r->depth++] = r->len;
}

void fb_rlp_list_end(fb_rlp_t *r)
{
    FB_ASSERT(r->depth > 0);
    size_t start = r->open[--r->depth], payload = r->len - start;
    uint8_t h[9];
    size_t hl = s_header(h, payload, 0xc0);
    s_reserve(r, hl);
    memmove(r->buf + start + hl, r->buf + start, payload);
    memcpy(r->buf + start, h, hl);
    r->len += hl;
}

static void s_expect(fb_rlp_t *r, const char *hex)
{
    char *out = fb_malloc(r->len * 2 + 1);
    fb_hex_encode(out, r->buf, r->len);
    FB_ASSERT(strcmp(out, hex) == 0);
    free(out);
    fb_rlp_free(r);
}

int fb_rlp_test(bool verbose)
{
    FB_UNUSED(verbose);
    fb_rlp_t r;
    /* the examples of the Ethereum yellow paper / wiki */
    fb_rlp_init(&r);
    fb_rlp_bytes(&r, "dog", 3);
    s_expect(&r, "83646f67");
    fb_rlp_init(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_bytes(&r, "cat", 3);
    fb_rlp_bytes(&r, "dog", 3);
    fb_rlp_list_end(&r);
    s_expect(&r, "c88363617483646f67");
    fb_rlp_init(&r);
    fb_rlp_bytes(&r, "", 0);
    s_expect(&r, "80");
    fb_rlp_init(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_end(&r);
    s_expect(&r, "c0");
    fb_rlp_init(&r);
    fb_rlp_u64(&r, 0);
    s_expect(&r, "80");
    fb_rlp_init(&r);
    fb_rlp_u64(&r, 15);
    s_expect(&r, "0f");
    fb_rlp_init(&r);
    fb_rlp_u64(&r, 1024);
    s_expect(&r, "820400");
    /* the set-theoretic representation of three: [ [], [[]], [ [], [[]] ] ] */
    fb_rlp_init(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_end(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_end(&r);
    fb_rlp_list_end(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_end(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_begin(&r);
    fb_rlp_list_end(&r);
    fb_rlp_list_end(&r);
    fb_rlp_list_end(&r);
    fb_rlp_list_end(&r);
    s_expect(&r, "c7c0c1c0c3c0c1c0");
    const char lorem[] = "Lorem ipsum dolor sit amet, consectetur adipisicing elit";
    fb_rlp_init(&r);
    fb_rlp_bytes(&r, lorem, sizeof(lorem) - 1);
    s_expect(&r,
             "b8384c6f72656d20697073756d20646f6c6f722073697420616d65742c20636f6e7365637465747572206164697069"
             "736963696e6720656c6974");
    return 0;
}
