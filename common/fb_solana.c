/* fb_solana - Solana wire format, signatures and program-derived addresses. */
#include "fb_solana.h"
#include "fb_codec.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

const char FB_SOL_SYSTEM_PROGRAM[] = "11111111111111111111111111111111";
const char FB_SOL_TOKEN_PROGRAM[] = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
const char FB_SOL_TOKEN_2022_PROGRAM[] = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb";
const char FB_SOL_ATA_PROGRAM[] = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL";
const char FB_SOL_COMPUTE_BUDGET_PROGRAM[] = "ComputeBudget111111111111111111111111111111";
const char FB_SOL_MEMO_PROGRAM[] = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr";
const char FB_SOL_LIGHTHOUSE_PROGRAM[] = "L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95";

/* the same programs decoded (fb_solana_test checks them against the text) */
const fb_sol_key_t fb_sol_token_program = {{0x06, 0xdd, 0xf6, 0xe1, 0xd7, 0x65, 0xa1, 0x93, 0xd9, 0xcb, 0xe1,
                                            0x46, 0xce, 0xeb, 0x79, 0xac, 0x1c, 0xb4, 0x85, 0xed, 0x5f, 0x5b,
                                            0x37, 0x91, 0x3a, 0x8c, 0xf5, 0x85, 0x7e, 0xff, 0x00, 0xa9}};
const fb_sol_key_t fb_sol_token_2022_program = {
    {0x06, 0xdd, 0xf6, 0xe1, 0xee, 0x75, 0x8f, 0xde, 0x18, 0x42, 0x5d, 0xbc, 0xe4, 0x6c, 0xcd, 0xda,
     0xb6, 0x1a, 0xfc, 0x4d, 0x83, 0xb9, 0x0d, 0x27, 0xfe, 0xbd, 0xf9, 0x28, 0xd8, 0xa1, 0x8b, 0xfc}};
const fb_sol_key_t fb_sol_ata_program = {{0x8c, 0x97, 0x25, 0x8f, 0x4e, 0x24, 0x89, 0xf1, 0xbb, 0x3d, 0x10,
                                          0x29, 0x14, 0x8e, 0x0d, 0x83, 0x0b, 0x5a, 0x13, 0x99, 0xda, 0xff,
                                          0x10, 0x84, 0x04, 0x8e, 0x7b, 0xd8, 0xdb, 0xe9, 0xf8, 0x59}};
const fb_sol_key_t fb_sol_compute_budget_program = {
    {0x03, 0x06, 0x46, 0x6f, 0xe5, 0x21, 0x17, 0x32, 0xff, 0xec, 0xad, 0xba, 0x72, 0xc3, 0x9b, 0xe7,
     0xbc, 0x8c, 0xe5, 0xbb, 0xc5, 0xf7, 0x12, 0x6b, 0x2c, 0x43, 0x9b, 0x3a, 0x40, 0x00, 0x00, 0x00}};
const fb_sol_key_t fb_sol_memo_program = {{0x05, 0x4a, 0x53, 0x5a, 0x99, 0x29, 0x21, 0x06, 0x4d, 0x24, 0xe8,
                                           0x71, 0x60, 0xda, 0x38, 0x7c, 0x7c, 0x35, 0xb5, 0xdd, 0xbc, 0x92,
                                           0xbb, 0x81, 0xe4, 0x1f, 0xa8, 0x40, 0x41, 0x05, 0x44, 0x8d}};
const fb_sol_key_t fb_sol_lighthouse_program = {
    {0x04, 0xdf, 0xad, 0x79, 0x62, 0xff, 0xb1, 0xdd, 0x92, 0x5d, 0x0a, 0x9f, 0xb5, 0xe6, 0xd0, 0x0c,
     0xe6, 0x19, 0x5b, 0xa8, 0xbb, 0x3a, 0x91, 0xfd, 0x07, 0xef, 0x98, 0x60, 0xc5, 0xe9, 0x7b, 0xb8}};

