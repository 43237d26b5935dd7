/* farebox-inspect - decode an x402 header and show what farebox's verifier
 * thinks of it, offline.
 *
 *   farebox-inspect [--now UNIX_SECONDS] [--requirements JSON|@FILE] [--margin S]
 *                   [--max-price MICRO_LAMPORTS] [--max-fee LAMPORTS] [HEADER_VALUE]
 *
 * HEADER_VALUE (or stdin when absent) is a PAYMENT-SIGNATURE, X-PAYMENT,
 * PAYMENT-REQUIRED or PAYMENT-RESPONSE value; a leading "Name:" is ignored.
 * Prints one JSON object: kind, x402Version, scheme, network, payer, signer,
 * digest (EIP-712), valid, reason, message, the decoded document, each offline
 * check with its result (pass, fail, not_run) and the chain checks that were
 * not run. A payment is checked against its own "accepted" requirements (v2)
 * or --requirements (needed for v1). Exits 0 when valid, 1 when not (or
 * undecodable), 2 for bad usage. */
#include "evm_exact.h"
#include "fb_codec.h"
#include "fb_solana.h"
#include "fb_util.h"
#include "fb_x402.h"
#include "svm_exact.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int64_t now;
    int64_t margin;
    svm_limits_t limits;      /* the verifier's defaults unless given */
    const char *requirements; /* JSON text or @file */
    const char *value;
} s_opts_t;

static void s_usage(void)
{
    fprintf(stderr,
            "usage: farebox-inspect [--now UNIX_SECONDS] [--requirements JSON|@FILE] [--margin S]\n"
            "                       [--max-price MICRO_LAMPORTS] [--max-fee LAMPORTS] [HEADER_VALUE]\n"
            "reads the header value from stdin when it is not given\n");
    exit(2);
}

static int64_t s_num(const char *text, int64_t min, int64_t max)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || *end || end == text || v < min || v > max)
        s_usage();
    return v;
}

static char *s_read_all(FILE *f, size_t max)
{
    size_t cap = 4096, n = 0;
    char *buf = fb_malloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n > max) {
            free(buf);
            return NULL;
        }
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = fb_realloc(buf, cap);
        }
    }
    buf[n] = '\0';
    return buf;
}

/* The header value: surrounding blanks and a "Header-Name:" prefix removed. */
static char *s_trim(char *v)
{
    while (isspace((unsigned char)*v))
        v++;
    char *colon = strchr(v, ':');
    if (colon) {
        bool name = colon > v;
        for (char *c = v; c < colon; c++)
            name = name && (isalnum((unsigned char)*c) || *c == '-');
        if (name) {
            v = colon + 1;
            while (isspace((unsigned char)*v))
                v++;
        }
    }
    size_t n = strlen(v);
    while (n > 0 && isspace((unsigned char)v[n - 1]))
        v[--n] = '\0';
    return v;
}

static void s_checks(json_t *out, const char *const *names, int stage, const char *reason)
{
    json_t *list = json_array();
    for (int i = 0; names[i]; i++) {
        const char *result = i < stage ? "pass" : i == stage && reason ? "fail" : "not_run";
        json_t *c = json_pack("{ss ss}", "name", names[i], "result", result);
        if (i == stage && reason)
            json_object_set_new(c, "reason", json_string(reason));
        json_array_append_new(list, c);
    }
    json_object_set_new(out, "checks", list);
}

static void s_chain_checks(json_t *out, const char *const *names)
{
    json_t *list = json_array();
    for (int i = 0; names[i]; i++)
        json_array_append_new(list, json_pack("{ss ss}", "name", names[i], "result", "not_run"));
    json_object_set_new(out, "chain_checks", list);
}

static void s_verdict(json_t *out, const char *reason, const char *message)
{
    json_object_set_new(out, "valid", json_boolean(reason == NULL));
    json_object_set_new(out, "reason", reason ? json_string(reason) : json_null());
    json_object_set_new(out, "message", message && message[0] ? json_string(message) : json_null());
}

static void s_inspect_evm(json_t *out, const fb_x402_payload_t *p, const fb_x402_requirements_t *r,
                          const s_opts_t *o)
{
    static const char *const chain[] = {"not accepted before (ledger)", "authorizationState (eth_call)",
                                        "balanceOf (eth_call)",         "token has code",
                                        "transfer simulation",          NULL};
    evm_check_t c;
    evm_exact_check(p, r, o->now, o->margin, &c);
    char text[67] = "0x";
    json_object_set_new(out, "payer", json_string(p->from ? p->from : ""));
    if (c.recovered) {
        char s[43];
        fb_addr_checksum(s, &c.signer);
        json_object_set_new(out, "signer", json_string(s));
    } else {
        json_object_set_new(out, "signer", json_null());
    }
    if (c.digest_known) {
        fb_hex_encode(text + 2, c.digest, 32);
        json_object_set_new(out, "digest", json_string(text));
        fb_hex_encode(text + 2, c.domain_separator, 32);
        json_object_set_new(out, "domain_separator", json_string(text));
    } else {
        json_object_set_new(out, "digest", json_null());
    }
    s_verdict(out, c.reason, c.message);
    s_checks(out, evm_exact_checks, c.stage, c.reason);
    s_chain_checks(out, chain);
}

