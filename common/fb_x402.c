/* fb_x402 - parsing and encoding of x402 messages. */
#include "fb_x402.h"
#include "fb_codec.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* v1 network names (docs/x402-notes.md, section 4.2). */
static const struct {
    const char *name;
    uint64_t chain_id;
} s_evm_v1[] = {
    {"ethereum", 1},
    {"sepolia", 11155111},
    {"base", 8453},
    {"base-sepolia", 84532},
    {"polygon", 137},
    {"polygon-amoy", 80002},
    {"avalanche", 43114},
    {"avalanche-fuji", 43113},
    {"abstract", 2741},
    {"abstract-testnet", 11124},
    {"iotex", 4689},
    {"sei", 1329},
    {"sei-testnet", 1328},
    {"peaq", 3338},
    {"story", 1514},
    {"educhain", 41923},
    {"skale-base-sepolia", 324705682},
    {"megaeth", 4326},
    {"monad", 143},
    {"stable", 988},
    {"stable-testnet", 2201},
    {"celo", 42220},
    {"flare", 14},
};

static const struct {
    const char *name, *caip2;
} s_svm_v1[] = {
    {"solana", "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"},
    {"solana-devnet", "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"},
    {"solana-testnet", "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z"},
};

int fb_x402_network(const char *name, fb_x402_network_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!name || strlen(name) >= sizeof(out->caip2))
        return -1;
    if (strncmp(name, "eip155:", 7) == 0) {
        const char *p = name + 7;
        uint64_t id = 0;
        if (!*p || strlen(p) > 15)
            return -1;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -1;
            id = id * 10 + (uint64_t)(*p - '0');
        }
        if (id == 0)
            return -1;
        out->family = FB_X402_EVM;
        out->chain_id = id;
        snprintf(out->caip2, sizeof(out->caip2), "%s", name);
        return 0;
    }
    if (strncmp(name, "solana:", 7) == 0) {
        size_t n = strlen(name + 7);
        if (n < 1 || n > 48)
            return -1;
        for (const char *p = name + 7; *p; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z')))
                return -1;
        out->family = FB_X402_SVM;
        snprintf(out->caip2, sizeof(out->caip2), "%s", name);
        return 0;
    }
    for (size_t i = 0; i < FB_ARRAY_SIZE(s_evm_v1); i++) {
        if (strcmp(name, s_evm_v1[i].name) == 0) {
            out->family = FB_X402_EVM;
            out->chain_id = s_evm_v1[i].chain_id;
            snprintf(out->caip2, sizeof(out->caip2), "eip155:%llu", (unsigned long long)out->chain_id);
            return 0;
        }
    }
    for (size_t i = 0; i < FB_ARRAY_SIZE(s_svm_v1); i++) {
        if (strcmp(name, s_svm_v1[i].name) == 0) {
            out->family = FB_X402_SVM;
            snprintf(out->caip2, sizeof(out->caip2), "%s", s_svm_v1[i].caip2);
            return 0;
        }
    }
    return -1;
}

const char *fb_x402_v1_name(const char *caip2)
{
    fb_x402_network_t n;
    if (fb_x402_network(caip2, &n) != 0)
        return NULL;
    if (n.family == FB_X402_EVM) {
        for (size_t i = 0; i < FB_ARRAY_SIZE(s_evm_v1); i++)
            if (s_evm_v1[i].chain_id == n.chain_id)
                return s_evm_v1[i].name;
    } else {
        for (size_t i = 0; i < FB_ARRAY_SIZE(s_svm_v1); i++)
            if (strcmp(s_svm_v1[i].caip2, n.caip2) == 0)
                return s_svm_v1[i].name;
    }
    return NULL;
}