typedef struct {
    const uint8_t *p, *end;
} s_rd_t;

static int s_u8(s_rd_t *r, uint8_t *out)
{
    if (r->p >= r->end)
        return -1;
    *out = *r->p++;
    return 0;
}

/* compact-u16 (shortvec): 1..3 bytes, 7 bits each, little-endian; the
 * encoding must be the shortest one (Solana refuses aliases). */
static int s_shortvec(s_rd_t *r, uint16_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 3; i++) {
        uint8_t b;
        if (s_u8(r, &b) != 0)
            return -1;
        if (i == 2 && b > 3)
            return -1; /* above 0xffff */
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0)
                return -1; /* not the shortest encoding */
            *out = (uint16_t)v;
            return 0;
        }
    }
    return -1;
}

static int s_take(s_rd_t *r, size_t n, const uint8_t **out)
{
    if ((size_t)(r->end - r->p) < n)
        return -1;
    *out = r->p;
    r->p += n;
    return 0;
}

int fb_sol_tx_decode(fb_sol_tx_t *tx, const uint8_t *buf, size_t len, const char **why)
{
    memset(tx, 0, sizeof(*tx));
    *why = "truncated";
    if (len > FB_SOL_TX_MAX) {
        *why = "larger than 1232 bytes";
        return -1;
    }
    s_rd_t r = {buf, buf + len};
    uint16_t n;
    const uint8_t *p;
    if (s_shortvec(&r, &n) != 0)
        return -1;
    if (n == 0 || n > FB_SOL_KEYS_MAX) {
        *why = "bad signature count";
        return -1;
    }
    tx->nsigs = (uint8_t)n;
    if (s_take(&r, (size_t)n * 64, &tx->sigs) != 0)
        return -1;
    tx->message = r.p;
    tx->message_len = (size_t)(r.end - r.p);
    uint8_t first;
    if (s_u8(&r, &first) != 0)
        return -1;
    if (first & 0x80) {
        tx->version = first & 0x7f;
        if (tx->version != 0) {
            *why = "unsupported message version";
            return -1;
        }
        if (s_u8(&r, &tx->num_required_signatures) != 0)
            return -1;
    } else {
        tx->version = -1;
        tx->num_required_signatures = first;
    }
    if (s_u8(&r, &tx->num_readonly_signed) != 0 || s_u8(&r, &tx->num_readonly_unsigned) != 0)
        return -1;
    if (s_shortvec(&r, &n) != 0)
        return -1;
    if (n == 0 || n > FB_SOL_KEYS_MAX) {
        *why = "bad account key count";
        return -1;
    }
    tx->nkeys = (uint8_t)n;
    for (int i = 0; i < n; i++) {
        if (s_take(&r, 32, &p) != 0)
            return -1;
        memcpy(tx->keys[i].b, p, 32);
        /* each key once, as the runtime requires: a key's second index would escape checks made by
         * index (the fee payer's, say) */
        for (int k = 0; k < i; k++) {
            if (memcmp(tx->keys[k].b, p, 32) == 0) {
                *why = "an account key is listed twice";
                return -1;
            }
        }
    }
    /* at least one signer, and the first one (the fee payer) writable */
    if (tx->num_required_signatures == 0 || tx->num_required_signatures > tx->nkeys ||
        tx->num_readonly_signed >= tx->num_required_signatures ||
        tx->num_readonly_unsigned > tx->nkeys - tx->num_required_signatures) {
        *why = "inconsistent message header";
        return -1;
    }
    if (tx->nsigs != tx->num_required_signatures) {
        *why = "signature count differs from the header";
        return -1;
    }
    if (s_take(&r, 32, &p) != 0)
        return -1;
    memcpy(tx->blockhash.b, p, 32);
    if (s_shortvec(&r, &n) != 0)
        return -1;
    if (n > FB_SOL_IX_MAX) {
        *why = "too many instructions";
        return -1;
    }
    tx->nix = (uint8_t)n;
    for (int i = 0; i < tx->nix; i++) {
        fb_sol_ix_t *ix = &tx->ix[i];
        uint16_t na, dl;
        if (s_u8(&r, &ix->program) != 0 || s_shortvec(&r, &na) != 0)
            return -1;
        if (na > FB_SOL_IX_ACCOUNTS) {
            *why = "too many accounts in an instruction";
            return -1;
        }
        ix->naccounts = (uint8_t)na;
        for (int k = 0; k < na; k++)
            if (s_u8(&r, &ix->accounts[k]) != 0)
                return -1;
        if (s_shortvec(&r, &dl) != 0 || s_take(&r, dl, &ix->data) != 0)
            return -1;
        ix->data_len = dl;
    }
    if (tx->version == 0) {
        if (s_shortvec(&r, &n) != 0)
            return -1;
        if (n > FB_SOL_LOOKUPS_MAX) {
            *why = "too many address table lookups";
            return -1;
        }
        tx->nlookups = (uint8_t)n;
        for (int i = 0; i < tx->nlookups; i++) {
            uint16_t w, ro;
            const uint8_t *idx;
            if (s_take(&r, 32, &p) != 0)
                return -1;
            memcpy(tx->lookups[i].table.b, p, 32);
            if (s_shortvec(&r, &w) != 0 || s_take(&r, w, &idx) != 0 || s_shortvec(&r, &ro) != 0 ||
                s_take(&r, ro, &idx) != 0)
                return -1;
            if (w > 255 || ro > 255)
                return -1;
            tx->lookups[i].nwritable = (uint8_t)w;
            tx->lookups[i].nreadonly = (uint8_t)ro;
        }
    }
    if (r.p != r.end) {
        *why = "trailing bytes";
        return -1;
    }
    /* every index names an account: a static key, or (v0) a looked-up one */
    unsigned total = tx->nkeys;
    for (int i = 0; i < tx->nlookups; i++)
        total += (unsigned)tx->lookups[i].nwritable + tx->lookups[i].nreadonly;
    for (int i = 0; i < tx->nix; i++) {
        if (tx->ix[i].program >= tx->nkeys) {
            *why = "instruction program index out of range";
            return -1;
        }
        for (int k = 0; k < tx->ix[i].naccounts; k++) {
            if (tx->ix[i].accounts[k] >= total) {
                *why = "instruction account index out of range";
                return -1;
            }
        }
    }
    *why = NULL;
    return 0;
}

