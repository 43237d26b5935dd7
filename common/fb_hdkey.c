/* fb_hdkey - BIP32 (secp256k1) and SLIP-0010 (ed25519) key derivation. */
#include "fb_hdkey.h"
#include "fb_codec.h"
#include "fb_secp.h"
#include "fb_util.h"

#include <nettle/pbkdf2.h>
#include <nettle/ripemd160.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t s_xprv_version[4] = {0x04, 0x88, 0xad, 0xe4};
static const uint8_t s_xpub_version[4] = {0x04, 0x88, 0xb2, 0x1e};

/* I = HMAC-SHA512(key, a || b) */
static void s_hmac(uint8_t out[64], const void *key, size_t keylen, const uint8_t *a, size_t alen,
                   const uint8_t *b, size_t blen)
{
    crypto_auth_hmacsha512_state st;
    crypto_auth_hmacsha512_init(&st, key, keylen);
    crypto_auth_hmacsha512_update(&st, a, alen);
    if (blen)
        crypto_auth_hmacsha512_update(&st, b, blen);
    crypto_auth_hmacsha512_final(&st, out);
    sodium_memzero(&st, sizeof(st));
}

static void s_ser32(uint8_t out[4], uint32_t v)
{
    out[0] = (uint8_t)(v >> 24);
    out[1] = (uint8_t)(v >> 16);
    out[2] = (uint8_t)(v >> 8);
    out[3] = (uint8_t)v;
}

/* the first 4 bytes of RIPEMD160(SHA256(pub)) */
static void s_fingerprint(uint8_t out[4], const uint8_t pub[33])
{
    uint8_t sha[32], rip[RIPEMD160_DIGEST_SIZE];
    crypto_hash_sha256(sha, pub, 33);
    struct ripemd160_ctx ctx;
    ripemd160_init(&ctx);
    ripemd160_update(&ctx, sizeof(sha), sha);
    ripemd160_digest(&ctx, sizeof(rip), rip);
    memcpy(out, rip, 4);
}

/* --- paths ------------------------------------------------------------------------------ */

int fb_hd_path_parse(uint32_t *idx, size_t max, size_t *n, const char *text)
{
    *n = 0;
    if (!text || text[0] != 'm')
        return -1;
    const char *p = text + 1;
    while (*p) {
        if (*p != '/' || *n == max)
            return -1;
        p++;
        if (*p < '0' || *p > '9' || (p[0] == '0' && p[1] >= '0' && p[1] <= '9'))
            return -1;
        uint64_t v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (uint64_t)(*p++ - '0');
            if (v >= FB_HD_HARDENED)
                return -1;
        }
        if (*p == '\'' || *p == 'h' || *p == 'H') {
            v |= FB_HD_HARDENED;
            p++;
        }
        idx[(*n)++] = (uint32_t)v;
    }
    return 0;
}

int fb_hd_path_format(char *out, size_t cap, const uint32_t *idx, size_t n)
{
    size_t used = (size_t)snprintf(out, cap, "m");
    for (size_t i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "/%u%s", (unsigned)(idx[i] & ~FB_HD_HARDENED),
                                 (idx[i] & FB_HD_HARDENED) ? "'" : "");
    return used < cap ? 0 : -1;
}

/* --- BIP32 ------------------------------------------------------------------------------ */

int fb_bip32_master(fb_hd_node_t *out, const uint8_t *seed, size_t len)
{
    if (len < FB_HD_SEED_MIN || len > FB_HD_SEED_MAX)
        return -1;
    uint8_t I[64];
    s_hmac(I, "Bitcoin seed", 12, seed, len, NULL, 0);
    memset(out, 0, sizeof(*out));
    memcpy(out->key, I, 32);
    memcpy(out->chain, I + 32, 32);
    sodium_memzero(I, sizeof(I));
    uint8_t pub[33];
    if (fb_secp_pubkey(pub, out->key) != 0) {
        fb_hd_wipe(out);
        return -1;
    }
    return 0;
}

