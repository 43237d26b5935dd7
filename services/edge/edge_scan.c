/* edge_scan - the usage of a provider's whole answer, read from jsmn's tokens.
 *
 * What the scan accepts is a subset of what jansson reads the same way, so
 * that an answer the full parse would refuse (502, nothing charged) is never
 * charged through the scan instead:
 *   - bytes: printable ASCII, and tab, newline, return between tokens only
 *     (jansson checks UTF-8 and refuses raw control characters in strings);
 *   - strings: no \u escape (jansson refuses \u0000 and lone surrogates);
 *   - numbers: integers of at most 18 digits, no leading zero (jansson's
 *     json_int_t; reals could overflow);
 *   - one object and nothing after it, keys strings, "usage" once, its
 *     fields once;
 *   - between tokens only what the grammar puts there (jsmn is lenient: it
 *     takes "{,\"a\":1}" or a missing colon): the bytes between a container's
 *     children are checked (whitespace, one ':' or ',' where due). */
#include "edge_scan.h"
#include "fb_util.h"

#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *json;
    const jsmntok_t *t;
    int n;         /* tokens */
    bool controls; /* the text has a tab, newline or return somewhere */
} s_doc_t;

/* What the text is made of: -1 when a byte is neither printable ASCII nor
 * whitespace; else 1 when it has a tab, newline or return, 0 when not. */
static int s_text(const char *json, size_t len)
{
    int controls = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)json[i];
        if (ch < 0x20) {
            if (ch != '\t' && ch != '\n' && ch != '\r')
                return -1;
            controls = 1;
        } else if (ch > 0x7e) {
            return -1;
        }
    }
    return controls;
}

/* The index after token i and everything inside it. */
static int s_skip(const s_doc_t *d, int i)
{
    int end = d->t[i].end;
    for (i++; i < d->n && d->t[i].start < end; i++)
        ;
    return i;
}

static bool s_is_key(const s_doc_t *d, int i, const char *name)
{
    size_t len = strlen(name);
    return d->t[i].type == JSMN_STRING && (size_t)(d->t[i].end - d->t[i].start) == len &&
           memcmp(d->json + d->t[i].start, name, len) == 0;
}

/* A JSON integer as jansson reads one into json_int_t: -?(0|[1-9][0-9]*), at
 * most 18 digits. */
static bool s_integer(const char *s, int len, int64_t *out)
{
    int i = 0;
    bool neg = len > 0 && s[0] == '-';
    if (neg)
        i++;
    int digits = len - i;
    if (digits < 1 || digits > 18 || (digits > 1 && s[i] == '0'))
        return false;
    int64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

/* Where token i begins and ends in the text, a string's quotes included. */
static int s_from(const s_doc_t *d, int i)
{
    return d->t[i].type == JSMN_STRING ? d->t[i].start - 1 : d->t[i].start;
}

static int s_to(const s_doc_t *d, int i)
{
    return d->t[i].type == JSMN_STRING ? d->t[i].end + 1 : d->t[i].end;
}

/* json[from..to) is whitespace around exactly one sep (or none when sep is 0). */
static bool s_gap(const s_doc_t *d, int from, int to, char sep)
{
    bool seen = sep == 0;
    for (int k = from; k < to; k++) {
        char ch = d->json[k];
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r')
            continue;
        if (ch != sep || seen)
            return false;
        seen = true;
    }
    return seen;
}

/* A container's children and the bytes between them: "{" k ":" v "," ... "}"
 * or "[" v "," ... "]". */
static bool s_container(const s_doc_t *d, int i)
{
    const jsmntok_t *t = &d->t[i];
    bool object = t->type == JSMN_OBJECT;
    if (d->json[t->start] != (object ? '{' : '[') || d->json[t->end - 1] != (object ? '}' : ']'))
        return false;
    int at = t->start + 1, k = i + 1;
    for (int m = 0; m < t->size; m++) {
        if (k >= d->n || !s_gap(d, at, s_from(d, k), m == 0 ? 0 : ','))
            return false;
        if (object) {
            if (d->t[k].type != JSMN_STRING || d->t[k].size != 1 || k + 1 >= d->n ||
                !s_gap(d, s_to(d, k), s_from(d, k + 1), ':'))
                return false;
            k++;
        }
        at = s_to(d, k);
        k = s_skip(d, k);
    }
    return s_gap(d, at, t->end - 1, 0);
}

/* A JSON real jansson reads without overflow or underflow to an error:
 * -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]{1,2})? with a fraction or an
 * exponent, at most 24 bytes. */
static bool s_real(const char *s, int len)
{
    int i = 0;
    if (len > 24)
        return false;
    if (i < len && s[i] == '-')
        i++;
    int start = i;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == start || (i - start > 1 && s[start] == '0'))
        return false;
    bool part = false;
    if (i < len && s[i] == '.') {
        int f = ++i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == f)
            return false;
        part = true;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        int e = i;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == e || i - e > 2)
            return false;
        part = true;
    }
    return part && i == len;
}