bool fb_sol_sig_present(const fb_sol_tx_t *tx, int i)
{
    if (i < 0 || i >= tx->nsigs)
        return false;
    static const uint8_t zero[64];
    return memcmp(tx->sigs + (size_t)i * 64, zero, 64) != 0;
}

bool fb_sol_sig_verify(const fb_sol_tx_t *tx, int i)
{
    if (i < 0 || i >= tx->nsigs || i >= tx->nkeys)
        return false;
    return crypto_sign_verify_detached(tx->sigs + (size_t)i * 64, tx->message, tx->message_len,
                                       tx->keys[i].b) == 0;
}

bool fb_sol_is_writable(const fb_sol_tx_t *tx, int i)
{
    if (i < 0 || i >= tx->nkeys)
        return false;
    int nsigned = tx->num_required_signatures;
    if (i < nsigned)
        return i < nsigned - tx->num_readonly_signed;
    return i < tx->nkeys - tx->num_readonly_unsigned;
}

bool fb_sol_on_curve(const uint8_t p[32])
{
    /* crypto_core_ed25519_add checks that both points decode and lie on the
     * curve, and nothing more (no subgroup check): exactly Solana's test */
    static const uint8_t base[32] = {0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                     0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
                                     0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66};
    uint8_t sum[32];
    return crypto_core_ed25519_add(sum, p, base) == 0;
}

