/* edge_auth - API key authentication through the ledger, and /v1/balance. */
#include "edge_auth.h"
#include "edge_catalog.h"
#include "edge_limit.h"
#include "edge_metrics.h"
#include "edge_reply.h"
#include "fb_apikey.h"
#include "fb_codec.h"
#include "fb_log.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LOOKUP_DEADLINE_MS 5000

int edge_request_key(h2o_req_t *req, h2o_iovec_t *key)
{
    h2o_iovec_t auth = fb_http_header(req, "authorization");
    if (auth.base && auth.len > 7 && strncasecmp(auth.base, "bearer ", 7) == 0) {
        *key = h2o_iovec_init(auth.base + 7, auth.len - 7);
        return 1;
    }
    h2o_iovec_t x = fb_http_header(req, "x-api-key");
    if (x.base && x.len > 0) {
        *key = x;
        return 1;
    }
    return 0;
}

bool edge_bearer_matches(h2o_req_t *req, const uint8_t token_sha256[32])
{
    h2o_iovec_t auth = fb_http_header(req, "authorization");
    if (auth.len < 8 || auth.len > 1024 || strncasecmp(auth.base, "bearer ", 7) != 0)
        return false;
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const uint8_t *)auth.base + 7, auth.len - 7);
    return sodium_memcmp(digest, token_sha256, sizeof(digest)) == 0;
}

#define CACHE_SLOTS      4096 /* keys remembered per worker (direct-mapped by HMAC) */
#define CACHE_TTL_MS     1000 /* how old a remembered answer may be (counted from its asking) */
#define CACHE_REFRESH_MS 500  /* an answer this old is asked again while it is still used */

typedef struct s_lookup s_lookup_t;

/* One remembered answer of ledger.lookup_key, and the lookup in flight for
 * its slot. */
typedef struct {
    uint8_t mac[32];
    bool used;
    int64_t fetched_ms; /* when the remembered answer was asked for */
    int status;         /* 200, or 401 */
    const char *code;
    json_t *view; /* the key view (200) */
    int64_t key_id, account_id;
    uint64_t epoch;       /* edge->key_epoch when asked */
    s_lookup_t *inflight; /* a lookup of some key mapped here, or NULL */
} s_cached_t;

/* A key seen before and its HMAC. Every call names its key, and an
 * HMAC-SHA256 of it was ~4 % of a paid call's instructions: a key is found
 * here by a keyed BLAKE2b tag instead (one compression from a state keyed
 * once, with a random key of this worker's), and the HMAC is computed on a
 * miss only. Only tags are kept, never keys; only well-formed keys' tags. */
typedef struct {
    uint8_t tag[32];
    uint8_t mac[32];
    bool used;
} s_known_t;

struct edge_key_cache_t {
    s_cached_t slots[CACHE_SLOTS];
    s_known_t known[CACHE_SLOTS];
    crypto_generichash_state tagger; /* keyed, nothing absorbed yet */
};

edge_key_cache_t *edge_key_cache_new(void)
{
    /* the BLAKE2b state wants 64-byte alignment, more than malloc's */
    size_t size = (sizeof(edge_key_cache_t) + 63) / 64 * 64;
    edge_key_cache_t *self = aligned_alloc(64, size);
    FB_ASSERT(self);
    memset(self, 0, size);
    uint8_t secret[crypto_generichash_KEYBYTES];
    randombytes_buf(secret, sizeof(secret));
    FB_ASSERT(crypto_generichash_init(&self->tagger, secret, sizeof(secret), 32) == 0);
    sodium_memzero(secret, sizeof(secret));
    return self;
}

/* The tag of key, and its slot in known. */
static s_known_t *s_tag(edge_key_cache_t *cache, const char *key, size_t len, uint8_t tag[32])
{
    crypto_generichash_state st = cache->tagger;
    crypto_generichash_update(&st, (const uint8_t *)key, len);
    crypto_generichash_final(&st, tag, 32);
    sodium_memzero(&st, sizeof(st));
    uint32_t h;
    memcpy(&h, tag, sizeof(h));
    return &cache->known[h & (CACHE_SLOTS - 1)];
}

