/* edge_catalog - the model catalog: parsing, lookup, prepared answers. */
#include "edge_catalog.h"
#include "fb_util.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The built-in catalog: list prices of the providers' models (micro-USDC per
 * million tokens). Served by the mock model until a provider key is set. */
static const char s_builtin[] =
    "{\"models\":["
    "{\"id\":\"gpt-4o-mini\",\"provider\":\"openai\",\"display_name\":\"GPT-4o mini\","
    "\"aliases\":[\"openai/"
    "gpt-4o-mini\"],\"input_price\":150000,\"cache_read_price\":75000,\"output_price\":600000,"
    "\"context_tokens\":128000,\"max_output_tokens\":16384,\"image_tokens\":48169},"
    "{\"id\":\"gpt-4o\",\"provider\":\"openai\",\"display_name\":\"GPT-4o\","
    "\"aliases\":[\"openai/gpt-4o\"],\"input_price\":2500000,\"cache_read_price\":1250000,"
    "\"output_price\":10000000,"
    "\"context_tokens\":128000,\"max_output_tokens\":16384,\"image_tokens\":1445},"
    "{\"id\":\"gpt-4.1-mini\",\"provider\":\"openai\",\"display_name\":\"GPT-4.1 mini\","
    "\"aliases\":[\"openai/gpt-4.1-mini\"],\"input_price\":400000,\"cache_read_price\":100000,"
    "\"output_price\":1600000,"
    "\"context_tokens\":1047576,\"max_output_tokens\":32768,\"image_tokens\":2489},"
    "{\"id\":\"claude-3-5-haiku-20241022\",\"provider\":\"anthropic\",\"display_name\":\"Claude Haiku 3.5\","
    "\"aliases\":[\"claude-3-5-haiku-latest\",\"anthropic/claude-3.5-haiku\"],\"input_price\":800000,"
    "\"cache_read_price\":80000,\"cache_write_price\":1000000,\"output_price\":4000000,"
    "\"context_tokens\":200000,\"max_output_tokens\":8192,\"image_tokens\":1600},"
    "{\"id\":\"claude-sonnet-4-20250514\",\"provider\":\"anthropic\",\"display_name\":\"Claude Sonnet 4\","
    "\"aliases\":[\"claude-sonnet-4-0\",\"anthropic/claude-sonnet-4\"],\"input_price\":3000000,"
    "\"cache_read_price\":300000,\"cache_write_price\":3750000,\"output_price\":15000000,"
    "\"context_tokens\":200000,\"max_output_tokens\":64000,\"image_tokens\":1600}"
    "]}";

typedef struct {
    const char *name; /* an id or an alias, in the model */
    size_t len;
    const edge_model_t *model;
} s_name_t;

struct edge_catalog_t {
    edge_route_spec_t *routes;
    size_t nroutes;
    edge_model_t *models;
    size_t count;
    s_name_t *names; /* sorted by (len, bytes) for bsearch */
    size_t nnames;
    char *models_openai, *models_anthropic, *pricing;
    size_t models_openai_len, models_anthropic_len, pricing_len;
};

static int s_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int s_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* 1..max characters of A-Z a-z 0-9 and the punctuation in extra */
static bool s_chars_ok(const char *s, size_t max, const char *extra)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr(extra, c)))
            return false;
    }
    return true;
}

/* ids and aliases: 1..128 of [A-Za-z0-9._:/@-] */
static bool s_name_ok(const char *s)
{
    return s_chars_ok(s, EDGE_MODEL_NAME_MAX, "._:/@-");
}

/* route names: 1..64 of [A-Za-z0-9._-] */
static bool s_route_name_ok(const char *s)
{
    return s_chars_ok(s, EDGE_ROUTE_NAME_MAX, "._-");
}

/* environment variable names: 1..128 of [A-Z0-9_], not starting with a digit */
static bool s_env_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > EDGE_ROUTE_ENV_MAX || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

static int s_provider(const char *text, edge_provider_t *out)
{
    if (text && strcmp(text, "openai") == 0)
        *out = EDGE_PROVIDER_OPENAI;
    else if (text && strcmp(text, "anthropic") == 0)
        *out = EDGE_PROVIDER_ANTHROPIC;
    else
        return -1;
    return 0;
}

/* The index of the route named name (the built-in ones, then the catalog's
 * first n), or -1. */
static int s_route_index(const edge_catalog_t *c, size_t n, const char *name)
{
    if (strcmp(name, "openai") == 0)
        return EDGE_PROVIDER_OPENAI;
    if (strcmp(name, "anthropic") == 0)
        return EDGE_PROVIDER_ANTHROPIC;
    for (size_t i = 0; i < n; i++)
        if (strcmp(c->routes[i].name, name) == 0)
            return EDGE_ROUTE_CATALOG + (int)i;
    return -1;
}

static edge_provider_t s_route_provider(const edge_catalog_t *c, int index)
{
    return index < EDGE_ROUTE_CATALOG ? (edge_provider_t)index
                                      : c->routes[index - EDGE_ROUTE_CATALOG].provider;
}

