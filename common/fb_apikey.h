/* fb_apikey - API keys: "fbx_" and 32 random bytes in base58. Only an
 * HMAC-SHA256 of a key, keyed by the server's secret, is ever stored; the edge
 * computes the same HMAC to look a key up. Comparisons of HMACs are by the
 * database's unique index, or fb_memeq_ct in memory. */
#ifndef FB_APIKEY_H
#define FB_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_APIKEY_PREFIX     "fbx_"
#define FB_APIKEY_MAX        64 /* characters of a key, prefix included */
#define FB_APIKEY_SHOWN      12 /* characters of a key shown to people as its prefix */
#define FB_APIKEY_SECRET_MIN 32 /* bytes of the HMAC secret, at least */

/* fb_apikey_generate - a new key (NUL-terminated) into out, which holds
 * FB_APIKEY_MAX + 1 bytes. */
void fb_apikey_generate(char out[FB_APIKEY_MAX + 1]);

/* fb_apikey_well_formed - true when key looks like a farebox key (prefix,
 * base58 alphabet, length). A cheap filter before any lookup. */
bool fb_apikey_well_formed(const char *key, size_t len);

/* fb_apikey_hmac - HMAC-SHA256(secret, key) into mac.
 * In: secret, secret_len - the server's key HMAC secret; key, key_len. */
void fb_apikey_hmac(uint8_t mac[32], const char *secret, size_t secret_len, const char *key, size_t key_len);

/* fb_apikey_mac_t - the server's secret made into HMAC-SHA256's keyed state
 * once (its inner and outer pads hashed), so that each key's HMAC costs two
 * hash blocks fewer than fb_apikey_hmac; read-only once built, shared by
 * threads. */
typedef struct fb_apikey_mac fb_apikey_mac_t;

/* fb_apikey_mac_new - the keyed state of secret (freed with fb_apikey_mac_free). */
fb_apikey_mac_t *fb_apikey_mac_new(const char *secret, size_t secret_len);

/* fb_apikey_mac_free - wipes and frees *self; sets it to NULL. */
void fb_apikey_mac_free(fb_apikey_mac_t **self);

/* fb_apikey_mac - HMAC-SHA256(secret, key) into mac, as fb_apikey_hmac. */
void fb_apikey_mac(const fb_apikey_mac_t *self, uint8_t mac[32], const char *key, size_t key_len);

/* fb_apikey_check_secret - fb_config_check_fn: the secret is long enough. */
int fb_apikey_check_secret(const char *value, char *err, size_t errlen);

int fb_apikey_test(bool verbose);

#endif
