/* evm_exact - offline verification of EIP-3009 x402 payments. */
#include "evm_exact.h"
#include "fb_codec.h"
#include "fb_secp.h"
#include "fb_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void s_fail(evm_check_t *c, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_fail(evm_check_t *c, const char *reason, const char *fmt, ...)
{
    c->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->message, sizeof(c->message), fmt, ap);
    va_end(ap);
}

static int s_u256(fb_u256_t *out, const char *text)
{
    return fb_u256_from_dec(out, text, strlen(text));
}

const char *const evm_exact_checks[] = {"scheme",        "eip712_domain", "network",
                                        "authorization", "signature",     "recipient",
                                        "time_window",   "amount",        NULL};

/* --- the requirements, parsed once -----------------------------------------------------
 * A verifier sees the same few requirements (one per price) over and over:
 * their addresses (EIP-55 checks cost a Keccak each) and the token's EIP-712
 * domain separator (five) are kept per thread, keyed by the texts they come
 * from. */

#define REQ_CACHE   8
#define REQ_KEY_MAX 320

typedef struct {
    size_t key_len; /* 0: unused */
    char key[REQ_KEY_MAX];
    bool asset_ok, pay_to_ok;
    fb_addr_t asset, pay_to;
    bool network_ok;
    uint64_t chain_id;
    uint8_t domain_separator[32];
} s_req_t;

static _Thread_local s_req_t s_reqs[REQ_CACHE];
static _Thread_local unsigned s_req_next;

static s_req_t *s_requirements(const fb_x402_requirements_t *r, s_req_t *scratch)
{
    char key[REQ_KEY_MAX];
    int n = snprintf(key, sizeof(key), "%s%c%s%c%s%c%s%c%s", r->asset, 0, r->pay_to, 0, r->extra_name, 0,
                     r->extra_version, 0, r->network);
    bool cacheable = n > 0 && (size_t)n < sizeof(key);
    if (cacheable) {
        for (int i = 0; i < REQ_CACHE; i++) {
            if (s_reqs[i].key_len == (size_t)n && memcmp(s_reqs[i].key, key, (size_t)n) == 0)
                return &s_reqs[i];
        }
    }
    s_req_t *e = cacheable ? &s_reqs[s_req_next++ % REQ_CACHE] : scratch;
    memset(e, 0, sizeof(*e));
    e->asset_ok = fb_addr_parse(&e->asset, r->asset, strlen(r->asset)) == 0;
    e->pay_to_ok = fb_addr_parse(&e->pay_to, r->pay_to, strlen(r->pay_to)) == 0;
    fb_x402_network_t net;
    e->network_ok = fb_x402_network(r->network, &net) == 0 && net.family == FB_X402_EVM;
    if (e->network_ok && e->asset_ok) {
        e->chain_id = net.chain_id;
        fb_eip712_domain_t d = {.name = r->extra_name,
                                .name_len = strlen(r->extra_name),
                                .version = r->extra_version,
                                .version_len = strlen(r->extra_version),
                                .chain_id = net.chain_id,
                                .verifying_contract = e->asset};
        fb_eip712_domain_separator(e->domain_separator, &d);
    }
    if (cacheable) {
        memcpy(e->key, key, (size_t)n);
        e->key_len = (size_t)n;
    }
    return e;
}

