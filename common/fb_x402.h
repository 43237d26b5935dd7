/* fb_x402 - x402 messages (docs/x402-notes.md): header decoding, payment
 * requirements and payment payloads of versions 1 and 2, network names.
 *
 * Everything here comes from outside (HTTP headers, facilitator requests):
 * sizes are bounded, every field is type-checked, and a parse failure names
 * the field. The structures keep the parsed JSON (json) so that answers can
 * echo what was sent. */
#ifndef FB_X402_H
#define FB_X402_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_X402_HEADER_MAX 16384 /* bytes of a base64 header value */

typedef enum { FB_X402_UNKNOWN = 0, FB_X402_EVM, FB_X402_SVM } fb_x402_family_t;

/* A network as x402 names it: CAIP-2 ("eip155:84532", "solana:EtWT...") or a
 * v1 name ("base-sepolia", "solana-devnet"). */
typedef struct {
    char caip2[96]; /* normalized CAIP-2 */
    fb_x402_family_t family;
    uint64_t chain_id; /* EVM */
} fb_x402_network_t;

/* fb_x402_network - resolve a network name. Returns 0, or -1 when the name is
 * neither CAIP-2 of a known family nor a known v1 name. */
int fb_x402_network(const char *name, fb_x402_network_t *out);

/* fb_x402_v1_name - the v1 name of a CAIP-2 network, or NULL. */
const char *fb_x402_v1_name(const char *caip2);

typedef struct {
    int version;           /* 1 or 2 */
    const char *scheme;    /* strings point into json */
    const char *network;   /* as given */
    fb_x402_network_t net; /* resolved */
    const char *amount;    /* decimal atomic units (v1: maxAmountRequired) */
    const char *asset;
    const char *pay_to;
    int64_t max_timeout_s;
    const char *extra_name; /* EVM EIP-712 domain, or NULL */
    const char *extra_version;
    const char *fee_payer; /* SVM, or NULL */
    const char *memo;      /* SVM extra.memo, or NULL */
    const char *resource;  /* v1 resource URL, or NULL */
    json_t *json;          /* the object (borrowed from the caller's document) */
} fb_x402_requirements_t;

typedef struct {
    int version;         /* x402Version */
    const char *scheme;  /* v1: payload.scheme; v2: accepted.scheme */
    const char *network; /* v1: payload.network; v2: accepted.network */
    bool has_accepted;   /* v2 */
    fb_x402_requirements_t accepted;
    json_t *payload; /* the scheme payload object */
    /* EVM exact (EIP-3009) */
    const char *signature; /* 0x hex */
    const char *from, *to, *value, *valid_after, *valid_before, *nonce;
    /* SVM exact */
    const char *transaction;  /* base64 */
    const char *resource_url; /* v2 resource.url, or NULL */
    json_t *json;             /* the whole payload document (borrowed) */
} fb_x402_payload_t;

/* fb_x402_decode_header - base64 (standard alphabet, padding optional, no
 * whitespace: what the reference clients send) of UTF-8 JSON.
 * Returns the JSON object (caller owns it), or NULL with a reason in err. */
json_t *fb_x402_decode_header(const char *value, size_t len, char *err, size_t errlen);

/* fb_x402_encode_header - base64 of the compact JSON of obj (caller frees). */
char *fb_x402_encode_header(const json_t *obj);

/* fb_x402_parse_requirements - read one PaymentRequirements object of the
 * given x402 version. Returns 0, or -1 with the offending field in err. */
int fb_x402_parse_requirements(json_t *obj, int version, fb_x402_requirements_t *out, char *err,
                               size_t errlen);

/* fb_x402_parse_payload - read a PaymentPayload (v1 or v2; v2's accepted is
 * parsed too). Scheme-specific fields are read for "exact" on EVM (EIP-3009:
 * payload.authorization and payload.signature) and Solana
 * (payload.transaction). Returns 0, or -1 with the offending field in err. */
int fb_x402_parse_payload(json_t *obj, fb_x402_payload_t *out, char *err, size_t errlen);

int fb_x402_test(bool verbose);

#endif
