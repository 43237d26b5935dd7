/* farebox-bench-verify - one-core speed of farebox's offline x402 checks for
 * bench/run verify, and of the raw library calls they are built on, over the
 * payloads bench/verify/payloads.mjs wrote:
 *
 *   farebox-bench-verify PAYLOADS SECONDS CASE...
 *
 * Cases: evm_raw (libsecp256k1 parse_compact + ecdsa_recover over the EIP-712
 * digests), evm_farebox (evm_exact_check on parsed payloads), evm_farebox_header
 * (the same from the base64 header value: decode, parse, check), svm_raw
 * (libsodium crypto_sign_verify_detached over the messages) and svm_farebox
 * (svm_exact_check on parsed payloads). Every case is first run once over
 * all payloads and must succeed on each (so no failing path is measured);
 * then the cases named take turns on this thread, 20 ms each, each cycling
 * through its payloads, until each has run SECONDS. Prints one JSON line per
 * case: {"case":..., "r":{calls, errors, seconds, calls_per_s, us_per_call}}.
 * Exits 1 with a message on stderr when the payloads are unusable. */
#include "evm_exact.h"
#include "fb_codec.h"
#include "fb_solana.h"
#include "fb_util.h"
#include "fb_x402.h"
#include "svm_exact.h"

#include <jansson.h>
#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MARGIN_S 6     /* validBefore must be at least now + this */
#define S_SLICE_US 20000 /* the cases take turns this long each */

static const svm_limits_t s_limits = {.max_price = 5000000, .max_fee = 110000}; /* the verifier's defaults */

/* The payloads and the baselines' raw material, all read before timing. */
typedef struct {
    json_t *doc; /* the payloads file; the parsed payloads point into it */
    int64_t now; /* Unix seconds at which every payload is valid */
    size_t nevm; /* EVM cases */
    size_t nsvm; /* Solana cases */
    /* EVM */
    fb_x402_payload_t *evm;  /* parsed payloads */
    const char **evm_header; /* base64 header values */
    size_t *evm_header_len;
    uint8_t (*digest)[32];   /* EIP-712 digests (viem's hashTypedData) */
    uint8_t (*evm_sig)[65];  /* r, s, v */
    int *recid;              /* v - 27 */
    fb_addr_t *signer;       /* the address each payload was signed by */
    secp256k1_context *secp; /* the raw baseline's context, made once */
    /* Solana */
    fb_x402_payload_t *svm; /* parsed payloads */
    fb_sol_key_t fee_payer; /* the facilitator's fee payer */
    uint8_t **msg;          /* signed message bytes */
    size_t *msg_len;
    uint8_t (*svm_sig)[64]; /* the payer's signature */
    uint8_t (*pubkey)[32];  /* the payer's key */
} s_bench_t;

/* One measured call on payload i: true when it succeeded. */
typedef bool (*s_call_fn)(s_bench_t *b, size_t i);

static void s_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* s_die - print "farebox-bench-verify: " and the message to stderr, exit 1. */
static void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "farebox-bench-verify: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static const char *s_field(json_t *obj, const char *key, size_t i)
{
    const char *s = json_string_value(json_object_get(obj, key));
    if (!s)
        s_die("payloads file: %s of case %zu is missing", key, i);
    return s;
}

static void s_hex(uint8_t *out, size_t outlen, json_t *obj, const char *key, size_t i)
{
    const char *s = s_field(obj, key, i);
    if (fb_hex_decode(out, outlen, s, strlen(s)) != 0)
        s_die("payloads file: %s of case %zu has the wrong length or is not hex", key, i);
}

static void s_parse(fb_x402_payload_t *out, json_t *c, size_t i)
{
    char err[256];
    if (fb_x402_parse_payload(json_object_get(c, "payload"), out, err, sizeof(err)) != 0)
        s_die("payloads file: %s (case %zu)", err, i);
    if (!out->has_accepted)
        s_die("payloads file: case %zu is not an x402 v2 payload with accepted", i);
}