/* Every token as the full parse would read it (see the file's comment);
 * reals too when reals is set. */
static bool s_plain(const s_doc_t *d, bool reals)
{
    for (int i = 0; i < d->n; i++) {
        const jsmntok_t *t = &d->t[i];
        const char *s = d->json + t->start;
        int len = t->end - t->start;
        if (t->type == JSMN_STRING) {
            /* no raw tab, newline or return inside (the only control
             * characters s_text lets through), no \u escape */
            if (d->controls && (memchr(s, '\t', (size_t)len) || memchr(s, '\n', (size_t)len) ||
                                memchr(s, '\r', (size_t)len)))
                return false;
            for (const char *b = s, *end = s + len; (b = memchr(b, '\\', (size_t)(end - b))); b += 2)
                if (b + 1 < end && b[1] == 'u')
                    return false;
        } else if (t->type == JSMN_PRIMITIVE) {
            int64_t v;
            bool word = (len == 4 && memcmp(s, "true", 4) == 0) || (len == 5 && memcmp(s, "false", 5) == 0) ||
                        (len == 4 && memcmp(s, "null", 4) == 0);
            if (!word && !s_integer(s, len, &v) && !(reals && s_real(s, len)))
                return false;
        } else if (!s_container(d, i)) {
            return false;
        }
    }
    return true;
}

/* The value of key name in the object at token obj: its index, 0 when
 * absent, -1 when the key is there more than once. */
static int s_member(const s_doc_t *d, int obj, const char *name)
{
    int found = 0, k = obj + 1;
    for (int m = 0; m < d->t[obj].size; m++) {
        if (s_is_key(d, k, name)) {
            if (found)
                return -1;
            found = k + 1;
        }
        k = s_skip(d, k + 1);
    }
    return found;
}

/* A non-negative integer member, as jansson's json_is_integer would see it. */
static bool s_count(const s_doc_t *d, int obj, const char *name, int64_t *out)
{
    int v = s_member(d, obj, name);
    return v > 0 && d->t[v].type == JSMN_PRIMITIVE &&
           s_integer(d->json + d->t[v].start, d->t[v].end - d->t[v].start, out) && *out >= 0;
}

/* Tokenizes json (len bytes, 1..INT_MAX / 2) into tokens (EDGE_SCAN_TOKENS)
 * and checks it is within the scan's subset: one object and nothing after
 * it, every token as the full parse reads it (reals too when reals is set). */
static bool s_read(s_doc_t *d, const char *json, size_t len, jsmntok_t *tokens, bool reals)
{
    int text = s_text(json, len);
    if (text < 0)
        return false;
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, json, len, tokens, EDGE_SCAN_TOKENS);
    if (n < 1 || tokens[0].type != JSMN_OBJECT)
        return false;
    *d = (s_doc_t){json, tokens, n, text == 1};
    return s_skip(d, 0) == n && s_plain(d, reals) && s_gap(d, 0, tokens[0].start, 0) &&
           s_gap(d, tokens[0].end, (int)len, 0);
}

