/* fb_rpc_msg - encoding and strict decoding of the RPC envelope. */
#include "fb_rpc_msg.h"
#include "fb_msgpack.h"
#include "fb_util.h"

#include <jansson.h>

#include <stdio.h>
#include <string.h>

static const msgpack_object s_empty_map = {.type = MSGPACK_OBJECT_MAP, .via.map = {0, NULL}};

const msgpack_object *fb_rpc_empty_map(void)
{
    return &s_empty_map;
}

static bool s_method_ok(const char *m, size_t n)
{
    if (n == 0 || n > FB_RPC_METHOD_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((m[i] >= 'a' && m[i] <= 'z') || (m[i] >= '0' && m[i] <= '9') || m[i] == '_' || m[i] == '.'))
            return false;
    return true;
}

/* An optional string field: absent or nil is fine; anything else must be a
 * string of at most FB_RPC_STR_MAX bytes. */
static int s_opt_str(const msgpack_object *root, const char *key, const char **s, size_t *n, char *msg,
                     size_t msglen)
{
    const msgpack_object *o = fb_mp_get(root, key);
    *s = NULL;
    *n = 0;
    if (o == NULL || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (!fb_mp_str(o, s, n) || *n > FB_RPC_STR_MAX) {
        snprintf(msg, msglen, "%s must be a string of at most %d bytes", key, FB_RPC_STR_MAX);
        return -1;
    }
    /* services copy it into C strings and Postgres text: a NUL would cut
     * it short (two keys one), bytes that are not UTF-8 fail a whole batch */
    char text[FB_RPC_STR_MAX + 1];
    memcpy(text, *s, *n);
    text[*n] = '\0';
    if (memchr(*s, '\0', *n) != NULL || fb_utf8_clean(text) != 0) {
        snprintf(msg, msglen, "%s must be UTF-8 text without NUL", key);
        return -1;
    }
    return 0;
}

int fb_rpc_request_decode(const msgpack_object *root, fb_rpc_request_t *out, const char **code, char *msg,
                          size_t msglen)
{
    memset(out, 0, sizeof(*out));
    *code = FB_RPC_E_BAD_REQUEST;
    if (root->type != MSGPACK_OBJECT_MAP) {
        snprintf(msg, msglen, "request must be a msgpack map");
        return -1;
    }
    const msgpack_object *id = fb_mp_get(root, "id");
    if (id && (id->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
               (id->type == MSGPACK_OBJECT_STR && id->via.str.size <= FB_RPC_STR_MAX)))
        out->id = id;
    if (!fb_mp_get_uint64(root, "v", &out->version)) {
        snprintf(msg, msglen, "v (protocol version) is missing or not an unsigned integer");
        return -1;
    }
    if (out->version != FB_RPC_VERSION) {
        *code = FB_RPC_E_UNSUPPORTED_VERSION;
        snprintf(msg, msglen, "protocol version %llu is not supported; this server speaks version %d",
                 (unsigned long long)out->version, FB_RPC_VERSION);
        return -1;
    }
    if (out->id == NULL) {
        snprintf(msg, msglen, "id must be an unsigned integer or a string of at most %d bytes",
                 FB_RPC_STR_MAX);
        return -1;
    }
    if (!fb_mp_get_str(root, "method", &out->method, &out->method_len) ||
        !s_method_ok(out->method, out->method_len)) {
        snprintf(msg, msglen, "method must be 1..%d characters of [a-z0-9_.]", FB_RPC_METHOD_MAX);
        return -1;
    }
    if (s_opt_str(root, "idem", &out->idem, &out->idem_len, msg, msglen) != 0 ||
        s_opt_str(root, "trace", &out->trace, &out->trace_len, msg, msglen) != 0)
        return -1;
    if (!fb_mp_get_uint64(root, "deadline_ms", &out->deadline_ms) || out->deadline_ms == 0 ||
        out->deadline_ms > FB_RPC_DEADLINE_MAX_MS) {
        snprintf(msg, msglen, "deadline_ms must be an integer in 1..%d", FB_RPC_DEADLINE_MAX_MS);
        return -1;
    }
    const msgpack_object *body = fb_mp_get(root, "body");
    if (body && body->type != MSGPACK_OBJECT_NIL && body->type != MSGPACK_OBJECT_MAP) {
        snprintf(msg, msglen, "body must be a map");
        return -1;
    }
    out->body = body && body->type == MSGPACK_OBJECT_MAP ? body : &s_empty_map;
    *code = NULL;
    return 0;
}

static void s_write_raw(msgpack_sbuffer *sb, const char *bytes, size_t len)
{
    msgpack_sbuffer_write(sb, bytes, len);
}

void fb_rpc_request_pack(msgpack_sbuffer *sb, uint64_t id, const char *method, const char *idem,
                         const char *trace, uint64_t deadline_ms, const char *body, size_t body_len)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4 + (idem ? 1 : 0) + (trace ? 1 : 0) + 1);
    fb_mp_pack_kv_uint(&pk, "v", FB_RPC_VERSION);
    fb_mp_pack_kv_uint(&pk, "id", id);
    fb_mp_pack_kv_cstr(&pk, "method", method);
    if (idem)
        fb_mp_pack_kv_cstr(&pk, "idem", idem);
    if (trace)
        fb_mp_pack_kv_cstr(&pk, "trace", trace);
    fb_mp_pack_kv_uint(&pk, "deadline_ms", deadline_ms);
    fb_mp_pack_cstr(&pk, "body");
    if (body && body_len)
        s_write_raw(sb, body, body_len);
    else
        msgpack_pack_map(&pk, 0);
}