void edge_key_cache_destroy(edge_key_cache_t **self_p)
{
    FB_ASSERT(self_p);
    edge_key_cache_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
        FB_ASSERT(!self->slots[i].inflight); /* the ledger client ended its calls first */
        json_decref(self->slots[i].view);
    }
    sodium_memzero(&self->tagger, sizeof(self->tagger)); /* keyed with the worker's secret */
    free(self);
    *self_p = NULL;
}

static s_cached_t *s_slot(edge_key_cache_t *cache, const uint8_t mac[32])
{
    uint32_t h;
    memcpy(&h, mac, sizeof(h)); /* an HMAC is uniform: its first bytes index the table */
    return &cache->slots[h & (CACHE_SLOTS - 1)];
}

/* A caller waiting for a lookup's answer. */
typedef struct s_asker {
    struct s_asker *next;
    edge_key_fn *done;
    void *arg;
} s_asker_t;

/* One ledger.lookup_key in flight. Callers that miss while it runs wait for
 * its answer instead of asking again; a refresh (an answer still in use
 * asked again before it is too old) has no caller. */
struct s_lookup {
    s_asker_t *askers, **askers_tail;
    edge_limit_t *limits;
    edge_key_cache_t *cache; /* where the answer is remembered, or NULL */
    uint64_t epoch;          /* the edge's key epoch when the lookup began */
    int64_t asked_ms;
    uint8_t mac[32];
};

void edge_retry_after(h2o_req_t *req, int64_t ms)
{
    char v[24];
    int n = snprintf(v, sizeof(v), "%lld", (long long)(ms <= 0 ? 1 : (ms + 999) / 1000));
    fb_http_set_header(req, "retry-after", v, (size_t)n);
}

void edge_key_error(h2o_req_t *req, int dialect, const edge_key_t *k)
{
    if (k->status == 429)
        edge_retry_after(req, k->retry_after_ms);
    edge_error(req, (edge_dialect_t)dialect, k->status, k->code, NULL, "%s", k->message);
}

static void s_refuse(edge_key_fn *done, void *arg, int status, const char *code, const char *message)
{
    edge_key_t k = {.status = status, .code = code};
    snprintf(k.message, sizeof(k.message), "%s", message);
    done(arg, &k);
}

/* Hand a key's state to done: refused, or good and within its rate. */
static void s_answer(edge_key_fn *done, void *arg, edge_limit_t *limits, const uint8_t mac[32], int status,
                     const char *code, json_t *view, int64_t key_id, int64_t account_id)
{
    edge_key_t k = {.status = status, .code = code, .view = view, .key_id = key_id, .account_id = account_id};
    memcpy(k.mac, mac, sizeof(k.mac));
    if (status == 401)
        snprintf(k.message, sizeof(k.message), "%s",
                 strcmp(code, "key_revoked") == 0 ? "the API key was revoked" : "the API key is not valid");
    if (status == 200 && limits) {
        int64_t wait = edge_limit_take(limits, 1, &key_id, sizeof(key_id), fb_mono_ms());
        if (wait > 0) {
            k.status = 429;
            k.code = "rate_limited";
            k.retry_after_ms = wait;
            snprintf(k.message, sizeof(k.message),
                     "this API key is sending too many requests; retry in %lld ms", (long long)wait);
        }
    }
    done(arg, &k);
}

