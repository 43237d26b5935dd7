/* edge_limit - token buckets and in-flight caps shared by the workers. */
#include "edge_limit.h"
#include "fb_util.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS     (1u << 16) /* buckets kept at once */
#define PROBE     4          /* slots tried for one caller */
#define STRIPES   64         /* mutexes over the slots */
#define KEY_SLOTS (1u << 14) /* keys with calls in flight at once */
#define KEY_PROBE 8
#define MILLI     1000 /* a token, in the buckets' unit */

typedef struct {
    uint64_t hash;   /* 0: free */
    int64_t tokens;  /* milli-tokens */
    int64_t last_ms; /* when tokens was last brought up to date */
} s_slot_t;

typedef struct {
    int64_t key_id; /* 0: free */
    int64_t count;
} s_inflight_t;

struct edge_limit_t {
    edge_bucket_conf_t conf[2]; /* 0: IP, 1: key */
    int64_t key_concurrency;
    uint8_t hash_key[crypto_shorthash_KEYBYTES]; /* random: callers cannot aim at one slot */
    s_slot_t *slots;
    pthread_mutex_t stripes[STRIPES];
    s_inflight_t *inflight;
    pthread_mutex_t inflight_lock;
};

edge_limit_t *edge_limit_new(edge_bucket_conf_t ip, edge_bucket_conf_t key, int64_t key_concurrency)
{
    edge_limit_t *self = fb_calloc(1, sizeof(*self));
    self->conf[0] = ip;
    self->conf[1] = key;
    self->key_concurrency = key_concurrency;
    randombytes_buf(self->hash_key, sizeof(self->hash_key));
    self->slots = fb_calloc(SLOTS, sizeof(*self->slots));
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&self->stripes[i], NULL);
    self->inflight = fb_calloc(KEY_SLOTS, sizeof(*self->inflight));
    pthread_mutex_init(&self->inflight_lock, NULL);
    return self;
}

void edge_limit_destroy(edge_limit_t **self_p)
{
    FB_ASSERT(self_p);
    edge_limit_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&self->stripes[i]);
    pthread_mutex_destroy(&self->inflight_lock);
    free(self->slots);
    free(self->inflight);
    free(self);
    *self_p = NULL;
}

/* Bring a bucket up to date at now_ms. */
static void s_refill(s_slot_t *s, const edge_bucket_conf_t *c, int64_t now_ms)
{
    int64_t elapsed = now_ms - s->last_ms;
    if (elapsed > 0) {
        int64_t cap = c->burst * MILLI;
        int64_t add = elapsed > cap / (c->per_s > 0 ? c->per_s : 1) + 1 ? cap : elapsed * c->per_s;
        s->tokens = s->tokens + add > cap ? cap : s->tokens + add;
        s->last_ms = now_ms;
    }
}

int64_t edge_limit_take(edge_limit_t *self, int kind, const void *who, size_t len, int64_t now_ms)
{
    FB_ASSERT(kind == 0 || kind == 1);
    const edge_bucket_conf_t *c = &self->conf[kind];
    if (c->per_s <= 0)
        return 0;
    uint8_t in[1 + 64];
    in[0] = (uint8_t)kind;
    size_t n = len > 64 ? 64 : len;
    memcpy(in + 1, who, n);
    uint64_t h;
    crypto_shorthash((uint8_t *)&h, in, n + 1, self->hash_key);
    h |= 1; /* never 0: 0 marks a free slot */
    uint32_t base = (uint32_t)(h >> 32) & (SLOTS - 1) & ~(uint32_t)(PROBE - 1);
    pthread_mutex_t *m = &self->stripes[(base / PROBE) % STRIPES];
    pthread_mutex_lock(m);
    s_slot_t *slot = NULL, *reuse = NULL;
    for (uint32_t i = 0; i < PROBE; i++) {
        s_slot_t *s = &self->slots[base + i];
        if (s->hash == h) {
            slot = s;
            break;
        }
        /* a free slot, or one whose bucket is full again (its caller went quiet) */
        if (!reuse && (s->hash == 0 || (s_refill(s, c, now_ms), s->tokens >= c->burst * MILLI)))
            reuse = s;
        else if (!reuse && i == PROBE - 1)
            reuse = &self->slots[base]; /* all busy: the first gives way */
    }
    if (!slot) {
        slot = reuse;
        slot->hash = h;
        slot->tokens = c->burst * MILLI;
        slot->last_ms = now_ms;
    }
    s_refill(slot, c, now_ms);
    int64_t wait = 0;
    if (slot->tokens >= MILLI)
        slot->tokens -= MILLI;
    else
        wait = (MILLI - slot->tokens + c->per_s - 1) / c->per_s;
    pthread_mutex_unlock(m);
    return wait;
}

