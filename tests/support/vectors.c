/* farebox-test-vectors - checks farebox's own encodings and crypto against the
 * known answers that tests/vectors/generate.mjs made with the official
 * libraries (viem, @solana/kit, @x402/evm): Keccak-256, EIP-55, EIP-712
 * digests and signatures, EIP-191, RLP, ABI, EIP-1559 signing, base58,
 * ed25519, associated token accounts, Solana transaction decoding.
 *
 *   farebox-test-vectors tests/vectors/vectors.json
 *
 * Prints one line per set and exits non-zero at the first mismatch. */
#include "fb_codec.h"
#include "fb_eip712.h"
#include "fb_ethtx.h"
#include "fb_evm.h"
#include "fb_keccak.h"
#include "fb_rlp.h"
#include "fb_secp.h"
#include "fb_solana.h"
#include "fb_util.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_failures;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "MISMATCH %s:%d: ", __FILE__, __LINE__);                                         \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            s_failures++;                                                                                    \
        }                                                                                                    \
    } while (0)

static const char *S(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    if (!v) {
        fprintf(stderr, "vector field %s missing\n", k);
        exit(2);
    }
    return v;
}

/* 0x-hex text to bytes (caller frees); *len gets the length. */
static uint8_t *s_hex(const char *text, size_t *len)
{
    size_t n = strlen(text);
    if (n >= 2 && text[0] == '0' && text[1] == 'x') {
        text += 2;
        n -= 2;
    }
    *len = n / 2;
    uint8_t *b = fb_malloc(*len + 1);
    if (fb_hex_decode(b, *len, text, n) != 0) {
        fprintf(stderr, "bad hex in vectors: %s\n", text);
        exit(2);
    }
    return b;
}

static char *s_tohex(const uint8_t *b, size_t n)
{
    char *out = fb_malloc(2 * n + 3);
    out[0] = '0';
    out[1] = 'x';
    fb_hex_encode(out + 2, b, n);
    return out;
}

static bool s_eq_hex(const uint8_t *b, size_t n, const char *expect)
{
    char *h = s_tohex(b, n);
    bool ok = strcasecmp(h, expect) == 0;
    if (!ok)
        fprintf(stderr, "  got      %s\n  expected %s\n", h, expect);
    free(h);
    return ok;
}

static void s_addr(fb_addr_t *a, const char *text)
{
    if (fb_addr_parse(a, text, strlen(text)) != 0) {
        fprintf(stderr, "bad address in vectors: %s\n", text);
        exit(2);
    }
}

static void s_u256(fb_u256_t *v, json_t *j)
{
    char buf[96];
    const char *t = json_is_string(j) ? json_string_value(j) : buf;
    if (json_is_integer(j))
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(j));
    if (fb_u256_from_dec(v, t, strlen(t)) != 0) {
        fprintf(stderr, "bad number in vectors: %s\n", t);
        exit(2);
    }
}

static void s_keccak(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        size_t n;
        uint8_t *in = s_hex(S(v, "input"), &n), h[32];
        fb_keccak256(h, in, n);
        CHECK(s_eq_hex(h, 32, S(v, "hash")), "keccak256 #%zu", i);
        free(in);
    }
    printf("keccak256: %zu ok\n", json_array_size(set));
}

static void s_eip55(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        fb_addr_t a;
        s_addr(&a, S(v, "lower"));
        char out[43];
        fb_addr_checksum(out, &a);
        CHECK(strcmp(out, S(v, "checksummed")) == 0, "eip55 #%zu: %s", i, out);
    }
    printf("eip55: %zu ok\n", json_array_size(set));
}

