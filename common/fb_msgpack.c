/* fb_msgpack - bounds-checked validation before unpacking, typed getters. */
#include "fb_msgpack.h"
#include "fb_util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *p, *end;
    uint64_t objects; /* left to read: each becomes a msgpack_object when unpacked */
} s_cursor_t;

static int s_need(s_cursor_t *c, uint64_t n)
{
    return (uint64_t)(c->end - c->p) >= n ? 0 : -1;
}

static uint64_t s_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Reads a big-endian length of n bytes after the type byte. */
static int s_len(s_cursor_t *c, int n, uint64_t *out)
{
    if (s_need(c, (uint64_t)n) != 0)
        return -1;
    *out = s_be(c->p, n);
    c->p += n;
    return 0;
}

static int s_skip(s_cursor_t *c, uint64_t n)
{
    if (s_need(c, n) != 0)
        return -1;
    c->p += n;
    return 0;
}

static int s_walk(s_cursor_t *c, int depth);

/* A container of count elements: every element takes at least one byte. */
static int s_walk_items(s_cursor_t *c, uint64_t count, int depth)
{
    if (depth <= 0 || s_need(c, count) != 0)
        return -1;
    for (uint64_t i = 0; i < count; i++)
        if (s_walk(c, depth - 1) != 0)
            return -1;
    return 0;
}

static int s_walk(s_cursor_t *c, int depth)
{
    if (s_need(c, 1) != 0 || c->objects == 0)
        return -1;
    c->objects--;
    unsigned char t = *c->p++;
    uint64_t n;
    if (t <= 0x7f || t >= 0xe0)
        return 0;
    if (t >= 0x80 && t <= 0x8f)
        return s_walk_items(c, (uint64_t)(t & 0x0f) * 2, depth);
    if (t >= 0x90 && t <= 0x9f)
        return s_walk_items(c, t & 0x0f, depth);
    if (t >= 0xa0 && t <= 0xbf)
        return s_skip(c, t & 0x1f);
    switch (t) {
    case 0xc0: /* nil */
    case 0xc2: /* false */
    case 0xc3: /* true */
        return 0;
    case 0xc4: /* bin8 */
    case 0xd9: /* str8 */
        return s_len(c, 1, &n) == 0 ? s_skip(c, n) : -1;
    case 0xc5:
    case 0xda:
        return s_len(c, 2, &n) == 0 ? s_skip(c, n) : -1;
    case 0xc6:
    case 0xdb:
        return s_len(c, 4, &n) == 0 ? s_skip(c, n) : -1;
    case 0xca:
        return s_skip(c, 4);
    case 0xcb:
        return s_skip(c, 8);
    case 0xcc:
    case 0xd0:
        return s_skip(c, 1);
    case 0xcd:
    case 0xd1:
        return s_skip(c, 2);
    case 0xce:
    case 0xd2:
        return s_skip(c, 4);
    case 0xcf:
    case 0xd3:
        return s_skip(c, 8);
    case 0xdc:
        return s_len(c, 2, &n) == 0 ? s_walk_items(c, n, depth) : -1;
    case 0xdd:
        return s_len(c, 4, &n) == 0 ? s_walk_items(c, n, depth) : -1;
    case 0xde:
        return s_len(c, 2, &n) == 0 ? s_walk_items(c, n * 2, depth) : -1;
    case 0xdf:
        return s_len(c, 4, &n) == 0 ? s_walk_items(c, n * 2, depth) : -1;
    default: /* 0xc1 (never used) and the extension types */
        return -1;
    }
}

int fb_mp_check(const char *buf, size_t len, int max_depth)
{
    if (buf == NULL || len == 0)
        return -1;
    s_cursor_t c = {(const unsigned char *)buf, (const unsigned char *)buf + len, FB_MP_MAX_OBJECTS};
    if (s_walk(&c, max_depth) != 0)
        return -1;
    return c.p == c.end ? 0 : -1;
}

int fb_mp_unpack(const char *buf, size_t len, msgpack_zone *zone, msgpack_object *out)
{
    if (fb_mp_check(buf, len, FB_MP_MAX_DEPTH) != 0)
        return -1;
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack(buf, len, &off, zone, out);
    return rc == MSGPACK_UNPACK_SUCCESS && off == len ? 0 : -1;
}