void fb_rpc_reply_pack(msgpack_sbuffer *sb, const msgpack_object *id, const char *code, const char *message,
                       const char *replica, const char *body, size_t body_len)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, code ? 7 : 5);
    fb_mp_pack_kv_uint(&pk, "v", FB_RPC_VERSION);
    fb_mp_pack_cstr(&pk, "id");
    if (id)
        msgpack_pack_object(&pk, *id);
    else
        msgpack_pack_nil(&pk);
    fb_mp_pack_kv_cstr(&pk, "status", code ? "error" : "ok");
    if (code) {
        fb_mp_pack_kv_cstr(&pk, "code", code);
        fb_mp_pack_kv_cstr(&pk, "message", message ? message : "");
    }
    fb_mp_pack_kv_cstr(&pk, "replica", replica ? replica : "");
    fb_mp_pack_cstr(&pk, "body");
    if (body && body_len)
        s_write_raw(sb, body, body_len);
    else
        msgpack_pack_map(&pk, 0);
}

static void s_copy(char *dst, size_t cap, const msgpack_object *o)
{
    const char *s;
    size_t n;
    dst[0] = '\0';
    if (fb_mp_str(o, &s, &n)) {
        if (n >= cap)
            n = cap - 1;
        memcpy(dst, s, n);
        dst[n] = '\0';
    }
}

int fb_rpc_reply_decode(const msgpack_object *root, fb_rpc_reply_t *out, const msgpack_object **id_out)
{
    memset(out, 0, sizeof(*out));
    out->body = &s_empty_map;
    uint64_t v;
    if (root->type != MSGPACK_OBJECT_MAP || !fb_mp_get_uint64(root, "v", &v) || v != FB_RPC_VERSION)
        return -1;
    const msgpack_object *status = fb_mp_get(root, "status");
    if (fb_mp_str_eq(status, "ok"))
        out->ok = true;
    else if (!fb_mp_str_eq(status, "error"))
        return -1;
    *id_out = fb_mp_get(root, "id");
    if (!out->ok) {
        s_copy(out->code, sizeof(out->code), fb_mp_get(root, "code"));
        s_copy(out->message, sizeof(out->message), fb_mp_get(root, "message"));
        if (!out->code[0])
            snprintf(out->code, sizeof(out->code), "%s", FB_RPC_E_INTERNAL);
    }
    s_copy(out->replica, sizeof(out->replica), fb_mp_get(root, "replica"));
    const msgpack_object *body = fb_mp_get(root, "body");
    if (body && body->type == MSGPACK_OBJECT_MAP)
        out->body = body;
    return 0;
}