int fb_bip32_child(fb_hd_node_t *out, const fb_hd_node_t *parent, uint32_t index)
{
    uint8_t data[37], pub[33], I[64];
    if (fb_secp_pubkey(pub, parent->key) != 0)
        return -1;
    if (index & FB_HD_HARDENED) {
        data[0] = 0;
        memcpy(data + 1, parent->key, 32);
    } else {
        memcpy(data, pub, 33);
    }
    s_ser32(data + 33, index);
    s_hmac(I, parent->chain, 32, data, sizeof(data), NULL, 0);
    sodium_memzero(data, sizeof(data));
    fb_hd_node_t child;
    memcpy(child.key, parent->key, 32);
    int rc = fb_secp_key_tweak_add(child.key, I);
    memcpy(child.chain, I + 32, 32);
    sodium_memzero(I, sizeof(I));
    if (rc != 0) {
        fb_hd_wipe(&child);
        return -1;
    }
    child.depth = (uint8_t)(parent->depth + 1);
    s_fingerprint(child.parent_fp, pub);
    child.child = index;
    *out = child;
    fb_hd_wipe(&child);
    return 0;
}

int fb_bip32_path(fb_hd_node_t *out, const fb_hd_node_t *node, const uint32_t *idx, size_t n)
{
    fb_hd_node_t cur = *node;
    for (size_t i = 0; i < n; i++) {
        if (fb_bip32_child(&cur, &cur, idx[i]) != 0) {
            fb_hd_wipe(&cur);
            return -1;
        }
    }
    *out = cur;
    fb_hd_wipe(&cur);
    return 0;
}

int fb_bip32_neuter(fb_hd_pub_t *out, const fb_hd_node_t *node)
{
    if (fb_secp_pubkey(out->key, node->key) != 0)
        return -1;
    memcpy(out->chain, node->chain, 32);
    out->depth = node->depth;
    memcpy(out->parent_fp, node->parent_fp, 4);
    out->child = node->child;
    return 0;
}

int fb_bip32_pub_child(fb_hd_pub_t *out, const fb_hd_pub_t *parent, uint32_t index)
{
    if (index & FB_HD_HARDENED)
        return -1;
    uint8_t data[37], I[64];
    memcpy(data, parent->key, 33);
    s_ser32(data + 33, index);
    s_hmac(I, parent->chain, 32, data, sizeof(data), NULL, 0);
    fb_hd_pub_t child;
    memcpy(child.key, parent->key, 33);
    if (fb_secp_pub_tweak_add(child.key, I) != 0)
        return -1;
    memcpy(child.chain, I + 32, 32);
    child.depth = (uint8_t)(parent->depth + 1);
    s_fingerprint(child.parent_fp, parent->key);
    child.child = index;
    *out = child;
    return 0;
}

int fb_bip32_pub_address(fb_addr_t *out, const fb_hd_pub_t *node)
{
    return fb_secp_pub_address(out, node->key);
}

static void s_serialize(char out[FB_HD_XKEY_CHARS], const uint8_t version[4], uint8_t depth,
                        const uint8_t fp[4], uint32_t child, const uint8_t chain[32], const uint8_t key[33])
{
    uint8_t buf[82], h1[32], h2[32];
    memcpy(buf, version, 4);
    buf[4] = depth;
    memcpy(buf + 5, fp, 4);
    s_ser32(buf + 9, child);
    memcpy(buf + 13, chain, 32);
    memcpy(buf + 45, key, 33);
    crypto_hash_sha256(h1, buf, 78);
    crypto_hash_sha256(h2, h1, 32);
    memcpy(buf + 78, h2, 4);
    size_t n = fb_base58_encode(out, FB_HD_XKEY_CHARS, buf, sizeof(buf));
    FB_ASSERT(n > 0 && n < FB_HD_XKEY_CHARS);
    out[n] = '\0';
    sodium_memzero(buf, sizeof(buf));
}

void fb_bip32_xprv(char out[FB_HD_XKEY_CHARS], const fb_hd_node_t *node)
{
    uint8_t key[33] = {0};
    memcpy(key + 1, node->key, 32);
    s_serialize(out, s_xprv_version, node->depth, node->parent_fp, node->child, node->chain, key);
    sodium_memzero(key, sizeof(key));
}

void fb_bip32_xpub(char out[FB_HD_XKEY_CHARS], const fb_hd_pub_t *node)
{
    s_serialize(out, s_xpub_version, node->depth, node->parent_fp, node->child, node->chain, node->key);
}