static void s_remember(const s_lookup_t *l, int status, const char *code, json_t *view, int64_t key_id,
                       int64_t account_id)
{
    const uint8_t *mac = l->mac;
    s_cached_t *c = s_slot(l->cache, mac);
    if (c->used && memcmp(c->mac, mac, 32) == 0 && c->fetched_ms > l->asked_ms)
        return; /* a later question's answer is already here */
    c->epoch = l->epoch;
    json_decref(c->view);
    memcpy(c->mac, mac, 32);
    c->used = true;
    c->fetched_ms = l->asked_ms; /* the answer's age counts from the question */
    c->status = status;
    c->code = code;
    c->view = view ? json_incref(view) : NULL;
    c->key_id = key_id;
    c->account_id = account_id;
}

static void s_on_lookup(void *arg, const fb_rpc_reply_t *reply)
{
    s_lookup_t *l = arg;
    if (l->cache) {
        s_cached_t *c = s_slot(l->cache, l->mac);
        if (c->inflight == l)
            c->inflight = NULL;
    }
    s_asker_t *askers = l->askers;
    if (!reply->ok) {
        bool unknown = strcmp(reply->code, "key_not_found") == 0;
        if (unknown && l->cache)
            s_remember(l, 401, "invalid_key", NULL, 0, 0);
        for (s_asker_t *a = askers, *next; a; a = next) {
            next = a->next;
            if (unknown)
                s_answer(a->done, a->arg, NULL, l->mac, 401, "invalid_key", NULL, 0, 0);
            else
                s_refuse(a->done, a->arg, 503, "unavailable",
                         "the ledger cannot be reached; nothing was charged");
            free(a);
        }
        free(l);
        return;
    }
    json_t *view = edge_reply_json(reply);
    int64_t key_id = json_integer_value(json_object_get(view, "key_id"));
    int64_t account_id = json_integer_value(json_object_get(view, "account_id"));
    const char *status = json_string_value(json_object_get(view, "status"));
    bool active = status && strcmp(status, "active") == 0;
    if (l->cache)
        s_remember(l, active ? 200 : 401, active ? NULL : "key_revoked", view, key_id, account_id);
    for (s_asker_t *a = askers, *next; a; a = next) {
        next = a->next;
        s_answer(a->done, a->arg, l->limits, l->mac, active ? 200 : 401, active ? NULL : "key_revoked", view,
                 key_id, account_id);
        free(a);
    }
    json_decref(view);
    free(l);
}

void edge_keys_changed(edge_t *edge)
{
    atomic_fetch_add(&edge->key_epoch, 1);
}

/* s_hit - the worker's cached answer for mac, if fresh enough to use */
static s_cached_t *s_hit(edge_worker_t *w, const uint8_t mac[32])
{
    edge_key_cache_t *cache = w->key_cache;
    if (!cache)
        return NULL;
    s_cached_t *c = s_slot(cache, mac);
    return c->used && memcmp(c->mac, mac, 32) == 0 && fb_mono_ms() - c->fetched_ms < CACHE_TTL_MS &&
                   c->epoch == atomic_load(&w->edge->key_epoch)
               ? c
               : NULL;
}

/* Adds a caller to the lookup's. */
static void s_add_asker(s_lookup_t *l, edge_key_fn *done, void *arg)
{
    s_asker_t *a = fb_calloc(1, sizeof(*a));
    a->done = done;
    a->arg = arg;
    *l->askers_tail = a;
    l->askers_tail = &a->next;
}

/* Asks the ledger about mac; done (if any) gets the answer. A lookup that
 * is the only one in flight for its cache slot is named there, so that
 * others can wait for it. */
static void s_ask(edge_worker_t *w, const uint8_t mac[32], const char *rid, edge_key_fn *done, void *arg)
{
    edge_key_cache_t *cache = w->key_cache;
    char hex[65];
    fb_hex_encode(hex, mac, 32);
    s_lookup_t *l = fb_calloc(1, sizeof(*l));
    l->askers_tail = &l->askers;
    if (done)
        s_add_asker(l, done, arg);
    l->limits = w->edge->limits;
    l->cache = cache;
    l->epoch = atomic_load(&w->edge->key_epoch);
    l->asked_ms = fb_mono_ms();
    memcpy(l->mac, mac, 32);
    if (cache) {
        s_cached_t *c = s_slot(cache, mac);
        if (!c->inflight)
            c->inflight = l;
    }
    edge_rpc_json(w->ledger, "ledger.lookup_key", json_pack("{ss}", "hmac", hex), NULL, rid,
                  LOOKUP_DEADLINE_MS, s_on_lookup, l);
}