bool edge_limit_enter(edge_limit_t *self, int64_t key_id)
{
    if (self->key_concurrency <= 0)
        return true;
    uint32_t base = (uint32_t)((uint64_t)key_id * 0x9E3779B97F4A7C15ull >> 40) & (KEY_SLOTS - 1);
    bool ok = true;
    pthread_mutex_lock(&self->inflight_lock);
    s_inflight_t *slot = NULL, *free_slot = NULL;
    for (uint32_t i = 0; i < KEY_PROBE; i++) {
        s_inflight_t *s = &self->inflight[(base + i) & (KEY_SLOTS - 1)];
        if (s->key_id == key_id) {
            slot = s;
            break;
        }
        if (!free_slot && s->key_id == 0)
            free_slot = s;
    }
    if (!slot && free_slot) {
        slot = free_slot;
        slot->key_id = key_id;
        slot->count = 0;
    }
    if (slot) {
        if (slot->count >= self->key_concurrency)
            ok = false;
        else
            slot->count++;
    }
    /* no slot at all (thousands of keys busy at once): not counted, allowed */
    pthread_mutex_unlock(&self->inflight_lock);
    return ok;
}

void edge_limit_leave(edge_limit_t *self, int64_t key_id)
{
    if (self->key_concurrency <= 0)
        return;
    uint32_t base = (uint32_t)((uint64_t)key_id * 0x9E3779B97F4A7C15ull >> 40) & (KEY_SLOTS - 1);
    pthread_mutex_lock(&self->inflight_lock);
    for (uint32_t i = 0; i < KEY_PROBE; i++) {
        s_inflight_t *s = &self->inflight[(base + i) & (KEY_SLOTS - 1)];
        if (s->key_id == key_id) {
            if (--s->count <= 0)
                s->key_id = 0;
            break;
        }
    }
    pthread_mutex_unlock(&self->inflight_lock);
}

int edge_limit_test(bool verbose)
{
    FB_UNUSED(verbose);
    FB_ASSERT(sodium_init() >= 0);
    edge_limit_t *l = edge_limit_new((edge_bucket_conf_t){2, 3}, (edge_bucket_conf_t){0, 0}, 2);
    /* a burst of 3, then one token every 500 ms */
    for (int i = 0; i < 3; i++)
        FB_ASSERT(edge_limit_take(l, 0, "1.2.3.4", 7, 1000) == 0);
    FB_ASSERT(edge_limit_take(l, 0, "1.2.3.4", 7, 1000) == 500);
    FB_ASSERT(edge_limit_take(l, 0, "1.2.3.4", 7, 1250) == 250);
    FB_ASSERT(edge_limit_take(l, 0, "1.2.3.4", 7, 1500) == 0);
    /* another caller has its own bucket; keys are off */
    FB_ASSERT(edge_limit_take(l, 0, "5.6.7.8", 7, 1500) == 0);
    for (int i = 0; i < 100; i++)
        FB_ASSERT(edge_limit_take(l, 1, "k", 1, 1500) == 0);
    /* after a quiet while the bucket is full again, never more */
    for (int i = 0; i < 3; i++)
        FB_ASSERT(edge_limit_take(l, 0, "1.2.3.4", 7, 100000) == 0);
    FB_ASSERT(edge_limit_take(l, 0, "1.2.3.4", 7, 100000) > 0);
    /* many callers: the table stays bounded and each new one starts full */
    for (int i = 0; i < 200000; i++)
        FB_ASSERT(edge_limit_take(l, 0, &i, sizeof(i), 200000) == 0);
    /* in flight: two per key */
    FB_ASSERT(edge_limit_enter(l, 7) && edge_limit_enter(l, 7));
    FB_ASSERT(!edge_limit_enter(l, 7));
    FB_ASSERT(edge_limit_enter(l, 8));
    edge_limit_leave(l, 7);
    FB_ASSERT(edge_limit_enter(l, 7));
    edge_limit_leave(l, 7);
    edge_limit_leave(l, 7);
    edge_limit_leave(l, 8);
    edge_limit_destroy(&l);
    FB_ASSERT(!l);
    return 0;
}
