/* message_proof - offline verification of signed-message payment proofs. */
#include "message_proof.h"
#include "fb_codec.h"
#include "fb_eip712.h"
#include "fb_evm.h"
#include "fb_secp.h"
#include "fb_solana.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int s_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int s_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A whole number from a JSON integer or a string of digits, in [min, max]. */
static int s_int(json_t *v, int64_t min, int64_t max, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *t = json_string_value(v);
        size_t n = json_string_length(v);
        if (n == 0 || n > 18)
            return -1;
        int64_t x = 0;
        for (size_t i = 0; i < n; i++) {
            if (t[i] < '0' || t[i] > '9')
                return -1;
            x = x * 10 + (t[i] - '0');
        }
        *out = x;
    } else {
        return -1;
    }
    return *out >= min && *out <= max ? 0 : -1;
}

static const char *s_str(json_t *body, const char *name, size_t max, size_t *len)
{
    json_t *v = json_object_get(body, name);
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max)
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

int msgproof_parse(json_t *body, msgproof_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(body))
        return s_err(err, errlen, "the proof must be an object");
    size_t n;
    const char *network = s_str(body, "network", 95, &n);
    fb_x402_network_t net;
    if (!network || fb_x402_network(network, &net) != 0)
        return s_err(err, errlen,
                     "network must name an EVM chain (\"base\", \"eip155:8453\", ...) or a Solana cluster");
    out->family = net.family;
    snprintf(out->network, sizeof(out->network), "%s", net.caip2);
    snprintf(out->namespace_, sizeof(out->namespace_), "%s", net.family == FB_X402_EVM ? "eip155" : "solana");

    const char *from = s_str(body, "from", 99, &n);
    if (!from)
        return s_err(err, errlen, "from (the paying wallet's address) is required");
    if (net.family == FB_X402_EVM) {
        fb_addr_t a;
        if (fb_addr_parse(&a, from, n) != 0)
            return s_err(err, errlen, "from is not an EVM address (or its EIP-55 checksum is wrong)");
        fb_addr_checksum(out->from, &a);
    } else {
        fb_sol_key_t k;
        if (fb_sol_key_parse(&k, from, n) != 0)
            return s_err(err, errlen, "from is not a base58 Solana address");
        fb_sol_key_format(out->from, &k);
    }

    const char *rid = s_str(body, "requestId", MSGPROOF_REQUEST_ID_MAX, &n);
    if (!rid)
        return s_err(err, errlen, "requestId must be a string of 1..%d characters", MSGPROOF_REQUEST_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        /* printable ASCII only: a newline would let a request id forge the other lines */
        if (rid[i] < 0x20 || rid[i] > 0x7e)
            return s_err(err, errlen, "requestId may only hold printable ASCII characters");
    }
    memcpy(out->request_id, rid, n);

    if (s_int(json_object_get(body, "amount"), 1, MSGPROOF_MAX_CENTS, &out->amount_cents) != 0)
        return s_err(err, errlen, "amount must be a whole number of USDC cents in 1..%lld",
                     MSGPROOF_MAX_CENTS);
    out->amount_micro = out->amount_cents * 10000;
    if (s_int(json_object_get(body, "timestamp"), 1, 99999999999999LL, &out->timestamp_ms) != 0)
        return s_err(err, errlen, "timestamp must be the signing time in milliseconds since the Unix epoch");

    const char *sig = s_str(body, "signature", sizeof(out->sig_text) - 1, &n);
    if (!sig)
        return s_err(err, errlen, "signature must be a string");
    memcpy(out->sig_text, sig, n);

    snprintf(out->text, sizeof(out->text),
             "PromptPort Payment\nRequest ID: %s\nAmount: %lld USDC cents\nTimestamp: %lld", out->request_id,
             (long long)out->amount_cents, (long long)out->timestamp_ms);
    json_t *msg = json_object_get(body, "message");
    if (msg && !json_is_null(msg)) {
        if (!json_is_string(msg) || json_string_length(msg) > 1024)
            return s_err(err, errlen, "message, when sent, must be the signed text (at most 1024 bytes)");
        out->has_message = true;
        out->message_matches =
            strcmp(json_string_value(msg), out->text) == 0 && json_string_length(msg) == strlen(out->text);
    }
    return 0;
}

