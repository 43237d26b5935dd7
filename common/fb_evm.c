/* fb_evm - addresses, uint256 and bytes32 parsing and formatting. */
#include "fb_evm.h"
#include "fb_codec.h"
#include "fb_keccak.h"
#include "fb_util.h"

#include <string.h>

static int s_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void fb_addr_lower(char out[43], const fb_addr_t *a)
{
    out[0] = '0';
    out[1] = 'x';
    fb_hex_encode(out + 2, a->b, 20);
}

void fb_addr_checksum(char out[43], const fb_addr_t *a)
{
    fb_addr_lower(out, a);
    uint8_t h[32];
    fb_keccak256(h, out + 2, 40);
    for (int i = 0; i < 40; i++) {
        int nibble = (h[i / 2] >> (i % 2 ? 0 : 4)) & 15;
        char *c = &out[2 + i];
        if (*c >= 'a' && *c <= 'f' && nibble >= 8)
            *c = (char)(*c - 'a' + 'A');
    }
}

int fb_addr_parse(fb_addr_t *out, const char *text, size_t len)
{
    if (len != 42 || text[0] != '0' || (text[1] != 'x' && text[1] != 'X'))
        return -1;
    bool lower = false, upper = false;
    for (int i = 0; i < 40; i++) {
        char c = text[2 + i];
        int hi = s_hexval(c);
        if (hi < 0)
            return -1;
        lower |= c >= 'a' && c <= 'f';
        upper |= c >= 'A' && c <= 'F';
    }
    if (fb_hex_decode(out->b, 20, text + 2, 40) != 0)
        return -1;
    if (lower && upper) {
        char expect[43];
        fb_addr_checksum(expect, out);
        if (memcmp(expect + 2, text + 2, 40) != 0)
            return -1;
    }
    return 0;
}

bool fb_addr_eq(const fb_addr_t *a, const fb_addr_t *b)
{
    return memcmp(a->b, b->b, 20) == 0;
}

/* v = v * mul + add, in place; returns the carry out of the top byte. */
static unsigned s_muladd(fb_u256_t *v, unsigned mul, unsigned add)
{
    unsigned carry = add;
    for (int i = 31; i >= 0; i--) {
        unsigned x = (unsigned)v->b[i] * mul + carry;
        v->b[i] = (uint8_t)x;
        carry = x >> 8;
    }
    return carry;
}

int fb_u256_from_dec(fb_u256_t *out, const char *text, size_t len)
{
    memset(out, 0, sizeof(*out));
    if (len == 0 || len > 78)
        return -1;
    if (len <= 19) { /* below 10^19: fits 64 bits, the usual case (amounts, times) */
        uint64_t v = 0;
        for (size_t i = 0; i < len; i++) {
            if (text[i] < '0' || text[i] > '9')
                return -1;
            v = v * 10 + (uint64_t)(text[i] - '0');
        }
        fb_u256_from_u64(out, v);
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        if (s_muladd(out, 10, (unsigned)(text[i] - '0')) != 0)
            return -1; /* 2^256 or more */
    }
    return 0;
}

int fb_u256_from_hex(fb_u256_t *out, const char *text, size_t len)
{
    memset(out, 0, sizeof(*out));
    if (len < 3 || len > 66 || text[0] != '0' || (text[1] != 'x' && text[1] != 'X'))
        return -1;
    for (size_t i = 2; i < len; i++) {
        int d = s_hexval(text[i]);
        if (d < 0)
            return -1;
        if (s_muladd(out, 16, (unsigned)d) != 0)
            return -1;
    }
    return 0;
}

void fb_u256_to_dec(char out[80], const fb_u256_t *v)
{
    fb_u256_t x = *v;
    char rev[80];
    int n = 0;
    bool zero;
    do {
        unsigned rem = 0;
        zero = true;
        for (int i = 0; i < 32; i++) {
            unsigned cur = (rem << 8) | x.b[i];
            x.b[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
            zero &= x.b[i] == 0;
        }
        rev[n++] = (char)('0' + rem);
    } while (!zero);
    for (int i = 0; i < n; i++)
        out[i] = rev[n - 1 - i];
    out[n] = '\0';
}

void fb_u256_from_u64(fb_u256_t *out, uint64_t v)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < 8; i++)
        out->b[31 - i] = (uint8_t)(v >> (8 * i));
}

bool fb_u256_to_u64(const fb_u256_t *v, uint64_t *out)
{
    for (int i = 0; i < 24; i++)
        if (v->b[i])
            return false;
    uint64_t x = 0;
    for (int i = 24; i < 32; i++)
        x = (x << 8) | v->b[i];
    *out = x;
    return true;
}

int fb_u256_cmp(const fb_u256_t *a, const fb_u256_t *b)
{
    int c = memcmp(a->b, b->b, 32);
    return (c > 0) - (c < 0);
}

int fb_bytes32_parse(uint8_t out[32], const char *text, size_t len)
{
    if (len != 66 || text[0] != '0' || (text[1] != 'x' && text[1] != 'X'))
        return -1;
    return fb_hex_decode(out, 32, text + 2, 64);
}