/* s_load - read the payloads file. Returns the bench state (caller owns it);
 * exits on any unusable entry. */
static s_bench_t *s_load(const char *path)
{
    json_error_t jerr;
    s_bench_t *b = fb_calloc(1, sizeof(*b));
    b->doc = json_load_file(path, 0, &jerr);
    if (!b->doc)
        s_die("could not read %s: %s (line %d)", path, jerr.text, jerr.line);
    json_t *now = json_object_get(b->doc, "now"), *evm = json_object_get(b->doc, "evm"),
           *svm = json_object_get(b->doc, "svm");
    if (!json_is_integer(now) || !json_array_size(evm) || !json_array_size(svm))
        s_die("payloads file %s must hold now, evm and svm", path);
    b->now = json_integer_value(now);
    b->nevm = json_array_size(evm);
    b->nsvm = json_array_size(svm);

    b->evm = fb_calloc(b->nevm, sizeof(*b->evm));
    b->evm_header = fb_calloc(b->nevm, sizeof(*b->evm_header));
    b->evm_header_len = fb_calloc(b->nevm, sizeof(*b->evm_header_len));
    b->digest = fb_calloc(b->nevm, sizeof(*b->digest));
    b->evm_sig = fb_calloc(b->nevm, sizeof(*b->evm_sig));
    b->recid = fb_calloc(b->nevm, sizeof(*b->recid));
    b->signer = fb_calloc(b->nevm, sizeof(*b->signer));
    for (size_t i = 0; i < b->nevm; i++) {
        json_t *c = json_array_get(evm, i);
        s_parse(&b->evm[i], c, i);
        b->evm_header[i] = s_field(c, "header", i);
        b->evm_header_len[i] = strlen(b->evm_header[i]);
        s_hex(b->digest[i], 32, c, "digest", i);
        s_hex(b->evm_sig[i], 65, c, "signature", i);
        b->recid[i] = b->evm_sig[i][64] >= 27 ? b->evm_sig[i][64] - 27 : b->evm_sig[i][64];
        const char *a = s_field(c, "address", i);
        if (fb_addr_parse(&b->signer[i], a, strlen(a)) != 0)
            s_die("payloads file: address of case %zu is not an address", i);
    }
    b->secp = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    FB_ASSERT(b->secp);

    const char *fp = json_string_value(json_object_get(b->doc, "svm_fee_payer"));
    if (!fp || fb_sol_key_parse(&b->fee_payer, fp, strlen(fp)) != 0)
        s_die("payloads file: svm_fee_payer is missing or not a key");
    b->svm = fb_calloc(b->nsvm, sizeof(*b->svm));
    b->msg = fb_calloc(b->nsvm, sizeof(*b->msg));
    b->msg_len = fb_calloc(b->nsvm, sizeof(*b->msg_len));
    b->svm_sig = fb_calloc(b->nsvm, sizeof(*b->svm_sig));
    b->pubkey = fb_calloc(b->nsvm, sizeof(*b->pubkey));
    for (size_t i = 0; i < b->nsvm; i++) {
        json_t *c = json_array_get(svm, i);
        s_parse(&b->svm[i], c, i);
        b->msg_len[i] = strlen(s_field(c, "message", i)) / 2;
        b->msg[i] = fb_malloc(b->msg_len[i] + 1);
        s_hex(b->msg[i], b->msg_len[i], c, "message", i);
        s_hex(b->svm_sig[i], 64, c, "signature", i);
        s_hex(b->pubkey[i], 32, c, "public_key", i);
    }
    return b;
}