json_t *fb_x402_decode_header(const char *value, size_t len, char *err, size_t errlen)
{
    if (len == 0 || len > FB_X402_HEADER_MAX) {
        snprintf(err, errlen, "header value must be 1..%d bytes", FB_X402_HEADER_MAX);
        return NULL;
    }
    /* the reference accepts ^[A-Za-z0-9+/]*={0,2}$ and nothing else */
    size_t cap = len / 4 * 3 + 3;
    unsigned char *bin = fb_malloc(cap + 1);
    int got = fb_base64_decode(bin, cap, value, len);
    if (got < 0) {
        free(bin);
        snprintf(err, errlen, "header value is not standard base64");
        return NULL;
    }
    size_t out_len = (size_t)got;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)bin, out_len, JSON_REJECT_DUPLICATES, &jerr);
    free(bin);
    if (!j || !json_is_object(j)) {
        snprintf(err, errlen, "header value is not a base64 JSON object (%s)",
                 j ? "not an object" : jerr.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

char *fb_x402_encode_header(const json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    size_t n = strlen(text), cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
    char *out = fb_malloc(cap);
    sodium_bin2base64(out, cap, (const unsigned char *)text, n, sodium_base64_VARIANT_ORIGINAL);
    free(text);
    return out;
}

/* A string field (optional or required), at most max bytes. */
static int s_str(json_t *obj, const char *key, bool required, size_t max, const char **out, const char *where,
                 char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) {
            snprintf(err, errlen, "%s%s is required", where, key);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) > max || (required && json_string_length(v) == 0)) {
        snprintf(err, errlen, "%s%s must be a string of %s%zu characters", where, key,
                 required ? "1.." : "at most ", max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

int fb_x402_parse_requirements(json_t *obj, int version, fb_x402_requirements_t *out, char *err,
                               size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->json = obj;
    out->version = version;
    const char *w = "paymentRequirements.";
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "paymentRequirements must be an object");
        return -1;
    }
    if (s_str(obj, "scheme", true, 32, &out->scheme, w, err, errlen) ||
        s_str(obj, "network", true, 90, &out->network, w, err, errlen) ||
        s_str(obj, version == 1 ? "maxAmountRequired" : "amount", true, 78, &out->amount, w, err, errlen) ||
        s_str(obj, "asset", true, 100, &out->asset, w, err, errlen) ||
        s_str(obj, "payTo", true, 100, &out->pay_to, w, err, errlen))
        return -1;
    if (version == 1 && s_str(obj, "resource", false, 2000, &out->resource, w, err, errlen))
        return -1;
    json_t *t = json_object_get(obj, "maxTimeoutSeconds");
    if (!json_is_integer(t) || json_integer_value(t) <= 0 || json_integer_value(t) > 86400 * 30) {
        snprintf(err, errlen, "%smaxTimeoutSeconds must be a positive integer", w);
        return -1;
    }
    out->max_timeout_s = json_integer_value(t);
    if (fb_x402_network(out->network, &out->net) != 0) {
        snprintf(err, errlen, "%snetwork \"%s\" is not a known network", w, out->network);
        return -1;
    }
    json_t *extra = json_object_get(obj, "extra");
    if (extra && !json_is_null(extra)) {
        if (!json_is_object(extra)) {
            snprintf(err, errlen, "%sextra must be an object", w);
            return -1;
        }
        const char *x = "paymentRequirements.extra.";
        if (s_str(extra, "name", false, 100, &out->extra_name, x, err, errlen) ||
            s_str(extra, "version", false, 20, &out->extra_version, x, err, errlen) ||
            s_str(extra, "feePayer", false, 64, &out->fee_payer, x, err, errlen) ||
            s_str(extra, "memo", false, 256, &out->memo, x, err, errlen))
            return -1;
    }
    return 0;
}

int fb_x402_parse_payload(json_t *obj, fb_x402_payload_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->json = obj;
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "paymentPayload must be an object");
        return -1;
    }
    json_t *v = json_object_get(obj, "x402Version");
    if (!json_is_integer(v) || (json_integer_value(v) != 1 && json_integer_value(v) != 2)) {
        snprintf(err, errlen, "paymentPayload.x402Version must be 1 or 2");
        return -1;
    }
    out->version = (int)json_integer_value(v);
    const char *w = "paymentPayload.";
    if (out->version == 1) {
        if (s_str(obj, "scheme", true, 32, &out->scheme, w, err, errlen) ||
            s_str(obj, "network", true, 90, &out->network, w, err, errlen))
            return -1;
    } else {
        json_t *acc = json_object_get(obj, "accepted");
        if (!acc) {
            snprintf(err, errlen, "paymentPayload.accepted is required");
            return -1;
        }
        char why[256];
        if (fb_x402_parse_requirements(acc, 2, &out->accepted, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "paymentPayload.accepted: %s", why + strlen("paymentRequirements."));
            return -1;
        }
        out->has_accepted = true;
        out->scheme = out->accepted.scheme;
        out->network = out->accepted.network;
        json_t *res = json_object_get(obj, "resource");
        if (json_is_object(res) &&
            s_str(res, "url", false, 2000, &out->resource_url, "resource.", err, errlen))
            return -1;
    }
    json_t *p = json_object_get(obj, "payload");
    if (!json_is_object(p)) {
        snprintf(err, errlen, "paymentPayload.payload must be an object");
        return -1;
    }
    out->payload = p;
    fb_x402_network_t net;
    if (fb_x402_network(out->network, &net) != 0) {
        snprintf(err, errlen, "paymentPayload network \"%s\" is not a known network", out->network);
        return -1;
    }
    const char *pw = "paymentPayload.payload.";
    if (net.family == FB_X402_SVM) {
        return s_str(p, "transaction", true, 4096, &out->transaction, pw, err, errlen);
    }
    json_t *a = json_object_get(p, "authorization");
    if (!json_is_object(a)) {
        snprintf(err, errlen, "paymentPayload.payload.authorization must be an object (EIP-3009)");
        return -1;
    }
    const char *aw = "paymentPayload.payload.authorization.";
    if (s_str(p, "signature", true, 4096, &out->signature, pw, err, errlen) ||
        s_str(a, "from", true, 42, &out->from, aw, err, errlen) ||
        s_str(a, "to", true, 42, &out->to, aw, err, errlen) ||
        s_str(a, "value", true, 78, &out->value, aw, err, errlen) ||
        s_str(a, "validAfter", true, 78, &out->valid_after, aw, err, errlen) ||
        s_str(a, "validBefore", true, 78, &out->valid_before, aw, err, errlen) ||
        s_str(a, "nonce", true, 66, &out->nonce, aw, err, errlen))
        return -1;
    return 0;
}