/* Checks that known lists every field of o. */
static int s_known_fields(json_t *o, const char *const *known, size_t n, const char *what, size_t index,
                          char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < n && !ok; i++)
            ok = strcmp(key, known[i]) == 0;
        if (!ok)
            return s_fail(err, errlen, "%s[%zu]: unknown field \"%.64s\"", what, index, key);
    }
    return 0;
}

/* routes[index], its fallback left to s_route_fallbacks (it may name a route
 * further down). */
static int s_parse_route(json_t *r, size_t index, edge_catalog_t *c, char *err, size_t errlen)
{
    edge_route_spec_t *out = &c->routes[index];
    memset(out, 0, sizeof(*out));
    out->fallback = -1;
    if (!json_is_object(r))
        return s_fail(err, errlen, "routes[%zu] must be an object", index);
    static const char *const known[] = {"name", "provider", "base_url", "api_key_env", "fallback"};
    if (s_known_fields(r, known, FB_ARRAY_SIZE(known), "routes", index, err, errlen) != 0)
        return -1;
    const char *name = json_string_value(json_object_get(r, "name"));
    if (!name || !s_route_name_ok(name))
        return s_fail(err, errlen, "routes[%zu]: name must be 1..%d characters of A-Z a-z 0-9 . _ -", index,
                      EDGE_ROUTE_NAME_MAX);
    if (s_route_index(c, index, name) >= 0)
        return s_fail(err, errlen, "routes[%zu]: the name \"%s\" is %s", index, name,
                      strcmp(name, "openai") == 0 || strcmp(name, "anthropic") == 0 ? "a built-in route's"
                                                                                    : "used twice");
    fb_copy_str(out->name, sizeof(out->name), name);
    if (s_provider(json_string_value(json_object_get(r, "provider")), &out->provider) != 0)
        return s_fail(err, errlen, "route \"%s\": provider must be \"openai\" or \"anthropic\"", name);
    const char *url = json_string_value(json_object_get(r, "base_url"));
    size_t n = url ? strlen(url) : 0;
    if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) ||
        n > EDGE_ROUTE_URL_MAX || url[n - 1] == '/' || strpbrk(url, " \t\r\n"))
        return s_fail(err, errlen,
                      "route \"%s\": base_url must be an http:// or https:// URL of at most %d characters "
                      "without a trailing /",
                      name, EDGE_ROUTE_URL_MAX);
    fb_copy_str(out->base_url, sizeof(out->base_url), url);
    json_t *env = json_object_get(r, "api_key_env");
    if (env) {
        if (!json_is_string(env) || !s_env_name_ok(json_string_value(env)))
            return s_fail(err, errlen,
                          "route \"%s\": api_key_env must name an environment variable (1..%d of A-Z 0-9 _)",
                          name, EDGE_ROUTE_ENV_MAX);
        fb_copy_str(out->api_key_env, sizeof(out->api_key_env), json_string_value(env));
    }
    json_t *fb = json_object_get(r, "fallback");
    if (fb && !json_is_string(fb))
        return s_fail(err, errlen, "route \"%s\": fallback must be a route's name", name);
    return 0;
}

/* Each route's fallback: another route (built-in or in the catalog) of the
 * same dialect. */
static int s_route_fallbacks(json_t *routes, edge_catalog_t *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        edge_route_spec_t *r = &c->routes[i];
        const char *name = json_string_value(json_object_get(json_array_get(routes, i), "fallback"));
        if (!name)
            continue;
        int f = s_route_index(c, c->nroutes, name);
        if (f < 0)
            return s_fail(err, errlen, "route \"%s\": fallback \"%.64s\" is not a route", r->name, name);
        if (f == EDGE_ROUTE_CATALOG + (int)i)
            return s_fail(err, errlen, "route \"%s\": fallback names the route itself", r->name);
        if (s_route_provider(c, f) != r->provider)
            return s_fail(err, errlen, "route \"%s\": fallback \"%s\" speaks another provider's dialect",
                          r->name, name);
        r->fallback = f;
    }
    return 0;
}

