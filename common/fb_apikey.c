/* fb_apikey - generation, well-formedness and HMAC of API keys. */
#include "fb_apikey.h"
#include "fb_codec.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

void fb_apikey_generate(char out[FB_APIKEY_MAX + 1])
{
    uint8_t raw[32];
    randombytes_buf(raw, sizeof(raw));
    memcpy(out, FB_APIKEY_PREFIX, 4);
    size_t n = fb_base58_encode(out + 4, FB_APIKEY_MAX + 1 - 4, raw, sizeof(raw));
    FB_ASSERT(n > 0);
    sodium_memzero(raw, sizeof(raw));
}

bool fb_apikey_well_formed(const char *key, size_t len)
{
    if (len < 4 + 40 || len > FB_APIKEY_MAX || memcmp(key, FB_APIKEY_PREFIX, 4) != 0)
        return false;
    uint8_t raw[40];
    return fb_base58_decode(raw, sizeof(raw), key + 4, len - 4) == 32;
}

void fb_apikey_hmac(uint8_t mac[32], const char *secret, size_t secret_len, const char *key, size_t key_len)
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, secret_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)key, key_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
}

struct fb_apikey_mac {
    crypto_auth_hmacsha256_state keyed;
};

fb_apikey_mac_t *fb_apikey_mac_new(const char *secret, size_t secret_len)
{
    fb_apikey_mac_t *self = fb_calloc(1, sizeof(*self));
    crypto_auth_hmacsha256_init(&self->keyed, (const unsigned char *)secret, secret_len);
    return self;
}

void fb_apikey_mac_free(fb_apikey_mac_t **self)
{
    if (!*self)
        return;
    sodium_memzero(*self, sizeof(**self));
    free(*self);
    *self = NULL;
}

void fb_apikey_mac(const fb_apikey_mac_t *self, uint8_t mac[32], const char *key, size_t key_len)
{
    crypto_auth_hmacsha256_state st = self->keyed;
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)key, key_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
}

int fb_apikey_check_secret(const char *value, char *err, size_t errlen)
{
    if (strlen(value) < FB_APIKEY_SECRET_MIN) {
        snprintf(err, errlen,
                 "must be at least %d characters (use 32 random bytes, e.g. openssl rand -hex 32)",
                 FB_APIKEY_SECRET_MIN);
        return -1;
    }
    return 0;
}

int fb_apikey_test(bool verbose)
{
    FB_UNUSED(verbose);
    FB_ASSERT(sodium_init() >= 0);
    char a[FB_APIKEY_MAX + 1], b[FB_APIKEY_MAX + 1];
    fb_apikey_generate(a);
    fb_apikey_generate(b);
    FB_ASSERT(strncmp(a, "fbx_", 4) == 0 && strcmp(a, b) != 0);
    FB_ASSERT(fb_apikey_well_formed(a, strlen(a)));
    FB_ASSERT(!fb_apikey_well_formed("fbx_short", 9));
    FB_ASSERT(!fb_apikey_well_formed("sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 46));
    char bad[FB_APIKEY_MAX + 1];
    memcpy(bad, a, sizeof(bad));
    bad[10] = '0'; /* not in the base58 alphabet */
    FB_ASSERT(!fb_apikey_well_formed(bad, strlen(bad)));
    /* RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?" */
    uint8_t mac[32];
    fb_apikey_hmac(mac, "Jefe", 4, "what do ya want for nothing?", 28);
    char hex[65];
    fb_hex_encode(hex, mac, 32);
    FB_ASSERT(strcmp(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843") == 0);
    /* the keyed state gives the same HMACs, again and again, for short and
     * long (pre-hashed) secrets alike */
    const char *secrets[] = {"Jefe", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123"};
    for (size_t i = 0; i < FB_ARRAY_SIZE(secrets); i++) {
        fb_apikey_mac_t *km = fb_apikey_mac_new(secrets[i], strlen(secrets[i]));
        for (int round = 0; round < 3; round++) {
            uint8_t want[32], got[32];
            fb_apikey_hmac(want, secrets[i], strlen(secrets[i]), a, strlen(a));
            fb_apikey_mac(km, got, a, strlen(a));
            FB_ASSERT(memcmp(want, got, 32) == 0);
            fb_apikey_hmac(want, secrets[i], strlen(secrets[i]), b, strlen(b));
            fb_apikey_mac(km, got, b, strlen(b));
            FB_ASSERT(memcmp(want, got, 32) == 0);
        }
        fb_apikey_mac_free(&km);
        FB_ASSERT(km == NULL);
    }
    return 0;
}
