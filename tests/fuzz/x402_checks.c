/* x402_checks - shared by the x402 fuzz drivers (see x402_checks.h). */
#include "x402_checks.h"
#include "evm_exact.h"
#include "fb_msgpack.h"
#include "fuzz.h"
#include "svm_exact.h"

#include <inttypes.h>
#include <string.h>

#define FUZZ_ACCEPTS_MAX 8     /* requirements of one PaymentRequired tried */
#define FUZZ_MAX_PRICE   50000 /* compute unit price cap, micro-lamports */
#define FUZZ_MAX_FEE     20000 /* lamports the fee payer pays, in all */

/* the fee payer of the Solana known-answer transactions (tests/vectors) */
static const char s_fee_payer_text[] = "8WwmAjk9cWEYRJkuweQaThCz6FMtELztsozE1bjsmuVh";

unsigned long fuzz_passes;

/* entries of a NULL-terminated list, the NULL included */
static size_t s_count(const char *const *list)
{
    size_t n = 0;
    while (list[n])
        n++;
    return n + 1;
}

void fuzz_x402_check(const fb_x402_payload_t *p, const fb_x402_requirements_t *r)
{
    if (r->net.family == FB_X402_EVM) {
        evm_check_t c;
        evm_exact_check(p, r, FUZZ_NOW, 6, &c);
        FUZZ_ASSERT(c.stage >= 0 && (size_t)c.stage < s_count(evm_exact_checks));
        FUZZ_ASSERT((evm_exact_checks[c.stage] == NULL) == (c.reason == NULL));
        if (!c.reason) {
            /* a good payment: signed by its payer, to the seller, at the price */
            FUZZ_ASSERT(c.parsed && c.recovered && fb_addr_eq(&c.signer, &c.auth.from));
            FUZZ_ASSERT(fb_addr_eq(&c.auth.to, &c.pay_to));
            fuzz_passes++;
        }
        return;
    }
    fb_sol_key_t fee_payer;
    FUZZ_ASSERT(fb_sol_key_parse(&fee_payer, s_fee_payer_text, strlen(s_fee_payer_text)) == 0);
    for (int with_fee_payer = 0; with_fee_payer < 2; with_fee_payer++) {
        svm_check_t c;
        const svm_limits_t limits = {.max_price = FUZZ_MAX_PRICE, .max_fee = FUZZ_MAX_FEE};
        svm_exact_check(p, r, with_fee_payer ? &fee_payer : NULL, &limits, &c);
        FUZZ_ASSERT(c.stage >= 0 && (size_t)c.stage < s_count(svm_exact_checks));
        FUZZ_ASSERT((svm_exact_checks[c.stage] == NULL) == (c.reason == NULL));
        if (!c.reason) {
            /* a good payment: decoded, exactly the amount asked, price capped */
            FUZZ_ASSERT(c.decoded && c.price <= FUZZ_MAX_PRICE && c.fee <= FUZZ_MAX_FEE);
            char amount[24];
            snprintf(amount, sizeof(amount), "%" PRIu64, c.amount);
            FUZZ_ASSERT(strcmp(amount, r->amount) == 0);
            /* farebox pays the fee when its key is given */
            FUZZ_ASSERT(!with_fee_payer || fb_sol_key_eq(&c.tx.keys[0], &fee_payer));
            fuzz_passes++;
        }
        svm_check_free(&c);
        if (!with_fee_payer && c.reason)
            break;
    }
}

/* The internal RPC carries these documents as msgpack: what goes in comes
 * back out the same (when it is shallow enough to be accepted at all). */
static void s_rpc_trip(json_t *doc)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (fb_mp_pack_json(&pk, doc) == 0) {
        msgpack_zone zone;
        msgpack_zone_init(&zone, 2048);
        msgpack_object o;
        if (fb_mp_unpack(sb.data, sb.size, &zone, &o) == 0) {
            char *text = fb_mp_to_json(&o);
            json_error_t jerr;
            json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
            FUZZ_ASSERT(back && json_equal(doc, back));
            json_decref(back);
            free(text);
        }
        msgpack_zone_destroy(&zone);
    }
    msgpack_sbuffer_destroy(&sb);
}

void fuzz_x402_document(json_t *doc)
{
    char err[256];
    fb_x402_payload_t p;
    bool have_payload = fb_x402_parse_payload(doc, &p, err, sizeof(err)) == 0;
    if (have_payload && p.has_accepted)
        fuzz_x402_check(&p, &p.accepted);

    /* a facilitator request */
    json_t *pp = json_object_get(doc, "paymentPayload"), *pr = json_object_get(doc, "paymentRequirements");
    fb_x402_payload_t fp;
    fb_x402_requirements_t fr;
    if (pp && pr && fb_x402_parse_payload(pp, &fp, err, sizeof(err)) == 0 &&
        fb_x402_parse_requirements(pr, fp.version, &fr, err, sizeof(err)) == 0)
        fuzz_x402_check(&fp, &fr);

    /* a PaymentRequired: each requirement, and the payload against it */
    json_t *accepts = json_object_get(doc, "accepts");
    json_t *ver = json_object_get(doc, "x402Version");
    int version = json_is_integer(ver) ? (int)json_integer_value(ver) : 2;
    for (size_t i = 0; i < json_array_size(accepts) && i < FUZZ_ACCEPTS_MAX; i++) {
        fb_x402_requirements_t r;
        if (fb_x402_parse_requirements(json_array_get(accepts, i), version, &r, err, sizeof(err)) != 0)
            continue;
        FUZZ_ASSERT(r.version == version && r.net.family != FB_X402_UNKNOWN);
        if (have_payload && p.version == version)
            fuzz_x402_check(&p, &r);
    }
    s_rpc_trip(doc);
}