static int s_int_field(json_t *m, const char *key, int64_t min, int64_t max, bool required, int64_t *out,
                       const char *id, char *err, size_t errlen)
{
    json_t *v = json_object_get(m, key);
    if (!v) {
        if (required)
            return s_fail(err, errlen, "model \"%s\": %s is required", id, key);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return s_fail(err, errlen, "model \"%s\": %s must be an integer in %" PRId64 "..%" PRId64, id, key,
                      min, max);
    *out = json_integer_value(v);
    return 0;
}

static int s_str_field(json_t *m, const char *key, char *out, size_t cap, const char *id, char *err,
                       size_t errlen)
{
    json_t *v = json_object_get(m, key);
    if (!v)
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= cap)
        return s_fail(err, errlen, "model \"%s\": %s must be a string of 1..%zu characters", id, key,
                      cap - 1);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int s_parse_model(json_t *m, size_t index, const edge_catalog_t *c, edge_model_t *out, char *err,
                         size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->cache_read_price = out->cache_write_price = out->cache_write_1h_price =
        -1; /* absent: defaults below */
    if (!json_is_object(m))
        return s_fail(err, errlen, "models[%zu] must be an object", index);
    static const char *const known[] = {"id",
                                        "provider",
                                        "route",
                                        "upstream",
                                        "display_name",
                                        "aliases",
                                        "input_price",
                                        "cache_read_price",
                                        "cache_write_price",
                                        "cache_write_1h_price",
                                        "output_price",
                                        "context_tokens",
                                        "max_output_tokens",
                                        "image_tokens"};
    if (s_known_fields(m, known, FB_ARRAY_SIZE(known), "models", index, err, errlen) != 0)
        return -1;
    json_t *v;
    json_t *id = json_object_get(m, "id");
    if (!json_is_string(id) || !s_name_ok(json_string_value(id)))
        return s_fail(err, errlen, "models[%zu]: id must be 1..%d characters of A-Z a-z 0-9 . _ : / @ -",
                      index, EDGE_MODEL_NAME_MAX);
    snprintf(out->id, sizeof(out->id), "%s", json_string_value(id));
    if (s_provider(json_string_value(json_object_get(m, "provider")), &out->provider) != 0)
        return s_fail(err, errlen, "model \"%s\": provider must be \"openai\" or \"anthropic\"", out->id);
    out->route = (int)out->provider;
    json_t *route = json_object_get(m, "route");
    if (route) {
        int r = json_is_string(route) ? s_route_index(c, c->nroutes, json_string_value(route)) : -1;
        if (r < 0)
            return s_fail(err, errlen,
                          "model \"%s\": route must name a route (\"openai\", \"anthropic\" or "
                          "one of the catalog's routes)",
                          out->id);
        if (s_route_provider(c, r) != out->provider)
            return s_fail(err, errlen, "model \"%s\": route \"%s\" speaks another provider's dialect",
                          out->id, json_string_value(route));
        out->route = r;
    }
    snprintf(out->upstream, sizeof(out->upstream), "%s", out->id);
    snprintf(out->display_name, sizeof(out->display_name), "%s", out->id);
    if (s_str_field(m, "upstream", out->upstream, sizeof(out->upstream), out->id, err, errlen) != 0 ||
        s_str_field(m, "display_name", out->display_name, sizeof(out->display_name), out->id, err, errlen) !=
            0 ||
        s_int_field(m, "input_price", 0, EDGE_PRICE_MAX, true, &out->input_price, out->id, err, errlen) !=
            0 ||
        s_int_field(m, "output_price", 0, EDGE_PRICE_MAX, true, &out->output_price, out->id, err, errlen) !=
            0 ||
        s_int_field(m, "cache_read_price", 0, EDGE_PRICE_MAX, false, &out->cache_read_price, out->id, err,
                    errlen) != 0 ||
        s_int_field(m, "cache_write_price", 0, EDGE_PRICE_MAX, false, &out->cache_write_price, out->id, err,
                    errlen) != 0 ||
        s_int_field(m, "cache_write_1h_price", 0, EDGE_PRICE_MAX, false, &out->cache_write_1h_price, out->id,
                    err, errlen) != 0 ||
        s_int_field(m, "context_tokens", 1, EDGE_TOKENS_MAX, true, &out->context_tokens, out->id, err,
                    errlen) != 0 ||
        s_int_field(m, "max_output_tokens", 1, EDGE_TOKENS_MAX, true, &out->max_output_tokens, out->id, err,
                    errlen) != 0 ||
        s_int_field(m, "image_tokens", 1, EDGE_TOKENS_MAX, false, &out->image_tokens, out->id, err, errlen) !=
            0)
        return -1;
    if (out->cache_read_price < 0)
        out->cache_read_price = out->input_price;
    if (out->cache_write_price < 0)
        out->cache_write_price = out->input_price;
    if (out->cache_write_1h_price < 0) /* Anthropic's hour-long writes: twice the input price */
        out->cache_write_1h_price = edge_add_micro(out->input_price, out->input_price);
    if (!s_name_ok(out->upstream))
        return s_fail(err, errlen, "model \"%s\": upstream has characters outside A-Z a-z 0-9 . _ : / @ -",
                      out->id);
    if (out->max_output_tokens > out->context_tokens)
        return s_fail(err, errlen, "model \"%s\": max_output_tokens is above context_tokens", out->id);
    if (out->image_tokens > out->context_tokens)
        return s_fail(err, errlen, "model \"%s\": image_tokens is above context_tokens", out->id);
    json_t *aliases = json_object_get(m, "aliases");
    if (aliases && (!json_is_array(aliases) || json_array_size(aliases) > EDGE_MODEL_ALIASES))
        return s_fail(err, errlen, "model \"%s\": aliases must be a list of at most %d names", out->id,
                      EDGE_MODEL_ALIASES);
    size_t i;
    json_array_foreach(aliases, i, v)
    {
        if (!json_is_string(v) || !s_name_ok(json_string_value(v)))
            return s_fail(err, errlen,
                          "model \"%s\": aliases[%zu] must be 1..%d characters of A-Z a-z 0-9 . _ : / @ -",
                          out->id, i, EDGE_MODEL_NAME_MAX);
        snprintf(out->aliases[out->naliases++], EDGE_MODEL_NAME_MAX + 1, "%s", json_string_value(v));
    }
    return 0;
}

static int s_name_cmp(const void *a, const void *b)
{
    const s_name_t *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->name, y->name, x->len);
}

