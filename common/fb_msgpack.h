/* fb_msgpack - safe reading of msgpack from outside, and packing shorthands.
 *
 * fb_mp_check() walks untrusted bytes before msgpack-c sees them: exactly one
 * well-formed object, nesting at most max_depth, every declared length and
 * element count within the bytes that remain (so a 5-byte message cannot make
 * the unpacker reserve gigabytes), no extension types. Only then is the buffer
 * unpacked with fb_mp_unpack(), whose objects point into the buffer. */
#ifndef FB_MSGPACK_H
#define FB_MSGPACK_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_MP_MAX_DEPTH 16
/* values one message may hold, keys and elements counted: each unpacks to a
 * 24-byte msgpack_object, where the smallest takes one byte on the wire */
#define FB_MP_MAX_OBJECTS (1u << 18)

/* fb_mp_check - validate untrusted msgpack bytes: nesting up to max_depth,
 * at most FB_MP_MAX_OBJECTS values. Returns 0 when buf holds exactly one
 * acceptable object, -1 otherwise. */
int fb_mp_check(const char *buf, size_t len, int max_depth);

/* fb_mp_unpack - check, then unpack buf into out using zone for storage.
 * Returns 0, or -1 when the bytes are not acceptable. Strings in out point into
 * buf, which must outlive the use of out. */
int fb_mp_unpack(const char *buf, size_t len, msgpack_zone *zone, msgpack_object *out);

/* fb_mp_get - the value of key in a map object, or NULL when obj is not a map
 * or has no such key. */
const msgpack_object *fb_mp_get(const msgpack_object *map, const char *key);

/* Typed reads of one value. Each returns true and fills the output when the
 * value exists and has the right type (and range), false otherwise. */
bool fb_mp_str(const msgpack_object *obj, const char **s, size_t *len);
bool fb_mp_int64(const msgpack_object *obj, int64_t *out);
bool fb_mp_uint64(const msgpack_object *obj, uint64_t *out);
bool fb_mp_bool(const msgpack_object *obj, bool *out);

/* Typed reads of map[key]; same results as above. */
bool fb_mp_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len);
bool fb_mp_get_int64(const msgpack_object *map, const char *key, int64_t *out);
bool fb_mp_get_uint64(const msgpack_object *map, const char *key, uint64_t *out);
bool fb_mp_get_bool(const msgpack_object *map, const char *key, bool *out);

/* fb_mp_str_eq - true when obj is a string equal to the C string z. */
bool fb_mp_str_eq(const msgpack_object *obj, const char *z);

/* Packing shorthands. */
void fb_mp_pack_cstr(msgpack_packer *pk, const char *s);
void fb_mp_pack_strn(msgpack_packer *pk, const char *s, size_t len);
void fb_mp_pack_kv_cstr(msgpack_packer *pk, const char *key, const char *value);
void fb_mp_pack_kv_int(msgpack_packer *pk, const char *key, int64_t value);
void fb_mp_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t value);
void fb_mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);

/* fb_mp_pack_json - pack a jansson value (integers stay integers, reals become
 * float64). Returns 0, or -1 when it nests too deep to be an RPC message's
 * body: the body sits one level inside its message, which fb_mp_unpack reads
 * to FB_MP_MAX_DEPTH. */
struct json_t;
int fb_mp_pack_json(msgpack_packer *pk, const struct json_t *value);

/* fb_mp_to_json - render obj as JSON text (for tools and logs). Binary values
 * become hex strings. Returns a malloc'ed string (caller frees). */
char *fb_mp_to_json(const msgpack_object *obj);

int fb_msgpack_test(bool verbose);

#endif