bool edge_scan_openai_usage(const char *json, size_t len, edge_scan_usage_t *out)
{
    if (!json || len == 0 || len > INT_MAX / 2)
        return false;
    jsmntok_t tokens[EDGE_SCAN_TOKENS];
    s_doc_t d;
    if (!s_read(&d, json, len, tokens, false))
        return false;
    int usage = s_member(&d, 0, "usage");
    if (usage <= 0 || tokens[usage].type != JSMN_OBJECT)
        return false;
    edge_scan_usage_t u = {0};
    if (!s_count(&d, usage, "prompt_tokens", &u.prompt_tokens) ||
        !s_count(&d, usage, "completion_tokens", &u.completion_tokens))
        return false;
    int details = s_member(&d, usage, "prompt_tokens_details");
    if (details < 0 || s_member(&d, usage, "prompt_tokens") < 0 ||
        s_member(&d, usage, "completion_tokens") < 0)
        return false;
    if (details > 0 && tokens[details].type == JSMN_OBJECT) {
        int cached = s_member(&d, details, "cached_tokens");
        if (cached < 0)
            return false;
        int64_t v;
        if (cached > 0 && tokens[cached].type == JSMN_PRIMITIVE &&
            s_integer(json + tokens[cached].start, tokens[cached].end - tokens[cached].start, &v) && v > 0)
            u.cached_tokens = v;
    }
    *out = u;
    return true;
}

/* No object has a key twice (jansson's JSON_REJECT_DUPLICATES), and no key
 * has an escape (two spellings of one key would compare unequal here). */
static bool s_keys_once(const s_doc_t *d)
{
    for (int i = 0; i < d->n; i++) {
        if (d->t[i].type != JSMN_OBJECT)
            continue;
        if (d->t[i].size > 64)
            return false;
        int keys[64], nk = 0;
        for (int m = 0, k = i + 1; m < d->t[i].size; m++, k = s_skip(d, k + 1)) {
            const char *s = d->json + d->t[k].start;
            int len = d->t[k].end - d->t[k].start;
            if (memchr(s, '\\', (size_t)len))
                return false;
            for (int j = 0; j < nk; j++) {
                const jsmntok_t *o = &d->t[keys[j]];
                if (o->end - o->start == len && memcmp(d->json + o->start, s, (size_t)len) == 0)
                    return false;
            }
            keys[nk++] = k;
        }
    }
    return true;
}

/* What the value at token v (0: absent) is, as jansson would type it. */
static edge_scan_value_t s_value(const s_doc_t *d, int v)
{
    edge_scan_value_t out = {EDGE_SCAN_ABSENT, 0};
    if (v == 0)
        return out;
    const jsmntok_t *t = &d->t[v];
    const char *s = d->json + t->start;
    int len = t->end - t->start;
    out.kind = EDGE_SCAN_OTHER;
    if (t->type != JSMN_PRIMITIVE)
        return out;
    if (len == 4 && memcmp(s, "null", 4) == 0)
        out.kind = EDGE_SCAN_NULL;
    else if (len == 4 && memcmp(s, "true", 4) == 0)
        out.kind = EDGE_SCAN_TRUE;
    else if (len == 5 && memcmp(s, "false", 5) == 0)
        out.kind = EDGE_SCAN_FALSE;
    else if (s_integer(s, len, &out.value))
        out.kind = EDGE_SCAN_INTEGER;
    return out;
}