void edge_usd_text(char out[32], int64_t micro)
{
    if (micro < 0)
        micro = 0;
    int n = snprintf(out, 32, "%" PRId64 ".%06" PRId64, micro / 1000000, micro % 1000000);
    while (n > 0 && out[n - 1] == '0')
        out[--n] = '\0';
    if (n > 0 && out[n - 1] == '.')
        out[--n] = '\0';
}

int64_t edge_cost_micro(int64_t tokens, int64_t price)
{
    if (tokens <= 0 || price <= 0)
        return 0;
    unsigned __int128 p = (unsigned __int128)tokens * (unsigned __int128)price;
    unsigned __int128 c = (p + 999999) / 1000000;
    return c > (unsigned __int128)INT64_MAX ? INT64_MAX : (int64_t)c;
}

int64_t edge_add_micro(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

int64_t edge_input_cost_micro(const edge_model_t *m, const edge_usage_t *u)
{
    int64_t in = u->input > 0 ? u->input : 0;
    int64_t r = u->cache_read > 0 ? (u->cache_read < in ? u->cache_read : in) : 0;
    int64_t w = u->cache_write > 0 ? (u->cache_write < in - r ? u->cache_write : in - r) : 0;
    int64_t h = u->cache_write_1h > 0 ? (u->cache_write_1h < w ? u->cache_write_1h : w) : 0;
    return edge_add_micro(
        edge_add_micro(edge_cost_micro(in - r - w, m->input_price), edge_cost_micro(r, m->cache_read_price)),
        edge_add_micro(edge_cost_micro(w - h, m->cache_write_price),
                       edge_cost_micro(h, m->cache_write_1h_price)));
}

static json_t *s_price_json(const edge_model_t *m)
{
    char in[32], outp[32], cr[32], cw[32], ch[32];
    edge_usd_text(in, m->input_price);
    edge_usd_text(outp, m->output_price);
    edge_usd_text(cr, m->cache_read_price);
    edge_usd_text(cw, m->cache_write_price);
    edge_usd_text(ch, m->cache_write_1h_price);
    return json_pack("{sI sI sI sI sI ss ss ss ss ss}", "input_micro_per_mtok", (json_int_t)m->input_price,
                     "output_micro_per_mtok", (json_int_t)m->output_price, "cache_read_micro_per_mtok",
                     (json_int_t)m->cache_read_price, "cache_write_micro_per_mtok",
                     (json_int_t)m->cache_write_price, "cache_write_1h_micro_per_mtok",
                     (json_int_t)m->cache_write_1h_price, "input_usd_per_mtok", in, "output_usd_per_mtok",
                     outp, "cache_read_usd_per_mtok", cr, "cache_write_usd_per_mtok", cw,
                     "cache_write_1h_usd_per_mtok", ch);
}

static json_t *s_aliases_json(const edge_model_t *m)
{
    json_t *a = json_array();
    for (size_t i = 0; i < m->naliases; i++)
        json_array_append_new(a, json_string(m->aliases[i]));
    return a;
}

/* The most one image costs, or null when the catalog does not say. */
static json_t *s_image_json(const edge_model_t *m)
{
    return m->image_tokens > 0 ? json_integer(m->image_tokens) : json_null();
}

static const char *s_provider_name(edge_provider_t p)
{
    return p == EDGE_PROVIDER_ANTHROPIC ? "anthropic" : "openai";
}

static char *s_dump(json_t *doc, size_t *len)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    FB_ASSERT(text);
    json_decref(doc);
    *len = strlen(text);
    return text;
}