static void s_eip712(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        json_t *d = json_object_get(v, "domain"), *m = json_object_get(v, "message");
        fb_eip712_domain_t dom = {.name = S(d, "name"), .version = S(d, "version")};
        dom.name_len = strlen(dom.name);
        dom.version_len = strlen(dom.version);
        dom.chain_id = (uint64_t)json_integer_value(json_object_get(d, "chainId"));
        s_addr(&dom.verifying_contract, S(d, "verifyingContract"));
        fb_eip3009_t a;
        s_addr(&a.from, S(m, "from"));
        s_addr(&a.to, S(m, "to"));
        s_u256(&a.value, json_object_get(m, "value"));
        s_u256(&a.valid_after, json_object_get(m, "validAfter"));
        s_u256(&a.valid_before, json_object_get(m, "validBefore"));
        FB_ASSERT(fb_bytes32_parse(a.nonce, S(m, "nonce"), strlen(S(m, "nonce"))) == 0);
        uint8_t ds[32], sh[32], dg[32];
        fb_eip712_domain_separator(ds, &dom);
        fb_eip3009_struct_hash(sh, &a);
        fb_eip712_digest(dg, ds, sh);
        CHECK(s_eq_hex(ds, 32, S(v, "domainSeparator")), "eip712 #%zu domain separator", i);
        CHECK(s_eq_hex(sh, 32, S(v, "structHash")), "eip712 #%zu struct hash", i);
        CHECK(s_eq_hex(dg, 32, S(v, "digest")), "eip712 #%zu digest", i);
        /* the same signature (RFC 6979 nonces on both sides), and its signer */
        size_t kn, sn;
        uint8_t *key = s_hex(S(v, "privateKey"), &kn), *expect = s_hex(S(v, "signature"), &sn), sig[65];
        FB_ASSERT(fb_secp_sign(sig, dg, key) == 0);
        sig[64] += 27;
        CHECK(sn == 65 && memcmp(sig, expect, 65) == 0, "eip712 #%zu signature", i);
        fb_addr_t signer, want;
        const char *why;
        s_addr(&want, S(v, "signer"));
        CHECK(fb_secp_recover(&signer, dg, expect, &why) == 0 && fb_addr_eq(&signer, &want),
              "eip712 #%zu signer", i);
        free(key);
        free(expect);
    }
    printf("eip712_transfer_with_authorization: %zu ok\n", json_array_size(set));
}

static void s_personal(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        size_t n, sn;
        uint8_t *msg = s_hex(S(v, "messageHex"), &n), *sig = s_hex(S(v, "signature"), &sn), h[32];
        fb_eip191_digest(h, msg, n);
        CHECK(s_eq_hex(h, 32, S(v, "hash")), "personal_sign #%zu hash", i);
        fb_addr_t signer, want;
        const char *why;
        s_addr(&want, S(v, "signer"));
        CHECK(fb_secp_recover(&signer, h, sig, &why) == 0 && fb_addr_eq(&signer, &want), "personal_sign #%zu",
              i);
        free(msg);
        free(sig);
    }
    printf("personal_sign: %zu ok\n", json_array_size(set));
}

static void s_rlp_item(fb_rlp_t *r, json_t *item)
{
    if (json_is_array(item)) {
        fb_rlp_list_begin(r);
        size_t i;
        json_t *x;
        json_array_foreach(item, i, x) s_rlp_item(r, x);
        fb_rlp_list_end(r);
    } else {
        size_t n;
        uint8_t *b = s_hex(json_string_value(item), &n);
        fb_rlp_bytes(r, b, n);
        free(b);
    }
}

static void s_rlp(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        fb_rlp_t r;
        fb_rlp_init(&r);
        if (json_object_get(v, "integer")) {
            fb_u256_t x;
            s_u256(&x, json_object_get(v, "integer"));
            fb_rlp_uint(&r, x.b, 32);
        } else {
            s_rlp_item(&r, json_object_get(v, "input"));
        }
        CHECK(s_eq_hex(r.buf ? r.buf : (const uint8_t *)"", r.len, S(v, "encoded")), "rlp #%zu (%s)", i,
              S(v, "description"));
        fb_rlp_free(&r);
    }
    printf("rlp: %zu ok\n", json_array_size(set));
}

static void s_selectors(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        uint8_t sel[4];
        fb_abi_selector(sel, S(v, "signature"));
        CHECK(s_eq_hex(sel, 4, S(v, "selector")), "selector %s", S(v, "signature"));
    }
    printf("selectors: %zu ok\n", json_array_size(set));
}

