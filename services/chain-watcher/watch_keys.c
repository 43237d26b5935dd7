/* watch_keys - deposit key derivation (BIP32 for EVM, SLIP-0010 for Solana). */
#include "watch_keys.h"
#include "fb_codec.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct watch_keys_t {
    fb_hd_pub_t evm;     /* m/44'/60'/0'/0, public */
    fb_hd_node_t solana; /* m/44'/501', private (hardened-only derivation) */
};

watch_keys_t *watch_keys_new(const uint8_t *seed, size_t len)
{
    static const uint32_t evm_path[] = {44 | FB_HD_HARDENED, 60 | FB_HD_HARDENED, 0 | FB_HD_HARDENED, 0};
    static const uint32_t sol_path[] = {44 | FB_HD_HARDENED, 501 | FB_HD_HARDENED};
    fb_hd_node_t master, node;
    watch_keys_t *self = fb_calloc(1, sizeof(*self));
    int rc = fb_bip32_master(&master, seed, len);
    if (rc == 0)
        rc = fb_bip32_path(&node, &master, evm_path, 4);
    if (rc == 0)
        rc = fb_bip32_neuter(&self->evm, &node);
    fb_hd_wipe(&master);
    fb_hd_wipe(&node);
    if (rc == 0)
        rc = fb_slip10_master(&master, seed, len);
    if (rc == 0)
        rc = fb_slip10_path(&self->solana, &master, sol_path, 2);
    fb_hd_wipe(&master);
    if (rc != 0)
        watch_keys_destroy(&self);
    return self;
}

watch_keys_t *watch_keys_from_branches(const char *evm_xpub, const char *solana_node)
{
    watch_keys_t *self = fb_calloc(1, sizeof(*self));
    uint8_t raw[64];
    int rc = fb_bip32_xpub_parse(&self->evm, evm_xpub);
    if (rc == 0 && (self->evm.depth != 4 || self->evm.child != 0))
        rc = -1; /* not the node m/44'/60'/0'/0 */
    if (rc == 0)
        rc = fb_hex_decode(raw, sizeof(raw), solana_node, strlen(solana_node));
    if (rc == 0) {
        memcpy(self->solana.key, raw, 32);
        memcpy(self->solana.chain, raw + 32, 32);
        self->solana.depth = 2;
        self->solana.child = 501 | FB_HD_HARDENED;
    }
    sodium_memzero(raw, sizeof(raw));
    if (rc != 0)
        watch_keys_destroy(&self);
    return self;
}

void watch_keys_destroy(watch_keys_t **self_p)
{
    watch_keys_t *self = *self_p;
    if (!self)
        return;
    sodium_memzero(self, sizeof(*self));
    free(self);
    *self_p = NULL;
}

int watch_keys_evm(const watch_keys_t *self, int64_t account, fb_addr_t *out, char *path, size_t pathcap)
{
    if (account < 1 || account >= (int64_t)FB_HD_HARDENED)
        return -1;
    fb_hd_pub_t child;
    if (fb_bip32_pub_child(&child, &self->evm, (uint32_t)account) != 0 ||
        fb_bip32_pub_address(out, &child) != 0)
        return -1;
    snprintf(path, pathcap, "m/44'/60'/0'/0/%lld", (long long)account);
    return 0;
}

int watch_keys_solana(const watch_keys_t *self, int64_t account, fb_sol_key_t *out, char *path,
                      size_t pathcap)
{
    if (account < 1 || account >= (int64_t)FB_HD_HARDENED)
        return -1;
    const uint32_t rest[] = {(uint32_t)account | FB_HD_HARDENED, 0 | FB_HD_HARDENED};
    fb_hd_node_t node;
    fb_slip10_path(&node, &self->solana, rest, 2);
    fb_slip10_public(out->b, &node);
    fb_hd_wipe(&node);
    snprintf(path, pathcap, "m/44'/501'/%lld'/0'", (long long)account);
    return 0;
}

void watch_keys_xpub(const watch_keys_t *self, char out[FB_HD_XKEY_CHARS])
{
    fb_bip32_xpub(out, &self->evm);
}