int fb_sol_pda(fb_sol_key_t *out, uint8_t *bump, const uint8_t *const *seeds, const size_t *seed_lens,
               int nseeds, const fb_sol_key_t *program)
{
    static const char marker[] = "ProgramDerivedAddress";
    for (int b = 255; b >= 0; b--) {
        crypto_hash_sha256_state st;
        crypto_hash_sha256_init(&st);
        for (int i = 0; i < nseeds; i++)
            crypto_hash_sha256_update(&st, seeds[i], seed_lens[i]);
        uint8_t bb = (uint8_t)b;
        crypto_hash_sha256_update(&st, &bb, 1);
        crypto_hash_sha256_update(&st, program->b, 32);
        crypto_hash_sha256_update(&st, (const uint8_t *)marker, sizeof(marker) - 1);
        uint8_t h[32];
        crypto_hash_sha256_final(&st, h);
        if (!fb_sol_on_curve(h)) {
            memcpy(out->b, h, 32);
            *bump = bb;
            return 0;
        }
    }
    return -1;
}

int fb_sol_ata(fb_sol_key_t *out, const fb_sol_key_t *owner, const fb_sol_key_t *mint,
               const fb_sol_key_t *token_program)
{
    const uint8_t *seeds[3] = {owner->b, token_program->b, mint->b};
    const size_t lens[3] = {32, 32, 32};
    uint8_t bump;
    return fb_sol_pda(out, &bump, seeds, lens, 3, &fb_sol_ata_program);
}

int fb_sol_key_parse(fb_sol_key_t *out, const char *text, size_t len)
{
    uint8_t buf[40];
    if (len < 32 || len > 44 || fb_base58_decode(buf, sizeof(buf), text, len) != 32)
        return -1;
    memcpy(out->b, buf, 32);
    return 0;
}

void fb_sol_key_format(char *out, const fb_sol_key_t *k)
{
    FB_ASSERT(fb_base58_encode(out, 45, k->b, 32) > 0);
}

bool fb_sol_key_eq(const fb_sol_key_t *a, const fb_sol_key_t *b)
{
    return memcmp(a->b, b->b, 32) == 0;
}

