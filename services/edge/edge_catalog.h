/* edge_catalog - the models farebox sells: canonical ids, aliases (such as
 * OpenRouter's "openai/gpt-4o-mini"), the provider that serves each, its
 * price in micro-USDC per million input and output tokens (and cached input
 * tokens, read and written), and its context
 * and output caps. Read once at start from FAREBOX_CATALOG_FILE (format in
 * README: Models and prices) or the built-in catalog; read-only after, shared
 * by every worker. The answers of /v1/models and /v1/pricing are made once. */
#ifndef EDGE_CATALOG_H
#define EDGE_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EDGE_MODEL_NAME_MAX   128           /* characters of a model id or alias */
#define EDGE_CATALOG_MODELS   1000          /* models in a catalog */
#define EDGE_MODEL_ALIASES    16            /* aliases of one model */
#define EDGE_PRICE_MAX        10000000000LL /* micro-USDC per million tokens ($10,000) */
#define EDGE_TOKENS_MAX       100000000LL   /* context or output tokens */
#define EDGE_CATALOG_FILE_MAX (1 << 20)     /* bytes of a catalog file */
#define EDGE_CATALOG_ROUTES   32            /* routes a catalog adds to the two built-in ones */
#define EDGE_ROUTE_NAME_MAX   64            /* characters of a route's name */
#define EDGE_ROUTE_URL_MAX    200           /* characters of a route's base URL */
#define EDGE_ROUTE_ENV_MAX    128           /* characters of the variable naming a route's key */

typedef enum { EDGE_PROVIDER_OPENAI = 0, EDGE_PROVIDER_ANTHROPIC } edge_provider_t;

/* Routes, by index: EDGE_PROVIDER_OPENAI (0) and EDGE_PROVIDER_ANTHROPIC (1)
 * are the built-in "openai" and "anthropic" routes (the providers' base URLs
 * and keys from the environment, or the mock model); the catalog's routes
 * follow from EDGE_ROUTE_CATALOG, in the file's order. */
#define EDGE_ROUTE_CATALOG 2

/* A route of the catalog file: another endpoint in a provider's dialect
 * (a self-hosted model server, a gateway, another region) with its own key. */
typedef struct {
    char name[EDGE_ROUTE_NAME_MAX + 1];
    edge_provider_t provider; /* the dialect it speaks */
    char base_url[EDGE_ROUTE_URL_MAX + 1];
    char api_key_env[EDGE_ROUTE_ENV_MAX + 1]; /* the variable holding its key ("" for none) */
    int fallback;                             /* the route a failed call is retried on once, or -1 */
} edge_route_spec_t;

typedef struct {
    char id[EDGE_MODEL_NAME_MAX + 1];
    char upstream[EDGE_MODEL_NAME_MAX + 1]; /* the model name the provider knows */
    char display_name[EDGE_MODEL_NAME_MAX + 1];
    edge_provider_t provider;
    int route;                         /* the route its calls take (above: EDGE_ROUTE_CATALOG) */
    int64_t input_price, output_price; /* micro-USDC per million tokens */
    int64_t cache_read_price;          /* ... of input tokens read from the provider's prompt cache */
    int64_t cache_write_price;         /* ... of input tokens written to it (Anthropic) */
    int64_t cache_write_1h_price;      /* ... written to it for an hour (Anthropic's "ttl": "1h") */
    int64_t context_tokens, max_output_tokens;
    int64_t image_tokens; /* the most input tokens one image costs (0: not known, an image makes a
                           * call's input the whole context) */
    size_t naliases;
    char aliases[EDGE_MODEL_ALIASES][EDGE_MODEL_NAME_MAX + 1];
} edge_model_t;

typedef struct edge_catalog_t edge_catalog_t;

/* edge_catalog_parse - read a catalog from JSON text. Every field is checked
 * (unknown fields too, to catch typos); ids and aliases are unique together.
 * Returns the catalog, or NULL with the offending model and field in err. */
edge_catalog_t *edge_catalog_parse(const char *text, size_t len, char *err, size_t errlen);

/* edge_catalog_load - read the file at path, or the built-in catalog when
 * path is NULL or empty. Returns NULL with a reason in err. */
edge_catalog_t *edge_catalog_load(const char *path, char *err, size_t errlen);

void edge_catalog_free(edge_catalog_t **self_p);

/* edge_catalog_find - the model named name (len bytes: an id or an alias), or
 * NULL. */
const edge_model_t *edge_catalog_find(const edge_catalog_t *self, const char *name, size_t len);

size_t edge_catalog_count(const edge_catalog_t *self);

/* The catalog's routes: route i has the index EDGE_ROUTE_CATALOG + i. */
size_t edge_catalog_route_count(const edge_catalog_t *self);
const edge_route_spec_t *edge_catalog_route(const edge_catalog_t *self, size_t i);

/* The prepared answers: /v1/models in OpenAI's list shape, the same in
 * Anthropic's (for callers sending anthropic-version), and /v1/pricing. */
const char *edge_catalog_models_openai(const edge_catalog_t *self, size_t *len);
const char *edge_catalog_models_anthropic(const edge_catalog_t *self, size_t *len);
const char *edge_catalog_pricing(const edge_catalog_t *self, size_t *len);

/* edge_cost_micro - the cost of tokens at price (micro-USDC per million
 * tokens), rounded up to a whole micro-USDC: ceil(tokens * price / 10^6).
 * Negative inputs count as zero; the result saturates at INT64_MAX. */
int64_t edge_cost_micro(int64_t tokens, int64_t price);

/* Input tokens as a provider reports them: all of them, and how many of those
 * were read from or written to its prompt cache. */
typedef struct {
    int64_t input, cache_read, cache_write;
    int64_t cache_write_1h; /* of cache_write: written for an hour */
} edge_usage_t;

/* edge_input_cost_micro - what the input costs at the model's prices: the
 * cached parts at the cache read and write prices, the rest at the input
 * price, each part rounded up. Cache counts are clamped into the input (a
 * provider's nonsense never makes input cheaper than its uncached share). */
int64_t edge_input_cost_micro(const edge_model_t *m, const edge_usage_t *u);

/* edge_add_micro - a + b for amounts of 0 or more, saturating at INT64_MAX. */
int64_t edge_add_micro(int64_t a, int64_t b);

/* edge_usd_text - micro-USDC as decimal dollars without trailing zeros
 * ("0.15", "10", "0.000001"), for people. */
void edge_usd_text(char out[32], int64_t micro);

int edge_catalog_test(bool verbose);

#endif