static void s_destroy(s_bench_t **self_p)
{
    s_bench_t *b = *self_p;
    if (!b)
        return;
    for (size_t i = 0; i < b->nsvm; i++)
        free(b->msg[i]);
    free(b->msg);
    free(b->msg_len);
    free(b->svm_sig);
    free(b->pubkey);
    free(b->svm);
    secp256k1_context_destroy(b->secp);
    free(b->evm);
    free(b->evm_header);
    free(b->evm_header_len);
    free(b->digest);
    free(b->evm_sig);
    free(b->recid);
    free(b->signer);
    json_decref(b->doc);
    free(b);
    *self_p = NULL;
}

/* --- the measured calls ---------------------------------------------------- */

static bool s_evm_raw(s_bench_t *b, size_t i)
{
    secp256k1_ecdsa_recoverable_signature rs;
    secp256k1_pubkey pk;
    return secp256k1_ecdsa_recoverable_signature_parse_compact(b->secp, &rs, b->evm_sig[i], b->recid[i]) ==
               1 &&
           secp256k1_ecdsa_recover(b->secp, &pk, &rs, b->digest[i]) == 1;
}

static bool s_evm_farebox(s_bench_t *b, size_t i)
{
    evm_check_t c;
    evm_exact_check(&b->evm[i], &b->evm[i].accepted, b->now, S_MARGIN_S, &c);
    return c.reason == NULL;
}

static bool s_evm_farebox_header(s_bench_t *b, size_t i)
{
    char err[256];
    json_t *j = fb_x402_decode_header(b->evm_header[i], b->evm_header_len[i], err, sizeof(err));
    if (!j)
        return false;
    fb_x402_payload_t p;
    bool ok = false;
    if (fb_x402_parse_payload(j, &p, err, sizeof(err)) == 0 && p.has_accepted) {
        evm_check_t c;
        evm_exact_check(&p, &p.accepted, b->now, S_MARGIN_S, &c);
        ok = c.reason == NULL;
    }
    json_decref(j);
    return ok;
}

static bool s_svm_raw(s_bench_t *b, size_t i)
{
    return crypto_sign_verify_detached(b->svm_sig[i], b->msg[i], b->msg_len[i], b->pubkey[i]) == 0;
}

static bool s_svm_farebox(s_bench_t *b, size_t i)
{
    svm_check_t c;
    svm_exact_check(&b->svm[i], &b->svm[i].accepted, &b->fee_payer, &s_limits, &c);
    bool ok = c.reason == NULL;
    svm_check_free(&c);
    return ok;
}

typedef struct {
    const char *name;
    s_call_fn call;
    bool evm; /* over the EVM payloads (else the Solana ones) */
} s_case_t;

static const s_case_t s_cases[] = {
    {"evm_raw", s_evm_raw, true},
    {"evm_farebox", s_evm_farebox, true},
    {"evm_farebox_header", s_evm_farebox_header, true},
    {"svm_raw", s_svm_raw, false},
    {"svm_farebox", s_svm_farebox, false},
};

/* s_agree - the baselines and farebox's checks work on the same bytes: the
 * digest farebox computes is the one the raw recovery uses and recovers to
 * the payload's signer; the message farebox verifies is the raw one. */
static void s_agree(s_bench_t *b)
{
    for (size_t i = 0; i < b->nevm; i++) {
        evm_check_t c;
        evm_exact_check(&b->evm[i], &b->evm[i].accepted, b->now, S_MARGIN_S, &c);
        if (c.reason)
            s_die("evm_exact_check refused payload %zu: %s (%s)", i, c.reason, c.message);
        if (memcmp(c.digest, b->digest[i], 32) != 0 || !fb_addr_eq(&c.signer, &b->signer[i]))
            s_die("evm payload %zu: farebox's digest or signer differs from viem's", i);
    }
    for (size_t i = 0; i < b->nsvm; i++) {
        svm_check_t c;
        svm_exact_check(&b->svm[i], &b->svm[i].accepted, &b->fee_payer, &s_limits, &c);
        if (c.reason)
            s_die("svm_exact_check refused payload %zu: %s (%s)", i, c.reason, c.message);
        if (c.tx.message_len != b->msg_len[i] || memcmp(c.tx.message, b->msg[i], b->msg_len[i]) != 0 ||
            memcmp(c.tx.keys[1].b, b->pubkey[i], 32) != 0)
            s_die("svm payload %zu: farebox's message or signer differs from @solana/kit's", i);
        svm_check_free(&c);
    }
}