void evm_exact_check(const fb_x402_payload_t *p, const fb_x402_requirements_t *r, int64_t now,
                     int64_t margin_s, evm_check_t *out)
{
    memset(out, 0, sizeof(*out));
    /* 1. scheme, on both sides */
    out->stage = 0;
    if (strcmp(p->scheme, "exact") != 0 || strcmp(r->scheme, "exact") != 0) {
        s_fail(out, "invalid_exact_evm_scheme", "scheme must be \"exact\" (payment: %s, requirements: %s)",
               p->scheme, r->scheme);
        return;
    }
    /* 2. the token's EIP-712 domain */
    out->stage = 1;
    if (!r->extra_name || !r->extra_name[0] || !r->extra_version || !r->extra_version[0]) {
        s_fail(out, "invalid_exact_evm_missing_eip712_domain",
               "requirements.extra.name and extra.version are required");
        return;
    }
    s_req_t scratch, *req = s_requirements(r, &scratch);
    if (!req->asset_ok) {
        s_fail(out, "invalid_payment_requirements", "requirements.asset is not an EVM address");
        return;
    }
    if (!req->pay_to_ok) {
        s_fail(out, "invalid_payment_requirements", "requirements.payTo is not an EVM address");
        return;
    }
    out->asset = req->asset;
    out->pay_to = req->pay_to;
    /* 3. network: the payment's equals the requirements' (and is EVM) */
    out->stage = 2;
    if (strcmp(p->network, r->network) != 0 || !req->network_ok) {
        s_fail(out, "invalid_exact_evm_network_mismatch", "payment network %s, requirements network %s",
               p->network, r->network);
        return;
    }
    out->chain_id = req->chain_id;
    if (!fb_evm_test_chain(req->chain_id) && fb_evm_dev_account(&req->pay_to)) {
        /* a dev default left in a real deployment: what it is paid anyone can take */
        s_fail(out, "invalid_payment_requirements",
               "requirements.payTo is a public development account (its key is known to all): refused on "
               "chain %llu",
               (unsigned long long)req->chain_id);
        return;
    }
    /* 4. the authorization, as the EIP-712 message */
    out->stage = 3;
    fb_eip3009_t *a = &out->auth;
    bool to_is_pay_to = strcmp(p->to, r->pay_to) == 0; /* the usual case: payTo's parse is cached */
    if (to_is_pay_to)
        a->to = req->pay_to;
    if (fb_addr_parse(&a->from, p->from, strlen(p->from)) != 0 ||
        (!to_is_pay_to && fb_addr_parse(&a->to, p->to, strlen(p->to)) != 0)) {
        s_fail(out, "invalid_exact_evm_signature",
               "authorization.from and .to must be addresses (EIP-55 when mixed case)");
        return;
    }
    if (s_u256(&a->value, p->value) || s_u256(&a->valid_after, p->valid_after) ||
        s_u256(&a->valid_before, p->valid_before)) {
        s_fail(out, "invalid_exact_evm_signature",
               "authorization.value, validAfter and validBefore must be decimal integers below 2^256");
        return;
    }
    if (fb_bytes32_parse(a->nonce, p->nonce, strlen(p->nonce)) != 0) {
        s_fail(out, "invalid_exact_evm_signature", "authorization.nonce must be 32 bytes of 0x hex");
        return;
    }
    out->parsed = true;
    uint8_t sh[32];
    memcpy(out->domain_separator, req->domain_separator, 32);
    fb_eip3009_struct_hash(sh, a);
    fb_eip712_digest(out->digest, out->domain_separator, sh);
    out->digest_known = true;
    /* 5. the signature: 65 bytes, low s, recovering to from (EOA wallets) */
    out->stage = 4;
    size_t sl = strlen(p->signature);
    if (sl != 132 || fb_hex_decode(out->sig, 65, p->signature, sl) != 0) {
        s_fail(
            out, "invalid_exact_evm_signature",
            "signature must be 65 bytes of 0x hex (r, s, v); contract-wallet signatures are not supported");
        return;
    }
    const char *why = NULL;
    if (fb_secp_recover(&out->signer, out->digest, out->sig, &why) != 0) {
        s_fail(out, "invalid_exact_evm_signature", "signature is not valid: %s", why);
        return;
    }
    out->recovered = true;
    if (!fb_addr_eq(&out->signer, &a->from)) {
        char s[43];
        fb_addr_checksum(s, &out->signer);
        s_fail(out, "invalid_exact_evm_signature", "signature was made by %s, not by authorization.from", s);
        return;
    }
    /* 6. recipient */
    out->stage = 5;
    if (!fb_addr_eq(&a->to, &out->pay_to)) {
        s_fail(out, "invalid_exact_evm_recipient_mismatch", "authorization.to is not requirements.payTo");
        return;
    }
    /* 7. time window: validBefore at least now + margin, validAfter not later than now */
    out->stage = 6;
    fb_u256_t limit;
    fb_u256_from_u64(&limit, (uint64_t)(now + margin_s));
    if (fb_u256_cmp(&a->valid_before, &limit) < 0) {
        s_fail(out, "invalid_exact_evm_payload_authorization_valid_before",
               "authorization expires (validBefore %s) before now + %lld s", p->valid_before,
               (long long)margin_s);
        return;
    }
    fb_u256_t nowv;
    fb_u256_from_u64(&nowv, (uint64_t)now);
    if (fb_u256_cmp(&a->valid_after, &nowv) > 0) {
        s_fail(out, "invalid_exact_evm_payload_authorization_valid_after",
               "authorization is not valid yet (validAfter %s)", p->valid_after);
        return;
    }
    /* 8. amount: exactly what was asked */
    out->stage = 7;
    fb_u256_t want;
    if (s_u256(&want, r->amount) != 0) {
        s_fail(out, "invalid_payment_requirements", "requirements amount is not a decimal integer");
        return;
    }
    if (fb_u256_cmp(&a->value, &want) != 0) {
        s_fail(out,
               p->version == 1 ? "invalid_exact_evm_authorization_value"
                               : "invalid_exact_evm_payload_authorization_value_mismatch",
               "authorization.value %s is not the required amount %s", p->value, r->amount);
        return;
    }
    out->stage = 8;
}