static void s_inspect_svm(json_t *out, const fb_x402_payload_t *p, const fb_x402_requirements_t *r,
                          const s_opts_t *o)
{
    static const char *const chain[] = {"not accepted before (ledger)",
                                        "blockhash still valid (isBlockhashValid)",
                                        "simulation (simulateTransaction)", NULL};
    svm_check_t c;
    svm_exact_check(p, r, NULL, &o->limits, &c);
    json_object_set_new(out, "payer", c.authority_text[0] ? json_string(c.authority_text) : json_null());
    json_object_set_new(out, "digest", json_null());
    json_t *signers = json_array();
    json_t *signer = json_null();
    if (c.wire) {
        fb_sol_tx_t tx;
        const char *why;
        if (fb_sol_tx_decode(&tx, c.wire, c.wire_len, &why) == 0) {
            for (int i = 0; i < tx.num_required_signatures && i < tx.nkeys; i++) {
                char k[48];
                fb_sol_key_format(k, &tx.keys[i]);
                bool present = fb_sol_sig_present(&tx, i);
                bool ok = present && fb_sol_sig_verify(&tx, i);
                json_array_append_new(signers,
                                      json_pack("{si ss ss sb so}", "index", i, "key", k, "role",
                                                i == 0 ? "fee payer" : "signer", "present", present,
                                                "verifies", present ? json_boolean(ok) : json_null()));
                if (i > 0 && ok && json_is_null(signer))
                    signer = json_string(k);
            }
            char bh[48];
            fb_sol_key_format(bh, &tx.blockhash);
            json_object_set_new(out, "blockhash", json_string(bh));
            json_object_set_new(out, "transaction_version",
                                tx.version < 0 ? json_string("legacy") : json_integer(0));
            json_t *ixs = json_array();
            for (int i = 0; i < tx.nix; i++) {
                char prog[48];
                fb_sol_key_format(prog, &tx.keys[tx.ix[i].program]);
                json_t *accts = json_array();
                for (int k = 0; k < tx.ix[i].naccounts; k++) {
                    char a[48];
                    if (tx.ix[i].accounts[k] < tx.nkeys) {
                        fb_sol_key_format(a, &tx.keys[tx.ix[i].accounts[k]]);
                        json_array_append_new(accts, json_string(a));
                    } else {
                        json_array_append_new(accts, json_sprintf("lookup #%d", tx.ix[i].accounts[k]));
                    }
                }
                json_array_append_new(ixs, json_pack("{ss so si}", "program", prog, "accounts", accts,
                                                     "data_bytes", (int)tx.ix[i].data_len));
            }
            json_object_set_new(out, "instructions", ixs);
        }
    }
    if (c.stage > 8) {
        char mint[48], dest[48], prog[48];
        fb_sol_key_format(mint, &c.mint);
        fb_sol_key_format(dest, &c.destination);
        fb_sol_key_format(prog, &c.token_program);
        json_object_set_new(out, "transfer",
                            json_pack("{ss ss ss ss sI}", "authority", c.authority_text, "mint", mint,
                                      "destination", dest, "token_program", prog, "amount",
                                      (json_int_t)c.amount));
        json_object_set_new(out, "compute_unit_price", json_integer((json_int_t)c.price));
    }
    json_object_set_new(out, "signer", signer);
    json_object_set_new(out, "signers", signers);
    s_verdict(out, c.reason, c.message);
    s_checks(out, svm_exact_checks, c.stage, c.reason);
    s_chain_checks(out, chain);
    svm_check_free(&c);
}

/* A payment: parsed, checked against its requirements. Returns the exit code. */
static int s_payment(json_t *out, json_t *doc, json_t *req_doc, const s_opts_t *o)
{
    fb_x402_payload_t p;
    char err[256];
    json_object_set_new(out, "kind", json_string("payment"));
    json_object_set_new(out, "x402Version", json_incref(json_object_get(doc, "x402Version")));
    if (fb_x402_parse_payload(doc, &p, err, sizeof(err)) != 0) {
        s_verdict(out, "invalid_payload", err);
        return 1;
    }
    json_object_set_new(out, "header", json_string(p.version == 1 ? "X-PAYMENT" : "PAYMENT-SIGNATURE"));
    json_object_set_new(out, "scheme", json_string(p.scheme));
    json_object_set_new(out, "network", json_string(p.network));
    fb_x402_requirements_t r;
    if (req_doc) {
        if (fb_x402_parse_requirements(req_doc, p.version, &r, err, sizeof(err)) != 0) {
            s_verdict(out, "invalid_payment_requirements", err);
            return 1;
        }
        json_object_set_new(out, "requirements", json_string("--requirements"));
    } else if (p.has_accepted) {
        r = p.accepted;
        json_object_set_new(out, "requirements", json_string("accepted"));
    } else {
        json_object_set_new(out, "requirements", json_null());
        json_object_set_new(out, "valid", json_null());
        json_object_set_new(out, "reason", json_null());
        json_object_set_new(out, "message",
                            json_string("an x402 v1 payment carries no requirements: give --requirements "
                                        "to run the checks"));
        return 1;
    }
    fb_x402_network_t n;
    if (fb_x402_network(p.network, &n) != 0) {
        s_verdict(out, "invalid_network", "the payment's network is not a known EVM or Solana network");
        return 1;
    }
    if (n.family == FB_X402_EVM)
        s_inspect_evm(out, &p, &r, o);
    else
        s_inspect_svm(out, &p, &r, o);
    return json_is_true(json_object_get(out, "valid")) ? 0 : 1;
}