/* A case being measured: where it is in its payloads and what it did. */
typedef struct {
    const s_case_t *k;
    size_t n;        /* payloads it cycles through */
    size_t next;     /* the next one */
    uint64_t calls;  /* calls made while timing */
    uint64_t errors; /* of which failed */
    int64_t us;      /* time spent in them */
} s_timer_t;

/* s_check_all - each of the case's payloads once; exits unless all succeed. */
static void s_check_all(s_bench_t *b, const s_timer_t *t)
{
    for (size_t i = 0; i < t->n; i++) {
        if (!t->k->call(b, i))
            s_die("%s fails on payload %zu: nothing to measure", t->k->name, i);
    }
}

/* s_slice - calls of one case, round-robin over its payloads, for slice_us. */
static void s_slice(s_bench_t *b, s_timer_t *t, int64_t slice_us)
{
    int64_t t0 = fb_mono_us(), end = t0 + slice_us, now = t0;
    while (now < end) {
        for (int burst = 0; burst < 16; burst++) {
            if (!t->k->call(b, t->next))
                t->errors++;
            if (++t->next == t->n)
                t->next = 0;
        }
        t->calls += 16;
        now = fb_mono_us();
    }
    t->us += now - t0;
}

/* s_report - the case's line on stdout. */
static void s_report(const s_timer_t *t)
{
    double s = (double)t->us / 1e6;
    printf("{\"case\":\"%s\",\"r\":{\"calls\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"calls_per_s\":%.1f,"
           "\"us_per_call\":%.3f}}\n",
           t->k->name, (unsigned long long)t->calls, (unsigned long long)t->errors, s, (double)t->calls / s,
           (double)t->us / (double)t->calls);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s PAYLOADS SECONDS CASE...\n  cases:", argv[0]);
        for (size_t k = 0; k < FB_ARRAY_SIZE(s_cases); k++)
            fprintf(stderr, " %s", s_cases[k].name);
        fprintf(stderr, "\n");
        return 2;
    }
    double seconds = atof(argv[2]);
    if (seconds <= 0) {
        fprintf(stderr, "farebox-bench-verify: SECONDS must be positive, not \"%s\"\n", argv[2]);
        return 2;
    }
    const s_case_t *run[16];
    int nrun = 0;
    for (int a = 3; a < argc; a++) {
        const s_case_t *k = NULL;
        for (size_t j = 0; j < FB_ARRAY_SIZE(s_cases); j++)
            if (strcmp(argv[a], s_cases[j].name) == 0)
                k = &s_cases[j];
        if (!k || nrun == (int)FB_ARRAY_SIZE(run)) {
            fprintf(stderr, "farebox-bench-verify: unknown case \"%s\"\n", argv[a]);
            return 2;
        }
        run[nrun++] = k;
    }
    FB_ASSERT(sodium_init() >= 0);
    s_bench_t *b = s_load(argv[1]);
    s_agree(b);
    s_timer_t timers[FB_ARRAY_SIZE(run)];
    for (int k = 0; k < nrun; k++) {
        timers[k] = (s_timer_t){.k = run[k], .n = run[k]->evm ? b->nevm : b->nsvm};
        s_check_all(b, &timers[k]);
    }
    /* the cases take turns in short slices, so that whatever else runs on
     * this machine meanwhile slows them all alike */
    for (int64_t done = 0; done < (int64_t)(seconds * 1e6); done += S_SLICE_US)
        for (int k = 0; k < nrun; k++)
            s_slice(b, &timers[k], S_SLICE_US);
    for (int k = 0; k < nrun; k++)
        s_report(&timers[k]);
    s_destroy(&b);
    return 0;
}