int evm_exact_test(bool verbose)
{
    FB_UNUSED(verbose);
    /* the first EIP-712 vector of tests/vectors (viem): valid at 1767225600 */
    const char *doc = "{\"x402Version\":2,\"accepted\":{\"scheme\":\"exact\",\"network\":\"eip155:84532\","
                      "\"amount\":\"10000\","
                      "\"asset\":\"0x036CbD53842c5426634e7929541eC2318f3dCF7e\",\"payTo\":"
                      "\"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\","
                      "\"maxTimeoutSeconds\":60,\"extra\":{\"name\":\"USDC\",\"version\":\"2\"}},\"payload\":"
                      "{\"authorization\":"
                      "{\"from\":\"0x2c7536E3605D9C16a7a3D7b1898e529396a65c23\",\"to\":"
                      "\"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\","
                      "\"value\":\"10000\",\"validAfter\":\"0\",\"validBefore\":\"1767225660\",\"nonce\":"
                      "\"0x58760c370cb2213cfbf3bc8771d3e530312c696f65c36d539f03e19902b6a40d\"},\"signature\":"
                      "\"0x4c21dd54d7b5820cf3672d908b1e0fe9170e56a0964c092491cbf1fa729fedf3545ff3375dc7c540cd"
                      "9ce3cc0be79e7cd707adabdd2"
                      "fe6d0fb4e33bedb2581791b\"}}";
    json_error_t jerr;
    json_t *j = json_loads(doc, 0, &jerr);
    FB_ASSERT(j);
    fb_x402_payload_t p;
    char err[256];
    FB_ASSERT(fb_x402_parse_payload(j, &p, err, sizeof(err)) == 0);
    evm_check_t c;
    evm_exact_check(&p, &p.accepted, 1767225600, 6, &c);
    FB_ASSERT(c.reason == NULL && c.recovered);
    char hex[65];
    fb_hex_encode(hex, c.digest, 32);
    FB_ASSERT(strcmp(hex, "d403818a379ef2de4476416770f2640d0bfc99cee110d3a3e4400774171455a7") == 0);
    /* expired 6 s before its end, and not yet valid before validAfter */
    evm_exact_check(&p, &p.accepted, 1767225660 - 5, 6, &c);
    FB_ASSERT(c.reason && strcmp(c.reason, "invalid_exact_evm_payload_authorization_valid_before") == 0);
    /* a different amount in the requirements */
    json_object_set_new(json_object_get(j, "accepted"), "amount", json_string("10001"));
    FB_ASSERT(fb_x402_parse_payload(j, &p, err, sizeof(err)) == 0);
    evm_exact_check(&p, &p.accepted, 1767225600, 6, &c);
    FB_ASSERT(c.reason && strcmp(c.reason, "invalid_exact_evm_payload_authorization_value_mismatch") == 0);
    /* another domain name changes the digest: the signature no longer matches */
    json_object_set_new(json_object_get(j, "accepted"), "amount", json_string("10000"));
    json_object_set_new(json_object_get(json_object_get(j, "accepted"), "extra"), "name",
                        json_string("USD Coin"));
    FB_ASSERT(fb_x402_parse_payload(j, &p, err, sizeof(err)) == 0);
    evm_exact_check(&p, &p.accepted, 1767225600, 6, &c);
    FB_ASSERT(c.reason && strcmp(c.reason, "invalid_exact_evm_signature") == 0);
    json_decref(j);
    return 0;
}