static const char *s_skip_space(const char *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

/* [n, n, ...]: exactly 64 numbers 0..255. */
static int s_secret_array(uint8_t secret[64], const char *text)
{
    const char *p = s_skip_space(text);
    if (*p++ != '[')
        return -1;
    for (int i = 0; i < 64; i++) {
        p = s_skip_space(p);
        if (*p < '0' || *p > '9')
            return -1;
        unsigned v = 0;
        for (int digits = 0; *p >= '0' && *p <= '9'; p++)
            if (++digits > 3 || (v = v * 10 + (unsigned)(*p - '0')) > 255)
                return -1;
        secret[i] = (uint8_t)v;
        p = s_skip_space(p);
        if (*p++ != (i == 63 ? ']' : ','))
            return -1;
    }
    return *s_skip_space(p) ? -1 : 0;
}

int fb_sol_secret_parse(uint8_t secret[64], fb_sol_key_t *pub, const char *text)
{
    uint8_t derived[32], sk[64];
    if (s_secret_array(secret, text) != 0 && fb_base58_decode(secret, 64, text, strlen(text)) != 64) {
        sodium_memzero(secret, 64);
        return -1;
    }
    crypto_sign_seed_keypair(derived, sk, secret);
    sodium_memzero(sk, sizeof(sk));
    if (sodium_memcmp(derived, secret + 32, 32) != 0) {
        sodium_memzero(secret, 64);
        return -1;
    }
    if (pub)
        memcpy(pub->b, derived, 32);
    return 0;
}

static void s_secret_parse_test(void)
{
    uint8_t seed[32], pk[32], sk[64], got[64];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i * 7 + 200);
    crypto_sign_seed_keypair(pk, sk, seed);
    char b58[100], array[400];
    FB_ASSERT(fb_base58_encode(b58, sizeof(b58), sk, 64) > 0);
    size_t n = (size_t)snprintf(array, sizeof(array), " [");
    for (int i = 0; i < 64; i++)
        n += (size_t)snprintf(array + n, sizeof(array) - n, "%u%s", sk[i], i == 63 ? "]\n" : ", ");
    fb_sol_key_t pub;
    FB_ASSERT(fb_sol_secret_parse(got, &pub, b58) == 0 && memcmp(got, sk, 64) == 0 &&
              memcmp(pub.b, pk, 32) == 0);
    memset(got, 0, sizeof(got));
    FB_ASSERT(fb_sol_secret_parse(got, NULL, array) == 0 && memcmp(got, sk, 64) == 0);
    const char *bad[] = {"", "[]", "[1,2,3]", "[256" /* ... */, "not base58 0OIl", "[1,2]x"};
    for (size_t i = 0; i < FB_ARRAY_SIZE(bad); i++)
        FB_ASSERT(fb_sol_secret_parse(got, NULL, bad[i]) == -1);
    /* 65 numbers, a number above 255, a public half that is not the seed's */
    char longer[420];
    snprintf(longer, sizeof(longer), "%.*s, 1]", (int)(strrchr(array, ']') - array), array);
    FB_ASSERT(fb_sol_secret_parse(got, NULL, longer) == -1);
    char big[400];
    snprintf(big, sizeof(big), "[256%s", strchr(array, ','));
    FB_ASSERT(fb_sol_secret_parse(got, NULL, big) == -1);
    uint8_t wrong[64];
    memcpy(wrong, sk, 64);
    wrong[40] ^= 1;
    FB_ASSERT(fb_base58_encode(b58, sizeof(b58), wrong, 64) > 0);
    FB_ASSERT(fb_sol_secret_parse(got, NULL, b58) == -1);
    for (int i = 0; i < 64; i++)
        FB_ASSERT(got[i] == 0); /* wiped on refusal */
}

/* --- clusters ------------------------------------------------------------------------------ */

const char FB_SOL_MAINNET_CAIP2[] = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp";

static bool s_is_mainnet(const char *caip2)
{
    return strcmp(caip2, FB_SOL_MAINNET_CAIP2) == 0;
}

/* genesis begins with the CAIP-2 reference of caip2 ("solana:<reference>") */
static bool s_names(const char *caip2, const char *genesis)
{
    const char *ref = strncmp(caip2, "solana:", 7) == 0 ? caip2 + 7 : "";
    size_t n = strlen(ref);
    return n > 0 && strlen(genesis) > n && strncmp(genesis, ref, n) == 0;
}

int fb_sol_cluster_config(const char *caip2, const char *expect, const char **why)
{
    fb_sol_key_t hash;
    if (expect[0] && fb_sol_key_parse(&hash, expect, strlen(expect)) != 0) {
        *why = "not a base58 genesis hash (32 bytes)";
        return -1;
    }
    if (expect[0] && s_is_mainnet(caip2) && !s_names(caip2, expect)) {
        *why = "mainnet's id names mainnet's genesis hash: another cluster cannot serve under it";
        return -1;
    }
    return 0;
}

bool fb_sol_cluster_checked(const char *caip2, const char *expect)
{
    return expect[0] || s_is_mainnet(caip2);
}

bool fb_sol_cluster_ok(const char *caip2, const char *expect, const char *genesis)
{
    fb_sol_key_t hash;
    if (!genesis || fb_sol_key_parse(&hash, genesis, strlen(genesis)) != 0)
        return false;
    if (expect[0])
        return strcmp(genesis, expect) == 0;
    return s_names(caip2, genesis);
}