static void s_prepare(edge_catalog_t *c)
{
    json_t *openai = json_array(), *anthropic = json_array(), *pricing = json_array();
    for (size_t i = 0; i < c->count; i++) {
        const edge_model_t *m = &c->models[i];
        json_array_append_new(
            openai, json_pack("{ss ss si ss ss so sI sI so so}", "id", m->id, "object", "model", "created", 0,
                              "owned_by", s_provider_name(m->provider), "display_name", m->display_name,
                              "aliases", s_aliases_json(m), "context_length", (json_int_t)m->context_tokens,
                              "max_output_tokens", (json_int_t)m->max_output_tokens, "image_tokens",
                              s_image_json(m), "pricing", s_price_json(m)));
        json_array_append_new(anthropic,
                              json_pack("{ss ss ss ss}", "type", "model", "id", m->id, "display_name",
                                        m->display_name, "created_at", "1970-01-01T00:00:00Z"));
        json_t *p = s_price_json(m);
        json_object_update_new(
            p, json_pack("{ss ss so sI sI so sI}", "id", m->id, "provider", s_provider_name(m->provider),
                         "aliases", s_aliases_json(m), "context_tokens", (json_int_t)m->context_tokens,
                         "max_output_tokens", (json_int_t)m->max_output_tokens, "image_tokens",
                         s_image_json(m), "max_output_cost_micro",
                         (json_int_t)edge_cost_micro(m->max_output_tokens, m->output_price)));
        json_array_append_new(pricing, p);
    }
    c->models_openai = s_dump(json_pack("{ss so}", "object", "list", "data", openai), &c->models_openai_len);
    c->models_anthropic = s_dump(json_pack("{so sb ss? ss?}", "data", anthropic, "has_more", 0, "first_id",
                                           c->count ? c->models[0].id : NULL, "last_id",
                                           c->count ? c->models[c->count - 1].id : NULL),
                                 &c->models_anthropic_len);
    c->pricing = s_dump(
        json_pack(
            "{ss ss si ss ss so}", "object", "pricing", "currency", "USDC", "decimals", 6, "unit",
            "micro-USDC per million tokens, costs rounded up to a whole micro-USDC", "quote",
            "a call holds (or, paid with x402, is quoted) ceil(request body bytes x input price / 10^6) (the "
            "model's context_tokens instead of the body bytes when the request has media, inline or by URL, "
            "documents, audio, files by id or server tools, whose tokens its bytes do not bound; when its "
            "only such input is images and the model has image_tokens, the bytes of everything but the "
            "images' data or URLs plus image_tokens per image, if that is less; 400 more "
            "with tools on an Anthropic model, for the tool prompt that provider adds) + "
            "ceil(n x max_tokens x output price / 10^6), max_tokens being the model's max_output_tokens when "
            "the request sets none and n the choices asked (1 unless set); it is charged ceil(input tokens x "
            "input price / 10^6) + ceil(output tokens x "
            "output price / 10^6) from the usage the provider reports, input tokens read from or written to "
            "the provider's prompt cache at the cache read and cache write prices (each part rounded up), "
            "never more than the hold or quote",
            "models", pricing),
        &c->pricing_len);
}

edge_catalog_t *edge_catalog_parse(const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc) {
        s_fail(err, errlen, "not valid JSON (line %d: %s)", jerr.line, jerr.text);
        return NULL;
    }
    edge_catalog_t *c = fb_calloc(1, sizeof(*c));
    json_t *models = json_object_get(doc, "models"), *routes = json_object_get(doc, "routes");
    if (!json_is_object(doc) || json_object_size(doc) != (routes ? 2u : 1u) || !json_is_array(models) ||
        json_array_size(models) == 0 || json_array_size(models) > EDGE_CATALOG_MODELS ||
        (routes && (!json_is_array(routes) || json_array_size(routes) > EDGE_CATALOG_ROUTES))) {
        s_fail(err, errlen, "the catalog must be {\"models\": [1..%d models], \"routes\": [0..%d routes]}",
               EDGE_CATALOG_MODELS, EDGE_CATALOG_ROUTES);
        goto fail;
    }
    size_t i;
    json_t *m;
    c->routes = fb_calloc(json_array_size(routes) + 1, sizeof(*c->routes));
    json_array_foreach(routes, i, m)
    {
        if (s_parse_route(m, i, c, err, errlen) != 0)
            goto fail;
        c->nroutes++;
    }
    if (s_route_fallbacks(routes, c, err, errlen) != 0)
        goto fail;
    c->count = json_array_size(models);
    c->models = fb_calloc(c->count, sizeof(*c->models));
    json_array_foreach(models, i, m)
    {
        if (s_parse_model(m, i, c, &c->models[i], err, errlen) != 0)
            goto fail;
        c->nnames += 1 + c->models[i].naliases;
    }
    c->names = fb_calloc(c->nnames, sizeof(*c->names));
    size_t k = 0;
    for (i = 0; i < c->count; i++) {
        const edge_model_t *md = &c->models[i];
        c->names[k++] = (s_name_t){md->id, strlen(md->id), md};
        for (size_t a = 0; a < md->naliases; a++)
            c->names[k++] = (s_name_t){md->aliases[a], strlen(md->aliases[a]), md};
    }
    qsort(c->names, c->nnames, sizeof(*c->names), s_name_cmp);
    for (k = 1; k < c->nnames; k++) {
        if (s_name_cmp(&c->names[k - 1], &c->names[k]) == 0) {
            s_fail(err, errlen, "the name \"%s\" is used twice (ids and aliases are unique together)",
                   c->names[k].name);
            goto fail;
        }
    }
    json_decref(doc);
    s_prepare(c);
    return c;
fail:
    json_decref(doc);
    edge_catalog_free(&c);
    return NULL;
}