/* A 402 answer: every requirement it accepts, parsed. */
static int s_required(json_t *out, json_t *doc)
{
    json_object_set_new(out, "kind", json_string("payment_required"));
    json_object_set_new(out, "header", json_string("PAYMENT-REQUIRED"));
    json_object_set_new(out, "x402Version", json_incref(json_object_get(doc, "x402Version")));
    json_t *accepts = json_object_get(doc, "accepts"), *list = json_array();
    int version = (int)json_integer_value(json_object_get(doc, "x402Version"));
    const char *reason = NULL;
    char msg[300] = "";
    size_t i;
    json_t *a;
    json_array_foreach(accepts, i, a)
    {
        fb_x402_requirements_t r;
        char err[256];
        int rc = fb_x402_parse_requirements(a, version, &r, err, sizeof(err));
        json_array_append_new(list,
                              json_pack("{sI ss* ss* sb ss*}", "index", (json_int_t)i, "scheme",
                                        rc == 0 ? r.scheme : NULL, "network", rc == 0 ? r.network : NULL,
                                        "valid", rc == 0, "error", rc == 0 ? NULL : err));
        if (rc != 0 && !reason) {
            reason = "invalid_payment_requirements";
            snprintf(msg, sizeof(msg), "accepts[%zu]: %s", i, err);
        }
    }
    json_object_set_new(out, "accepts", list);
    s_verdict(out, reason, msg);
    return reason ? 1 : 0;
}

int main(int argc, char **argv)
{
    FB_ASSERT(sodium_init() >= 0);
    s_opts_t o = {
        .now = (int64_t)time(NULL), .margin = 6, .limits = {.max_price = 5000000, .max_fee = 110000}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "--now") == 0 && has)
            o.now = s_num(argv[++i], 0, INT64_MAX / 2);
        else if (strcmp(a, "--margin") == 0 && has)
            o.margin = s_num(argv[++i], 0, 86400);
        else if (strcmp(a, "--max-price") == 0 && has)
            o.limits.max_price = (uint64_t)s_num(argv[++i], 0, INT64_MAX);
        else if (strcmp(a, "--max-fee") == 0 && has)
            o.limits.max_fee = (uint64_t)s_num(argv[++i], 0, INT64_MAX);
        else if (strcmp(a, "--requirements") == 0 && has)
            o.requirements = argv[++i];
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || a[0] == '-' || o.value)
            s_usage();
        else
            o.value = a;
    }
    json_t *req_doc = NULL;
    if (o.requirements) {
        json_error_t jerr;
        req_doc = o.requirements[0] == '@' ? json_load_file(o.requirements + 1, 0, &jerr)
                                           : json_loads(o.requirements, 0, &jerr);
        if (!json_is_object(req_doc)) {
            fprintf(stderr, "farebox-inspect: --requirements is not a JSON object: %s\n", jerr.text);
            return 2;
        }
    }
    char *input = o.value ? fb_strdup(o.value) : s_read_all(stdin, 4 * FB_X402_HEADER_MAX);
    if (!input) {
        fprintf(stderr, "farebox-inspect: the input is larger than %d bytes\n", 4 * FB_X402_HEADER_MAX);
        json_decref(req_doc);
        return 2;
    }
    json_t *out = json_pack("{sI}", "now", (json_int_t)o.now);
    char *value = s_trim(input), err[256];
    json_t *doc = fb_x402_decode_header(value, strlen(value), err, sizeof(err));
    int code;
    if (!doc) {
        json_object_set_new(out, "kind", json_null());
        s_verdict(out, "invalid_payload", err);
        code = 1;
    } else {
        if (json_object_get(doc, "accepts"))
            code = s_required(out, doc);
        else if (json_object_get(doc, "success") && !json_object_get(doc, "payload")) {
            json_object_set_new(out, "kind", json_string("payment_response"));
            bool ok = json_is_true(json_object_get(doc, "success"));
            s_verdict(out, ok ? NULL : "settlement_failed",
                      json_string_value(json_object_get(doc, "errorReason")));
            code = ok ? 0 : 1;
        } else {
            code = s_payment(out, doc, req_doc, &o);
        }
        json_object_set_new(out, "decoded", doc);
    }
    char *text = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    puts(text);
    free(text);
    json_decref(out);
    json_decref(req_doc);
    free(input);
    return code;
}