static void s_cluster_test(void)
{
    static const char mainnet[] = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d";
    static const char devnet[] = "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG";
    static const char devnet_id[] = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1";
    const char *why = NULL;
    /* mainnet: always checked, against its own hash; it cannot be borrowed */
    FB_ASSERT(fb_sol_cluster_checked(FB_SOL_MAINNET_CAIP2, ""));
    FB_ASSERT(fb_sol_cluster_ok(FB_SOL_MAINNET_CAIP2, "", mainnet));
    FB_ASSERT(!fb_sol_cluster_ok(FB_SOL_MAINNET_CAIP2, "", devnet));
    FB_ASSERT(!fb_sol_cluster_ok(FB_SOL_MAINNET_CAIP2, "", "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"));
    FB_ASSERT(!fb_sol_cluster_ok(FB_SOL_MAINNET_CAIP2, "", NULL));
    FB_ASSERT(!fb_sol_cluster_ok(FB_SOL_MAINNET_CAIP2, "", "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp0OIl"));
    FB_ASSERT(fb_sol_cluster_config(FB_SOL_MAINNET_CAIP2, "", &why) == 0);
    FB_ASSERT(fb_sol_cluster_config(FB_SOL_MAINNET_CAIP2, mainnet, &why) == 0);
    FB_ASSERT(fb_sol_cluster_config(FB_SOL_MAINNET_CAIP2, devnet, &why) == -1 && strstr(why, "mainnet"));
    FB_ASSERT(fb_sol_cluster_config(devnet_id, "not base58 0OIl", &why) == -1 && strstr(why, "base58"));
    /* another id: checked only against a hash given, exactly (a local validator under devnet's id) */
    FB_ASSERT(!fb_sol_cluster_checked(devnet_id, ""));
    FB_ASSERT(fb_sol_cluster_checked(devnet_id, mainnet));
    FB_ASSERT(fb_sol_cluster_config(devnet_id, mainnet, &why) == 0);
    FB_ASSERT(fb_sol_cluster_ok(devnet_id, mainnet, mainnet));
    FB_ASSERT(!fb_sol_cluster_ok(devnet_id, mainnet, devnet));
}