static void s_tx(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        fb_ethtx_t tx = {0};
        tx.chain_id = (uint64_t)json_integer_value(json_object_get(v, "chainId"));
        tx.nonce = (uint64_t)json_integer_value(json_object_get(v, "nonce"));
        s_u256(&tx.max_priority_fee, json_object_get(v, "maxPriorityFeePerGas"));
        s_u256(&tx.max_fee, json_object_get(v, "maxFeePerGas"));
        fb_u256_t gas;
        s_u256(&gas, json_object_get(v, "gas"));
        FB_ASSERT(fb_u256_to_u64(&gas, &tx.gas));
        s_addr(&tx.to, S(v, "to"));
        s_u256(&tx.value, json_object_get(v, "value"));
        /* our calldata for the relayed authorization equals viem's */
        json_t *c = json_object_get(v, "calldataArgs");
        fb_eip3009_t a;
        s_addr(&a.from, S(c, "from"));
        s_addr(&a.to, S(c, "to"));
        s_u256(&a.value, json_object_get(c, "value"));
        s_u256(&a.valid_after, json_object_get(c, "validAfter"));
        s_u256(&a.valid_before, json_object_get(c, "validBefore"));
        FB_ASSERT(fb_bytes32_parse(a.nonce, S(c, "nonce"), 66) == 0);
        uint8_t sig[65];
        FB_ASSERT(fb_bytes32_parse(sig, S(c, "r"), 66) == 0 &&
                  fb_bytes32_parse(sig + 32, S(c, "s"), 66) == 0);
        sig[64] = (uint8_t)json_integer_value(json_object_get(c, "v"));
        uint8_t *data;
        size_t dl = fb_abi_transfer_with_authorization(&data, &a, sig);
        CHECK(s_eq_hex(data, dl, S(v, "data")), "eip1559_tx #%zu calldata", i);
        tx.data = data;
        tx.data_len = dl;
        uint8_t sh[32];
        fb_ethtx_signing_hash(&tx, sh);
        CHECK(s_eq_hex(sh, 32, S(v, "signingHash")), "eip1559_tx #%zu signing hash", i);
        size_t kn;
        uint8_t *key = s_hex(S(v, "privateKey"), &kn), *raw = NULL, hash[32];
        size_t rl = 0;
        FB_ASSERT(fb_ethtx_sign(&tx, key, &raw, &rl, hash) == 0);
        CHECK(s_eq_hex(raw, rl, S(v, "signedRaw")), "eip1559_tx #%zu signed raw", i);
        CHECK(s_eq_hex(hash, 32, S(v, "txHash")), "eip1559_tx #%zu tx hash", i);
        free(raw);
        free(key);
        free(data);
    }
    printf("eip1559_tx: %zu ok\n", json_array_size(set));
}

static void s_abi(json_t *abi)
{
    size_t i;
    json_t *v, *calls = json_object_get(abi, "calls");
    json_array_foreach(calls, i, v)
    {
        const char *fn = S(v, "functionName");
        json_t *args = json_object_get(v, "args");
        fb_addr_t a;
        s_addr(&a, json_string_value(json_array_get(args, 0)));
        uint8_t *data;
        size_t n;
        if (strcmp(fn, "balanceOf") == 0) {
            n = fb_abi_balance_of(&data, &a);
        } else {
            uint8_t nonce[32];
            FB_ASSERT(fb_bytes32_parse(nonce, json_string_value(json_array_get(args, 1)), 66) == 0);
            n = fb_abi_authorization_state(&data, &a, nonce);
        }
        CHECK(s_eq_hex(data, n, S(v, "calldata")), "abi %s #%zu", fn, i);
        free(data);
    }
    printf("abi: %zu ok\n", json_array_size(calls));
}

static void s_base58(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        size_t n;
        uint8_t *b = s_hex(S(v, "hex"), &n), back[128];
        char text[200];
        size_t tl = fb_base58_encode(text, sizeof(text), b, n);
        CHECK(tl == strlen(S(v, "base58")) && strcmp(text, S(v, "base58")) == 0, "base58 #%zu", i);
        CHECK(fb_base58_decode(back, sizeof(back), S(v, "base58"), strlen(S(v, "base58"))) == (int)n &&
                  memcmp(back, b, n) == 0,
              "base58 decode #%zu", i);
        free(b);
    }
    printf("base58: %zu ok\n", json_array_size(set));
}

static void s_ed25519(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        size_t n, mn;
        uint8_t *seed = s_hex(S(v, "seed"), &n), *msg = s_hex(S(v, "message"), &mn), pk[32], sk[64], sig[64];
        crypto_sign_seed_keypair(pk, sk, seed);
        CHECK(s_eq_hex(pk, 32, S(v, "publicKeyHex")), "ed25519 #%zu public key", i);
        crypto_sign_detached(sig, NULL, msg, mn, sk);
        CHECK(s_eq_hex(sig, 64, S(v, "signatureHex")), "ed25519 #%zu signature", i);
        fb_sol_key_t k;
        char text[45];
        memcpy(k.b, pk, 32);
        fb_sol_key_format(text, &k);
        CHECK(strcmp(text, S(v, "publicKey")) == 0, "ed25519 #%zu base58 key", i);
        sodium_memzero(sk, sizeof(sk));
        free(seed);
        free(msg);
    }
    printf("ed25519: %zu ok\n", json_array_size(set));
}

static void s_key(fb_sol_key_t *k, const char *text)
{
    if (fb_sol_key_parse(k, text, strlen(text)) != 0) {
        fprintf(stderr, "bad base58 key in vectors: %s\n", text);
        exit(2);
    }
}

static void s_ata(json_t *obj)
{
    size_t i;
    json_t *v, *set = json_object_get(obj, "ata");
    json_array_foreach(set, i, v)
    {
        fb_sol_key_t owner, mint, prog, ata, want;
        s_key(&owner, S(v, "owner"));
        s_key(&mint, S(v, "mint"));
        s_key(&prog, S(v, "tokenProgram"));
        s_key(&want, S(v, "ata"));
        CHECK(fb_sol_ata(&ata, &owner, &mint, &prog) == 0 && fb_sol_key_eq(&ata, &want), "ata #%zu", i);
    }
    printf("solana_ata: %zu ok\n", json_array_size(set));
}

