/* fb_codec - hex and base58 encoding. Base58 is the textbook big-number
 * conversion (base 256 <-> base 58, quadratic in the length), which is all
 * that keys and signatures of at most 64 bytes need. */
#include "fb_codec.h"
#include "fb_util.h"

#include <sodium.h>
#include <string.h>
#include <uv.h>

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

/* digit value + 1 of each byte (0: not a hex digit) */
static const uint8_t s_hex[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,  ['6'] = 7,  ['7'] = 8,
    ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int fb_hex_decode(uint8_t *out, size_t outlen, const char *text, size_t textlen)
{
    if (textlen >= 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        text += 2;
        textlen -= 2;
    }
    if (textlen != 2 * outlen)
        return -1;
    unsigned bad = 0;
    for (size_t i = 0; i < outlen; i++) {
        unsigned hi = s_hex[(uint8_t)text[2 * i]], lo = s_hex[(uint8_t)text[2 * i + 1]];
        bad |= (hi == 0) | (lo == 0);
        out[i] = (uint8_t)((hi - 1) << 4 | (lo - 1));
    }
    return bad ? -1 : 0;
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

/* digit value + 1 of each byte in the base58 alphabet (0: not in it) */
static uint8_t s_b58_value[256];
static uv_once_t s_b58_once = UV_ONCE_INIT;

static void s_b58_init(void)
{
    for (size_t i = 0; i < sizeof(s_b58) - 1; i++)
        s_b58_value[(uint8_t)s_b58[i]] = (uint8_t)(i + 1);
}

int fb_base58_decode(uint8_t *out, size_t outcap, const char *text, size_t textlen)
{
    uv_once(&s_b58_once, s_b58_init);
    if (textlen > 128)
        return -1;
    size_t ones = 0;
    while (ones < textlen && text[ones] == '1')
        ones++;
    uint8_t bytes[128]; /* little-endian base 256 */
    size_t nbytes = 0;
    for (size_t i = ones; i < textlen; i++) {
        unsigned digit = s_b58_value[(uint8_t)text[i]];
        if (digit == 0)
            return -1;
        unsigned carry = digit - 1;
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

/* sextet value + 1 of each byte of the standard base64 alphabet (0: not in it) */
static uint8_t s_b64_value[256];
static uv_once_t s_b64_once = UV_ONCE_INIT;

static void s_b64_init(void)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 64; i++)
        s_b64_value[(uint8_t)alphabet[i]] = (uint8_t)(i + 1);
}

int fb_base64_decode(uint8_t *out, size_t outcap, const char *text, size_t textlen)
{
    uv_once(&s_b64_once, s_b64_init);
    size_t len = textlen;
    while (len > 0 && textlen - len < 2 && text[len - 1] == '=')
        len--;
    if (len % 4 == 1 || len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > outcap)
        return -1;
    uint32_t acc = 0;
    unsigned bits = 0, bad = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned v = s_b64_value[(uint8_t)text[i]];
        bad |= v == 0;
        acc = acc << 6 | ((v - 1) & 63);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    /* the bits left over must be zero: one text per byte string */
    if (bad || (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (int)o;
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
    /* base64 against libsodium, every length and both paddings */
    uint8_t raw[40], dec[40];
    char b64[80];
    for (size_t n = 0; n <= sizeof(raw); n++) {
        randombytes_buf(raw, n);
        sodium_bin2base64(b64, sizeof(b64), raw, n, sodium_base64_VARIANT_ORIGINAL);
        FB_ASSERT(fb_base64_decode(dec, n, b64, strlen(b64)) == (int)n && memcmp(dec, raw, n) == 0);
        size_t unpadded = strlen(b64);
        while (unpadded && b64[unpadded - 1] == '=')
            unpadded--;
        FB_ASSERT(fb_base64_decode(dec, n, b64, unpadded) == (int)n && memcmp(dec, raw, n) == 0);
        if (n > 0)
            FB_ASSERT(fb_base64_decode(dec, n - 1, b64, strlen(b64)) == -1); /* too long for the buffer */
    }
    FB_ASSERT(fb_base64_decode(dec, sizeof(dec), "aGk=", 4) == 2 && memcmp(dec, "hi", 2) == 0);
    FB_ASSERT(fb_base64_decode(dec, sizeof(dec), "aGl=", 4) == -1);   /* leftover bits set */
    FB_ASSERT(fb_base64_decode(dec, sizeof(dec), "aGk===", 6) == -1); /* three pads */
    FB_ASSERT(fb_base64_decode(dec, sizeof(dec), "a", 1) == -1);
    FB_ASSERT(fb_base64_decode(dec, sizeof(dec), "aG k", 4) == -1);
    FB_ASSERT(fb_base64_decode(dec, sizeof(dec), "aG-k", 4) == -1); /* url-safe alphabet */
    FB_ASSERT(fb_base64_decode(dec, sizeof(dec), "aG\xdak", 4) ==
              -1); /* no byte above 0x7f (libsodium 1.0.18 takes "/") */
    FB_ASSERT(fb_base64_decode(dec, sizeof(dec), "aG=k", 4) == -1); /* padding inside */
    FB_ASSERT(fb_hex_decode(out, 2, "1a2", 3) == -1);
    FB_ASSERT(fb_hex_decode(out, 2, "1a2g", 4) == -1);
    char small[4];
    FB_ASSERT(fb_base58_encode(small, sizeof(small), (const uint8_t *)"abcdef", 6) == 0);
    return 0;
}
