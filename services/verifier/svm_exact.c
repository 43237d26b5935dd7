/* svm_exact - offline verification of Solana x402 payments. */
#include "svm_exact.h"
#include "fb_codec.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_fail(svm_check_t *c, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_fail(svm_check_t *c, const char *reason, const char *fmt, ...)
{
    c->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
}

/* --- the requirements' keys, parsed once ------------------------------------------------
 * A verifier sees the same few requirements (one per price) over and over:
 * their base58 keys and payTo's associated token account (a PDA search, one
 * SHA-256 and point decompression per bump tried) are kept per thread. */

#define REQ_CACHE 8
#define KEY_TEXT  48

typedef struct {
    bool used;
    char fee_payer_text[KEY_TEXT], asset_text[KEY_TEXT], pay_to_text[KEY_TEXT];
    bool fee_payer_ok, asset_ok, pay_to_ok;
    fb_sol_key_t fee_payer, asset, pay_to;
    bool ata_known, ata_ok;
    fb_sol_key_t ata_program, ata; /* payTo's token account for the asset, under ata_program */
} s_req_t;

static _Thread_local s_req_t s_reqs[REQ_CACHE];
static _Thread_local unsigned s_req_next;

static bool s_fits(const char *t)
{
    return t && strlen(t) < KEY_TEXT;
}

static bool s_parse_key(fb_sol_key_t *k, const char *t)
{
    return t && fb_sol_key_parse(k, t, strlen(t)) == 0;
}

/* The cache entry of these requirements, filled on first sight. */
static s_req_t *s_requirements(const fb_x402_requirements_t *r, s_req_t *scratch)
{
    const char *fp = r->fee_payer ? r->fee_payer : "";
    bool cacheable = s_fits(fp) && s_fits(r->asset) && s_fits(r->pay_to);
    if (cacheable) {
        for (int i = 0; i < REQ_CACHE; i++) {
            s_req_t *e = &s_reqs[i];
            if (e->used && strcmp(e->fee_payer_text, fp) == 0 && strcmp(e->asset_text, r->asset) == 0 &&
                strcmp(e->pay_to_text, r->pay_to) == 0)
                return e;
        }
    }
    s_req_t *e = cacheable ? &s_reqs[s_req_next++ % REQ_CACHE] : scratch;
    memset(e, 0, sizeof(*e));
    e->fee_payer_ok = r->fee_payer && s_parse_key(&e->fee_payer, r->fee_payer);
    e->asset_ok = s_parse_key(&e->asset, r->asset);
    e->pay_to_ok = s_parse_key(&e->pay_to, r->pay_to);
    if (cacheable) {
        snprintf(e->fee_payer_text, KEY_TEXT, "%s", fp);
        snprintf(e->asset_text, KEY_TEXT, "%s", r->asset);
        snprintf(e->pay_to_text, KEY_TEXT, "%s", r->pay_to);
        e->used = true;
    }
    return e;
}

/* payTo's associated token account for the asset under program. */
static bool s_ata(s_req_t *e, const fb_sol_key_t *program, fb_sol_key_t *out)
{
    if (!e->ata_known || !fb_sol_key_eq(&e->ata_program, program)) {
        e->ata_program = *program;
        e->ata_ok = fb_sol_ata(&e->ata, &e->pay_to, &e->asset, program) == 0;
        e->ata_known = true;
    }
    *out = e->ata;
    return e->ata_ok;
}