static void s_soltx(json_t *set)
{
    size_t i;
    json_t *v;
    json_array_foreach(set, i, v)
    {
        size_t n;
        uint8_t *wire = s_hex(S(v, "wireHex"), &n);
        fb_sol_tx_t tx;
        const char *why;
        CHECK(fb_sol_tx_decode(&tx, wire, n, &why) == 0, "solana_tx #%zu decode: %s", i, why ? why : "");
        json_t *ver = json_object_get(v, "version"); /* "legacy" or 0 */
        CHECK(tx.version == (json_is_string(ver) ? -1 : (int)json_integer_value(ver)),
              "solana_tx #%zu version", i);
        json_t *hdr = json_object_get(v, "header");
        CHECK(tx.num_required_signatures ==
                      json_integer_value(json_object_get(hdr, "numRequiredSignatures")) &&
                  tx.num_readonly_signed ==
                      json_integer_value(json_object_get(hdr, "numReadonlySignedAccounts")) &&
                  tx.num_readonly_unsigned ==
                      json_integer_value(json_object_get(hdr, "numReadonlyUnsignedAccounts")),
              "solana_tx #%zu header", i);
        CHECK(s_eq_hex(tx.message, tx.message_len, S(v, "messageHex")), "solana_tx #%zu message", i);
        json_t *keys = json_object_get(v, "accountKeys");
        CHECK(tx.nkeys == json_array_size(keys), "solana_tx #%zu key count", i);
        for (size_t k = 0; k < tx.nkeys && k < json_array_size(keys); k++) {
            fb_sol_key_t want;
            json_t *kk = json_array_get(keys, k);
            s_key(&want, json_is_string(kk) ? json_string_value(kk) : S(kk, "address"));
            CHECK(fb_sol_key_eq(&tx.keys[k], &want), "solana_tx #%zu key %zu", i, k);
        }
        json_t *ixs = json_object_get(v, "instructions");
        CHECK(tx.nix == json_array_size(ixs), "solana_tx #%zu instruction count", i);
        for (size_t k = 0; k < tx.nix && k < json_array_size(ixs); k++) {
            json_t *ix = json_array_get(ixs, k);
            CHECK(tx.ix[k].program == json_integer_value(json_object_get(ix, "programIdIndex")),
                  "ix %zu program", k);
            CHECK(s_eq_hex(tx.ix[k].data, tx.ix[k].data_len, S(ix, "data")), "solana_tx #%zu ix %zu data", i,
                  k);
        }
        /* the fee payer's slot is empty; the owner's signature verifies */
        fb_sol_key_t owner;
        s_key(&owner, S(v, "owner"));
        CHECK(!fb_sol_sig_present(&tx, 0), "solana_tx #%zu fee payer slot", i);
        bool found = false;
        for (int k = 0; k < tx.nsigs; k++) {
            if (fb_sol_key_eq(&tx.keys[k], &owner)) {
                found = true;
                CHECK(fb_sol_sig_present(&tx, k) && fb_sol_sig_verify(&tx, k),
                      "solana_tx #%zu owner signature", i);
            }
        }
        CHECK(found, "solana_tx #%zu owner among the signers", i);
        free(wire);
    }
    printf("solana_tx: %zu ok\n", json_array_size(set));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s vectors.json\n", argv[0]);
        return 2;
    }
    FB_ASSERT(sodium_init() >= 0);
    json_error_t jerr;
    json_t *v = json_load_file(argv[1], 0, &jerr);
    if (!v) {
        fprintf(stderr, "%s: %s\n", argv[1], jerr.text);
        return 2;
    }
    s_keccak(json_object_get(v, "keccak256"));
    s_eip55(json_object_get(v, "eip55"));
    s_eip712(json_object_get(v, "eip712_transfer_with_authorization"));
    s_personal(json_object_get(v, "personal_sign"));
    s_rlp(json_object_get(v, "rlp"));
    s_selectors(json_object_get(v, "selectors"));
    s_tx(json_object_get(v, "eip1559_tx"));
    s_abi(json_object_get(v, "abi"));
    s_base58(json_object_get(v, "base58"));
    s_ed25519(json_object_get(v, "ed25519"));
    s_ata(json_object_get(v, "solana_ata"));
    s_soltx(json_object_get(v, "solana_tx"));
    json_decref(v);
    if (s_failures) {
        fprintf(stderr, "%d mismatches\n", s_failures);
        return 1;
    }
    printf("all vectors match\n");
    return 0;
}
