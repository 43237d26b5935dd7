/* fuzz_solana_tx - the input is a Solana wire transaction (the bytes inside
 * an x402 SVM payload's base64). Decoded as the verifier decodes it, with
 * what a decoded transaction promises checked; then wrapped in an x402 v2
 * payload for the known-answer mint and recipient (tests/vectors) and put
 * through every offline check of the SVM exact scheme. */
#include "fb_solana.h"
#include "fb_x402.h"
#include "fuzz.h"
#include "x402_checks.h"

#include <sodium.h>
#include <string.h>

/* What fb_sol_tx_decode promises about a transaction it accepts. */
static void s_decoded_sane(const fb_sol_tx_t *tx, const uint8_t *data, size_t size)
{
    FUZZ_ASSERT(size <= FB_SOL_TX_MAX);
    FUZZ_ASSERT(tx->version == -1 || tx->version == 0);
    FUZZ_ASSERT(tx->nsigs >= 1 && tx->nsigs == tx->num_required_signatures);
    FUZZ_ASSERT(tx->nkeys >= tx->num_required_signatures && tx->nkeys <= FB_SOL_KEYS_MAX);
    FUZZ_ASSERT(tx->num_readonly_signed < tx->num_required_signatures);
    FUZZ_ASSERT(tx->sigs > data && tx->sigs + 64 * (size_t)tx->nsigs == tx->message);
    FUZZ_ASSERT(tx->message + tx->message_len == data + size);
    FUZZ_ASSERT(tx->nix <= FB_SOL_IX_MAX && tx->nlookups <= FB_SOL_LOOKUPS_MAX);
    FUZZ_ASSERT(tx->version == 0 || tx->nlookups == 0);
    unsigned total = tx->nkeys;
    for (int i = 0; i < tx->nlookups; i++)
        total += (unsigned)tx->lookups[i].nwritable + tx->lookups[i].nreadonly;
    for (int i = 0; i < tx->nix; i++) {
        const fb_sol_ix_t *ix = &tx->ix[i];
        FUZZ_ASSERT(ix->program < tx->nkeys && ix->naccounts <= FB_SOL_IX_ACCOUNTS);
        for (int k = 0; k < ix->naccounts; k++)
            FUZZ_ASSERT(ix->accounts[k] < total);
        FUZZ_ASSERT(ix->data_len == 0 || (ix->data >= tx->message && ix->data + ix->data_len <= data + size));
    }
    /* the fee payer (key 0) signs and is writable */
    FUZZ_ASSERT(fb_sol_is_writable(tx, 0));
    for (int i = 0; i < tx->nkeys; i++)
        (void)fb_sol_is_writable(tx, i);
    for (int i = 0; i < tx->nsigs; i++) {
        bool ok = fb_sol_sig_verify(tx, i);
        FUZZ_ASSERT(!ok || fb_sol_sig_present(tx, i));
        /* the same answer as libsodium on the same bytes */
        FUZZ_ASSERT(ok == (crypto_sign_verify_detached(tx->sigs + 64 * i, tx->message, tx->message_len,
                                                       tx->keys[i].b) == 0));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fb_sol_tx_t tx;
    const char *why;
    if (fb_sol_tx_decode(&tx, data, size, &why) == 0)
        s_decoded_sane(&tx, data, size);
    else
        FUZZ_ASSERT(why && why[0]);
    if (size > FB_SOL_TX_MAX + 16)
        return 0;

    /* through the scheme, as the payload of a v2 payment */
    char b64[sodium_base64_ENCODED_LEN(FB_SOL_TX_MAX + 16, sodium_base64_VARIANT_ORIGINAL)];
    sodium_bin2base64(b64, sizeof(b64), data, size, sodium_base64_VARIANT_ORIGINAL);
    json_t *doc =
        json_pack("{s:i, s:{s:s, s:s, s:s, s:s, s:s, s:i, s:{s:s}}, s:{s:s}}", "x402Version", 2, "accepted",
                  "scheme", "exact", "network", "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "amount", "10000",
                  "asset", "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", "payTo",
                  "3JSLa22ucS3v7upZZVP6o6gWgfFzeQSkA9QYUuenjM4a", "maxTimeoutSeconds", 60, "extra",
                  "feePayer", "8WwmAjk9cWEYRJkuweQaThCz6FMtELztsozE1bjsmuVh", "payload", "transaction", b64);
    FUZZ_ASSERT(doc);
    fb_x402_payload_t p;
    char err[256];
    if (fb_x402_parse_payload(doc, &p, err, sizeof(err)) == 0) {
        FUZZ_ASSERT(p.has_accepted);
        fuzz_x402_check(&p, &p.accepted);
    } else {
        FUZZ_ASSERT(size == 0); /* only an empty transaction is not a payload */
    }
    json_decref(doc);
    return 0;
}