void edge_auth_lookup(edge_worker_t *w, const uint8_t mac[32], bool fresh, const char *rid, edge_key_fn *done,
                      void *arg)
{
    edge_key_cache_t *cache = w->key_cache;
    if (!fresh && cache) {
        s_cached_t *c = s_hit(w, mac);
        if (c) {
            /* a busy key is asked again before its answer is too old, so
             * that its calls never wait for the ledger */
            if (!c->inflight && fb_mono_ms() - c->fetched_ms >= CACHE_REFRESH_MS) {
                edge_metrics_key(EDGE_KEY_REFRESHED);
                s_ask(w, mac, rid, NULL, NULL);
            }
            edge_metrics_key(EDGE_KEY_CACHED);
            json_t *view = c->view ? json_incref(c->view) : NULL; /* done may overwrite the slot */
            s_answer(done, arg, w->edge->limits, mac, c->status, c->code, view, c->key_id, c->account_id);
            json_decref(view);
            return;
        }
        s_lookup_t *l = s_slot(cache, mac)->inflight;
        if (l && memcmp(l->mac, mac, 32) == 0 && l->epoch == atomic_load(&w->edge->key_epoch) &&
            fb_mono_ms() - l->asked_ms < CACHE_TTL_MS) {
            /* the same question is on its way, asked recently enough that its
             * answer is as fresh as a remembered one may be: wait for it */
            s_add_asker(l, done, arg);
            edge_metrics_key(EDGE_KEY_JOINED);
            return;
        }
    }
    edge_metrics_key(EDGE_KEY_ASKED);
    s_ask(w, mac, rid, done, arg);
}

static void s_auth(edge_worker_t *w, h2o_req_t *req, const char *rid, bool fresh, edge_key_fn *done,
                   void *arg)
{
    const edge_t *edge = w->edge;
    h2o_iovec_t key;
    if (!edge_request_key(req, &key)) {
        s_refuse(done, arg, 401, "invalid_key",
                 "an API key is required: Authorization: Bearer <key> or x-api-key: <key>");
        return;
    }
    if (!edge->key_mac) {
        if (!fb_apikey_well_formed(key.base, key.len))
            s_refuse(done, arg, 401, "invalid_key", "the API key is not valid");
        else
            s_refuse(done, arg, 503, "unavailable",
                     "API keys are not configured on this edge (FAREBOX_KEY_HMAC_SECRET)");
        return;
    }
    uint8_t mac[32], tag[32];
    s_known_t *known = w->key_cache ? s_tag(w->key_cache, key.base, key.len, tag) : NULL;
    if (known && known->used && sodium_memcmp(known->tag, tag, sizeof(tag)) == 0) {
        memcpy(mac, known->mac, sizeof(mac)); /* a well-formed key seen before */
    } else {
        /* a key's format (base58, checksum) is checked once, on a miss */
        if (!fb_apikey_well_formed(key.base, key.len)) {
            s_refuse(done, arg, 401, "invalid_key", "the API key is not valid");
            return;
        }
        fb_apikey_mac(edge->key_mac, mac, key.base, key.len);
        if (known) {
            memcpy(known->tag, tag, sizeof(tag));
            memcpy(known->mac, mac, sizeof(mac));
            known->used = true;
        }
    }
    edge_auth_lookup(w, mac, fresh, rid, done, arg);
}

void edge_auth_key(edge_worker_t *w, h2o_req_t *req, const char *rid, edge_key_fn *done, void *arg)
{
    s_auth(w, req, rid, false, done, arg);
}