int fb_rpc_msg_test(bool verbose)
{
    FB_UNUSED(verbose);
    /* a body, packed separately and embedded raw */
    msgpack_sbuffer body;
    msgpack_sbuffer_init(&body);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    fb_mp_pack_kv_int(&pk, "amount_micro", 1500000);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    fb_rpc_request_pack(&sb, 42, "ledger.hold", "idem-1", "req-9", 2500, body.data, body.size);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object root;
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &root) == 0);
    fb_rpc_request_t req;
    const char *code;
    char msg[256];
    FB_ASSERT(fb_rpc_request_decode(&root, &req, &code, msg, sizeof(msg)) == 0);
    FB_ASSERT(req.version == 1 && req.id->via.u64 == 42 &&
              fb_streq_n(req.method, req.method_len, "ledger.hold"));
    FB_ASSERT(fb_streq_n(req.idem, req.idem_len, "idem-1") && fb_streq_n(req.trace, req.trace_len, "req-9"));
    FB_ASSERT(req.deadline_ms == 2500);
    int64_t amount;
    FB_ASSERT(fb_mp_get_int64(req.body, "amount_micro", &amount) && amount == 1500000);

    /* reply round trip, ok and error */
    msgpack_sbuffer rb;
    msgpack_sbuffer_init(&rb);
    fb_rpc_reply_pack(&rb, req.id, NULL, NULL, "ledger-1", body.data, body.size);
    msgpack_object rroot;
    FB_ASSERT(fb_mp_unpack(rb.data, rb.size, &zone, &rroot) == 0);
    fb_rpc_reply_t rep;
    const msgpack_object *rid;
    FB_ASSERT(fb_rpc_reply_decode(&rroot, &rep, &rid) == 0);
    FB_ASSERT(rep.ok && rid->via.u64 == 42 && strcmp(rep.replica, "ledger-1") == 0);
    FB_ASSERT(fb_mp_get_int64(rep.body, "amount_micro", &amount) && amount == 1500000);
    msgpack_sbuffer_clear(&rb);
    fb_rpc_reply_pack(&rb, NULL, FB_RPC_E_UNKNOWN_METHOD, "no such method", "ledger-1", NULL, 0);
    FB_ASSERT(fb_mp_unpack(rb.data, rb.size, &zone, &rroot) == 0);
    FB_ASSERT(fb_rpc_reply_decode(&rroot, &rep, &rid) == 0);
    FB_ASSERT(!rep.ok && strcmp(rep.code, "unknown_method") == 0 && rid->type == MSGPACK_OBJECT_NIL);
    FB_ASSERT(rep.body->type == MSGPACK_OBJECT_MAP && rep.body->via.map.size == 0);

    /* malformed requests: each refused with a reason */
    struct {
        const char *json_like;
        int pairs;
        const char *expect_code;
    } cases[] = {
        {"no version", 0, "bad_request"},      {"version 2", 1, "unsupported_version"},
        {"bad method", 2, "bad_request"},      {"no deadline", 3, "bad_request"},
        {"body not map", 4, "bad_request"},    {"idem with NUL", 5, "bad_request"},
        {"trace not UTF-8", 6, "bad_request"},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(cases); i++) {
        msgpack_sbuffer_clear(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        switch (i) {
        case 0:
            msgpack_pack_map(&pk, 1);
            fb_mp_pack_kv_uint(&pk, "id", 1);
            break;
        case 1:
            msgpack_pack_map(&pk, 2);
            fb_mp_pack_kv_uint(&pk, "v", 2);
            fb_mp_pack_kv_uint(&pk, "id", 1);
            break;
        case 2:
            msgpack_pack_map(&pk, 4);
            fb_mp_pack_kv_uint(&pk, "v", 1);
            fb_mp_pack_kv_uint(&pk, "id", 1);
            fb_mp_pack_kv_cstr(&pk, "method", "Bad Method!");
            fb_mp_pack_kv_uint(&pk, "deadline_ms", 10);
            break;
        case 3:
            msgpack_pack_map(&pk, 3);
            fb_mp_pack_kv_uint(&pk, "v", 1);
            fb_mp_pack_kv_uint(&pk, "id", 1);
            fb_mp_pack_kv_cstr(&pk, "method", "health");
            break;
        case 4:
            msgpack_pack_map(&pk, 5);
            fb_mp_pack_kv_uint(&pk, "v", 1);
            fb_mp_pack_kv_cstr(&pk, "id", "abc");
            fb_mp_pack_kv_cstr(&pk, "method", "health");
            fb_mp_pack_kv_uint(&pk, "deadline_ms", 10);
            fb_mp_pack_kv_int(&pk, "body", 3);
            break;
        case 5:
        case 6:
            msgpack_pack_map(&pk, 5);
            fb_mp_pack_kv_uint(&pk, "v", 1);
            fb_mp_pack_kv_uint(&pk, "id", 1);
            fb_mp_pack_kv_cstr(&pk, "method", "health");
            fb_mp_pack_kv_uint(&pk, "deadline_ms", 10);
            fb_mp_pack_cstr(&pk, i == 5 ? "idem" : "trace");
            fb_mp_pack_strn(&pk, i == 5 ? "k\0A" : "k\xff", 3);
            break;
        }
        FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &root) == 0);
        FB_ASSERT(fb_rpc_request_decode(&root, &req, &code, msg, sizeof(msg)) == -1);
        FB_ASSERT(strcmp(code, cases[i].expect_code) == 0 && msg[0]);
        if (i >= 1)
            FB_ASSERT(req.id != NULL); /* the error reply can name the request */
    }

    /* a JSON body fb_mp_pack_json takes, nested as deep as it goes, makes a
     * message fb_mp_unpack reads; one level more is refused when packed */
    for (int depth = FB_MP_MAX_DEPTH - 3; depth <= FB_MP_MAX_DEPTH; depth++) {
        json_t *doc = json_object(), *at = doc; /* depth nested objects */
        for (int d = 1; d < depth; d++) {
            json_t *inner = json_object();
            json_object_set_new(at, "x", inner);
            at = inner;
        }
        msgpack_sbuffer_clear(&body);
        msgpack_packer_init(&pk, &body, msgpack_sbuffer_write);
        int packed = fb_mp_pack_json(&pk, doc);
        json_decref(doc);
        FB_ASSERT((packed == 0) == (depth < FB_MP_MAX_DEPTH)); /* the message's map is one more */
        if (packed != 0)
            continue;
        msgpack_sbuffer_clear(&sb);
        fb_rpc_request_pack(&sb, 7, "verifier.verify", NULL, NULL, 1000, body.data, body.size);
        FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &root) == 0);
    }
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&rb);
    msgpack_sbuffer_destroy(&body);
    return 0;
}