bool edge_scan_openai_request(const char *json, size_t len, edge_scan_request_t *out)
{
    if (!json || len == 0 || len > EDGE_SCAN_REQUEST_BYTES)
        return false;
    jsmntok_t tokens[EDGE_SCAN_TOKENS];
    s_doc_t d;
    if (!s_read(&d, json, len, tokens, true) || !s_keys_once(&d))
        return false;
    /* the top-level fields in one pass (no key is there twice: s_keys_once) */
    int model = 0, messages = 0, stream = 0, options = 0, mct = 0, mt = 0, n = 0;
    for (int m = 0, k = 1; m < tokens[0].size; m++, k = s_skip(&d, k + 1)) {
        int *field = s_is_key(&d, k, "model")                   ? &model
                     : s_is_key(&d, k, "messages")              ? &messages
                     : s_is_key(&d, k, "stream")                ? &stream
                     : s_is_key(&d, k, "stream_options")        ? &options
                     : s_is_key(&d, k, "max_completion_tokens") ? &mct
                     : s_is_key(&d, k, "max_tokens")            ? &mt
                     : s_is_key(&d, k, "n")                     ? &n
                                                                : NULL;
        if (field)
            *field = k + 1;
    }
    if (model == 0 || tokens[model].type != JSMN_STRING ||
        memchr(json + tokens[model].start, '\\', (size_t)(tokens[model].end - tokens[model].start)))
        return false; /* the model as a plain string, or the full parse */
    edge_scan_request_t r = {0};
    r.model = json + tokens[model].start;
    r.model_len = (size_t)(tokens[model].end - tokens[model].start);
    r.messages = messages > 0 && tokens[messages].type == JSMN_ARRAY ? tokens[messages].size : -1;
    r.stream = s_value(&d, stream);
    r.include_usage = s_value(
        &d, options > 0 && tokens[options].type == JSMN_OBJECT ? s_member(&d, options, "include_usage") : 0);
    r.max_completion_tokens = s_value(&d, mct);
    r.max_tokens = s_value(&d, mt);
    r.n = s_value(&d, n);
    *out = r;
    return true;
}

/* --- self-test ------------------------------------------------------------------------------ */

/* jansson's reading, as edge_chat reads a whole answer: true when the answer
 * is an object whose usage has both counts (non-negative integers). */
static bool s_reference(const char *json, size_t len, edge_scan_usage_t *out)
{
    json_t *d = json_loadb(json, len, 0, NULL);
    json_t *usage = json_object_get(d, "usage");
    json_t *p = json_object_get(usage, "prompt_tokens"), *c = json_object_get(usage, "completion_tokens");
    json_t *cached = json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
    bool ok = json_is_object(d) && json_is_integer(p) && json_integer_value(p) >= 0 && json_is_integer(c) &&
              json_integer_value(c) >= 0;
    if (ok) {
        out->prompt_tokens = json_integer_value(p);
        out->completion_tokens = json_integer_value(c);
        out->cached_tokens =
            json_is_integer(cached) && json_integer_value(cached) > 0 ? json_integer_value(cached) : 0;
    }
    json_decref(d);
    return ok;
}

static const char *s_samples[] = {
    ("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1795271302,\"model\":\"gpt-4o-mini\","
     "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Hello \\\"there\\\"\\n\"},"
     "\"logprobs\":null,\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":"
     "16,"
     "\"total_tokens\":22}}"),
    ("{\"usage\": {\"prompt_tokens\": 2006, \"completion_tokens\": 300, \"prompt_tokens_details\": "
     "{\"cached_tokens\": 1920, \"audio_tokens\": 0}, \"completion_tokens_details\": {\"reasoning_tokens\": "
     "0}},"
     "\n \"choices\": [{\"message\": {\"content\": null, \"tool_calls\": [{\"id\": \"call_1\", \"type\": "
     "\"function\", \"function\": {\"name\": \"get\", \"arguments\": \"{\\\"usage\\\": 1}\"}}]}}]}\n"),
    ("{\"choices\":[{\"message\":{\"content\":\"usage: {\\\"prompt_tokens\\\": 99}\"}}],\"usage\":{"
     "\"prompt_tokens\":0,\"completion_tokens\":0,\"prompt_tokens_details\":{\"cached_tokens\":null}}}"),
};