int fb_bip32_xpub_parse(fb_hd_pub_t *out, const char *text)
{
    size_t len = strnlen(text, FB_HD_XKEY_CHARS);
    uint8_t buf[82], h1[32], h2[32];
    if (len == 0 || len >= FB_HD_XKEY_CHARS ||
        fb_base58_decode(buf, sizeof(buf), text, len) != (int)sizeof(buf))
        return -1;
    crypto_hash_sha256(h1, buf, 78);
    crypto_hash_sha256(h2, h1, 32);
    if (memcmp(buf + 78, h2, 4) != 0 || memcmp(buf, s_xpub_version, 4) != 0)
        return -1;
    fb_hd_pub_t pub;
    pub.depth = buf[4];
    memcpy(pub.parent_fp, buf + 5, 4);
    pub.child = (uint32_t)buf[9] << 24 | (uint32_t)buf[10] << 16 | (uint32_t)buf[11] << 8 | buf[12];
    memcpy(pub.chain, buf + 13, 32);
    memcpy(pub.key, buf + 45, 33);
    fb_addr_t check;
    if (fb_secp_pub_address(&check, pub.key) != 0)
        return -1;
    *out = pub;
    return 0;
}

/* --- SLIP-0010 ed25519 ------------------------------------------------------------------ */

int fb_slip10_master(fb_hd_node_t *out, const uint8_t *seed, size_t len)
{
    if (len < FB_HD_SEED_MIN || len > FB_HD_SEED_MAX)
        return -1;
    uint8_t I[64];
    s_hmac(I, "ed25519 seed", 12, seed, len, NULL, 0);
    memset(out, 0, sizeof(*out));
    memcpy(out->key, I, 32);
    memcpy(out->chain, I + 32, 32);
    sodium_memzero(I, sizeof(I));
    return 0;
}

int fb_slip10_child(fb_hd_node_t *out, const fb_hd_node_t *parent, uint32_t index)
{
    index |= FB_HD_HARDENED;
    uint8_t data[37], I[64];
    data[0] = 0;
    memcpy(data + 1, parent->key, 32);
    s_ser32(data + 33, index);
    s_hmac(I, parent->chain, 32, data, sizeof(data), NULL, 0);
    sodium_memzero(data, sizeof(data));
    uint8_t depth = (uint8_t)(parent->depth + 1);
    memcpy(out->key, I, 32);
    memcpy(out->chain, I + 32, 32);
    sodium_memzero(I, sizeof(I));
    out->depth = depth;
    memset(out->parent_fp, 0, 4);
    out->child = index;
    return 0;
}

int fb_slip10_path(fb_hd_node_t *out, const fb_hd_node_t *node, const uint32_t *idx, size_t n)
{
    fb_hd_node_t cur = *node;
    for (size_t i = 0; i < n; i++)
        fb_slip10_child(&cur, &cur, idx[i]);
    *out = cur;
    fb_hd_wipe(&cur);
    return 0;
}

void fb_slip10_public(uint8_t out[32], const fb_hd_node_t *node)
{
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    FB_ASSERT(crypto_sign_seed_keypair(out, sk, node->key) == 0);
    sodium_memzero(sk, sizeof(sk));
}

void fb_hd_wipe(fb_hd_node_t *node)
{
    sodium_memzero(node, sizeof(*node));
}

/* --- self-test -------------------------------------------------------------------------- */

static bool s_pub_eq(const fb_hd_pub_t *a, const fb_hd_pub_t *b)
{
    return memcmp(a->key, b->key, 33) == 0 && memcmp(a->chain, b->chain, 32) == 0 && a->depth == b->depth &&
           memcmp(a->parent_fp, b->parent_fp, 4) == 0 && a->child == b->child;
}

static void s_hex(uint8_t *out, size_t len, const char *hex)
{
    FB_ASSERT(fb_hex_decode(out, len, hex, strlen(hex)) == 0);
}

