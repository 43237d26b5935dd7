/* fb_eip712 - EIP-712 hashing of EIP-3009 authorizations; EIP-191. */
#include "fb_eip712.h"
#include "fb_codec.h"
#include "fb_keccak.h"
#include "fb_util.h"

#include <stdio.h>
#include <string.h>

static const char s_domain_type[] =
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)";
static const char s_twa_type[] = "TransferWithAuthorization(address from,address to,uint256 value,uint256 "
                                 "validAfter,uint256 validBefore,bytes32 nonce)";

/* keccak256 of the two type strings above (checked by fb_eip712_test) */
static const uint8_t s_domain_typehash[32] = {
    0x8b, 0x73, 0xc3, 0xc6, 0x9b, 0xb8, 0xfe, 0x3d, 0x51, 0x2e, 0xcc, 0x4c, 0xf7, 0x59, 0xcc, 0x79,
    0x23, 0x9f, 0x7b, 0x17, 0x9b, 0x0f, 0xfa, 0xca, 0xa9, 0xa7, 0x5d, 0x52, 0x2b, 0x39, 0x40, 0x0f};
static const uint8_t s_twa_typehash[32] = {0x7c, 0x7c, 0x6c, 0xdb, 0x67, 0xa1, 0x87, 0x43, 0xf4, 0x9e, 0xc6,
                                           0xfa, 0x9b, 0x35, 0xf5, 0x0d, 0x52, 0xed, 0x05, 0xcb, 0xed, 0x4c,
                                           0xc5, 0x92, 0xe1, 0x3b, 0x44, 0x50, 0x1c, 0x1a, 0x22, 0x67};

static void s_word_addr(uint8_t w[32], const fb_addr_t *a)
{
    memset(w, 0, 12);
    memcpy(w + 12, a->b, 20);
}

void fb_eip712_domain_separator(uint8_t out[32], const fb_eip712_domain_t *d)
{
    uint8_t name[32], version[32], chain[32], contract[32];
    fb_keccak256(name, d->name, d->name_len);
    fb_keccak256(version, d->version, d->version_len);
    fb_u256_t c;
    fb_u256_from_u64(&c, d->chain_id);
    memcpy(chain, c.b, 32);
    s_word_addr(contract, &d->verifying_contract);
    fb_keccak_t k;
    fb_keccak_init(&k);
    fb_keccak_update(&k, s_domain_typehash, 32);
    fb_keccak_update(&k, name, 32);
    fb_keccak_update(&k, version, 32);
    fb_keccak_update(&k, chain, 32);
    fb_keccak_update(&k, contract, 32);
    fb_keccak_final(&k, out);
}

void fb_eip3009_struct_hash(uint8_t out[32], const fb_eip3009_t *a)
{
    uint8_t from[32], to[32];
    s_word_addr(from, &a->from);
    s_word_addr(to, &a->to);
    fb_keccak_t k;
    fb_keccak_init(&k);
    fb_keccak_update(&k, s_twa_typehash, 32);
    fb_keccak_update(&k, from, 32);
    fb_keccak_update(&k, to, 32);
    fb_keccak_update(&k, a->value.b, 32);
    fb_keccak_update(&k, a->valid_after.b, 32);
    fb_keccak_update(&k, a->valid_before.b, 32);
    fb_keccak_update(&k, a->nonce, 32);
    fb_keccak_final(&k, out);
}

void fb_eip712_digest(uint8_t out[32], const uint8_t domain_separator[32], const uint8_t struct_hash[32])
{
    fb_keccak_t k;
    fb_keccak_init(&k);
    fb_keccak_update(&k, "\x19\x01", 2);
    fb_keccak_update(&k, domain_separator, 32);
    fb_keccak_update(&k, struct_hash, 32);
    fb_keccak_final(&k, out);
}

void fb_eip3009_digest(uint8_t out[32], const fb_eip712_domain_t *d, const fb_eip3009_t *a)
{
    uint8_t ds[32], sh[32];
    fb_eip712_domain_separator(ds, d);
    fb_eip3009_struct_hash(sh, a);
    fb_eip712_digest(out, ds, sh);
}

void fb_eip191_digest(uint8_t out[32], const void *msg, size_t len)
{
    char prefix[64];
    int n = snprintf(prefix, sizeof(prefix),
                     "\x19"
                     "Ethereum Signed Message:\n%zu",
                     len);
    fb_keccak_t k;
    fb_keccak_init(&k);
    fb_keccak_update(&k, prefix, (size_t)n);
    fb_keccak_update(&k, msg, len);
    fb_keccak_final(&k, out);
}

int fb_eip712_test(bool verbose)
{
    FB_UNUSED(verbose);
    /* the type hash EIP-3009 tokens hard-code */
    uint8_t h[32];
    char hex[65];
    fb_keccak256(h, s_twa_type, sizeof(s_twa_type) - 1);
    fb_hex_encode(hex, h, 32);
    FB_ASSERT(strcmp(hex, "7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267") == 0);
    FB_ASSERT(memcmp(h, s_twa_typehash, 32) == 0);
    fb_keccak256(h, s_domain_type, sizeof(s_domain_type) - 1);
    fb_hex_encode(hex, h, 32);
    FB_ASSERT(strcmp(hex, "8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f") == 0);
    FB_ASSERT(memcmp(h, s_domain_typehash, 32) == 0);
    /* EIP-191 of "hello" (what viem's hashMessage("hello") gives) */
    fb_eip191_digest(h, "hello", 5);
    fb_hex_encode(hex, h, 32);
    FB_ASSERT(strcmp(hex, "50b2c43fd39106bafbba0da34fc430e1f91e3c96ea2acee2bc34119f92b37750") == 0);
    return 0;
}
