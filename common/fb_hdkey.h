/* fb_hdkey - hierarchical deterministic keys: BIP32 over secp256k1 (EVM
 * deposit keys) and SLIP-0010 over ed25519 (Solana deposit keys), from one
 * master seed, with HMAC-SHA512 from libsodium and the curve arithmetic from
 * libsecp256k1 and libsodium.
 *
 * A node is a key and a chain code plus where it sits in the tree (depth,
 * parent fingerprint, child number) so that BIP32 nodes serialize to the
 * standard "xprv"/"xpub" text. Indexes at or above FB_HD_HARDENED are hardened.
 * SLIP-0010 ed25519 derives hardened children only.
 *
 * Private nodes are secrets: callers clear them with fb_hd_wipe() after use;
 * functions here clear their own intermediates. */
#ifndef FB_HDKEY_H
#define FB_HDKEY_H
#include "fb_evm.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_HD_HARDENED   0x80000000u
#define FB_HD_DEPTH_MAX  16 /* path components fb_hd_path_parse accepts */
#define FB_HD_SEED_MIN   16 /* bytes of a master seed (BIP32: 128..512 bits) */
#define FB_HD_SEED_MAX   64
#define FB_HD_XKEY_CHARS 112 /* room for an "xprv"/"xpub" string and its NUL */

typedef struct {
    uint8_t key[32];   /* secret scalar (BIP32) or ed25519 seed (SLIP-0010) */
    uint8_t chain[32]; /* chain code */
    uint8_t depth;
    uint8_t parent_fp[4]; /* first 4 bytes of HASH160 of the parent's public key (BIP32) */
    uint32_t child;       /* this node's index under its parent */
} fb_hd_node_t;

typedef struct {
    uint8_t key[33]; /* compressed secp256k1 point */
    uint8_t chain[32];
    uint8_t depth;
    uint8_t parent_fp[4];
    uint32_t child;
} fb_hd_pub_t;

/* fb_hd_path_parse - "m/44'/60'/0'/0/7" ("h" or "H" also mark hardened).
 * Out: idx (room for max), *n components. Returns 0, or -1 when the text is
 * not a path, has more than max components or an index above 2^31-1. */
int fb_hd_path_parse(uint32_t *idx, size_t max, size_t *n, const char *text);
/* fb_hd_path_format - the text form of idx[0..n) into out (cap bytes).
 * Returns 0, or -1 when it does not fit. */
int fb_hd_path_format(char *out, size_t cap, const uint32_t *idx, size_t n);

/* fb_bip32_master - the BIP32 master node of seed (16..64 bytes).
 * Returns 0, or -1 for a bad length or a seed whose key is invalid (the
 * standard's probability is below 2^-127). */
int fb_bip32_master(fb_hd_node_t *out, const uint8_t *seed, size_t len);
/* fb_bip32_child - CKDpriv: child index of parent (hardened or not).
 * Returns 0, or -1 when this index gives an invalid key (use the next). */
int fb_bip32_child(fb_hd_node_t *out, const fb_hd_node_t *parent, uint32_t index);
/* fb_bip32_path - derive the node at idx[0..n) below node. Returns 0 or -1. */
int fb_bip32_path(fb_hd_node_t *out, const fb_hd_node_t *node, const uint32_t *idx, size_t n);
/* fb_bip32_neuter - the public node of a private one. Returns 0 or -1. */
int fb_bip32_neuter(fb_hd_pub_t *out, const fb_hd_node_t *node);
/* fb_bip32_pub_child - CKDpub: a non-hardened child of a public node.
 * Returns 0, or -1 for a hardened index or an invalid result. */
int fb_bip32_pub_child(fb_hd_pub_t *out, const fb_hd_pub_t *parent, uint32_t index);
/* fb_bip32_pub_address - the Ethereum address of a public node. Returns 0 or -1. */
int fb_bip32_pub_address(fb_addr_t *out, const fb_hd_pub_t *node);
/* fb_bip32_xprv / fb_bip32_xpub - the standard base58check serialization
 * (mainnet versions) into out (FB_HD_XKEY_CHARS bytes). */
void fb_bip32_xprv(char out[FB_HD_XKEY_CHARS], const fb_hd_node_t *node);
void fb_bip32_xpub(char out[FB_HD_XKEY_CHARS], const fb_hd_pub_t *node);
/* fb_bip32_xpub_parse - an "xpub..." string. Returns 0, or -1 when the text,
 * its checksum, version or point is not valid. */
int fb_bip32_xpub_parse(fb_hd_pub_t *out, const char *text);

/* fb_slip10_master - the SLIP-0010 ed25519 master node of seed (16..64
 * bytes). Returns 0 or -1 for a bad length. */
int fb_slip10_master(fb_hd_node_t *out, const uint8_t *seed, size_t len);
/* fb_slip10_child - a hardened child (index is hardened if it is not yet).
 * Returns 0. */
int fb_slip10_child(fb_hd_node_t *out, const fb_hd_node_t *parent, uint32_t index);
/* fb_slip10_path - derive idx[0..n) below node (every index hardened). */
int fb_slip10_path(fb_hd_node_t *out, const fb_hd_node_t *node, const uint32_t *idx, size_t n);
/* fb_slip10_public - the ed25519 public key of a node (32 bytes). */
void fb_slip10_public(uint8_t out[32], const fb_hd_node_t *node);

/* fb_hd_wipe - clear a private node. */
void fb_hd_wipe(fb_hd_node_t *node);

int fb_hdkey_test(bool verbose);
#endif