int fb_hdkey_test(bool verbose)
{
    FB_UNUSED(verbose);
    FB_ASSERT(sodium_init() >= 0);
    uint8_t seed[16];
    s_hex(seed, 16, "000102030405060708090a0b0c0d0e0f");

    /* paths */
    uint32_t idx[FB_HD_DEPTH_MAX];
    size_t n;
    char text[128];
    FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, "m/44'/60'/0'/0/7") == 0 && n == 5);
    FB_ASSERT(idx[0] == (44 | FB_HD_HARDENED) && idx[3] == 0 && idx[4] == 7);
    FB_ASSERT(fb_hd_path_format(text, sizeof(text), idx, n) == 0 && strcmp(text, "m/44'/60'/0'/0/7") == 0);
    FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, "m/0H/1h") == 0 && n == 2 &&
              idx[1] == (1 | FB_HD_HARDENED));
    FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, "m") == 0 && n == 0);
    const char *bad_paths[] = {"",      "m/",   "x/1",  "m/01", "m/-1", "m/2147483648",
                               "m/1''", "m//1", "m/1/", "m/1a", NULL};
    for (int i = 0; bad_paths[i]; i++)
        FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, bad_paths[i]) == -1);
    FB_ASSERT(fb_hd_path_parse(idx, 2, &n, "m/1/2/3") == -1);
    FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, "m/2147483647'") == 0 && idx[0] == 0xffffffffu);

    /* BIP32 test vector 1 */
    static const struct {
        const char *path, *xpub, *xprv;
    } tv1[] = {
        {"m",
         "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDF"
         "dp6W1EGMcet8",
         "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk"
         "33yuGBxrMPHi"},
        {"m/0H",
         "xpub68Gmy5EdvgibQVfPdqkBBCHxA5htiqg55crXYuXoQRKfDBFA1WEjWgP6LHhwBZeNK1VTsfTFUHCdrfp1bgwQ9xv5ski8PX9"
         "rL2dZXvgGDnw",
         "xprv9uHRZZhk6KAJC1avXpDAp4MDc3sQKNxDiPvvkX8Br5ngLNv1TxvUxt4cV1rGL5hj6KCesnDYUhd7oWgT11eZG7XnxHrnYeS"
         "vkzY7d2bhkJ7"},
        {"m/0H/1",
         "xpub6ASuArnXKPbfEwhqN6e3mwBcDTgzisQN1wXN9BJcM47sSikHjJf3UFHKkNAWbWMiGj7Wf5uMash7SyYq527Hqck2AxYysAA"
         "7xmALppuCkwQ",
         "xprv9wTYmMFdV23N2TdNG573QoEsfRrWKQgWeibmLntzniatZvR9BmLnvSxqu53Kw1UmYPxLgboyZQaXwTCg8MSY3H2EU4pWcQD"
         "nRnrVA1xe8fs"},
        {"m/0H/1/2H",
         "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7D"
         "ogT5Uv6fcLW5",
         "xprv9z4pot5VBttmtdRTWfWQmoH1taj2axGVzFqSb8C9xaxKymcFzXBDptWmT7FwuEzG3ryjH4ktypQSAewRiNMjANTtpgP4mLT"
         "j34bhnZX7UiM"},
    };
    fb_hd_node_t master, node;
    fb_hd_pub_t pub, pub2;
    char xkey[FB_HD_XKEY_CHARS];
    FB_ASSERT(fb_bip32_master(&master, seed, sizeof(seed)) == 0);
    for (size_t i = 0; i < sizeof(tv1) / sizeof(tv1[0]); i++) {
        FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, tv1[i].path) == 0);
        FB_ASSERT(fb_bip32_path(&node, &master, idx, n) == 0);
        fb_bip32_xprv(xkey, &node);
        FB_ASSERT(strcmp(xkey, tv1[i].xprv) == 0);
        FB_ASSERT(fb_bip32_neuter(&pub, &node) == 0);
        fb_bip32_xpub(xkey, &pub);
        FB_ASSERT(strcmp(xkey, tv1[i].xpub) == 0);
        FB_ASSERT(fb_bip32_xpub_parse(&pub2, tv1[i].xpub) == 0 && s_pub_eq(&pub, &pub2));
    }
    /* public derivation of a non-hardened child equals private derivation, neutered */
    FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, "m/0H") == 0 &&
              fb_bip32_path(&node, &master, idx, n) == 0);
    FB_ASSERT(fb_bip32_neuter(&pub, &node) == 0 && fb_bip32_pub_child(&pub2, &pub, 1) == 0);
    fb_bip32_xpub(xkey, &pub2);
    FB_ASSERT(strcmp(xkey, tv1[2].xpub) == 0);
    FB_ASSERT(fb_bip32_pub_child(&pub2, &pub, 1 | FB_HD_HARDENED) == -1);
    /* a damaged xpub is refused: checksum, version (an xprv), garbage */
    char damaged[FB_HD_XKEY_CHARS];
    snprintf(damaged, sizeof(damaged), "%s", tv1[0].xpub);
    damaged[20] = damaged[20] == 'a' ? 'b' : 'a';
    FB_ASSERT(fb_bip32_xpub_parse(&pub2, damaged) == -1);
    FB_ASSERT(fb_bip32_xpub_parse(&pub2, tv1[0].xprv) == -1);
    FB_ASSERT(fb_bip32_xpub_parse(&pub2, "xpub") == -1 && fb_bip32_xpub_parse(&pub2, "") == -1);
    FB_ASSERT(fb_bip32_master(&node, seed, 15) == -1);

    /* the well-known development mnemonic ("test test ... junk", BIP39 seed
     * by PBKDF2-HMAC-SHA512) at m/44'/60'/0'/0/0 is anvil's first account */
    const char *words = "test test test test test test test test test test test junk";
    uint8_t bip39[64];
    pbkdf2_hmac_sha512(strlen(words), (const uint8_t *)words, 2048, 8, (const uint8_t *)"mnemonic",
                       sizeof(bip39), bip39);
    FB_ASSERT(fb_bip32_master(&master, bip39, sizeof(bip39)) == 0);
    FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, "m/44'/60'/0'/0/0") == 0);
    FB_ASSERT(fb_bip32_path(&node, &master, idx, n) == 0);
    fb_addr_t addr, addr2;
    FB_ASSERT(fb_secp_address(&addr, node.key) == 0);
    char at[43];
    fb_addr_checksum(at, &addr);
    FB_ASSERT(strcmp(at, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266") == 0);
    /* the same address from the account's public node (what the watcher holds) */
    FB_ASSERT(fb_bip32_path(&node, &master, idx, 4) == 0 && fb_bip32_neuter(&pub, &node) == 0);
    FB_ASSERT(fb_bip32_pub_child(&pub2, &pub, 0) == 0 && fb_bip32_pub_address(&addr2, &pub2) == 0);
    FB_ASSERT(fb_addr_eq(&addr, &addr2));

    /* SLIP-0010 ed25519 test vector 1 */
    static const struct {
        const char *path, *chain, *key, *pub;
    } sv1[] = {
        {"m", "90046a93de5380a72b5e45010748567d5ea02bbf6522f979e05c0d8d8ca9fffb",
         "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7",
         "a4b2856bfec510abab89753fac1ac0e1112364e7d250545963f135f2a33188ed"},
        {"m/0H", "8b59aa11380b624e81507a27fedda59fea6d0b779a778918a2fd3590e16e9c69",
         "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3",
         "8c8a13df77a28f3445213a0f432fde644acaa215fc72dcdf300d5efaa85d350c"},
        {"m/0H/1H", "a320425f77d1b5c2505a6b1b27382b37368ee640e3557c315416801243552f14",
         "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2",
         "1932a5270f335bed617d5b935c80aedb1a35bd9fc1e31acafd5372c30f5c1187"},
        {"m/0H/1H/2H", "2e69929e00b5ab250f49c3fb1c12f252de4fed2c1db88387094a0f8c4c9ccd6c",
         "92a5b23c0b8a99e37d07df3fb9966917f5d06e02ddbd909c7e184371463e9fc9",
         "ae98736566d30ed0e9d2f4486a64bc95740d89c7db33f52121f8ea8f76ff0fc1"},
    };
    FB_ASSERT(fb_slip10_master(&master, seed, sizeof(seed)) == 0);
    for (size_t i = 0; i < sizeof(sv1) / sizeof(sv1[0]); i++) {
        uint8_t want[32], pk[32];
        FB_ASSERT(fb_hd_path_parse(idx, FB_HD_DEPTH_MAX, &n, sv1[i].path) == 0);
        FB_ASSERT(fb_slip10_path(&node, &master, idx, n) == 0);
        s_hex(want, 32, sv1[i].chain);
        FB_ASSERT(memcmp(node.chain, want, 32) == 0);
        s_hex(want, 32, sv1[i].key);
        FB_ASSERT(memcmp(node.key, want, 32) == 0);
        s_hex(want, 32, sv1[i].pub);
        fb_slip10_public(pk, &node);
        FB_ASSERT(memcmp(pk, want, 32) == 0);
    }
    fb_hd_wipe(&node);
    FB_ASSERT(node.key[0] == 0 && node.chain[31] == 0);
    fb_hd_wipe(&master);
    return 0;
}