/* jansson's reading of a request, as edge_chat reads one. */
static edge_scan_value_t s_ref_value(json_t *v)
{
    edge_scan_value_t out = {EDGE_SCAN_ABSENT, 0};
    if (!v)
        return out;
    out.kind = json_is_null(v)      ? EDGE_SCAN_NULL
               : json_is_true(v)    ? EDGE_SCAN_TRUE
               : json_is_false(v)   ? EDGE_SCAN_FALSE
               : json_is_integer(v) ? EDGE_SCAN_INTEGER
                                    : EDGE_SCAN_OTHER;
    if (out.kind == EDGE_SCAN_INTEGER)
        out.value = json_integer_value(v);
    return out;
}

static bool s_same_value(edge_scan_value_t a, edge_scan_value_t b)
{
    return a.kind == b.kind && (a.kind != EDGE_SCAN_INTEGER || a.value == b.value);
}

/* true when jansson reads json as the scan did (r) */
static bool s_request_agrees(const char *json, size_t len, const edge_scan_request_t *r)
{
    json_t *d = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *model = json_object_get(d, "model"), *messages = json_object_get(d, "messages");
    bool ok =
        json_is_object(d) && json_is_string(model) && json_string_length(model) == r->model_len &&
        memcmp(json_string_value(model), r->model, r->model_len) == 0 &&
        (json_is_array(messages) ? (int64_t)json_array_size(messages) : -1) == r->messages &&
        s_same_value(s_ref_value(json_object_get(d, "stream")), r->stream) &&
        s_same_value(s_ref_value(json_object_get(json_object_get(d, "stream_options"), "include_usage")),
                     r->include_usage) &&
        s_same_value(s_ref_value(json_object_get(d, "max_completion_tokens")), r->max_completion_tokens) &&
        s_same_value(s_ref_value(json_object_get(d, "max_tokens")), r->max_tokens) &&
        s_same_value(s_ref_value(json_object_get(d, "n")), r->n);
    json_decref(d);
    return ok;
}

bool edge_scan_agrees(const char *json, size_t len)
{
    edge_scan_usage_t u, r;
    if (edge_scan_openai_usage(json, len, &u) &&
        (!s_reference(json, len, &r) || r.prompt_tokens != u.prompt_tokens ||
         r.completion_tokens != u.completion_tokens || r.cached_tokens != u.cached_tokens))
        return false;
    edge_scan_request_t q;
    return !edge_scan_openai_request(json, len, &q) || s_request_agrees(json, len, &q);
}

static const char *s_requests[] = {
    "{\"model\":\"gpt-4o-mini\",\"max_tokens\":16,\"messages\":[{\"role\":\"user\",\"content\":\"Say "
    "hello.\"}]}",
    ("{\n  \"model\": \"gpt-4o\", \"temperature\": 0.7, \"top_p\": 1e-2, \"stream\": true,\n"
     "  \"stream_options\": {\"include_usage\": true}, \"n\": 2, \"max_completion_tokens\": 300,\n"
     "  \"messages\": [{\"role\": \"system\", \"content\": \"Be \\\"brief\\\"\\n\"},"
     " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hi\"}]}],\n"
     "  \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get\", \"parameters\":"
     " {\"type\": \"object\", \"properties\": {}}}}], \"stop\": null}\n"),
    ("{\"messages\":[],\"model\":\"openai/gpt-4o-mini\",\"stream\":false,\"max_tokens\":null,\"n\":-1,"
     "\"stream_options\":[1]}"),
};

/* A sample with 1..3 random edits (replace, delete or insert a byte from
 * alphabet) into buf (cap bytes); returns its length. */