edge_catalog_t *edge_catalog_load(const char *path, char *err, size_t errlen)
{
    if (!path || !path[0])
        return edge_catalog_parse(s_builtin, sizeof(s_builtin) - 1, err, errlen);
    FILE *f = fopen(path, "rb");
    if (!f) {
        s_fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = fb_malloc(EDGE_CATALOG_FILE_MAX + 1);
    size_t n = fread(buf, 1, EDGE_CATALOG_FILE_MAX + 1, f);
    fclose(f);
    edge_catalog_t *c = NULL;
    if (n > EDGE_CATALOG_FILE_MAX) {
        s_fail(err, errlen, "%s is larger than %d bytes", path, EDGE_CATALOG_FILE_MAX);
    } else {
        char why[400];
        c = edge_catalog_parse(buf, n, why, sizeof(why));
        if (!c)
            s_fail(err, errlen, "%s: %s", path, why);
    }
    free(buf);
    return c;
}

void edge_catalog_free(edge_catalog_t **self_p)
{
    edge_catalog_t *c = *self_p;
    if (!c)
        return;
    free(c->routes);
    free(c->models);
    free(c->names);
    free(c->models_openai);
    free(c->models_anthropic);
    free(c->pricing);
    free(c);
    *self_p = NULL;
}

const edge_model_t *edge_catalog_find(const edge_catalog_t *self, const char *name, size_t len)
{
    s_name_t key = {name, len, NULL};
    const s_name_t *hit = bsearch(&key, self->names, self->nnames, sizeof(*self->names), s_name_cmp);
    return hit ? hit->model : NULL;
}

size_t edge_catalog_count(const edge_catalog_t *self)
{
    return self->count;
}

size_t edge_catalog_route_count(const edge_catalog_t *self)
{
    return self->nroutes;
}

const edge_route_spec_t *edge_catalog_route(const edge_catalog_t *self, size_t i)
{
    FB_ASSERT(i < self->nroutes);
    return &self->routes[i];
}

const char *edge_catalog_models_openai(const edge_catalog_t *self, size_t *len)
{
    *len = self->models_openai_len;
    return self->models_openai;
}

const char *edge_catalog_models_anthropic(const edge_catalog_t *self, size_t *len)
{
    *len = self->models_anthropic_len;
    return self->models_anthropic;
}

const char *edge_catalog_pricing(const edge_catalog_t *self, size_t *len)
{
    *len = self->pricing_len;
    return self->pricing;
}

int edge_catalog_test(bool verbose)
{
    FB_UNUSED(verbose);
    char err[400];
    edge_catalog_t *c = edge_catalog_load(NULL, err, sizeof(err));
    FB_ASSERT(c && edge_catalog_count(c) == 5);
    const edge_model_t *m = edge_catalog_find(c, "openai/gpt-4o-mini", 18);
    FB_ASSERT(m && strcmp(m->id, "gpt-4o-mini") == 0 && m->input_price == 150000);
    FB_ASSERT(edge_catalog_find(c, "gpt-4o-mini", 11) == m);
    FB_ASSERT(edge_catalog_find(c, "gpt-4o-min", 10) == NULL);
    FB_ASSERT(edge_catalog_find(c, "", 0) == NULL);
    FB_ASSERT(m->cache_read_price == 75000 && m->cache_write_price == 150000); /* OpenAI: no write price */
    m = edge_catalog_find(c, "claude-3-5-haiku-latest", 23);
    FB_ASSERT(m && m->provider == EDGE_PROVIDER_ANTHROPIC && m->max_output_tokens == 8192);
    FB_ASSERT(m->cache_read_price == 80000 && m->cache_write_price == 1000000); /* 0.1x and 1.25x input */
    FB_ASSERT(m->cache_write_1h_price == 1600000);                              /* 2x for an hour */
    size_t n;
    const char *text = edge_catalog_models_openai(c, &n);
    json_t *doc = json_loadb(text, n, 0, NULL);
    FB_ASSERT(doc && json_array_size(json_object_get(doc, "data")) == 5);
    json_t *first = json_array_get(json_object_get(doc, "data"), 0);
    FB_ASSERT(
        strcmp(json_string_value(json_object_get(json_object_get(first, "pricing"), "input_usd_per_mtok")),
               "0.15") == 0);
    json_decref(doc);
    text = edge_catalog_pricing(c, &n);
    doc = json_loadb(text, n, 0, NULL);
    FB_ASSERT(doc && json_integer_value(json_object_get(json_array_get(json_object_get(doc, "models"), 0),
                                                        "max_output_cost_micro")) == 9831); /* 16384 x 0.6 */
    json_decref(doc);
    edge_catalog_free(&c);
    FB_ASSERT(c == NULL);

    /* costs: rounded up, exact, saturating */
    FB_ASSERT(edge_cost_micro(1, 150000) == 1); /* 0.15 rounds up to 1 */
    FB_ASSERT(edge_cost_micro(1000000, 150000) == 150000);
    FB_ASSERT(edge_cost_micro(1000001, 150000) == 150001); /* 150000.15 */
    FB_ASSERT(edge_cost_micro(0, 150000) == 0 && edge_cost_micro(-5, 150000) == 0);
    FB_ASSERT(edge_cost_micro(INT64_MAX, EDGE_PRICE_MAX) == INT64_MAX);
    FB_ASSERT(edge_add_micro(2, 3) == 5 && edge_add_micro(INT64_MAX - 1, 5) == INT64_MAX);
    char usd[32];
    edge_usd_text(usd, 150000);
    FB_ASSERT(strcmp(usd, "0.15") == 0);
    edge_usd_text(usd, 10000000);
    FB_ASSERT(strcmp(usd, "10") == 0);
    edge_usd_text(usd, 1);
    FB_ASSERT(strcmp(usd, "0.000001") == 0);
    edge_usd_text(usd, 0);
    FB_ASSERT(strcmp(usd, "0") == 0);

    /* bad catalogs name what is wrong */
#define M                                                                                                    \
    "{\"id\":\"a\",\"provider\":\"openai\",\"input_price\":1,\"output_price\":1,\"context_tokens\":10,"      \
    "\"max_output_tokens\":5"
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"{\"models\":[]}", "1..1000 models"},
        {"[1]", "must be {"},
        {"{\"models\":[{\"id\":\"a\",\"provider\":\"openai\",\"input_price\":1,\"output_price\":1,"
         "\"context_tokens\":10,\"max_output_tokens\":5,\"colour\":1}]}",
         "unknown field \"colour\""},
        {"{\"models\":[{\"id\":\"a b\",\"provider\":\"openai\"}]}", "id must be"},
        {"{\"models\":[{\"id\":\"a\",\"provider\":\"google\"}]}", "provider must be"},
        {"{\"models\":[{\"id\":\"a\",\"provider\":\"openai\",\"input_price\":-1}]}", "input_price must be"},
        {"{\"models\":[{\"id\":\"a\",\"provider\":\"openai\",\"input_price\":1.5}]}", "input_price must be"},
        {"{\"models\":[{\"id\":\"a\",\"provider\":\"openai\",\"input_price\":1,\"output_price\":1,"
         "\"context_tokens\":10,\"max_output_tokens\":50}]}",
         "above context_tokens"},
        {"{\"models\":[" M ",\"image_tokens\":11}]}", "image_tokens is above context_tokens"},
        {"{\"models\":[" M ",\"image_tokens\":0}]}", "image_tokens must be an integer in 1.."},
        {"{\"models\":[{\"id\":\"a\",\"provider\":\"openai\",\"input_price\":1,\"output_price\":1,"
         "\"context_tokens\":10,\"max_output_tokens\":5,\"aliases\":[\"b\"]},"
         "{\"id\":\"b\",\"provider\":\"openai\",\"input_price\":1,\"output_price\":1,"
         "\"context_tokens\":10,\"max_output_tokens\":5}]}",
         "\"b\" is used twice"},
        {"{\"models\":[{\"id\":\"a\",\"provider\":\"openai\",\"input_price\":1,\"output_price\":1,"
         "\"context_tokens\":10,\"max_output_tokens\":5,\"aliases\":[\"ok\",7]}]}",
         "aliases[1]"},
        {"{\"models\":", "not valid JSON"},
        /* routes */
        {"{\"models\":[" M "}],\"extra\":1}", "must be {"},
        {"{\"models\":[" M "}],\"routes\":{}}", "must be {"},
        {"{\"routes\":[],\"models\":[" M ",\"route\":\"nowhere\"}]}", "route must name a route"},
        {"{\"routes\":[],\"models\":[" M ",\"route\":\"anthropic\"}]}", "another provider's dialect"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"anthropic\",\"base_url\":\"http://v:1\"}],"
         "\"models\":[" M ",\"route\":\"v\"}]}",
         "another provider's dialect"},
        {"{\"routes\":[7],\"models\":[" M "}]}", "routes[0] must be an object"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"http://v:1\",\"key\":1}],"
         "\"models\":[" M "}]}",
         "routes[0]: unknown field \"key\""},
        {"{\"routes\":[{\"name\":\"v w\",\"provider\":\"openai\",\"base_url\":\"http://v:1\"}],"
         "\"models\":[" M "}]}",
         "name must be"},
        {"{\"routes\":[{\"name\":\"openai\",\"provider\":\"openai\",\"base_url\":\"http://v:1\"}],"
         "\"models\":[" M "}]}",
         "a built-in route's"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"http://v:1\"},"
         "{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"http://w:1\"}],\"models\":[" M "}]}",
         "\"v\" is used twice"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"mistral\",\"base_url\":\"http://v:1\"}],"
         "\"models\":[" M "}]}",
         "provider must be"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"ftp://v:1\"}],"
         "\"models\":[" M "}]}",
         "base_url must be"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"http://v:1/\"}],"
         "\"models\":[" M "}]}",
         "base_url must be"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"http://v:1\","
         "\"api_key_env\":\"lower\"}],\"models\":[" M "}]}",
         "api_key_env must name"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"http://v:1\","
         "\"fallback\":\"w\"}],\"models\":[" M "}]}",
         "fallback \"w\" is not a route"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"http://v:1\","
         "\"fallback\":\"v\"}],\"models\":[" M "}]}",
         "names the route itself"},
        {"{\"routes\":[{\"name\":\"v\",\"provider\":\"openai\",\"base_url\":\"http://v:1\","
         "\"fallback\":\"anthropic\"}],\"models\":[" M "}]}",
         "fallback \"anthropic\" speaks another"},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        FB_ASSERT(edge_catalog_parse(bad[i].text, strlen(bad[i].text), err, sizeof(err)) == NULL);
        if (!strstr(err, bad[i].want)) {
            fprintf(stderr, "catalog case %zu: \"%s\" lacks \"%s\"\n", i, err, bad[i].want);
            FB_ASSERT(0);
        }
    }
    /* cached input: each part at its price, rounded up; counts clamped into the input */
    edge_model_t pm = {.input_price = 3000000, .cache_read_price = 300000, .cache_write_price = 3750000};
    edge_usage_t u = {.input = 1000, .cache_read = 600, .cache_write = 300};
    FB_ASSERT(edge_input_cost_micro(&pm, &u) == 300 + 180 + 1125); /* 100 x 3 + 600 x 0.3 + 300 x 3.75 */
    u = (edge_usage_t){.input = 10, .cache_read = 1};
    FB_ASSERT(edge_input_cost_micro(&pm, &u) == 27 + 1); /* 0.3 rounds up to 1 */
    u = (edge_usage_t){.input = 100, .cache_read = 500, .cache_write = 7};
    FB_ASSERT(edge_input_cost_micro(&pm, &u) == 30); /* all 100 read from the cache, nothing written */
    u = (edge_usage_t){.input = 100, .cache_read = -5, .cache_write = 150};
    FB_ASSERT(edge_input_cost_micro(&pm, &u) == 375); /* all 100 written */
    pm.cache_write_1h_price = 6000000;
    u = (edge_usage_t){.input = 100, .cache_write = 50, .cache_write_1h = 20};
    FB_ASSERT(edge_input_cost_micro(&pm, &u) == 150 + 113 + 120); /* 50 x 3 + 30 x 3.75 (112.5) + 20 x 6 */
    u = (edge_usage_t){.input = 100, .cache_write = 10, .cache_write_1h = 500};
    FB_ASSERT(edge_input_cost_micro(&pm, &u) == 270 + 60); /* the hour's count clamped into the writes */

    /* routes: models on the built-in routes by default, on a catalog route by
     * name; a fallback may name a route further down or a built-in one */
    static const char routed[] =
        "{\"routes\":[{\"name\":\"local-vllm\",\"provider\":\"openai\",\"base_url\":\"http://vllm:8000\","
        "\"api_key_env\":\"VLLM_KEY\",\"fallback\":\"gw\"},"
        "{\"name\":\"gw\",\"provider\":\"openai\",\"base_url\":\"https://gw.example/x\","
        "\"fallback\":\"openai\"}],"
        "\"models\":[" M ",\"route\":\"local-vllm\"},"
        "{\"id\":\"b\",\"provider\":\"anthropic\",\"input_price\":1,\"output_price\":1,"
        "\"context_tokens\":10,\"max_output_tokens\":5}]}";
    c = edge_catalog_parse(routed, strlen(routed), err, sizeof(err));
    FB_ASSERT(c && edge_catalog_route_count(c) == 2);
    const edge_route_spec_t *rs = edge_catalog_route(c, 0);
    FB_ASSERT(strcmp(rs->name, "local-vllm") == 0 && rs->provider == EDGE_PROVIDER_OPENAI &&
              strcmp(rs->base_url, "http://vllm:8000") == 0 && strcmp(rs->api_key_env, "VLLM_KEY") == 0 &&
              rs->fallback == EDGE_ROUTE_CATALOG + 1);
    rs = edge_catalog_route(c, 1);
    FB_ASSERT(rs->api_key_env[0] == '\0' && rs->fallback == EDGE_PROVIDER_OPENAI);
    FB_ASSERT(edge_catalog_find(c, "a", 1)->route == EDGE_ROUTE_CATALOG);
    FB_ASSERT(edge_catalog_find(c, "b", 1)->route == EDGE_PROVIDER_ANTHROPIC);
    edge_catalog_free(&c);
#undef M

    /* cache prices: optional, the input price when absent */
    static const char one[] = "{\"models\":[{\"id\":\"a\",\"provider\":\"anthropic\",\"input_price\":7,"
                              "\"cache_read_price\":0,\"output_price\":9,\"context_tokens\":10,"
                              "\"max_output_tokens\":5}]}";
    c = edge_catalog_parse(one, strlen(one), err, sizeof(err));
    FB_ASSERT(c);
    m = edge_catalog_find(c, "a", 1);
    FB_ASSERT(m->cache_read_price == 0 && m->cache_write_price == 7);
    edge_catalog_free(&c);
    static const char neg[] = "{\"models\":[{\"id\":\"a\",\"provider\":\"openai\",\"input_price\":1,"
                              "\"output_price\":1,\"cache_write_price\":-2,\"context_tokens\":10,"
                              "\"max_output_tokens\":5}]}";
    FB_ASSERT(edge_catalog_parse(neg, strlen(neg), err, sizeof(err)) == NULL &&
              strstr(err, "cache_write_price"));
    FB_ASSERT(edge_catalog_load("/nonexistent/catalog.json", err, sizeof(err)) == NULL &&
              strstr(err, "cannot read"));
    return 0;
}
