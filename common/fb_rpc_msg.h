/* fb_rpc_msg - the internal RPC envelope (proto/README.md, version 1).
 *
 * A request is one msgpack map:
 *   v            uint   protocol version, 1
 *   id           uint or str (<= 128 bytes)  chosen by the caller, echoed
 *   method       str    [a-z0-9_.], 1..64 bytes
 *   idem         str    idempotency key, <= 128 bytes (optional)
 *   trace        str    request id for logs, <= 128 bytes (optional)
 *   deadline_ms  uint   1..3600000: how long the caller still waits, counted
 *                       from when it sent the request
 *   body         map    method arguments (optional: empty)
 * A reply is one msgpack map:
 *   v, id (echoed; nil when the request could not be read), status ("ok" or
 *   "error"), code and message (errors only), body (map), replica (str). */
#ifndef FB_RPC_MSG_H
#define FB_RPC_MSG_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_RPC_VERSION         1
#define FB_RPC_METHOD_MAX      64
#define FB_RPC_STR_MAX         128
#define FB_RPC_DEADLINE_MAX_MS 3600000

/* Envelope-level error codes (services add their own, listed in proto/). */
#define FB_RPC_E_BAD_REQUEST         "bad_request"
#define FB_RPC_E_UNSUPPORTED_VERSION "unsupported_version"
#define FB_RPC_E_UNKNOWN_METHOD      "unknown_method"
#define FB_RPC_E_TOO_LARGE           "too_large"
#define FB_RPC_E_DEADLINE            "deadline_exceeded"
#define FB_RPC_E_OVERLOADED          "overloaded"
#define FB_RPC_E_UNAVAILABLE         "unavailable"
#define FB_RPC_E_INTERNAL            "internal"
#define FB_RPC_E_NOT_IMPLEMENTED     "not_implemented"

typedef struct {
    uint64_t version;
    const msgpack_object *id; /* uint or str */
    const char *method;       /* counted, not NUL-terminated */
    size_t method_len;
    const char *idem; /* NULL when absent */
    size_t idem_len;
    const char *trace; /* NULL when absent */
    size_t trace_len;
    uint64_t deadline_ms;       /* budget in milliseconds */
    const msgpack_object *body; /* a map, or NULL when absent */
} fb_rpc_request_t;

/* fb_rpc_request_decode - read an unpacked request.
 * Returns 0, or -1 with *code set to an envelope error code and a reason in
 * msg. out->id is filled as soon as it could be read, so that the error reply
 * can still name the request. */
int fb_rpc_request_decode(const msgpack_object *root, fb_rpc_request_t *out, const char **code, char *msg,
                          size_t msglen);

/* fb_rpc_request_pack - append an encoded request to sb. body is the encoded
 * msgpack map of arguments (body_len bytes) or NULL for an empty map. idem and
 * trace may be NULL. */
void fb_rpc_request_pack(msgpack_sbuffer *sb, uint64_t id, const char *method, const char *idem,
                         const char *trace, uint64_t deadline_ms, const char *body, size_t body_len);

/* fb_rpc_reply_pack - append an encoded reply to sb. id may be NULL (nil).
 * code and message are NULL for success. body is an encoded map or NULL. */
void fb_rpc_reply_pack(msgpack_sbuffer *sb, const msgpack_object *id, const char *code, const char *message,
                       const char *replica, const char *body, size_t body_len);

typedef struct {
    bool ok;                    /* status == "ok" */
    char code[64];              /* error code, "" on success */
    char message[256];          /* error message, "" on success */
    char replica[128];          /* the replica that answered, "" for local errors */
    const msgpack_object *body; /* a map; an empty map when absent */
} fb_rpc_reply_t;

/* fb_rpc_reply_decode - read an unpacked reply. Returns 0, or -1 when it is
 * not a version-1 reply map. id_out receives the id object. */
int fb_rpc_reply_decode(const msgpack_object *root, fb_rpc_reply_t *out, const msgpack_object **id_out);

/* fb_rpc_empty_map - a shared empty msgpack map object. */
const msgpack_object *fb_rpc_empty_map(void);

int fb_rpc_msg_test(bool verbose);

#endif