static size_t s_mutate(char *buf, size_t cap, const char *sample, int edits, uint64_t *seed,
                       const char *alphabet)
{
    size_t len = strlen(sample), nalpha = strlen(alphabet);
    memcpy(buf, sample, len);
    for (int e = 0; e < edits; e++) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        size_t at = (size_t)(*seed % len);
        char ch = alphabet[(*seed >> 32) % nalpha];
        switch ((*seed >> 48) % 3) {
        case 0:
            buf[at] = ch;
            break;
        case 1: /* delete */
            memmove(buf + at, buf + at + 1, len - at - 1);
            len--;
            break;
        default: /* insert */
            if (len + 1 < cap) {
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = ch;
                len++;
            }
        }
    }
    return len;
}

int edge_scan_test(bool verbose)
{
    edge_scan_usage_t u;
    /* the answers an OpenAI provider gives */
    FB_ASSERT(edge_scan_openai_usage(s_samples[0], strlen(s_samples[0]), &u));
    FB_ASSERT(u.prompt_tokens == 6 && u.completion_tokens == 16 && u.cached_tokens == 0);
    FB_ASSERT(edge_scan_openai_usage(s_samples[1], strlen(s_samples[1]), &u));
    FB_ASSERT(u.prompt_tokens == 2006 && u.completion_tokens == 300 && u.cached_tokens == 1920);
    FB_ASSERT(edge_scan_openai_usage(s_samples[2], strlen(s_samples[2]), &u));
    FB_ASSERT(u.prompt_tokens == 0 && u.completion_tokens == 0 && u.cached_tokens == 0);
    /* what it leaves to the full parse */
    static const char *left[] = {
        "",
        "[]",
        "{\"usage\":{\"prompt_tokens\":1}}",
        "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":-2}}",
        "{\"usage\":{\"prompt_tokens\":1.0,\"completion_tokens\":2}}",
        "{\"usage\":{\"prompt_tokens\":01,\"completion_tokens\":2}}",
        "{\"usage\":{\"prompt_tokens\":1234567890123456789,\"completion_tokens\":2}}",
        "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}} x",
        "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}{}",
        ("{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2},\"usage\":{\"prompt_tokens\":1,"
         "\"completion_tokens\":3}}"),
        "{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":5,\"completion_tokens\":2}}",
        "{\"a\":\"caf\xc3\xa9\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
        "{\"a\":\"\\u0000\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
        "{\"a\":\"x\ty\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
        "{\"a\":tru,\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
        "{\"a\":1e999,\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
        "{\"us\\u0061ge\":{\"prompt_tokens\":1,\"completion_tokens\":2}}",
        "{\"usage\":[1,2]}",
        "{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}",
    };
    for (size_t i = 0; i < sizeof(left) / sizeof(left[0]); i++) {
        if (edge_scan_openai_usage(left[i], strlen(left[i]), &u)) {
            fprintf(stderr, "edge_scan: answered for %s\n", left[i]);
            return 1;
        }
    }
    /* differential: whatever the scan answers for, jansson reads the same; mutations of the samples */
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    int answered = 0, total = 0;
    char buf[1024];
    for (int round = 0; round < 30000; round++) {
        size_t len = s_mutate(buf, sizeof(buf), s_samples[round % 3], 1 + round % 3, &seed,
                              "{}[]\",:0123456789-.eE tfnul\\\n\tx\x7f");
        total++;
        if (edge_scan_openai_usage(buf, len, &u))
            answered++;
        if (!edge_scan_agrees(buf, len)) {
            fprintf(stderr, "edge_scan: differs from jansson on %.*s\n", (int)len, buf);
            return 1;
        }
    }
    FB_ASSERT(answered > 1000); /* the mutations leave many answers readable */
    if (verbose)
        printf("edge_scan: %d of %d mutated answers read by the scan, all as jansson reads them\n", answered,
               total);

    /* requests */
    edge_scan_request_t q;
    FB_ASSERT(edge_scan_openai_request(s_requests[0], strlen(s_requests[0]), &q));
    FB_ASSERT(q.model_len == 11 && memcmp(q.model, "gpt-4o-mini", 11) == 0 && q.messages == 1);
    FB_ASSERT(q.max_tokens.kind == EDGE_SCAN_INTEGER && q.max_tokens.value == 16);
    FB_ASSERT(q.stream.kind == EDGE_SCAN_ABSENT && q.n.kind == EDGE_SCAN_ABSENT);
    FB_ASSERT(edge_scan_openai_request(s_requests[1], strlen(s_requests[1]), &q));
    FB_ASSERT(q.stream.kind == EDGE_SCAN_TRUE && q.include_usage.kind == EDGE_SCAN_TRUE && q.n.value == 2);
    FB_ASSERT(q.max_completion_tokens.value == 300 && q.max_tokens.kind == EDGE_SCAN_ABSENT &&
              q.messages == 2);
    FB_ASSERT(edge_scan_openai_request(s_requests[2], strlen(s_requests[2]), &q));
    FB_ASSERT(q.messages == 0 && q.stream.kind == EDGE_SCAN_FALSE && q.max_tokens.kind == EDGE_SCAN_NULL);
    FB_ASSERT(q.n.kind == EDGE_SCAN_INTEGER && q.n.value == -1 && q.include_usage.kind == EDGE_SCAN_ABSENT);
    for (size_t i = 0; i < FB_ARRAY_SIZE(s_requests); i++)
        FB_ASSERT(edge_scan_openai_request(s_requests[i], strlen(s_requests[i]), &q) &&
                  s_request_agrees(s_requests[i], strlen(s_requests[i]), &q));
    static const char *full[] = {
        "{\"model\":\"m\",\"model\":\"m\",\"messages\":[1]}",       /* a key twice */
        "{\"model\":\"m\",\"messages\":[{\"a\":1,\"a\":2}]}",       /* twice, deeper */
        "{\"model\":\"m\",\"messages\":[{\"a\":1,\"\\u0061\":2}]}", /* the same key escaped */
        "{\"model\":\"m\",\"messages\":[{\"a/\":1,\"a\\/\":2}]}",   /* the same key escaped */
        "{\"model\":\"g\\u0070t\",\"messages\":[1]}",               /* an escaped model */
        "{\"model\":\"m\",\"temperature\":1e999,\"messages\":[1]}", /* overflows */
        "{\"model\":\"m\",\"temperature\":01.5,\"messages\":[1]}",  /* not a number */
        "{\"model\":\"m\",\"temperature\":.5,\"messages\":[1]}",
        "{\"model\":\"m\",\"messages\":[\"caf\xc3\xa9\"]}", /* not ASCII */
        "{\"model\":7,\"messages\":[1]}",                   /* no plain model */
        "[{\"model\":\"m\"}]",
        "{\"model\":\"m\",\"messages\":[1]} {}",
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(full); i++) {
        if (edge_scan_openai_request(full[i], strlen(full[i]), &q)) {
            fprintf(stderr, "edge_scan: read the request %s\n", full[i]);
            return 1;
        }
    }
    answered = total = 0;
    for (int round = 0; round < 30000; round++) {
        size_t len = s_mutate(buf, sizeof(buf), s_requests[round % FB_ARRAY_SIZE(s_requests)], 1 + round % 3,
                              &seed, "{}[]\",:0123456789-.eE+ tfnul\\\n\tx\x7fmsaou");
        total++;
        if (edge_scan_openai_request(buf, len, &q))
            answered++;
        if (!edge_scan_agrees(buf, len)) {
            fprintf(stderr, "edge_scan: differs from jansson on the request %.*s\n", (int)len, buf);
            return 1;
        }
    }
    FB_ASSERT(answered > 1000);
    if (verbose)
        printf("edge_scan: %d of %d mutated requests read by the scan, all as jansson reads them\n", answered,
               total);
    return 0;
}
