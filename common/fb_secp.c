/* fb_secp - libsecp256k1 wrapper: recovery, signing, addresses. */
#include "fb_secp.h"
#include "fb_codec.h"
#include "fb_keccak.h"
#include "fb_util.h"

#include <pthread.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>
#include <string.h>

static secp256k1_context *s_ctx;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void s_init(void)
{
    s_ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    FB_ASSERT(s_ctx);
    unsigned char seed[32];
    randombytes_buf(seed, sizeof(seed));
    FB_ASSERT(secp256k1_context_randomize(s_ctx, seed) == 1);
    sodium_memzero(seed, sizeof(seed));
}

static secp256k1_context *s_context(void)
{
    pthread_once(&s_once, s_init);
    return s_ctx;
}

static void s_pubkey_address(fb_addr_t *out, const secp256k1_pubkey *pk)
{
    uint8_t ser[65];
    size_t len = sizeof(ser);
    FB_ASSERT(secp256k1_ec_pubkey_serialize(s_context(), ser, &len, pk, SECP256K1_EC_UNCOMPRESSED) == 1);
    uint8_t h[32];
    fb_keccak256(h, ser + 1, 64);
    memcpy(out->b, h + 12, 20);
}

int fb_secp_recover(fb_addr_t *signer, const uint8_t digest[32], const uint8_t sig[65], const char **reason)
{
    const secp256k1_context *ctx = s_context();
    int v = sig[64];
    if (v >= 27)
        v -= 27;
    if (v != 0 && v != 1) {
        *reason = "bad_v";
        return -1;
    }
    secp256k1_ecdsa_recoverable_signature rsig;
    if (secp256k1_ecdsa_recoverable_signature_parse_compact(ctx, &rsig, sig, v) != 1) {
        *reason = "bad_signature";
        return -1;
    }
    /* refuse high s: normalize reports whether the signature was not normal */
    secp256k1_ecdsa_signature plain, normal;
    secp256k1_ecdsa_recoverable_signature_convert(ctx, &plain, &rsig);
    if (secp256k1_ecdsa_signature_normalize(ctx, &normal, &plain) == 1) {
        *reason = "high_s";
        return -1;
    }
    uint8_t zero[32] = {0};
    if (memcmp(sig, zero, 32) == 0 || memcmp(sig + 32, zero, 32) == 0) {
        *reason = "bad_signature";
        return -1;
    }
    secp256k1_pubkey pk;
    if (secp256k1_ecdsa_recover(ctx, &pk, &rsig, digest) != 1) {
        *reason = "unrecoverable";
        return -1;
    }
    s_pubkey_address(signer, &pk);
    return 0;
}

int fb_secp_sign(uint8_t sig[65], const uint8_t digest[32], const uint8_t key[32])
{
    const secp256k1_context *ctx = s_context();
    secp256k1_ecdsa_recoverable_signature rsig;
    if (secp256k1_ecdsa_sign_recoverable(ctx, &rsig, digest, key, NULL, NULL) != 1)
        return -1;
    int recid = 0;
    secp256k1_ecdsa_recoverable_signature_serialize_compact(ctx, sig, &recid, &rsig);
    sig[64] = (uint8_t)recid;
    return 0;
}

int fb_secp_address(fb_addr_t *out, const uint8_t key[32])
{
    secp256k1_pubkey pk;
    if (secp256k1_ec_pubkey_create(s_context(), &pk, key) != 1)
        return -1;
    s_pubkey_address(out, &pk);
    return 0;
}

int fb_secp_pubkey(uint8_t out[33], const uint8_t key[32])
{
    secp256k1_pubkey pk;
    if (secp256k1_ec_pubkey_create(s_context(), &pk, key) != 1)
        return -1;
    size_t len = 33;
    FB_ASSERT(secp256k1_ec_pubkey_serialize(s_context(), out, &len, &pk, SECP256K1_EC_COMPRESSED) == 1);
    return 0;
}

int fb_secp_key_tweak_add(uint8_t key[32], const uint8_t tweak[32])
{
    return secp256k1_ec_seckey_tweak_add(s_context(), key, tweak) == 1 ? 0 : -1;
}

int fb_secp_pub_tweak_add(uint8_t pub[33], const uint8_t tweak[32])
{
    secp256k1_pubkey pk;
    if (secp256k1_ec_pubkey_parse(s_context(), &pk, pub, 33) != 1)
        return -1;
    if (secp256k1_ec_pubkey_tweak_add(s_context(), &pk, tweak) != 1)
        return -1;
    size_t len = 33;
    FB_ASSERT(secp256k1_ec_pubkey_serialize(s_context(), pub, &len, &pk, SECP256K1_EC_COMPRESSED) == 1);
    return 0;
}

int fb_secp_pub_address(fb_addr_t *out, const uint8_t pub[33])
{
    secp256k1_pubkey pk;
    if (secp256k1_ec_pubkey_parse(s_context(), &pk, pub, 33) != 1)
        return -1;
    s_pubkey_address(out, &pk);
    return 0;
}

int fb_secp_test(bool verbose)
{
    FB_UNUSED(verbose);
    FB_ASSERT(sodium_init() >= 0);
    /* a well-known key: 0x4c0883a6...318 is 0x2c7536E3605D9C16a7a3D7b1898e529396a65c23 */
    uint8_t key[32];
    FB_ASSERT(
        fb_hex_decode(key, 32, "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318", 64) == 0);
    fb_addr_t addr, rec;
    FB_ASSERT(fb_secp_address(&addr, key) == 0);
    char text[43];
    fb_addr_checksum(text, &addr);
    FB_ASSERT(strcmp(text, "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23") == 0);

    uint8_t digest[32], sig[65];
    fb_keccak256(digest, "farebox", 7);
    FB_ASSERT(fb_secp_sign(sig, digest, key) == 0);
    const char *why = NULL;
    FB_ASSERT(fb_secp_recover(&rec, digest, sig, &why) == 0 && fb_addr_eq(&rec, &addr));
    sig[64] += 27;
    FB_ASSERT(fb_secp_recover(&rec, digest, sig, &why) == 0 && fb_addr_eq(&rec, &addr));

    /* the high-s twin of a valid signature: s' = n - s, v flipped */
    static const uint8_t n[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
                                  0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
    uint8_t twin[65];
    memcpy(twin, sig, 65);
    int borrow = 0;
    for (int i = 31; i >= 0; i--) {
        int d = n[i] - sig[32 + i] - borrow;
        borrow = d < 0;
        twin[32 + i] = (uint8_t)(d + (borrow ? 256 : 0));
    }
    twin[64] = (uint8_t)(sig[64] == 27 ? 28 : 27);
    FB_ASSERT(fb_secp_recover(&rec, digest, twin, &why) == -1 && strcmp(why, "high_s") == 0);

    uint8_t bad[65];
    memcpy(bad, sig, 65);
    bad[64] = 29;
    FB_ASSERT(fb_secp_recover(&rec, digest, bad, &why) == -1 && strcmp(why, "bad_v") == 0);
    memset(bad, 0, 64);
    bad[64] = 27;
    FB_ASSERT(fb_secp_recover(&rec, digest, bad, &why) == -1);
    /* a different digest recovers a different address */
    uint8_t other[32];
    fb_keccak256(other, "farebox!", 8);
    if (fb_secp_recover(&rec, other, sig, &why) == 0)
        FB_ASSERT(!fb_addr_eq(&rec, &addr));
    uint8_t zero[32] = {0};
    FB_ASSERT(fb_secp_sign(sig, digest, zero) == -1);
    return 0;
}
