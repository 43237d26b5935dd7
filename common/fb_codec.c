/* fb_codec - hex and base58 encoding. Base58 is the textbook big-number
 * conversion (base 256 <-> base 58, quadratic in the length), which is all
 * that keys and signatures of at most 64 bytes need. */
#include "fb_codec.h"
#include "fb_util.h"

#include <string.h>

static const char s_b58[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

void fb_hex_encode(char *out, const uint8_t *in, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

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

int fb_hex_decode(uint8_t *out, size_t outlen, const char *text, size_t textlen)
{
    if (textlen >= 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        text += 2;
        textlen -= 2;
    }
    if (textlen != 2 * outlen)
        return -1;
    for (size_t i = 0; i < outlen; i++) {
        int hi = s_hexval(text[2 * i]), lo = s_hexval(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

size_t fb_base58_encode(char *out, size_t outcap, const uint8_t *in, size_t len)
{
    FB_ASSERT(len <= 256);
    size_t zeros = 0;
    while (zeros < len && in[zeros] == 0)
        zeros++;
    /* digits of the number in base 58, least significant first */
    uint8_t digits[360];
    size_t ndigits = 0;
    for (size_t i = zeros; i < len; i++) {
        unsigned carry = in[i];
        for (size_t k = 0; k < ndigits; k++) {
            carry += (unsigned)digits[k] << 8;
            digits[k] = (uint8_t)(carry % 58);
            carry /= 58;
        }
        while (carry) {
            digits[ndigits++] = (uint8_t)(carry % 58);
            carry /= 58;
        }
    }
    size_t total = zeros + ndigits;
    if (total + 1 > outcap)
        return 0;
    memset(out, '1', zeros);
    for (size_t k = 0; k < ndigits; k++)
        out[zeros + k] = s_b58[digits[ndigits - 1 - k]];
    out[total] = '\0';
    return total;
}

int fb_base58_decode(uint8_t *out, size_t outcap, const char *text, size_t textlen)
{
    if (textlen > 128)
        return -1;
    size_t ones = 0;
    while (ones < textlen && text[ones] == '1')
        ones++;
    uint8_t bytes[128]; /* little-endian base 256 */
    size_t nbytes = 0;
    for (size_t i = ones; i < textlen; i++) {
        const char *p = memchr(s_b58, text[i], sizeof(s_b58) - 1);
        if (!p || text[i] == '\0')
            return -1;
        unsigned carry = (unsigned)(p - s_b58);
        for (size_t k = 0; k < nbytes; k++) {
            carry += (unsigned)bytes[k] * 58;
            bytes[k] = (uint8_t)(carry & 0xff);
            carry >>= 8;
        }
        while (carry) {
            if (nbytes == sizeof(bytes))
                return -1;
            bytes[nbytes++] = (uint8_t)(carry & 0xff);
            carry >>= 8;
        }
    }
    if (ones + nbytes > outcap)
        return -1;
    memset(out, 0, ones);
    for (size_t k = 0; k < nbytes; k++)
        out[ones + k] = bytes[nbytes - 1 - k];
    return (int)(ones + nbytes);
}

int fb_codec_test(bool verbose)
{
    FB_UNUSED(verbose);
    /* Bitcoin Core's base58 test vectors (base58_encode_decode.json) */
    static const struct {
        const char *hex, *b58;
    } v[] = {
        {"", ""},
        {"61", "2g"},
        {"626262", "a3gV"},
        {"636363", "aPEr"},
        {"73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"},
        {"00eb15231dfceb60925886b67d065299925915aeb172c06647", "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"},
        {"516b6fcd0f", "ABnLTmg"},
        {"bf4f89001e670274dd", "3SEo3LWLoPntC"},
        {"572e4794", "3EFU7m"},
        {"ecac89cad93923c02321", "EJDM8drfXA6uyA"},
        {"10c8511e", "Rt5zm"},
        {"00000000000000000000", "1111111111"},
        {"000111d38e5fc9071ffcd20b4a763cc9ae4f252bb4e48fd66a835e252ada93ff480d6dd43dc62a641155a5",
         "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(v); i++) {
        uint8_t bin[64], back[64];
        size_t n = strlen(v[i].hex) / 2;
        FB_ASSERT(fb_hex_decode(bin, n, v[i].hex, strlen(v[i].hex)) == 0);
        char text[128];
        size_t tl = fb_base58_encode(text, sizeof(text), bin, n);
        FB_ASSERT(tl == strlen(v[i].b58) && strcmp(text, v[i].b58) == 0);
        FB_ASSERT(fb_base58_decode(back, sizeof(back), v[i].b58, strlen(v[i].b58)) == (int)n);
        FB_ASSERT(memcmp(back, bin, n) == 0);
        char hex[129];
        fb_hex_encode(hex, bin, n);
        FB_ASSERT(strcmp(hex, v[i].hex) == 0);
    }
    uint8_t out[32];
    FB_ASSERT(fb_base58_decode(out, sizeof(out), "0OIl", 4) == -1); /* not in the alphabet */
    FB_ASSERT(fb_base58_decode(out, 2, "3SEo3LWLoPntC", 13) == -1); /* too long for the buffer */
    FB_ASSERT(fb_hex_decode(out, 2, "0x1a2B", 6) == 0 && out[0] == 0x1a && out[1] == 0x2b);
    FB_ASSERT(fb_hex_decode(out, 2, "1a2", 3) == -1);
    FB_ASSERT(fb_hex_decode(out, 2, "1a2g", 4) == -1);
    char small[4];
    FB_ASSERT(fb_base58_encode(small, sizeof(small), (const uint8_t *)"abcdef", 6) == 0);
    return 0;
}
