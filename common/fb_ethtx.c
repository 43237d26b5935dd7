/* fb_ethtx - EIP-1559 transaction signing and ABI calldata. */
#include "fb_ethtx.h"
#include "fb_codec.h"
#include "fb_keccak.h"
#include "fb_rlp.h"
#include "fb_secp.h"
#include "fb_util.h"

#include <stdlib.h>
#include <string.h>

static void s_fields(fb_rlp_t *r, const fb_ethtx_t *tx)
{
    fb_rlp_u64(r, tx->chain_id);
    fb_rlp_u64(r, tx->nonce);
    fb_rlp_uint(r, tx->max_priority_fee.b, 32);
    fb_rlp_uint(r, tx->max_fee.b, 32);
    fb_rlp_u64(r, tx->gas);
    fb_rlp_bytes(r, tx->to.b, 20);
    fb_rlp_uint(r, tx->value.b, 32);
    fb_rlp_bytes(r, tx->data, tx->data_len);
    fb_rlp_list_begin(r); /* access list: empty */
    fb_rlp_list_end(r);
}

void fb_ethtx_signing_hash(const fb_ethtx_t *tx, uint8_t out[32])
{
    fb_rlp_t r;
    fb_rlp_init(&r);
    fb_rlp_raw(&r, "\x02", 1);
    fb_rlp_list_begin(&r);
    s_fields(&r, tx);
    fb_rlp_list_end(&r);
    fb_keccak256(out, r.buf, r.len);
    fb_rlp_free(&r);
}

int fb_ethtx_sign(const fb_ethtx_t *tx, const uint8_t key[32], uint8_t **raw, size_t *raw_len,
                  uint8_t hash[32])
{
    uint8_t digest[32], sig[65];
    fb_ethtx_signing_hash(tx, digest);
    if (fb_secp_sign(sig, digest, key) != 0)
        return -1;
    fb_rlp_t r;
    fb_rlp_init(&r);
    fb_rlp_raw(&r, "\x02", 1);
    fb_rlp_list_begin(&r);
    s_fields(&r, tx);
    fb_rlp_u64(&r, sig[64]);       /* yParity */
    fb_rlp_uint(&r, sig, 32);      /* r */
    fb_rlp_uint(&r, sig + 32, 32); /* s */
    fb_rlp_list_end(&r);
    fb_keccak256(hash, r.buf, r.len);
    *raw = r.buf;
    *raw_len = r.len;
    return 0;
}

void fb_abi_selector(uint8_t out[4], const char *signature)
{
    uint8_t h[32];
    fb_keccak256(h, signature, strlen(signature));
    memcpy(out, h, 4);
}

static uint8_t *s_words(size_t nwords, const char *signature)
{
    uint8_t *out = fb_calloc(4 + 32 * nwords, 1);
    fb_abi_selector(out, signature);
    return out;
}

static void s_put_addr(uint8_t *word, const fb_addr_t *a)
{
    memcpy(word + 12, a->b, 20);
}

size_t fb_abi_transfer_with_authorization(uint8_t **out, const fb_eip3009_t *a, const uint8_t sig[65])
{
    uint8_t *p =
        s_words(9, "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,"
                   "bytes32)");
    uint8_t *w = p + 4;
    s_put_addr(w, &a->from);
    s_put_addr(w + 32, &a->to);
    memcpy(w + 64, a->value.b, 32);
    memcpy(w + 96, a->valid_after.b, 32);
    memcpy(w + 128, a->valid_before.b, 32);
    memcpy(w + 160, a->nonce, 32);
    w[192 + 31] = (uint8_t)(sig[64] < 27 ? sig[64] + 27 : sig[64]); /* v */
    memcpy(w + 224, sig, 32);                                       /* r */
    memcpy(w + 256, sig + 32, 32);                                  /* s */
    *out = p;
    return 4 + 32 * 9;
}

size_t fb_abi_balance_of(uint8_t **out, const fb_addr_t *owner)
{
    uint8_t *p = s_words(1, "balanceOf(address)");
    s_put_addr(p + 4, owner);
    *out = p;
    return 4 + 32;
}

size_t fb_abi_authorization_state(uint8_t **out, const fb_addr_t *authorizer, const uint8_t nonce[32])
{
    uint8_t *p = s_words(2, "authorizationState(address,bytes32)");
    s_put_addr(p + 4, authorizer);
    memcpy(p + 36, nonce, 32);
    *out = p;
    return 4 + 64;
}

int fb_ethtx_test(bool verbose)
{
    FB_UNUSED(verbose);
    uint8_t sel[4];
    char hex[9];
    fb_abi_selector(sel, "balanceOf(address)");
    fb_hex_encode(hex, sel, 4);
    FB_ASSERT(strcmp(hex, "70a08231") == 0);
    fb_abi_selector(sel,
                    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,"
                    "bytes32)");
    fb_hex_encode(hex, sel, 4);
    FB_ASSERT(strcmp(hex, "e3ee160e") == 0);
    fb_abi_selector(sel, "authorizationState(address,bytes32)");
    fb_hex_encode(hex, sel, 4);
    FB_ASSERT(strcmp(hex, "e94a0102") == 0);

    /* signing round trip: the signature over the signing hash recovers the key's address */
    uint8_t key[32];
    FB_ASSERT(
        fb_hex_decode(key, 32, "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318", 64) == 0);
    fb_ethtx_t tx = {.chain_id = 84532, .nonce = 7, .gas = 100000};
    fb_u256_from_u64(&tx.max_priority_fee, 1000000);
    fb_u256_from_u64(&tx.max_fee, 2000000000);
    FB_ASSERT(fb_addr_parse(&tx.to, "0x036CbD53842c5426634e7929541eC2318f3dCF7e", 42) == 0);
    uint8_t *raw = NULL, hash[32];
    size_t len = 0;
    FB_ASSERT(fb_ethtx_sign(&tx, key, &raw, &len, hash) == 0);
    FB_ASSERT(raw[0] == 0x02 && len > 60);
    uint8_t check[32];
    fb_keccak256(check, raw, len);
    FB_ASSERT(memcmp(check, hash, 32) == 0);
    free(raw);
    return 0;
}