static void s_fail(msgproof_t *m, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_fail(msgproof_t *m, const char *reason, const char *fmt, ...)
{
    m->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->detail, sizeof(m->detail), fmt, ap);
    va_end(ap);
}

/* A 64-byte ed25519 signature written as base58, base64 or 0x-hex. */
static int s_sol_sig(uint8_t sig[64], const char *text)
{
    size_t n = strlen(text);
    if (n == 130 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X'))
        return fb_hex_decode(sig, 64, text + 2, n - 2);
    if (n <= 90 && fb_base58_decode(sig, 64, text, n) == 64)
        return 0;
    /* not sodium_base642bin: libsodium 1.0.18 reads every byte above 0x7f as "/" */
    if (fb_base64_decode(sig, 64, text, n) == 64)
        return 0;
    return -1;
}

static void s_check_evm(msgproof_t *m)
{
    uint8_t sig[65], digest[32];
    size_t n = strlen(m->sig_text);
    if (n != 132 || m->sig_text[0] != '0' || (m->sig_text[1] != 'x' && m->sig_text[1] != 'X') ||
        fb_hex_decode(sig, 65, m->sig_text + 2, 130) != 0) {
        s_fail(m, "invalid_message_signature", "signature must be 65 bytes of 0x-hex (r, s, v)");
        return;
    }
    fb_eip191_digest(digest, m->text, strlen(m->text));
    fb_addr_t signer;
    const char *why = NULL;
    if (fb_secp_recover(&signer, digest, sig, &why) != 0) {
        s_fail(m, "invalid_message_signature", "signature does not recover: %s", why);
        return;
    }
    fb_addr_checksum(m->signer, &signer);
    if (strcmp(m->signer, m->from) != 0)
        s_fail(m, "message_signer_mismatch", "signed by %s, not by %s", m->signer, m->from);
}

static void s_check_svm(msgproof_t *m)
{
    uint8_t sig[64];
    fb_sol_key_t from;
    FB_ASSERT(fb_sol_key_parse(&from, m->from, strlen(m->from)) == 0);
    if (s_sol_sig(sig, m->sig_text) != 0) {
        s_fail(m, "invalid_message_signature", "signature must be 64 bytes in base58, base64 or 0x-hex");
        return;
    }
    if (crypto_sign_verify_detached(sig, (const unsigned char *)m->text, strlen(m->text), from.b) != 0) {
        s_fail(m, "message_signer_mismatch", "the signature is not %s's over this message", m->from);
        return;
    }
    snprintf(m->signer, sizeof(m->signer), "%s", m->from);
}

void msgproof_check(msgproof_t *m, int64_t now_ms, int64_t max_age_ms, int64_t max_skew_ms)
{
    m->reason = NULL;
    m->detail[0] = m->signer[0] = '\0';
    if (m->has_message && !m->message_matches) {
        s_fail(m, "message_mismatch", "the message sent is not the text farebox expects: \"%.180s\"",
               m->text);
        return;
    }
    if (m->family == FB_X402_EVM)
        s_check_evm(m);
    else
        s_check_svm(m);
    if (m->reason)
        return;
    if (m->timestamp_ms < now_ms - max_age_ms) {
        s_fail(m, "message_expired", "signed %lld s ago, allowed %lld s",
               (long long)((now_ms - m->timestamp_ms) / 1000), (long long)(max_age_ms / 1000));
        return;
    }
    if (m->timestamp_ms > now_ms + max_skew_ms)
        s_fail(m, "message_from_future", "timestamp is %lld s ahead of farebox's clock",
               (long long)((m->timestamp_ms - now_ms) / 1000));
}

int message_proof_test(bool verbose)
{
    FB_UNUSED(verbose);
    char err[256];
    msgproof_t m;
    /* an EVM proof signed here, then checked: good, then each way it goes wrong */
    uint8_t key[32] = {1}, sig[65], digest[32];
    fb_addr_t a;
    char addr[43];
    FB_ASSERT(fb_secp_address(&a, key) == 0);
    fb_addr_checksum(addr, &a);
    const char *text =
        "PromptPort Payment\nRequest ID: req_1\nAmount: 1000 USDC cents\nTimestamp: 1700000000000";
    fb_eip191_digest(digest, text, strlen(text));
    FB_ASSERT(fb_secp_sign(sig, digest, key) == 0);
    sig[64] += 27;
    char sighex[140] = "0x";
    fb_hex_encode(sighex + 2, sig, 65);
    json_t *body = json_pack("{ss ss ss si sI ss}", "network", "base", "from", addr, "requestId", "req_1",
                             "amount", 1000, "timestamp", (json_int_t)1700000000000LL, "signature", sighex);
    FB_ASSERT(msgproof_parse(body, &m, err, sizeof(err)) == 0);
    FB_ASSERT(strcmp(m.text, text) == 0 && m.amount_micro == 10000000 && strcmp(m.namespace_, "eip155") == 0);
    msgproof_check(&m, 1700000001000LL, 300000, 60000);
    FB_ASSERT(m.reason == NULL && strcmp(m.signer, addr) == 0);
    msgproof_check(&m, 1700000400000LL, 300000, 60000);
    FB_ASSERT(m.reason && strcmp(m.reason, "message_expired") == 0);
    msgproof_check(&m, 1699999000000LL, 300000, 60000);
    FB_ASSERT(m.reason && strcmp(m.reason, "message_from_future") == 0);
    /* another amount than signed: recovers someone else */
    json_object_set_new(body, "amount", json_integer(1001));
    FB_ASSERT(msgproof_parse(body, &m, err, sizeof(err)) == 0);
    msgproof_check(&m, 1700000001000LL, 300000, 60000);
    FB_ASSERT(m.reason && strcmp(m.reason, "message_signer_mismatch") == 0);
    json_object_set_new(body, "amount", json_integer(1000));
    json_object_set_new(body, "message", json_string("PromptPort Payment\nRequest ID: req_2"));
    FB_ASSERT(msgproof_parse(body, &m, err, sizeof(err)) == 0);
    msgproof_check(&m, 1700000001000LL, 300000, 60000);
    FB_ASSERT(m.reason && strcmp(m.reason, "message_mismatch") == 0);
    json_object_del(body, "message");
    /* malformed fields are bad requests */
    const char *bad[][2] = {
        {"requestId", "a\nAmount: 1"}, {"network", "dogecoin"}, {"from", "0x1234"}, {"amount", "-5"},
        {"timestamp", "soon"},         {"requestId", ""}};
    for (size_t i = 0; i < FB_ARRAY_SIZE(bad); i++) {
        json_t *b = json_deep_copy(body);
        json_object_set_new(b, bad[i][0], json_string(bad[i][1]));
        FB_ASSERT(msgproof_parse(b, &m, err, sizeof(err)) == -1);
        json_decref(b);
    }
    json_decref(body);
    /* a Solana proof with libsodium's keys, signature in base58 and base64 */
    uint8_t pk[32], sk[64], ssig[64];
    crypto_sign_keypair(pk, sk);
    char from[48], s58[100], s64[100];
    fb_base58_encode(from, sizeof(from), pk, 32);
    crypto_sign_detached(ssig, NULL, (const uint8_t *)text, strlen(text), sk);
    fb_base58_encode(s58, sizeof(s58), ssig, 64);
    sodium_bin2base64(s64, sizeof(s64), ssig, 64, sodium_base64_VARIANT_ORIGINAL);
    const char *forms[] = {s58, s64};
    for (int i = 0; i < 2; i++) {
        body = json_pack("{ss ss ss ss ss ss}", "network", "solana", "from", from, "requestId", "req_1",
                         "amount", "1000", "timestamp", "1700000000000", "signature", forms[i]);
        FB_ASSERT(msgproof_parse(body, &m, err, sizeof(err)) == 0);
        msgproof_check(&m, 1700000001000LL, 300000, 60000);
        FB_ASSERT(m.reason == NULL);
        json_object_set_new(body, "requestId", json_string("req_2"));
        FB_ASSERT(msgproof_parse(body, &m, err, sizeof(err)) == 0);
        msgproof_check(&m, 1700000001000LL, 300000, 60000);
        FB_ASSERT(m.reason && strcmp(m.reason, "message_signer_mismatch") == 0);
        json_decref(body);
    }
    return 0;
}