const msgpack_object *fb_mp_get(const msgpack_object *map, const char *key)
{
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && memcmp(k->via.str.ptr, key, kl) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

bool fb_mp_str(const msgpack_object *obj, const char **s, size_t *len)
{
    if (obj == NULL || obj->type != MSGPACK_OBJECT_STR)
        return false;
    *s = obj->via.str.ptr;
    *len = obj->via.str.size;
    return true;
}

bool fb_mp_int64(const msgpack_object *obj, int64_t *out)
{
    if (obj == NULL)
        return false;
    if (obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (obj->via.u64 > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)obj->via.u64;
        return true;
    }
    if (obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = obj->via.i64;
        return true;
    }
    return false;
}

bool fb_mp_uint64(const msgpack_object *obj, uint64_t *out)
{
    if (obj == NULL || obj->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = obj->via.u64;
    return true;
}

bool fb_mp_bool(const msgpack_object *obj, bool *out)
{
    if (obj == NULL || obj->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    *out = obj->via.boolean;
    return true;
}

bool fb_mp_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len)
{
    return fb_mp_str(fb_mp_get(map, key), s, len);
}

bool fb_mp_get_int64(const msgpack_object *map, const char *key, int64_t *out)
{
    return fb_mp_int64(fb_mp_get(map, key), out);
}

bool fb_mp_get_uint64(const msgpack_object *map, const char *key, uint64_t *out)
{
    return fb_mp_uint64(fb_mp_get(map, key), out);
}

bool fb_mp_get_bool(const msgpack_object *map, const char *key, bool *out)
{
    return fb_mp_bool(fb_mp_get(map, key), out);
}

bool fb_mp_str_eq(const msgpack_object *obj, const char *z)
{
    return obj && obj->type == MSGPACK_OBJECT_STR && fb_streq_n(obj->via.str.ptr, obj->via.str.size, z);
}

void fb_mp_pack_strn(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

void fb_mp_pack_cstr(msgpack_packer *pk, const char *s)
{
    fb_mp_pack_strn(pk, s, strlen(s));
}

void fb_mp_pack_kv_cstr(msgpack_packer *pk, const char *key, const char *value)
{
    fb_mp_pack_cstr(pk, key);
    if (value)
        fb_mp_pack_cstr(pk, value);
    else
        msgpack_pack_nil(pk);
}

void fb_mp_pack_kv_int(msgpack_packer *pk, const char *key, int64_t value)
{
    fb_mp_pack_cstr(pk, key);
    msgpack_pack_int64(pk, value);
}

void fb_mp_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t value)
{
    fb_mp_pack_cstr(pk, key);
    msgpack_pack_uint64(pk, value);
}

void fb_mp_pack_kv_bool(msgpack_packer *pk, const char *key, bool value)
{
    fb_mp_pack_cstr(pk, key);
    if (value)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* depth: the containers around v in its message; a container is one more,
 * and fb_mp_unpack reads FB_MP_MAX_DEPTH of them */
static int s_pack_json(msgpack_packer *pk, const json_t *v, int depth)
{
    if ((json_is_object(v) || json_is_array(v)) && depth >= FB_MP_MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(v));
        const char *k;
        json_t *item;
        json_object_foreach((json_t *)v, k, item)
        {
            fb_mp_pack_cstr(pk, k);
            if (s_pack_json(pk, item, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(v));
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item)
        {
            if (s_pack_json(pk, item, depth + 1) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_STRING:
        fb_mp_pack_strn(pk, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        return 0;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        return 0;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return 0;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return 0;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        return 0;
    }
    return -1;
}

int fb_mp_pack_json(msgpack_packer *pk, const json_t *value)
{
    return s_pack_json(pk, value, 1); /* inside its message's map */
}

/* --- JSON rendering for tools ------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
} s_sb_t;

static void s_sb_put(s_sb_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        b->buf = fb_realloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void s_sb_jstr(s_sb_t *b, const char *s, size_t n)
{
    s_sb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            s_sb_put(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            s_sb_put(b, esc, 6);
        } else {
            s_sb_put(b, (const char *)&c, 1);
        }
    }
    s_sb_put(b, "\"", 1);
}

static void s_to_json(s_sb_t *b, const msgpack_object *o)
{
    char num[64];
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        s_sb_put(b, "null", 4);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        s_sb_put(b, o->via.boolean ? "true" : "false", o->via.boolean ? 4 : 5);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof(num), "%llu", (unsigned long long)o->via.u64);
        s_sb_put(b, num, strlen(num));
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof(num), "%lld", (long long)o->via.i64);
        s_sb_put(b, num, strlen(num));
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64)) { /* JSON has no NaN or infinity */
            s_sb_put(b, "null", 4);
            break;
        }
        snprintf(num, sizeof(num), "%.17g", o->via.f64);
        if (!strpbrk(num, ".e")) /* a float stays a float: 2.0, not the integer 2 */
            strcat(num, ".0");
        s_sb_put(b, num, strlen(num));
        break;
    case MSGPACK_OBJECT_STR:
        s_sb_jstr(b, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN: {
        static const char hex[] = "0123456789abcdef";
        s_sb_put(b, "\"0x", 3);
        for (uint32_t i = 0; i < o->via.bin.size; i++) {
            unsigned char c = (unsigned char)o->via.bin.ptr[i];
            char h[2] = {hex[c >> 4], hex[c & 15]};
            s_sb_put(b, h, 2);
        }
        s_sb_put(b, "\"", 1);
        break;
    }
    case MSGPACK_OBJECT_ARRAY:
        s_sb_put(b, "[", 1);
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i)
                s_sb_put(b, ",", 1);
            s_to_json(b, &o->via.array.ptr[i]);
        }
        s_sb_put(b, "]", 1);
        break;
    case MSGPACK_OBJECT_MAP:
        s_sb_put(b, "{", 1);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i)
                s_sb_put(b, ",", 1);
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR) {
                s_sb_jstr(b, k->via.str.ptr, k->via.str.size);
            } else {
                s_sb_t kb = {0};
                s_to_json(&kb, k);
                s_sb_jstr(b, kb.buf ? kb.buf : "", kb.len);
                free(kb.buf);
            }
            s_sb_put(b, ":", 1);
            s_to_json(b, &o->via.map.ptr[i].val);
        }
        s_sb_put(b, "}", 1);
        break;
    default:
        s_sb_put(b, "null", 4);
        break;
    }
}