/* --- GET /v1/balance -------------------------------------------------------- */

static void s_balance_done(void *arg, const edge_key_t *k)
{
    fb_http_guard_t *guard = arg;
    h2o_req_t *req = guard->req;
    if (req) {
        if (k->status != 200) {
            edge_key_error(req, EDGE_OPENAI, k);
        } else {
            json_t *v = k->view;
            json_t *doc = json_pack(
                "{ss sI sI sO sO sO sO sO sO sO sO}", "object", "balance", "account_id",
                (json_int_t)k->account_id, "key_id", (json_int_t)k->key_id, "balance_micro",
                json_object_get(v, "balance_micro"), "held_micro", json_object_get(v, "account_held_micro"),
                "available_micro", json_object_get(v, "available_micro"), "key_spent_micro",
                json_object_get(v, "spent_micro"), "key_held_micro", json_object_get(v, "held_micro"),
                "spend_cap_micro", json_object_get(v, "spend_cap_micro"), "models",
                json_object_get(v, "models"), "label", json_object_get(v, "label"));
            if (!doc) {
                edge_error(req, EDGE_OPENAI, 503, "unavailable", NULL, "the ledger's answer was incomplete");
            } else {
                char usd[32];
                edge_usd_text(usd, json_integer_value(json_object_get(v, "available_micro")));
                json_object_set_new(doc, "available_usd", json_string(usd));
                edge_send_json(req, 200, doc);
            }
        }
    }
    fb_http_guard_release(&guard);
}

int edge_balance(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    s_auth(w, req, rid, true, s_balance_done, fb_http_guard_new(req)); /* balances must be fresh */
    return 0;
}

int edge_auth_test(bool verbose)
{
    FB_UNUSED(verbose);
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    struct {
        const char *header, *value, *key;
    } cases[] = {
        {"authorization", "Bearer fbx_abc", "fbx_abc"},
        {"authorization", "bearer fbx_abc", "fbx_abc"},
        {"x-api-key", "fbx_def", "fbx_def"},
        {"authorization", "Basic Zm9v", NULL},
        {"authorization", "Bearer ", NULL},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(cases); i++) {
        h2o_req_t req;
        memset(&req, 0, sizeof(req));
        const h2o_token_t *t = strcmp(cases[i].header, "authorization") == 0 ? H2O_TOKEN_AUTHORIZATION : NULL;
        if (t)
            h2o_add_header(&pool, &req.headers, t, NULL, cases[i].value, strlen(cases[i].value));
        else
            h2o_add_header_by_str(&pool, &req.headers, cases[i].header, strlen(cases[i].header), 0, NULL,
                                  cases[i].value, strlen(cases[i].value));
        h2o_iovec_t key;
        int got = edge_request_key(&req, &key);
        FB_ASSERT(got == (cases[i].key != NULL));
        if (got)
            FB_ASSERT(fb_streq_n(key.base, key.len, cases[i].key));
    }
    h2o_mem_clear_pool(&pool);
    /* key tags: the same key, the same tag and slot; another key, another
     * tag; another worker's cache (its own secret), another tag */
    edge_key_cache_t *a = edge_key_cache_new(), *b = edge_key_cache_new();
    uint8_t t1[32], t2[32], t3[32], t4[32];
    s_known_t *k1 = s_tag(a, "fbx_abc", 7, t1), *k2 = s_tag(a, "fbx_abc", 7, t2);
    FB_ASSERT(k1 == k2 && memcmp(t1, t2, 32) == 0);
    s_tag(a, "fbx_abd", 7, t3);
    s_tag(b, "fbx_abc", 7, t4);
    FB_ASSERT(memcmp(t1, t3, 32) != 0 && memcmp(t1, t4, 32) != 0);
    edge_key_cache_destroy(&a);
    edge_key_cache_destroy(&b);
    FB_ASSERT(!a && !b);
    return 0;
}