static uint64_t s_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int s_u64(const char *text, uint64_t *out)
{
    uint64_t v = 0;
    if (!*text || strlen(text) > 20)
        return -1;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

const char *const svm_exact_checks[] = {"scheme",
                                        "network",
                                        "fee_payer",
                                        "transaction",
                                        "transaction_fee_payer",
                                        "signatures",
                                        "instruction_layout",
                                        "compute_price",
                                        "transfer",
                                        "other_instructions",
                                        "fee_payer_isolated",
                                        NULL};

void svm_check_free(svm_check_t *c)
{
    free(c->wire);
    c->wire = NULL;
}

void svm_exact_check(const fb_x402_payload_t *p, const fb_x402_requirements_t *r,
                     const fb_sol_key_t *fee_payer, const svm_limits_t *limits, svm_check_t *out)
{
    memset(out, 0, sizeof(*out));
    bool v1 = p->version == 1;
    out->stage = 0;
    if (strcmp(p->scheme, "exact") != 0 || strcmp(r->scheme, "exact") != 0) {
        s_fail(out, v1 ? "unsupported_scheme" : "invalid_exact_svm_unsupported_scheme",
               "scheme must be \"exact\"");
        return;
    }
    out->stage = 1;
    if (strcmp(p->network, r->network) != 0) {
        s_fail(out, v1 ? "network_mismatch" : "invalid_exact_svm_network_mismatch",
               "payment network %s, requirements %s", p->network, r->network);
        return;
    }
    out->stage = 2;
    s_req_t scratch, *req = s_requirements(r, &scratch);
    const fb_sol_key_t fp = req->fee_payer;
    if (!req->fee_payer_ok) {
        s_fail(out, "invalid_exact_svm_payload_missing_fee_payer", "requirements.extra.feePayer is required");
        return;
    }
    if (fee_payer && !fb_sol_key_eq(&fp, fee_payer)) {
        s_fail(out,
               v1 ? "fee_payer_not_managed_by_facilitator"
                  : "invalid_exact_svm_fee_payer_not_managed_by_facilitator",
               "requirements.extra.feePayer is not this facilitator's fee payer");
        return;
    }
    /* the transaction */
    out->stage = 3;
    out->wire = fb_malloc(FB_SOL_TX_MAX);
    int got = fb_base64_decode(out->wire, FB_SOL_TX_MAX, p->transaction, strlen(p->transaction));
    if (got < 0) {
        s_fail(out, "invalid_exact_svm_payload_transaction_could_not_be_decoded",
               "transaction is not base64 of at most %d bytes", FB_SOL_TX_MAX);
        return;
    }
    size_t n = (size_t)got;
    out->wire_len = n;
    const char *why = NULL;
    fb_sol_tx_t *tx = &out->tx;
    if (fb_sol_tx_decode(tx, out->wire, n, &why) != 0) {
        s_fail(out, "invalid_exact_svm_payload_transaction_could_not_be_decoded", "transaction: %s", why);
        return;
    }
    if (tx->nlookups > 0) {
        s_fail(out, "invalid_exact_svm_payload_transaction_could_not_be_decoded",
               "address lookup tables are not supported: every account must be in the message");
        return;
    }
    out->decoded = true;
    out->stage = 4;
    if (!fb_sol_key_eq(&tx->keys[0], &fp)) {
        s_fail(out, "invalid_exact_svm_fee_payer_mismatch",
               "the transaction's fee payer is not requirements.extra.feePayer");
        return;
    }
    out->stage = 5;
    for (int i = 1; i < tx->num_required_signatures; i++) {
        if (!fb_sol_sig_present(tx, i) || !fb_sol_sig_verify(tx, i)) {
            s_fail(out, "invalid_exact_svm_payload_signature_invalid",
                   "signature %d is missing or does not verify", i);
            return;
        }
    }
    out->stage = 6;
    int max_ix = v1 ? 6 : 7;
    if (tx->nix < 3 || tx->nix > max_ix) {
        s_fail(out, "invalid_exact_svm_payload_transaction_instructions_length",
               "%d instructions, allowed 3..%d", tx->nix, max_ix);
        return;
    }
    const fb_sol_ix_t *ix0 = &tx->ix[0], *ix1 = &tx->ix[1], *ix2 = &tx->ix[2];
    if (!fb_sol_key_eq(&tx->keys[ix0->program], &fb_sol_compute_budget_program) || ix0->data_len < 5 ||
        ix0->data[0] != 2) {
        s_fail(out, "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction",
               "instruction 0 must set the compute unit limit");
        return;
    }
    if (!fb_sol_key_eq(&tx->keys[ix1->program], &fb_sol_compute_budget_program) || ix1->data_len < 9 ||
        ix1->data[0] != 3) {
        s_fail(out, "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction",
               "instruction 1 must set the compute unit price");
        return;
    }
    out->stage = 7;
    out->price = s_le64(ix1->data + 1);
    if (out->price > limits->max_price) {
        s_fail(out, "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
               "compute unit price %llu is above %llu micro-lamports", (unsigned long long)out->price,
               (unsigned long long)limits->max_price);
        return;
    }
    out->units = (uint32_t)ix0->data[1] | (uint32_t)ix0->data[2] << 8 | (uint32_t)ix0->data[3] << 16 |
                 (uint32_t)ix0->data[4] << 24;
    /* at most 2^32 units x 10^9 micro-lamports: no overflow in 128 bits, nor in 64 once divided */
    unsigned __int128 priority = ((unsigned __int128)out->units * out->price + 999999) / 1000000;
    out->fee = (uint64_t)priority + (uint64_t)tx->num_required_signatures * SVM_SIGNATURE_LAMPORTS;
    if (priority > limits->max_fee || out->fee > limits->max_fee) {
        s_fail(out, "invalid_exact_svm_payload_transaction_fee_too_high",
               "the transaction costs its fee payer %llu lamports (%d signatures, %u compute units at %llu "
               "micro-lamports), above %llu",
               (unsigned long long)out->fee, tx->num_required_signatures, out->units,
               (unsigned long long)out->price, (unsigned long long)limits->max_fee);
        return;
    }
    out->stage = 8;
    out->token_program = tx->keys[ix2->program];
    bool token = fb_sol_key_eq(&out->token_program, &fb_sol_token_program) ||
                 fb_sol_key_eq(&out->token_program, &fb_sol_token_2022_program);
    if (!token || ix2->naccounts < 4 || ix2->data_len < 10 || ix2->data[0] != 12) {
        s_fail(out, "invalid_exact_svm_payload_no_transfer_instruction",
               "instruction 2 must be a TransferChecked");
        return;
    }
    /* accounts: source, mint, destination, authority (all in the message: no lookups) */
    for (int k = 0; k < 4; k++) {
        if (ix2->accounts[k] >= tx->nkeys) {
            s_fail(out, "invalid_exact_svm_payload_no_transfer_instruction", "transfer account out of range");
            return;
        }
    }
    out->mint = tx->keys[ix2->accounts[1]];
    out->destination = tx->keys[ix2->accounts[2]];
    out->authority = tx->keys[ix2->accounts[3]];
    fb_sol_key_format(out->authority_text, &out->authority);
    out->amount = s_le64(ix2->data + 1);
    if (fb_sol_key_eq(&out->authority, &fp)) {
        s_fail(out, "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
               "the fee payer may not be the transfer's authority");
        return;
    }
    fb_sol_key_t ata;
    if (!req->asset_ok || !fb_sol_key_eq(&out->mint, &req->asset)) {
        s_fail(out, "invalid_exact_svm_payload_mint_mismatch",
               "the transfer's mint is not requirements.asset");
        return;
    }
    if (!req->pay_to_ok || !s_ata(req, &out->token_program, &ata) ||
        !fb_sol_key_eq(&out->destination, &ata)) {
        s_fail(out, "invalid_exact_svm_payload_recipient_mismatch",
               "the destination is not payTo's associated token account for the mint");
        return;
    }
    /* the token program takes a transfer to its own source as done, moving nothing: a delegate of
     * payTo's account would pay with payTo's own money */
    if (fb_sol_key_eq(&tx->keys[ix2->accounts[0]], &out->destination)) {
        s_fail(out, "invalid_exact_svm_payload_source_is_destination",
               "the transfer's source is payTo's own token account");
        return;
    }
    uint64_t want;
    if (s_u64(r->amount, &want) != 0 || out->amount != want) {
        s_fail(out, "invalid_exact_svm_payload_amount_mismatch", "transfer of %llu, required %s",
               (unsigned long long)out->amount, r->amount);
        return;
    }
    static const char *extra_reason[] = {"invalid_exact_svm_payload_unknown_fourth_instruction",
                                         "invalid_exact_svm_payload_unknown_fifth_instruction",
                                         "invalid_exact_svm_payload_unknown_sixth_instruction",
                                         "invalid_exact_svm_payload_unknown_seventh_instruction"};
    out->stage = 9;
    int memos = 0, memo_ix = -1;
    for (int i = 3; i < tx->nix; i++) {
        const fb_sol_key_t *prog = &tx->keys[tx->ix[i].program];
        bool memo = fb_sol_key_eq(prog, &fb_sol_memo_program);
        if (!memo && !fb_sol_key_eq(prog, &fb_sol_lighthouse_program)) {
            s_fail(out, extra_reason[i - 3], "instruction %d may only be a Memo or Lighthouse instruction",
                   i);
            return;
        }
        if (memo) {
            memos++;
            memo_ix = i;
        }
    }
    if (r->memo && r->memo[0]) {
        if (memos != 1) {
            s_fail(out, "invalid_exact_svm_payload_memo_count",
                   "exactly one Memo instruction is required, found %d", memos);
            return;
        }
        const fb_sol_ix_t *m = &tx->ix[memo_ix];
        if (m->data_len != strlen(r->memo) || memcmp(m->data, r->memo, m->data_len) != 0) {
            s_fail(out, "invalid_exact_svm_payload_memo_mismatch", "the memo is not requirements.extra.memo");
            return;
        }
    }
    /* farebox is stricter than the reference: the fee payer pays fees and
     * nothing else, so no instruction may name it */
    out->stage = 10;
    for (int i = 0; i < tx->nix; i++) {
        for (int k = 0; k < tx->ix[i].naccounts; k++) {
            if (tx->ix[i].accounts[k] == 0) {
                s_fail(out, "invalid_exact_svm_fee_payer_not_isolated",
                       "the fee payer appears in the accounts of instruction %d", i);
                return;
            }
        }
    }
    out->stage = 11;
}

int svm_exact_test(bool verbose)
{
    FB_UNUSED(verbose);
    /* the requirement of a payload's own check: an undecodable transaction */
    json_t *j = json_pack("{si s{ss ss ss ss ss si s{ss}} s{ss}}", "x402Version", 2, "accepted", "scheme",
                          "exact", "network", "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "amount", "10000",
                          "asset", "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU", "payTo",
                          "3JSLa22ucS3v7upZZVP6o6gWgfFzeQSkA9QYUuenjM4a", "maxTimeoutSeconds", 60, "extra",
                          "feePayer", "8WwmAjk9cWEYRJkuweQaThCz6FMtELztsozE1bjsmuVh", "payload",
                          "transaction", "AQID");
    fb_x402_payload_t p;
    char err[256];
    FB_ASSERT(fb_x402_parse_payload(j, &p, err, sizeof(err)) == 0);
    svm_check_t c;
    const svm_limits_t limits = {.max_price = 5000000, .max_fee = 110000};
    svm_exact_check(&p, &p.accepted, NULL, &limits, &c);
    FB_ASSERT(c.reason &&
              strcmp(c.reason, "invalid_exact_svm_payload_transaction_could_not_be_decoded") == 0);
    svm_check_free(&c);
    /* no fee payer in the requirements */
    json_object_del(json_object_get(json_object_get(j, "accepted"), "extra"), "feePayer");
    FB_ASSERT(fb_x402_parse_payload(j, &p, err, sizeof(err)) == 0);
    svm_exact_check(&p, &p.accepted, NULL, &limits, &c);
    FB_ASSERT(c.reason && strcmp(c.reason, "invalid_exact_svm_payload_missing_fee_payer") == 0);
    svm_check_free(&c);
    json_decref(j);
    return 0;
}