char *fb_mp_to_json(const msgpack_object *obj)
{
    s_sb_t b = {0};
    s_to_json(&b, obj);
    if (!b.buf)
        s_sb_put(&b, "", 0);
    return b.buf;
}

int fb_msgpack_test(bool verbose)
{
    FB_UNUSED(verbose);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    fb_mp_pack_kv_cstr(&pk, "method", "health");
    fb_mp_pack_kv_int(&pk, "neg", -42);
    fb_mp_pack_kv_uint(&pk, "big", UINT64_MAX);
    fb_mp_pack_kv_bool(&pk, "flag", true);
    fb_mp_pack_cstr(&pk, "list");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_nil(&pk);
    msgpack_pack_int64(&pk, 7);

    FB_ASSERT(fb_mp_check(sb.data, sb.size, FB_MP_MAX_DEPTH) == 0);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &o) == 0);
    const char *s;
    size_t n;
    int64_t i64;
    uint64_t u64;
    bool b;
    FB_ASSERT(fb_mp_get_str(&o, "method", &s, &n) && fb_streq_n(s, n, "health"));
    FB_ASSERT(fb_mp_get_int64(&o, "neg", &i64) && i64 == -42);
    FB_ASSERT(!fb_mp_get_int64(&o, "big", &i64)); /* above INT64_MAX */
    FB_ASSERT(fb_mp_get_uint64(&o, "big", &u64) && u64 == UINT64_MAX);
    FB_ASSERT(fb_mp_get_bool(&o, "flag", &b) && b);
    FB_ASSERT(!fb_mp_get_str(&o, "neg", &s, &n)); /* wrong type */
    FB_ASSERT(fb_mp_get(&o, "absent") == NULL);
    char *json = fb_mp_to_json(&o);
    FB_ASSERT(strcmp(json, "{\"method\":\"health\",\"neg\":-42,\"big\":18446744073709551615,\"flag\":true,"
                           "\"list\":[null,7]}") == 0);
    free(json);

    /* truncated at every length: never accepted */
    for (size_t cut = 0; cut < sb.size; cut++)
        FB_ASSERT(fb_mp_check(sb.data, cut, FB_MP_MAX_DEPTH) != 0);
    /* trailing bytes */
    char extra[256];
    memcpy(extra, sb.data, sb.size);
    extra[sb.size] = (char)0xc0;
    FB_ASSERT(fb_mp_check(extra, sb.size + 1, FB_MP_MAX_DEPTH) != 0);

    /* hostile counts: a map32 that claims 2^32-1 pairs in 5 bytes */
    const char huge[] = {(char)0xdf, (char)0xff, (char)0xff, (char)0xff, (char)0xff};
    FB_ASSERT(fb_mp_check(huge, sizeof(huge), FB_MP_MAX_DEPTH) != 0);
    const char str32[] = {(char)0xdb, 0x7f, (char)0xff, (char)0xff, (char)0xff, 'a'};
    FB_ASSERT(fb_mp_check(str32, sizeof(str32), FB_MP_MAX_DEPTH) != 0);
    /* never-used byte and extension types */
    const char c1[] = {(char)0xc1};
    FB_ASSERT(fb_mp_check(c1, 1, FB_MP_MAX_DEPTH) != 0);
    const char ext[] = {(char)0xd4, 1, 2};
    FB_ASSERT(fb_mp_check(ext, 3, FB_MP_MAX_DEPTH) != 0);
    /* nesting: 20 nested arrays are refused at depth 16, accepted at 32 */
    char deep[21];
    memset(deep, (char)0x91, 20);
    deep[20] = 0x01;
    FB_ASSERT(fb_mp_check(deep, sizeof(deep), FB_MP_MAX_DEPTH) != 0);
    FB_ASSERT(fb_mp_check(deep, sizeof(deep), 32) == 0);
    FB_ASSERT(fb_mp_check(NULL, 0, 4) != 0);
    /* an array of FB_MP_MAX_OBJECTS - 1 empty arrays passes; one more is too many */
    for (uint32_t extra_one = 0; extra_one <= 1; extra_one++) {
        uint32_t count = FB_MP_MAX_OBJECTS - 1 + extra_one;
        char *many = fb_malloc(5 + count);
        many[0] = (char)0xdd;
        for (int i = 0; i < 4; i++)
            many[1 + i] = (char)(count >> (24 - 8 * i));
        memset(many + 5, 0x90, count);
        FB_ASSERT((fb_mp_check(many, 5 + count, FB_MP_MAX_DEPTH) == 0) == (extra_one == 0));
        free(many);
    }

    /* JSON in, msgpack out, JSON back: integers stay exact */
    json_error_t jerr;
    json_t *j =
        json_loads("{\"a\":[1,-2,9007199254740993],\"b\":{\"c\":null,\"d\":\"x\"},\"e\":true}", 0, &jerr);
    FB_ASSERT(j);
    msgpack_sbuffer_clear(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    FB_ASSERT(fb_mp_pack_json(&pk, j) == 0);
    json_decref(j);
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &o) == 0);
    json = fb_mp_to_json(&o);
    FB_ASSERT(strcmp(json, "{\"a\":[1,-2,9007199254740993],\"b\":{\"c\":null,\"d\":\"x\"},\"e\":true}") == 0);
    free(json);

    /* floats: exact digits, and still floats when whole; NaN and infinities (no JSON for them) become null */
    msgpack_sbuffer_clear(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 5);
    msgpack_pack_double(&pk, 0.1);
    msgpack_pack_double(&pk, -2.0);
    msgpack_pack_double(&pk, NAN);
    msgpack_pack_double(&pk, -INFINITY);
    msgpack_pack_float(&pk, 1.5f);
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &o) == 0);
    json = fb_mp_to_json(&o);
    FB_ASSERT(strcmp(json, "[0.10000000000000001,-2.0,null,null,1.5]") == 0);
    free(json);

    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb);
    return 0;
}
