/* fuzz_rpc_frame - the input is one frame of the internal RPC (msgpack), as a
 * service receives it from a ZeroMQ peer: checked, unpacked, read as a
 * request and as a reply, and rendered as JSON the way the verifier hands
 * bodies on. Properties: whatever fb_mp_check accepts unpacks; the JSON
 * rendering of an accepted frame is valid JSON. */
#include "fb_msgpack.h"
#include "fb_rpc_msg.h"
#include "fuzz.h"

#include <jansson.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    bool checked = fb_mp_check(buf, size, FB_MP_MAX_DEPTH) == 0;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object root;
    int rc = fb_mp_unpack(buf, size, &zone, &root);
    FUZZ_ASSERT((rc == 0) == checked);
    if (rc == 0) {
        fb_rpc_request_t req;
        const char *code = NULL;
        char msg[256];
        if (fb_rpc_request_decode(&root, &req, &code, msg, sizeof(msg)) == 0) {
            FUZZ_ASSERT(req.method && req.method_len > 0);
            FUZZ_ASSERT(!req.body || req.body->type == MSGPACK_OBJECT_MAP);
        } else {
            FUZZ_ASSERT(code && code[0]);
        }
        fb_rpc_reply_t rep;
        const msgpack_object *id;
        if (fb_rpc_reply_decode(&root, &rep, &id) == 0)
            FUZZ_ASSERT(rep.body && rep.body->type == MSGPACK_OBJECT_MAP && rep.ok == (rep.code[0] == '\0'));
        char *text = fb_mp_to_json(&root);
        json_error_t jerr;
        json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
        /* jansson has no integers above 2^63, strings must be UTF-8, keys
         * cannot hold NUL: such bodies are refused by the reader, never misread */
        enum json_error_code why = json_error_code(&jerr);
        FUZZ_ASSERT(j || why == json_error_invalid_utf8 || why == json_error_numeric_overflow ||
                    why == json_error_null_byte_in_key);
        json_decref(j);
        free(text);
    }
    msgpack_zone_destroy(&zone);
    return 0;
}