bool fb_evm_dev_account(const fb_addr_t *a)
{
    static const char *const dev[] = {
        "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
        "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc", "0x90f79bf6eb2c4f870365e785982e1f101e93b906",
        "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65", "0x9965507d1a55bcc2695c58ba16fb37d819b0a4dc",
        "0x976ea74026e726554db657fa54763abd0c3a0aa9", "0x14dc79964da2c08b23698b3d3cc7ca32193d9955",
        "0x23618e81e3f5cdf7f54c3d65f7fbc0abf5b21e8f", "0xa0ee7a142d267c1f36714e4a8f75612f20a79720"};
    char text[43];
    fb_addr_lower(text, a);
    for (size_t i = 0; i < FB_ARRAY_SIZE(dev); i++)
        if (strcmp(text, dev[i]) == 0)
            return true;
    return false;
}

bool fb_evm_test_chain(uint64_t chain_id)
{
    return chain_id == 31337 || chain_id == 1337 || chain_id == 11155111 || chain_id == 84532;
}

int fb_evm_test(bool verbose)
{
    FB_UNUSED(verbose);
    /* the development mnemonic's accounts (viem's mnemonicToAccount), and only those */
    fb_addr_t dev, other;
    FB_ASSERT(fb_addr_parse(&dev, "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720", 42) == 0);
    FB_ASSERT(fb_addr_parse(&other, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", 42) == 0);
    FB_ASSERT(fb_evm_dev_account(&dev) && !fb_evm_dev_account(&other));
    FB_ASSERT(fb_evm_test_chain(84532) && fb_evm_test_chain(31337) && !fb_evm_test_chain(8453) &&
              !fb_evm_test_chain(1));
    /* EIP-55's own examples */
    static const char *eip55[] = {
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"};
    for (size_t i = 0; i < FB_ARRAY_SIZE(eip55); i++) {
        fb_addr_t a;
        FB_ASSERT(fb_addr_parse(&a, eip55[i], 42) == 0);
        char out[43];
        fb_addr_checksum(out, &a);
        FB_ASSERT(strcmp(out, eip55[i]) == 0);
        /* one flipped case breaks the checksum */
        char bad[43];
        memcpy(bad, eip55[i], 43);
        for (int k = 2; k < 42; k++) {
            if (bad[k] >= 'a' && bad[k] <= 'f') {
                bad[k] = (char)(bad[k] - 'a' + 'A');
                break;
            }
        }
        FB_ASSERT(fb_addr_parse(&a, bad, 42) == -1);
        /* all lowercase is fine */
        fb_addr_lower(out, &a);
        FB_ASSERT(fb_addr_parse(&a, out, 42) == 0);
    }
    fb_addr_t a;
    FB_ASSERT(fb_addr_parse(&a, "0x123", 5) == -1);
    FB_ASSERT(fb_addr_parse(&a, "0xg000000000000000000000000000000000000000", 42) == -1);

    fb_u256_t v, w;
    char dec[80];
    const char *max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
    FB_ASSERT(fb_u256_from_dec(&v, max, strlen(max)) == 0);
    fb_u256_to_dec(dec, &v);
    FB_ASSERT(strcmp(dec, max) == 0);
    const char *over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
    FB_ASSERT(fb_u256_from_dec(&v, over, strlen(over)) == -1);
    FB_ASSERT(fb_u256_from_dec(&v, "12a", 3) == -1 && fb_u256_from_dec(&v, "", 0) == -1);
    FB_ASSERT(fb_u256_from_dec(&v, "-1", 2) == -1);
    FB_ASSERT(fb_u256_from_dec(&v, "10000", 5) == 0);
    uint64_t u;
    FB_ASSERT(fb_u256_to_u64(&v, &u) && u == 10000);
    fb_u256_to_dec(dec, &v);
    FB_ASSERT(strcmp(dec, "10000") == 0);
    FB_ASSERT(fb_u256_from_dec(&v, "0", 1) == 0);
    fb_u256_to_dec(dec, &v);
    FB_ASSERT(strcmp(dec, "0") == 0);
    FB_ASSERT(fb_u256_from_hex(&w, "0x2710", 6) == 0 && fb_u256_to_u64(&w, &u) && u == 10000);
    FB_ASSERT(fb_u256_from_dec(&v, "18446744073709551616", 20) == 0 && !fb_u256_to_u64(&v, &u));
    FB_ASSERT(fb_u256_cmp(&v, &w) == 1 && fb_u256_cmp(&w, &v) == -1 && fb_u256_cmp(&v, &v) == 0);
    uint8_t b32[32];
    FB_ASSERT(fb_bytes32_parse(b32,
                               "0x"
                               "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                               66) == 0);
    FB_ASSERT(b32[1] == 0x11 && b32[31] == 0xff);
    FB_ASSERT(fb_bytes32_parse(b32, "0x1234", 6) == -1);
    return 0;
}