int fb_x402_test(bool verbose)
{
    FB_UNUSED(verbose);
    fb_x402_network_t n;
    FB_ASSERT(fb_x402_network("base-sepolia", &n) == 0 && n.family == FB_X402_EVM && n.chain_id == 84532 &&
              strcmp(n.caip2, "eip155:84532") == 0);
    FB_ASSERT(fb_x402_network("eip155:8453", &n) == 0 && n.chain_id == 8453);
    FB_ASSERT(fb_x402_network("solana-devnet", &n) == 0 && n.family == FB_X402_SVM &&
              strcmp(n.caip2, "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1") == 0);
    FB_ASSERT(fb_x402_network("eip155:", &n) == -1 && fb_x402_network("eip155:12a", &n) == -1);
    FB_ASSERT(fb_x402_network("bitcoin", &n) == -1 && fb_x402_network("solana:bad-chars!", &n) == -1);
    FB_ASSERT(strcmp(fb_x402_v1_name("eip155:84532"), "base-sepolia") == 0);

    json_t *obj = json_pack(
        "{si s{ss ss ss ss ss si s{ss ss}} s{s{ss ss ss ss ss ss} ss}}", "x402Version", 2, "accepted",
        "scheme", "exact", "network", "eip155:84532", "amount", "10000", "asset",
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "payTo", "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "maxTimeoutSeconds", 60, "extra", "name", "USDC", "version", "2", "payload", "authorization", "from",
        "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23", "to", "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        "value", "10000", "validAfter", "0", "validBefore", "1767225660", "nonce",
        "0x58760c370cb2213cfbf3bc8771d3e530312c696f65c36d539f03e19902b6a40d", "signature", "0xab");
    FB_ASSERT(obj);
    char *hdr = fb_x402_encode_header(obj);
    char err[256];
    json_t *back = fb_x402_decode_header(hdr, strlen(hdr), err, sizeof(err));
    FB_ASSERT(back && json_equal(back, obj));
    fb_x402_payload_t p;
    FB_ASSERT(fb_x402_parse_payload(back, &p, err, sizeof(err)) == 0);
    FB_ASSERT(p.version == 2 && strcmp(p.scheme, "exact") == 0 && p.has_accepted &&
              strcmp(p.accepted.extra_name, "USDC") == 0 && strcmp(p.value, "10000") == 0);
    /* padding removed is accepted; base64url and whitespace are not */
    size_t hl = strlen(hdr);
    while (hl && hdr[hl - 1] == '=')
        hl--;
    json_t *nopad = fb_x402_decode_header(hdr, hl, err, sizeof(err));
    FB_ASSERT(nopad);
    json_decref(nopad);
    FB_ASSERT(fb_x402_decode_header("ab-_", 4, err, sizeof(err)) == NULL);
    FB_ASSERT(fb_x402_decode_header("YWJj ZGVm", 9, err, sizeof(err)) == NULL);
    FB_ASSERT(fb_x402_decode_header("bm90IGpzb24=", 12, err, sizeof(err)) == NULL); /* "not json" */
    free(hdr);

    /* each missing field is named */
    json_object_del(json_object_get(json_object_get(back, "payload"), "authorization"), "nonce");
    FB_ASSERT(fb_x402_parse_payload(back, &p, err, sizeof(err)) == -1 && strstr(err, "authorization.nonce"));
    json_object_set_new(back, "x402Version", json_integer(3));
    FB_ASSERT(fb_x402_parse_payload(back, &p, err, sizeof(err)) == -1 && strstr(err, "x402Version"));
    json_decref(back);
    json_decref(obj);
    return 0;
}