int fb_solana_test(bool verbose)
{
    s_cluster_test();
    s_secret_parse_test();
    const struct {
        const char *text;
        const fb_sol_key_t *key;
    } programs[] = {{FB_SOL_TOKEN_PROGRAM, &fb_sol_token_program},
                    {FB_SOL_TOKEN_2022_PROGRAM, &fb_sol_token_2022_program},
                    {FB_SOL_ATA_PROGRAM, &fb_sol_ata_program},
                    {FB_SOL_COMPUTE_BUDGET_PROGRAM, &fb_sol_compute_budget_program},
                    {FB_SOL_MEMO_PROGRAM, &fb_sol_memo_program},
                    {FB_SOL_LIGHTHOUSE_PROGRAM, &fb_sol_lighthouse_program}};
    for (size_t i = 0; i < FB_ARRAY_SIZE(programs); i++) {
        fb_sol_key_t k;
        FB_ASSERT(fb_sol_key_parse(&k, programs[i].text, strlen(programs[i].text)) == 0);
        FB_ASSERT(fb_sol_key_eq(&k, programs[i].key));
    }
    FB_UNUSED(verbose);
    FB_ASSERT(sodium_init() >= 0);
    fb_sol_key_t k;
    char text[45];
    FB_ASSERT(fb_sol_key_parse(&k, FB_SOL_TOKEN_PROGRAM, strlen(FB_SOL_TOKEN_PROGRAM)) == 0);
    fb_sol_key_format(text, &k);
    FB_ASSERT(strcmp(text, FB_SOL_TOKEN_PROGRAM) == 0);
    FB_ASSERT(fb_sol_key_parse(&k, FB_SOL_SYSTEM_PROGRAM, strlen(FB_SOL_SYSTEM_PROGRAM)) == 0);
    for (int i = 0; i < 32; i++)
        FB_ASSERT(k.b[i] == 0);
    FB_ASSERT(fb_sol_key_parse(&k, "abc", 3) == -1);

    /* shortvec: canonical encodings only */
    static const uint8_t ok1[] = {0x7f}, ok2[] = {0x80, 0x01}, ok3[] = {0xff, 0xff, 0x03},
                         alias[] = {0x80, 0x00}, over[] = {0xff, 0xff, 0x04};
    uint16_t v;
    s_rd_t r = {ok1, ok1 + 1};
    FB_ASSERT(s_shortvec(&r, &v) == 0 && v == 0x7f);
    r = (s_rd_t){ok2, ok2 + 2};
    FB_ASSERT(s_shortvec(&r, &v) == 0 && v == 0x80);
    r = (s_rd_t){ok3, ok3 + 3};
    FB_ASSERT(s_shortvec(&r, &v) == 0 && v == 0xffff);
    r = (s_rd_t){alias, alias + 2};
    FB_ASSERT(s_shortvec(&r, &v) == -1);
    r = (s_rd_t){over, over + 3};
    FB_ASSERT(s_shortvec(&r, &v) == -1);

    /* a tiny legacy transaction: one signature, two keys, one instruction */
    uint8_t seed[32] = {1}, pk[32], sk[64];
    crypto_sign_seed_keypair(pk, sk, seed);
    uint8_t tx[300];
    size_t n = 0;
    tx[n++] = 1;
    memset(tx + n, 0, 64);
    n += 64;
    size_t msg = n;
    tx[n++] = 1; /* required signatures */
    tx[n++] = 0;
    tx[n++] = 1; /* one read-only unsigned: the program */
    tx[n++] = 2;
    memcpy(tx + n, pk, 32);
    n += 32;
    memset(tx + n, 0, 32); /* the system program */
    n += 32;
    memset(tx + n, 7, 32); /* blockhash */
    n += 32;
    tx[n++] = 1; /* one instruction */
    tx[n++] = 1; /* program index */
    tx[n++] = 1;
    tx[n++] = 0; /* account 0 */
    tx[n++] = 3;
    tx[n++] = 'a';
    tx[n++] = 'b';
    tx[n++] = 'c';
    crypto_sign_detached(tx + 1, NULL, tx + msg, n - msg, sk);
    fb_sol_tx_t t;
    const char *why;
    FB_ASSERT(fb_sol_tx_decode(&t, tx, n, &why) == 0);
    FB_ASSERT(t.version == -1 && t.nsigs == 1 && t.nkeys == 2 && t.nix == 1 && t.ix[0].data_len == 3);
    FB_ASSERT(fb_sol_sig_present(&t, 0) && fb_sol_sig_verify(&t, 0));
    FB_ASSERT(fb_sol_is_writable(&t, 0) && !fb_sol_is_writable(&t, 1));
    tx[n - 1] ^= 1; /* the message changed: the signature no longer verifies */
    FB_ASSERT(fb_sol_tx_decode(&t, tx, n, &why) == 0 && !fb_sol_sig_verify(&t, 0));
    for (size_t cut = 0; cut < n; cut++)
        FB_ASSERT(fb_sol_tx_decode(&t, tx, cut, &why) == -1);
    tx[n] = 0;
    FB_ASSERT(fb_sol_tx_decode(&t, tx, n + 1, &why) == -1 && strcmp(why, "trailing bytes") == 0);

    /* a public key is on the curve; a PDA is not */
    FB_ASSERT(fb_sol_on_curve(pk));
    fb_sol_key_t owner, mint, prog, ata;
    memcpy(owner.b, pk, 32);
    memset(mint.b, 9, 32);
    FB_ASSERT(fb_sol_key_parse(&prog, FB_SOL_TOKEN_PROGRAM, strlen(FB_SOL_TOKEN_PROGRAM)) == 0);
    FB_ASSERT(fb_sol_ata(&ata, &owner, &mint, &prog) == 0 && !fb_sol_on_curve(ata.b));
    return 0;
}
