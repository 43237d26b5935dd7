/* edge_purse - prepaid calls served from slices of the balance (see the header). */
#include "edge_purse.h"
#include "edge_journal.h"
#include "edge_metrics.h"
#include "edge_reply.h"
#include "fb_log.h"
#include "fb_util.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MONEY_DEADLINE_MS 10000 /* a ledger write, retries on other replicas included */
#define SWEEP_MS          250   /* how often idle and old slices are looked for */
#define GROW_WITHIN_MS    2000  /* a slice used up this fast makes the next one bigger */
#define GROWTH            4
/* A slice with less than a quarter of its money left asks for the next one,
 * so that a busy key's calls do not wait for a ledger.hold when it runs out. */
#define AHEAD_WHEN_LEFT   4
#define CHARGES_PER_WRITE 1000 /* the ledger's limit per ledger.charge */
/* A second write may go out while one is in flight only when that one
 * carries a single charge (light load: a call need not wait a whole round
 * trip behind another); otherwise the charges wait and go together, in
 * fewer, larger writes. Behind writes of up to 3 charges, at 4,000 calls/s
 * Postgres spent ~10 % more CPU per call (2.0 against 2.4 charges a write)
 * for no lower latency. */
#define WRITES_PER_SLICE  2
#define SMALL_WRITE_ITEMS 2
#define BUCKETS_MIN       64
/* A charge write (or a slice's ledger.hold) whose outcome is unknown is sent
 * again until the ledger answers it, up to this long past its hold's expiry
 * (by then an answer is certain: the first one kept, or a refusal). */
#define UNKNOWN_RETRY_MS 60000
#define SCAN_MS          1000 /* how often the journal directory is looked at for dead edges' journals */

typedef struct s_wait {
    struct s_wait *next;
    int64_t amount;
    char rid[EDGE_ID_TEXT_MAX + 1];
    edge_purse_res_t *res;
    edge_purse_fn *fn;
    void *arg;
} s_wait_t;

typedef struct s_item {
    struct s_item *next;
    int64_t cost;
    json_t *call;        /* an idempotent call's name and answer, or NULL */
    size_t answer_bytes; /* of call's answer */
    char rid[EDGE_ID_TEXT_MAX + 1];
    edge_purse_fn *fn; /* NULL: a deferred charge, its call answered already */
    void *arg;
    uint64_t uid; /* a deferred charge's number in the journal (0: not journaled) */
} s_item_t;

/* A call whose charge was deferred: told so from the loop's next check, never
 * from inside edge_purse_charge (its caller may be freeing the call). */
typedef struct s_ack {
    struct s_ack *next;
    edge_purse_fn *fn;
    void *arg;
} s_ack_t;

typedef struct s_key s_key_t;

struct edge_slice_t {
    edge_slice_t *next; /* in the purse's list of slices */
    edge_slice_t *prev;
    s_key_t *key;
    int64_t hold_id, amount;
    int64_t used;     /* charged, or queued to be */
    int64_t reserved; /* ceilings of the calls running on it */
    int64_t calls;    /* reservations not yet charged or released */
    int64_t opened_ms, last_ms;
    s_item_t *items, **items_tail; /* charges waiting for the next write */
    size_t waiting;                /* ... of calls not answered until it is done */
    bool overdue;                  /* ... their window ended while a write was in flight */
    bool dirty;                    /* in the purse's list of slices to write */
    int writing;                   /* ledger.charge writes in flight */
    size_t writing_items;          /* ... and the charges they carry */
    bool retiring;                 /* takes no new calls; closes once idle */
    bool exact;                    /* opened at exactly one call's ceiling (money was short) */
    bool closing;                  /* ledger.void in flight */
    uint64_t writes;
    edge_slice_t *dirty_next;
};

struct s_key {
    s_key_t *next; /* in its bucket */
    int64_t key_id, account_id;
    edge_slice_t *current; /* takes new calls, or NULL */
    edge_slice_t *ahead;   /* opened before current ran out: takes over from it */
    int64_t ahead_for;     /* the hold of the current slice an ahead one was asked for */
    bool opening;          /* a ledger.hold in flight */
    bool exact;            /* ... at exactly the first waiter's ceiling */
    s_wait_t *waiters, **waiters_tail;
    int64_t factor; /* ceilings per slice */
    uint64_t gen;   /* counts the times its slices were all closed (revoked, changed, stopping) */
    int64_t cap;    /* the key's spend cap its slices were opened under (-1: none) */
    size_t slices;  /* its slices not yet closed */
};

struct edge_purse_t {
    edge_worker_t *w;
    edge_purse_conf_t conf;
    s_key_t **buckets;
    size_t nbuckets, nkeys;
    edge_slice_t *slices; /* every slice not yet closed */
    edge_slice_t *dirty;  /* slices with charges to write */
    uv_check_t flush;     /* writes the turn's charges */
    uv_idle_t flush_wake; /* while armed: the loop's poll does not block first */
    uv_timer_t sweep;
    uv_timer_t defer; /* writes deferred charges (conf.defer_ms) */
    bool flush_armed; /* the check handle runs: acks to give, or charges to write now */
    bool flush_now;   /* ... charges to write now */
    bool defer_armed;
    struct s_ack *acks, **acks_tail; /* deferred charges' calls, told "charged" from the check handle */
    size_t queued;                   /* charges waiting in slices for a write */
    struct s_write *resend;          /* charge writes whose outcome is unknown, sent again by the sweep */
    /* the journal of deferred charges (FAREBOX_PREPAID_JOURNAL_DIR) */
    edge_journal_t *journal;
    char ledger_id[EDGE_JOURNAL_LEDGER_MAX + 1]; /* the ledger's name, once asked (ledger.identity) */
    bool identity_asking;
    bool journal_lost;               /* it could not be written: charges no longer deferred */
    uint64_t uid;                    /* the last deferred charge's number */
    size_t deferred_out;             /* deferred charges not written (nor refused) yet */
    struct s_ack *held, **held_tail; /* acks of charges not journaled when it was lost: after their writes */
    /* the journal's fdatasync: a write carrying journaled charges is sent once its record is on
     * the disk, and (FAREBOX_PREPAID_JOURNAL_FSYNC) a deferred call answered once its charge is */
    struct s_sync *syncing;                        /* the one in flight (libuv's thread pool) */
    struct s_ack *sync_wait, **sync_wait_tail;     /* ... acks of records written after it began */
    struct s_write *sync_sends, **sync_sends_tail; /* ... and writes */
    struct s_write *out;                           /* writes in flight that carry journaled charges */
    struct s_recovery *recovery;                   /* a dead edge's journal being written */
    int64_t next_scan_ms;
    size_t foreign_seen;       /* journals of another ledger seen in the last scan */
    struct s_opening *orphans; /* slice holds whose outcome is unknown, asked again by the sweep */
    bool dead;                 /* shut down: no more ledger calls */
    uint64_t epoch;            /* the edge's key epoch the slices were opened under */
    int closed_handles;
};

static const msgpack_object s_empty_map = {.type = MSGPACK_OBJECT_MAP};

static void s_fail(edge_purse_fn *fn, void *arg, const char *code, const char *message)
{
    fb_rpc_reply_t r = {.ok = false, .body = &s_empty_map};
    fb_copy_str(r.code, sizeof(r.code), code);
    fb_copy_str(r.message, sizeof(r.message), message);
    fn(arg, &r);
}

/* A ledger write; once the purse is shut down, fn gets "unavailable" at once. */
static void s_ledger(edge_purse_t *self, const char *method, json_t *body, const char *idem, const char *rid,
                     edge_purse_fn *fn, void *arg)
{
    if (self->dead) {
        json_decref(body);
        s_fail(fn, arg, "unavailable", "the edge is stopping");
        return;
    }
    edge_rpc_json(self->w->ledger, method, body, idem, rid && rid[0] ? rid : NULL, MONEY_DEADLINE_MS, fn,
                  arg);
}

/* --- keys --------------------------------------------------------------------------------- */

static size_t s_bucket(const edge_purse_t *self, int64_t key_id)
{
    uint64_t h = (uint64_t)key_id * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & (self->nbuckets - 1);
}

static s_key_t *s_key_find(edge_purse_t *self, int64_t key_id)
{
    for (s_key_t *k = self->buckets[s_bucket(self, key_id)]; k; k = k->next)
        if (k->key_id == key_id)
            return k;
    return NULL;
}

static void s_rehash(edge_purse_t *self, size_t n)
{
    s_key_t **old = self->buckets;
    size_t oldn = self->nbuckets;
    self->buckets = fb_calloc(n, sizeof(*self->buckets));
    self->nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        for (s_key_t *k = old[i], *next; k; k = next) {
            next = k->next;
            size_t b = s_bucket(self, k->key_id);
            k->next = self->buckets[b];
            self->buckets[b] = k;
        }
    }
    free(old);
}

static s_key_t *s_key_get(edge_purse_t *self, int64_t key_id, int64_t account_id, int64_t cap)
{
    s_key_t *k = s_key_find(self, key_id);
    if (k && k->cap != cap) {
        /* its cap changed (through any edge: this call's lookup is at most a second old): no
         * slice opened under the old one takes another call; the next hold is checked against
         * the new one */
        edge_purse_retire_key(self, key_id);
        if ((k = s_key_find(self, key_id))) /* (retiring may have freed it) */
            k->cap = cap;
    }
    if (k)
        return k;
    if (self->nkeys >= self->nbuckets * 2)
        s_rehash(self, self->nbuckets * 2);
    k = fb_calloc(1, sizeof(*k));
    k->key_id = key_id;
    k->account_id = account_id;
    k->waiters_tail = &k->waiters;
    k->factor = self->conf.slice_calls;
    k->cap = cap;
    size_t b = s_bucket(self, key_id);
    k->next = self->buckets[b];
    self->buckets[b] = k;
    self->nkeys++;
    return k;
}

/* Frees a key with nothing left on it: no slice takes its calls, no open, no waiter. */
static void s_key_maybe_free(edge_purse_t *self, s_key_t *k)
{
    if (k->current || k->opening || k->waiters || k->slices > 0)
        return;
    s_key_t **p = &self->buckets[s_bucket(self, k->key_id)];
    while (*p != k)
        p = &(*p)->next;
    *p = k->next;
    self->nkeys--;
    free(k);
}

/* --- slices ------------------------------------------------------------------------------- */

static void s_open(edge_purse_t *self, s_key_t *k, int64_t first, const char *rid, bool ahead);
static void s_journal_slice(edge_purse_t *self, const edge_slice_t *s);

static bool s_fits(const edge_slice_t *s, int64_t amount)
{
    return !s->retiring && s->amount - s->used - s->reserved >= amount;
}

static void s_take(edge_slice_t *s, int64_t amount, edge_purse_res_t *res)
{
    s->reserved += amount;
    s->calls++;
    s->last_ms = fb_mono_ms();
    *res = (edge_purse_res_t){.slice = s, .amount = amount, .hold_id = s->hold_id};
}

typedef struct {
    edge_purse_t *purse;
    edge_slice_t *slice;
} s_close_t;

static void s_on_void(void *arg, const fb_rpc_reply_t *reply)
{
    s_close_t *c = arg;
    edge_purse_t *self = c->purse;
    edge_slice_t *s = c->slice;
    free(c);
    if (s->prev)
        s->prev->next = s->next;
    else
        self->slices = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (!reply->ok && strcmp(reply->code, "hold_not_open") != 0)
        fb_log(FB_LOG_WARN, NULL, "could not close a prepaid slice; its rest is released when it expires",
               "hold_id=%" PRId64 " code=%s message=%s", s->hold_id, reply->code, reply->message);
    s_key_t *k = s->key;
    free(s);
    k->slices--;
    s_key_maybe_free(self, k);
}

/* Closes a retiring slice once nothing runs on it: its uncharged rest goes back. */
static void s_maybe_close(edge_purse_t *self, edge_slice_t *s)
{
    if (!s->retiring || s->closing || s->calls > 0 || s->items || s->writing > 0)
        return;
    s->closing = true;
    if (s->dirty) {
        /* its charges went with a write since it was marked (deferred ones
         * wait for a timer): nothing is left to write */
        edge_slice_t **p = &self->dirty;
        while (*p != s)
            p = &(*p)->dirty_next;
        *p = s->dirty_next;
        s->dirty = false;
        s->dirty_next = NULL;
    }
    if (self->dead)
        return; /* no more ledger calls: its rest is released when it expires (freed by edge_purse_destroy) */
    s_close_t *c = fb_calloc(1, sizeof(*c));
    c->purse = self;
    c->slice = s;
    char idem[64];
    snprintf(idem, sizeof(idem), "slice-close:%" PRId64, s->hold_id);
    s_ledger(self, "ledger.void", json_pack("{sI}", "hold_id", (json_int_t)s->hold_id), idem, NULL, s_on_void,
             c);
}

/* A retiring slice takes no new call; the key's ahead slice, if any, takes
 * over from its current one. */
static void s_retire(edge_purse_t *self, edge_slice_t *s)
{
    if (!s || s->retiring)
        return;
    s->retiring = true;
    s_key_t *k = s->key;
    if (k && k->ahead == s)
        k->ahead = NULL;
    if (k && k->current == s) {
        k->current = k->ahead;
        k->ahead = NULL;
    }
    s_maybe_close(self, s);
}

/* A busy key (its slice used up within GROW_WITHIN_MS) gets bigger slices. */
static void s_grow(s_key_t *k, int64_t used_ms)
{
    if (used_ms < GROW_WITHIN_MS && k->factor < INT64_MAX / GROWTH)
        k->factor *= GROWTH;
}

/* Asks for the key's next slice once its current one has less than
 * 1/AHEAD_WHEN_LEFT of its money left (once per slice; not when money was
 * short: a refusal of the next one changes nothing for the calls). */
static void s_maybe_ahead(edge_purse_t *self, s_key_t *k, int64_t amount, const char *rid)
{
    edge_slice_t *cur = k->current;
    if (!cur || cur->exact || k->ahead || k->opening || k->waiters || k->exact || self->dead ||
        k->ahead_for == cur->hold_id ||
        (cur->amount - cur->used - cur->reserved) * AHEAD_WHEN_LEFT >= cur->amount)
        return;
    k->ahead_for = cur->hold_id;
    /* three quarters used within three quarters of the time: as if used up */
    s_grow(k, (fb_mono_ms() - cur->opened_ms) * AHEAD_WHEN_LEFT / (AHEAD_WHEN_LEFT - 1));
    s_open(self, k, amount, rid, true);
}

/* Serves the key's waiters from its current slice, in order; opens another
 * slice for those that do not fit. */
static void s_serve_waiters(edge_purse_t *self, s_key_t *k)
{
    for (;;) {
        while (k->waiters && k->current && s_fits(k->current, k->waiters->amount)) {
            s_wait_t *wt = k->waiters;
            k->waiters = wt->next;
            if (!k->waiters)
                k->waiters_tail = &k->waiters;
            s_take(k->current, wt->amount, wt->res);
            edge_metrics_slice(EDGE_SLICE_WAITED);
            fb_rpc_reply_t ok = {.ok = true, .body = &s_empty_map};
            wt->fn(wt->arg, &ok);
            free(wt);
        }
        if (!k->waiters || k->opening)
            return;
        if (!k->current)
            break;
        /* used up: the ahead slice takes over, or another is opened */
        int64_t used_ms = fb_mono_ms() - k->current->opened_ms;
        s_retire(self, k->current);
        if (!k->current) {
            s_grow(k, used_ms);
            break;
        }
    }
    s_open(self, k, k->waiters->amount, k->waiters->rid, false);
}

typedef struct s_opening {
    edge_purse_t *purse;
    s_key_t *key; /* NULL once its outcome is only looked for (s_on_orphan) */
    int64_t amount;
    bool ahead;    /* asked before the current slice ran out */
    uint64_t gen;  /* the key's generation when asked (s_key_t) */
    json_t *body;  /* as sent, with its key: */
    char idem[40]; /* an unknown outcome is asked again (s_on_orphan) */
    int64_t sent_ms;
    struct s_opening *next_orphan;
} s_opening_t;

static void s_opening_free(s_opening_t *o)
{
    json_decref(o->body);
    free(o);
}

static void s_on_orphan_void(void *arg, const fb_rpc_reply_t *reply)
{
    int64_t *hold_id = arg;
    if (!reply->ok && strcmp(reply->code, "hold_not_open") != 0)
        fb_log(FB_LOG_WARN, NULL,
               "could not release a prepaid slice nobody took; it is released when it expires",
               "hold_id=%" PRId64 " code=%s message=%s", *hold_id, reply->code, reply->message);
    free(hold_id);
}

/* The answer to a slice's ledger.hold asked again after its first outcome
 * was unknown (its calls had their answer then): a hold that was made is
 * released at once instead of holding money until it expires. */
static void s_on_orphan(void *arg, const fb_rpc_reply_t *reply)
{
    s_opening_t *o = arg;
    edge_purse_t *self = o->purse;
    if (edge_rpc_outcome_unknown(reply) && !self->dead &&
        fb_mono_ms() - o->sent_ms < self->conf.hold_ttl_ms + UNKNOWN_RETRY_MS) {
        o->next_orphan = self->orphans;
        self->orphans = o;
        return;
    }
    if (reply->ok) {
        json_t *b = edge_reply_json(reply);
        int64_t hold_id = json_integer_value(json_object_get(b, "hold_id"));
        json_decref(b);
        if (hold_id > 0) {
            fb_log(FB_LOG_INFO, NULL, "a prepaid slice made while its answer was lost is released",
                   "hold_id=%" PRId64, hold_id);
            int64_t *arg2 = fb_malloc(sizeof(*arg2));
            *arg2 = hold_id;
            char idem[64];
            snprintf(idem, sizeof(idem), "slice-close:%" PRId64, hold_id);
            s_ledger(self, "ledger.void", json_pack("{sI}", "hold_id", (json_int_t)hold_id), idem, NULL,
                     s_on_orphan_void, arg2);
        }
    }
    s_opening_free(o);
}

static void s_on_hold(void *arg, const fb_rpc_reply_t *reply)
{
    s_opening_t *o = arg;
    edge_purse_t *self = o->purse;
    s_key_t *k = o->key;
    int64_t amount = o->amount;
    bool ahead = o->ahead, stale = o->gen != k->gen;
    if (edge_rpc_outcome_unknown(reply) && !self->dead) {
        /* the hold may have been made: asked again (its key is the same) until
         * the ledger says, and released if it was (s_on_orphan) */
        o->key = NULL;
        o->next_orphan = self->orphans;
        self->orphans = o;
    } else {
        s_opening_free(o);
    }
    k->opening = false;
    if (reply->ok) {
        json_t *b = edge_reply_json(reply);
        int64_t hold_id = json_integer_value(json_object_get(b, "hold_id"));
        json_decref(b);
        if (hold_id > 0) {
            edge_slice_t *s = fb_calloc(1, sizeof(*s));
            s->key = k;
            k->slices++;
            s->hold_id = hold_id;
            s->amount = amount;
            s->opened_ms = s->last_ms = fb_mono_ms();
            s->exact = k->exact;
            s->items_tail = &s->items;
            s->next = self->slices;
            if (s->next)
                s->next->prev = s;
            self->slices = s;
            s_journal_slice(self, s);
            k->exact = false;
            if (stale) {
                /* asked for before its key's slices were closed (the key revoked
                 * or changed, the edge stopping): it takes no call; waiters get
                 * one asked for now */
                s->retiring = true;
                s_maybe_close(self, s);
                if (k->waiters && !self->dead)
                    s_serve_waiters(self, k);
                s_key_maybe_free(self, k);
                return;
            }
            /* an ahead slice waits for the current one to run out (or retire) */
            if (k->current)
                k->ahead = s;
            else
                k->current = s;
            edge_metrics_slice(ahead ? EDGE_SLICE_AHEAD : EDGE_SLICE_OPENED);
            s_serve_waiters(self, k);
            s_key_maybe_free(self, k);
            return;
        }
        reply = &(fb_rpc_reply_t){.ok = false, .code = "unavailable", .body = &s_empty_map};
    }
    if (ahead) {
        /* nobody waited for it: calls that do not fit now open one as usual */
        if (k->waiters)
            s_serve_waiters(self, k);
        s_key_maybe_free(self, k);
        return;
    }
    bool short_money =
        strcmp(reply->code, "insufficient_balance") == 0 || strcmp(reply->code, "spend_limit_exceeded") == 0;
    if (short_money && !k->exact && k->waiters && amount > k->waiters->amount) {
        /* the whole slice does not fit: ask for exactly the first call's ceiling */
        k->exact = true;
        k->factor = self->conf.slice_calls;
        s_open(self, k, k->waiters->amount, k->waiters->rid, false);
        return;
    }
    /* the first waiter gets the refusal; the others try again on their own */
    s_wait_t *wt = k->waiters;
    if (wt) {
        k->waiters = wt->next;
        if (!k->waiters)
            k->waiters_tail = &k->waiters;
        wt->fn(wt->arg, reply);
        free(wt);
    }
    if (k->waiters) {
        k->exact = short_money;
        s_open(self, k, k->waiters->amount, k->waiters->rid, false);
        return;
    }
    k->exact = false;
    s_key_maybe_free(self, k);
}

/* Asks for a slice for calls of first (the first waiter's ceiling, or the
 * call that found the current slice running short: ahead). */
static void s_open(edge_purse_t *self, s_key_t *k, int64_t first, const char *rid, bool ahead)
{
    FB_ASSERT(!k->opening && (ahead || k->waiters));
    int64_t amount = first;
    if (!k->exact) {
        int64_t want = first > self->conf.slice_max_micro / (k->factor > 0 ? k->factor : 1)
                           ? self->conf.slice_max_micro
                           : first * k->factor;
        amount = want > first ? want : first;
    }
    k->opening = true;
    s_opening_t *o = fb_calloc(1, sizeof(*o));
    o->purse = self;
    o->key = k;
    o->amount = amount;
    o->ahead = ahead;
    o->gen = k->gen;
    o->sent_ms = fb_mono_ms();
    memcpy(o->idem, "slice:", 6);
    fb_random_hex(o->idem + 6, 16);
    o->body = json_pack("{sI sI sI sI ss}", "account_id", (json_int_t)k->account_id, "amount_micro",
                        (json_int_t)amount, "expires_in_ms", (json_int_t)self->conf.hold_ttl_ms, "key_id",
                        (json_int_t)k->key_id, "memo", "prepaid slice");
    s_ledger(self, "ledger.hold", json_incref(o->body), o->idem, rid, s_on_hold, o);
}

bool edge_purse_reserve(edge_purse_t *self, int64_t account_id, int64_t key_id, int64_t cap, int64_t amount,
                        const char *rid, edge_purse_res_t *res, edge_purse_fn *fn, void *arg)
{
    FB_ASSERT(amount > 0);
    *res = (edge_purse_res_t){0};
    uint64_t epoch = atomic_load(&self->w->edge->key_epoch);
    if (epoch != self->epoch) {
        /* a key was revoked or changed here: no slice outlives what it was opened under */
        self->epoch = epoch;
        edge_purse_drain(self);
    }
    s_key_t *k = s_key_get(self, key_id, account_id, cap);
    if (!k->waiters && k->current && !s_fits(k->current, amount) && k->ahead && s_fits(k->ahead, amount))
        s_retire(self, k->current); /* the ahead slice takes over */
    if (!k->waiters && k->current && s_fits(k->current, amount)) {
        s_take(k->current, amount, res);
        edge_metrics_slice(EDGE_SLICE_READY);
        s_maybe_ahead(self, k, amount, rid);
        return true;
    }
    s_wait_t *wt = fb_calloc(1, sizeof(*wt));
    wt->amount = amount;
    fb_copy_str(wt->rid, sizeof(wt->rid), rid);
    wt->res = res;
    wt->fn = fn;
    wt->arg = arg;
    *k->waiters_tail = wt;
    k->waiters_tail = &wt->next;
    if (!k->opening)
        s_serve_waiters(self, k);
    return false;
}

void edge_purse_release(edge_purse_t *self, edge_purse_res_t *res)
{
    edge_slice_t *s = res->slice;
    if (!s)
        return;
    res->slice = NULL;
    s->reserved -= res->amount;
    s->calls--;
    s_maybe_close(self, s);
}

/* --- charges ------------------------------------------------------------------------------ */

typedef struct s_write {
    edge_purse_t *purse;
    edge_slice_t *slice;
    s_item_t *items;
    size_t count;
    json_t *body; /* as sent: a write whose outcome is unknown is sent again as is */
    char idem[64];
    char rid[EDGE_ID_TEXT_MAX + 1];
    struct s_write *next_resend;
    struct s_write *next_send; /* waiting for the journal's sync before it is sent */
    bool journaled;            /* carries journaled charges: in the purse's list out */
    struct s_write *out_prev, *out_next;
} s_write_t;

static void s_write(edge_purse_t *self, edge_slice_t *s);
static void s_defer_write(edge_purse_t *self, edge_slice_t *s);
static void s_send_writes(edge_purse_t *self, s_write_t *list);

/* Deferred charges of answered calls that will never be written (refused, or
 * the edge stops before they could be): the callers were served unpaid. */
static void s_unbilled(size_t calls, int64_t micro, const char *why)
{
    edge_metrics_money(EDGE_MONEY_UNBILLED, micro);
    fb_log(FB_LOG_ERROR, NULL,
           "deferred charges of answered calls could not be written; those calls go unpaid",
           "calls=%zu amount_micro=%" PRId64 " code=%s", calls, micro, why);
}

/* --- the journal ---------------------------------------------------------------------------- */

static void s_flush_all(edge_purse_t *self);
static void s_arm_check(edge_purse_t *self);
static void s_arm_flush(edge_purse_t *self);
static void s_sync_start(edge_purse_t *self);

static bool s_journaling(const edge_purse_t *self)
{
    return self->conf.journal_dir && self->conf.journal_dir[0];
}

static void s_out_unlink(edge_purse_t *self, s_write_t *wr)
{
    if (!wr->journaled)
        return;
    wr->journaled = false;
    if (wr->out_prev)
        wr->out_prev->out_next = wr->out_next;
    else
        self->out = wr->out_next;
    if (wr->out_next)
        wr->out_next->out_prev = wr->out_prev;
    wr->out_prev = wr->out_next = NULL;
}

/* The journal's record of a write about to be sent: its key, the journaled
 * charges it carries, its body. */
static void s_journal_write(edge_purse_t *self, const s_write_t *wr)
{
    uint64_t *uids = fb_malloc(wr->count * sizeof(*uids));
    size_t n = 0;
    for (const s_item_t *it = wr->items; it; it = it->next)
        if (it->uid)
            uids[n++] = it->uid;
    char *body = json_dumps(wr->body, JSON_COMPACT);
    edge_journal_write(self->journal, wr->slice->hold_id, wr->idem, uids, n, body);
    free(body);
    free(uids);
}

/* The journal could not be written. It is deleted: it may lack a write's
 * record, and a write sent without one would be written twice by a recovery.
 * Charges wait for the ledger from now on, and the calls whose charges it
 * may not hold get their answers once every deferred charge is written. */
static void s_journal_lost(edge_purse_t *self, int err)
{
    fb_log(FB_LOG_ERROR, NULL,
           "the charge journal could not be written; prepaid answers wait for their charges from now on",
           "path=%s error=%s", edge_journal_path(self->journal), strerror(err));
    edge_journal_close(&self->journal, true);
    self->journal_lost = true;
    while (self->out)
        s_out_unlink(self, self->out);
    if (self->acks) {
        *self->held_tail = self->acks;
        self->held_tail = self->acks_tail;
        self->acks = NULL;
        self->acks_tail = &self->acks;
    }
    if (self->sync_wait) {
        *self->held_tail = self->sync_wait;
        self->held_tail = self->sync_wait_tail;
        self->sync_wait = NULL;
        self->sync_wait_tail = &self->sync_wait;
    }
    /* writes waiting for a sync go now: no recovery can send them again */
    s_write_t *sends = self->sync_sends;
    self->sync_sends = NULL;
    self->sync_sends_tail = &self->sync_sends;
    s_send_writes(self, sends);
    s_arm_flush(self);
}

/* A slice's hold in the journal: if the edge dies, a recovery closes it at
 * once, charged or not (else its rest waits for the hold's expiry). */
static void s_journal_slice(edge_purse_t *self, const edge_slice_t *s)
{
    if (!self->journal)
        return;
    edge_journal_hold(self->journal, s->hold_id);
    if (edge_journal_sync(self->journal) != 0)
        s_journal_lost(self, errno);
}

/* Replaces the journal by one of what is pending: the charges queued and the
 * writes in flight. */
static void s_rotate(edge_purse_t *self)
{
    if (edge_journal_snapshot_begin(self->journal) != 0) {
        s_journal_lost(self, errno);
        return;
    }
    for (edge_slice_t *s = self->slices; s; s = s->next) {
        edge_journal_hold(self->journal, s->hold_id);
        for (s_item_t *it = s->items; it; it = it->next)
            if (it->uid)
                edge_journal_charge(self->journal, it->uid, s->hold_id, it->cost, it->rid);
    }
    for (s_write_t *wr = self->out; wr; wr = wr->out_next)
        s_journal_write(self, wr);
    int rc = edge_journal_snapshot_end(self->journal);
    if (rc == -2)
        s_journal_lost(self, errno);
    else if (rc != 0)
        fb_log(FB_LOG_WARN, NULL,
               "the charge journal could not be replaced by a shorter one; it keeps growing",
               "path=%s error=%s", edge_journal_path(self->journal), strerror(errno));
}

static void s_on_identity(void *arg, const fb_rpc_reply_t *reply)
{
    edge_purse_t *self = arg;
    self->identity_asking = false;
    if (!reply->ok || self->ledger_id[0])
        return; /* asked again by the sweep */
    json_t *b = edge_reply_json(reply);
    const char *id = json_string_value(json_object_get(b, "ledger_id"));
    if (id && id[0] && strlen(id) <= EDGE_JOURNAL_LEDGER_MAX && !strpbrk(id, " \n"))
        fb_copy_str(self->ledger_id, sizeof(self->ledger_id), id);
    json_decref(b);
    if (!self->ledger_id[0] || self->conf.defer_ms == 0 || self->journal || self->journal_lost || self->dead)
        return;
    char err[256];
    /* durable: a replacement journal is on the disk before its name is (a crash must not leave a
     * journal holding charges without the write, already sent, that carried them) */
    self->journal = edge_journal_open(self->conf.journal_dir, self->ledger_id, self->conf.journal_max_bytes,
                                      true, err, sizeof(err));
    if (self->journal) {
        fb_log(FB_LOG_INFO, NULL, "deferred charges are journaled", "path=%s",
               edge_journal_path(self->journal));
        for (edge_slice_t *s = self->slices; s; s = s->next)
            edge_journal_hold(self->journal, s->hold_id);
        if (edge_journal_sync(self->journal) != 0)
            s_journal_lost(self, errno);
    } else {
        self->journal_lost = true;
        fb_log(FB_LOG_ERROR, NULL,
               "the charge journal could not be made; prepaid answers wait for their charges", "error=%s",
               err);
    }
}

/* The journal's name for the ledger; until it is known, charges are not deferred. */
static void s_ask_identity(edge_purse_t *self)
{
    if (!s_journaling(self) || self->ledger_id[0] || self->identity_asking || self->dead)
        return;
    self->identity_asking = true;
    edge_rpc_json(self->w->ledger, "ledger.identity", NULL, NULL, NULL, MONEY_DEADLINE_MS, s_on_identity,
                  self);
}

/* --- a dead edge's journal ------------------------------------------------------------------ */

typedef struct s_recovery {
    edge_journal_claim_t claim;
    edge_journal_plan_t plan;
    bool *sent;   /* per write: answered for good */
    bool *closed; /* per hold */
    size_t out;   /* ledger calls in flight */
    int64_t charged, unbilled;
    size_t charged_calls, unbilled_calls;
} s_recovery_t;

typedef struct {
    edge_purse_t *purse;
    size_t index;
} s_recovery_call_t;

/* A ledger call of the recovery, about its index-th write or hold. */
static s_recovery_call_t *s_recovery_call(edge_purse_t *self, size_t index)
{
    s_recovery_call_t *c = fb_calloc(1, sizeof(*c));
    c->purse = self;
    c->index = index;
    self->recovery->out++;
    return c;
}

static void s_recovery_free(edge_purse_t *self, edge_journal_end_t end)
{
    s_recovery_t *r = self->recovery;
    self->recovery = NULL;
    edge_journal_release(&r->claim, end);
    edge_journal_plan_free(&r->plan);
    free(r->sent);
    free(r->closed);
    free(r);
}

static void s_on_recovered_charge(void *arg, const fb_rpc_reply_t *reply)
{
    s_recovery_call_t *c = arg;
    s_recovery_t *r = c->purse->recovery;
    edge_journal_send_t *s = &r->plan.sends[c->index];
    r->out--;
    if (!edge_rpc_outcome_unknown(reply)) {
        r->sent[c->index] = true;
        if (reply->ok) {
            r->charged += s->amount;
            r->charged_calls += s->calls;
        } else {
            r->unbilled += s->amount;
            r->unbilled_calls += s->calls;
            fb_log(FB_LOG_ERROR, NULL,
                   "a stopped edge's journaled charges were refused; those calls go unpaid",
                   "hold_id=%" PRId64 " idem=%s code=%s message=%s", s->hold_id, s->idem, reply->code,
                   reply->message);
            edge_metrics_money(EDGE_MONEY_UNBILLED, s->amount);
        }
    }
    free(c);
}

static void s_on_recovered_void(void *arg, const fb_rpc_reply_t *reply)
{
    s_recovery_call_t *c = arg;
    s_recovery_t *r = c->purse->recovery;
    r->out--;
    if (!edge_rpc_outcome_unknown(reply)) {
        r->closed[c->index] = true;
        if (!reply->ok && strcmp(reply->code, "hold_not_open") != 0)
            fb_log(FB_LOG_WARN, NULL,
                   "could not close a stopped edge's slice; its rest is released when it expires",
                   "hold_id=%" PRId64 " code=%s", r->plan.holds[c->index], reply->code);
    }
    free(c);
}

/* One step of a recovery, from the sweep once nothing of it is in flight:
 * the writes not answered for good are sent (again), then the holds closed,
 * then the journal deleted. */
static void s_recovery_step(edge_purse_t *self)
{
    s_recovery_t *r = self->recovery;
    if (!r || r->out > 0)
        return;
    if (self->dead) {
        s_recovery_free(self, EDGE_JOURNAL_KEEP); /* another edge finishes it */
        return;
    }
    /* (an answer may come at once: what was sent is counted, not what is in flight) */
    bool pending = false;
    for (size_t i = 0; i < r->plan.nsends; i++) {
        if (r->sent[i])
            continue;
        pending = true;
        s_ledger(self, "ledger.charge", json_loads(r->plan.sends[i].body, 0, NULL), r->plan.sends[i].idem,
                 NULL, s_on_recovered_charge, s_recovery_call(self, i));
    }
    bool charged = !pending; /* the holds are closed once every write is answered */
    for (size_t i = 0; i < r->plan.nholds && charged; i++) {
        if (r->closed[i])
            continue;
        pending = true;
        char idem[64];
        snprintf(idem, sizeof(idem), "slice-close:%" PRId64, r->plan.holds[i]);
        s_ledger(self, "ledger.void", json_pack("{sI}", "hold_id", (json_int_t)r->plan.holds[i]), idem, NULL,
                 s_on_recovered_void, s_recovery_call(self, i));
    }
    if (pending)
        return;
    fb_log(FB_LOG_INFO, NULL, "a stopped edge's journaled charges are written",
           "path=%s writes=%zu charged_calls=%zu charged_micro=%" PRId64
           " unbilled_calls=%zu unbilled_micro=%" PRId64 " holds_closed=%zu",
           r->claim.path, r->plan.nsends, r->charged_calls, r->charged, r->unbilled_calls, r->unbilled,
           r->plan.nholds);
    s_recovery_free(self, EDGE_JOURNAL_DONE);
    self->next_scan_ms = 0; /* another may be waiting */
}

/* Looks for a dead edge's journal (one worker of each edge does, each second). */
static void s_scan(edge_purse_t *self)
{
    int64_t now = fb_mono_ms();
    if (!self->conf.recover || !s_journaling(self) || !self->ledger_id[0] || self->recovery || self->dead ||
        now < self->next_scan_ms)
        return;
    self->next_scan_ms = now + SCAN_MS;
    size_t foreign = 0;
    s_recovery_t *r = fb_calloc(1, sizeof(*r));
    if (edge_journal_claim(self->conf.journal_dir, self->ledger_id, &r->claim, &foreign) != 1) {
        free(r);
        if (foreign > 0 && foreign != self->foreign_seen)
            fb_log(FB_LOG_WARN, NULL,
                   "the journal directory holds journals of another ledger; they are left alone",
                   "dir=%s journals=%zu", self->conf.journal_dir, foreign);
        self->foreign_seen = foreign;
        return;
    }
    self->recovery = r;
    char err[256];
    if (edge_journal_plan(r->claim.text, r->claim.len, r->claim.token, &r->plan, err, sizeof(err)) != 0) {
        fb_log(FB_LOG_ERROR, NULL,
               "a charge journal could not be read; it is set aside (.bad) for the operator",
               "path=%s error=%s", r->claim.path, err);
        s_recovery_free(self, EDGE_JOURNAL_BAD);
        return;
    }
    FB_ASSERT(strcmp(r->plan.ledger_id, self->ledger_id) == 0); /* edge_journal_claim read it so */
    fb_log(FB_LOG_INFO, NULL, "writing the journaled charges of a stopped edge",
           "path=%s writes=%zu holds=%zu", r->claim.path, r->plan.nsends, r->plan.nholds);
    r->sent = fb_calloc(r->plan.nsends + 1, sizeof(*r->sent));
    r->closed = fb_calloc(r->plan.nholds + 1, sizeof(*r->closed));
    s_recovery_step(self);
}

static void s_on_charged(void *arg, const fb_rpc_reply_t *reply)
{
    s_write_t *wr = arg;
    edge_purse_t *self = wr->purse;
    edge_slice_t *s = wr->slice;
    if (edge_rpc_outcome_unknown(reply) && !self->dead &&
        fb_mono_ms() - s->opened_ms < self->conf.hold_ttl_ms + UNKNOWN_RETRY_MS) {
        /* it may have been applied: the same write under the same key gets
         * the ledger's first answer if it was, and is applied now if not (after
         * the hold's expiry it can only be refused), so that no caller is told
         * its call failed while it was charged, nor answered while it was not */
        fb_log(FB_LOG_WARN, wr->rid, "a charge write's outcome is unknown; it is sent again",
               "hold_id=%" PRId64 " idem=%s code=%s", s->hold_id, wr->idem, reply->code);
        wr->next_resend = self->resend;
        self->resend = wr;
        return;
    }
    s_item_t *items = wr->items;
    s->writing--;
    s->writing_items -= wr->count;
    /* journaled, with its outcome unknown for good as the edge stops: left in
     * the journal for another edge to send again (unknown long past its hold's
     * expiry while the edge runs, it is done with: nothing can charge it now) */
    bool left = self->dead && wr->journaled && self->journal && edge_rpc_outcome_unknown(reply);
    if (wr->journaled && self->journal && !left)
        edge_journal_answered(self->journal, wr->idem);
    s_out_unlink(self, wr);
    json_decref(wr->body);
    free(wr);
    if (!reply->ok) {
        /* refused (the hold expired or was closed), or still unknown once the
         * hold has long expired or the edge is stopping: the slice is not
         * trusted with more calls; its charges' callers get the error */
        fb_log(FB_LOG_ERROR, NULL, "charges against a prepaid slice failed; their calls get an error",
               "hold_id=%" PRId64 " code=%s message=%s", s->hold_id, reply->code, reply->message);
        s_retire(self, s);
    }
    int64_t lost = 0;
    size_t lost_calls = 0;
    for (s_item_t *it = items, *next; it; it = next) {
        next = it->next;
        if (it->fn) {
            it->fn(it->arg, reply);
        } else if (left) {
            lost_calls++;
        } else {
            self->deferred_out--;
            if (!reply->ok) {
                lost += it->cost;
                lost_calls++;
            }
        }
        free(it);
    }
    if (left)
        fb_log(FB_LOG_WARN, NULL,
               "a charge write's outcome is unknown as the edge stops; its journal keeps it",
               "hold_id=%" PRId64 " calls=%zu", s->hold_id, lost_calls);
    else if (lost_calls > 0)
        s_unbilled(lost_calls, lost, reply->code);
    if (self->held && self->deferred_out == 0)
        s_arm_check(self); /* the answers held since the journal was lost */
    if (!s->items)
        s_maybe_close(self, s);
    else if (s->waiting > 0 || s->retiring || s->overdue)
        s_write(self, s);
    else
        s_defer_write(self, s); /* answered calls' charges: they go with the next defer_ms' */
}

/* Sends the slice's waiting charges (up to the ledger's limit per write). */
static void s_write(edge_purse_t *self, edge_slice_t *s)
{
    if (!s->items || s->writing >= WRITES_PER_SLICE ||
        (s->writing > 0 && s->writing_items >= SMALL_WRITE_ITEMS))
        return;
    json_t *list = json_array();
    s_item_t *batch = s->items, *last = NULL;
    size_t n = 0;
    size_t bytes = 0;
    for (s_item_t *it = s->items; it && n < CHARGES_PER_WRITE; it = it->next, n++) {
        /* answers are split over writes by size (the first always goes) */
        if (n > 0 && bytes + it->answer_bytes > self->conf.answer_budget)
            break;
        bytes += it->answer_bytes;
        if (it->fn)
            s->waiting--;
        json_t *item = json_pack("{sI ss}", "amount_micro", (json_int_t)it->cost, "ref", it->rid);
        if (it->call) {
            json_object_set_new(item, "call", it->call);
            it->call = NULL;
        }
        json_array_append_new(list, item);
        last = it;
    }
    s->items = last->next;
    last->next = NULL;
    self->queued -= n;
    if (!s->items) {
        s->items_tail = &s->items;
        s->overdue = false;
    }
    s->writing++;
    s->writing_items += n;
    s_write_t *wr = fb_calloc(1, sizeof(*wr));
    wr->purse = self;
    wr->slice = s;
    wr->items = batch;
    wr->count = n;
    wr->body = json_pack("{sI so}", "hold_id", (json_int_t)s->hold_id, "charges", list);
    snprintf(wr->idem, sizeof(wr->idem), "slice-charge:%" PRId64 ":%" PRIu64, s->hold_id, ++s->writes);
    fb_copy_str(wr->rid, sizeof(wr->rid), batch->rid);
    bool journaled = false;
    for (s_item_t *it = batch; it && self->journal && !journaled; it = it->next)
        journaled = it->uid != 0;
    if (journaled) {
        /* recorded before it is sent: a recovery sends it again, never its
         * charges under another key */
        wr->journaled = true;
        wr->out_next = self->out;
        if (self->out)
            self->out->out_prev = wr;
        self->out = wr;
        s_journal_write(self, wr);
        if (edge_journal_sync(self->journal) != 0)
            s_journal_lost(self, errno);
    }
    if (journaled && self->journal) {
        /* sent once its record is on the disk: after a crash of the host, a
         * journal naming these charges without the write that carried them
         * would have a recovery charge them again, if the ledger had applied it */
        *self->sync_sends_tail = wr;
        self->sync_sends_tail = &wr->next_send;
        s_sync_start(self);
        return;
    }
    s_ledger(self, "ledger.charge", json_incref(wr->body), wr->idem, wr->rid, s_on_charged, wr);
}

static void s_send_writes(edge_purse_t *self, s_write_t *list)
{
    for (s_write_t *wr = list, *next; wr; wr = next) {
        next = wr->next_send;
        wr->next_send = NULL;
        s_ledger(self, "ledger.charge", json_incref(wr->body), wr->idem, wr->rid, s_on_charged, wr);
    }
}

/* A write never sent, once its purse is gone (the process ends; its
 * charges are in the journal another edge writes). */
static void s_write_drop(s_write_t *wr)
{
    for (s_item_t *it = wr->items, *next; it; it = next) {
        next = it->next;
        json_decref(it->call);
        free(it);
    }
    json_decref(wr->body);
    free(wr);
}

/* Writes the charges waiting in every slice that has some. */
static void s_flush_all(edge_purse_t *self)
{
    edge_slice_t *list = self->dirty;
    self->dirty = NULL;
    for (edge_slice_t *s = list, *next; s; s = next) {
        next = s->dirty_next;
        s->dirty = false;
        s->dirty_next = NULL;
        s_write(self, s);
        /* not all sent (a write in flight, or the limits of one): the rest
         * goes as soon as that write ends, not a whole window later */
        s->overdue = s->items != NULL;
    }
}

/* One fdatasync of the journal, on a descriptor of its own (the journal may
 * be replaced or closed while it runs), and the acks of the records written
 * before it began. */
typedef struct s_sync {
    uv_fs_t req;
    edge_purse_t *purse; /* NULL once the purse is gone */
    int fd;
    int64_t started_us;
    s_ack_t *acks;
    s_write_t *sends;
} s_sync_t;

static void s_acks_free(s_ack_t *a)
{
    for (s_ack_t *next; a; a = next) {
        next = a->next;
        free(a);
    }
}

static void s_on_synced(uv_fs_t *req)
{
    s_sync_t *sy = req->data;
    ssize_t result = req->result;
    uv_fs_req_cleanup(req);
    close(sy->fd);
    edge_purse_t *self = sy->purse;
    s_ack_t *acks = sy->acks;
    size_t calls = 0;
    for (s_ack_t *a = acks; a; a = a->next)
        calls++;
    bool answered = result >= 0 && self && !self->journal_lost;
    edge_metrics_journal_sync(fb_mono_us() - sy->started_us, result >= 0, answered ? calls : 0);
    s_write_t *sends = sy->sends;
    free(sy);
    if (!self) {
        s_acks_free(acks);
        for (s_write_t *wr = sends, *next; wr; wr = next) {
            next = wr->next_send;
            s_write_drop(wr);
        }
        return;
    }
    self->syncing = NULL;
    if (result < 0 && self->journal)
        s_journal_lost(self, (int)-result);
    /* on the disk, or the journal is gone (deleted: no recovery sends them) */
    s_send_writes(self, sends);
    if (result < 0 || self->journal_lost) {
        /* not known to be on the disk: they wait for their charges' writes */
        if (acks) {
            s_ack_t **tail = &acks;
            while (*tail)
                tail = &(*tail)->next;
            *self->held_tail = acks;
            self->held_tail = tail;
        }
        s_arm_check(self);
    } else {
        fb_rpc_reply_t queued = {.ok = true, .body = &s_empty_map};
        for (s_ack_t *a = acks, *next; a; a = next) {
            next = a->next;
            a->fn(a->arg, &queued);
            free(a);
        }
    }
    s_sync_start(self);
}

/* Starts a sync for the acks waiting, unless one is in flight (they go with
 * the next, when it ends: one fdatasync covers every record before it). */
static void s_sync_start(edge_purse_t *self)
{
    if (self->syncing || (!self->sync_wait && !self->sync_sends) || !self->journal)
        return;
    int fd = edge_journal_dup(self->journal);
    if (fd < 0) {
        s_journal_lost(self, errno);
        return;
    }
    s_sync_t *sy = fb_calloc(1, sizeof(*sy));
    sy->purse = self;
    sy->fd = fd;
    sy->acks = self->sync_wait;
    sy->sends = self->sync_sends;
    sy->started_us = fb_mono_us();
    sy->req.data = sy;
    self->sync_wait = NULL;
    self->sync_wait_tail = &self->sync_wait;
    self->sync_sends = NULL;
    self->sync_sends_tail = &self->sync_sends;
    self->syncing = sy;
    int rc = uv_fs_fdatasync(self->w->loop, &sy->req, fd, s_on_synced);
    if (rc < 0) {
        sy->req.result = rc;
        s_on_synced(&sy->req);
    }
}

static void s_on_flush(uv_check_t *h)
{
    edge_purse_t *self = h->data;
    bool now = self->flush_now;
    self->flush_armed = self->flush_now = false;
    uv_check_stop(&self->flush);
    uv_idle_stop(&self->flush_wake);
    /* a deferred charge is in the journal before its call is answered */
    if (self->journal && self->acks && edge_journal_sync(self->journal) != 0)
        s_journal_lost(self, errno);
    if (self->journal && edge_journal_full(self->journal))
        s_rotate(self);
    if (self->held && self->deferred_out == 0) {
        *self->acks_tail = self->held;
        self->acks_tail = self->held_tail;
        self->held = NULL;
        self->held_tail = &self->held;
    }
    s_ack_t *acks = self->acks;
    if (acks && self->journal && self->conf.journal_fsync) {
        /* answered once the journal's records are on the disk */
        *self->sync_wait_tail = acks;
        self->sync_wait_tail = self->acks_tail;
        acks = NULL;
        s_sync_start(self);
    }
    self->acks = NULL;
    self->acks_tail = &self->acks;
    if (now)
        s_flush_all(self);
    fb_rpc_reply_t queued = {.ok = true, .body = &s_empty_map};
    for (s_ack_t *a = acks, *next; a; a = next) {
        next = a->next;
        a->fn(a->arg, &queued);
        free(a);
    }
}

static void s_on_defer(uv_timer_t *t)
{
    edge_purse_t *self = t->data;
    self->defer_armed = false;
    s_flush_all(self);
}

static void s_mark_dirty(edge_purse_t *self, edge_slice_t *s)
{
    if (s->dirty)
        return;
    s->dirty = true;
    s->dirty_next = self->dirty;
    self->dirty = s;
}

/* The slice's charges, all of answered calls, go with the next defer_ms' (a
 * write that ends does not take them at once: that would make as many writes
 * as the ledger's round trips allow, each costing Postgres a transaction). */
static void s_defer_write(edge_purse_t *self, edge_slice_t *s)
{
    s_mark_dirty(self, s);
    if (!self->defer_armed) {
        self->defer_armed = true;
        uv_timer_start(&self->defer, s_on_defer, (uint64_t)self->conf.defer_ms, 0);
    }
}

static void s_on_wake(uv_idle_t *h)
{
    FB_UNUSED(h);
}

/* A charge queued from a timer or before the loop polls must not wait for the
 * poll to time out: the idle handle makes that poll return at once, and the
 * check handle runs right after it (so do deferred charges' acks). */
static void s_arm_check(edge_purse_t *self)
{
    if (self->flush_armed)
        return;
    self->flush_armed = true;
    uv_check_start(&self->flush, s_on_flush);
    uv_idle_start(&self->flush_wake, s_on_wake);
}

static void s_arm_flush(edge_purse_t *self)
{
    self->flush_now = true;
    s_arm_check(self);
}

void edge_purse_charge(edge_purse_t *self, edge_purse_res_t *res, int64_t cost, const char *rid, json_t *call,
                       edge_purse_fn *fn, void *arg)
{
    edge_slice_t *s = res->slice;
    FB_ASSERT(s && cost >= 0 && cost <= res->amount);
    res->slice = NULL;
    s->reserved -= res->amount;
    s->calls--;
    s->used += cost;
    s->last_ms = fb_mono_ms();
    /* an idempotent call's answer is kept with its charge: it always waits;
     * with a journal configured, a charge is deferred only once it is open */
    bool deferred = self->conf.defer_ms > 0 && !call && (!s_journaling(self) || self->journal);
    s_item_t *it = fb_calloc(1, sizeof(*it));
    it->cost = cost;
    it->call = call;
    it->answer_bytes = json_string_length(json_object_get(call, "answer"));
    fb_copy_str(it->rid, sizeof(it->rid), rid);
    it->fn = deferred ? NULL : fn;
    it->arg = deferred ? NULL : arg;
    if (deferred) {
        self->deferred_out++;
        if (self->journal) {
            it->uid = ++self->uid;
            edge_journal_charge(self->journal, it->uid, s->hold_id, cost, rid);
        }
    }
    *s->items_tail = it;
    s->items_tail = &it->next;
    self->queued++;
    if (!deferred || self->queued >= CHARGES_PER_WRITE) {
        s->waiting += !deferred;
        s_mark_dirty(self, s);
        s_arm_flush(self);
    } else {
        s_defer_write(self, s);
    }
    if (deferred) {
        s_ack_t *a = fb_calloc(1, sizeof(*a));
        a->fn = fn;
        a->arg = arg;
        *self->acks_tail = a;
        self->acks_tail = &a->next;
        s_arm_check(self);
    }
}

/* --- upkeep ------------------------------------------------------------------------------- */

static void s_on_sweep(uv_timer_t *t)
{
    edge_purse_t *self = t->data;
    int64_t now = fb_mono_ms();
    s_ask_identity(self);
    s_recovery_step(self);
    s_scan(self);
    s_write_t *resend = self->resend;
    self->resend = NULL;
    for (s_write_t *wr = resend, *next; wr; wr = next) {
        next = wr->next_resend;
        wr->next_resend = NULL;
        s_ledger(self, "ledger.charge", json_incref(wr->body), wr->idem, wr->rid, s_on_charged, wr);
    }
    s_opening_t *orphans = self->orphans;
    self->orphans = NULL;
    for (s_opening_t *o = orphans, *next; o; o = next) {
        next = o->next_orphan;
        o->next_orphan = NULL;
        s_ledger(self, "ledger.hold", json_incref(o->body), o->idem, NULL, s_on_orphan, o);
    }
    for (edge_slice_t *s = self->slices, *next; s; s = next) {
        next = s->next;
        if (s->retiring)
            continue;
        /* an ahead slice is in use as long as the slice it follows is */
        int64_t last = s->last_ms;
        if (s->key && s->key->ahead == s && s->key->current && s->key->current->last_ms > last)
            last = s->key->current->last_ms;
        bool idle = s->calls == 0 && !s->items && now - last >= self->conf.idle_ms;
        if (idle || now - s->opened_ms >= self->conf.max_age_ms)
            s_retire(self, s);
    }
}

void edge_purse_retire_key(edge_purse_t *self, int64_t key_id)
{
    s_key_t *k = s_key_find(self, key_id);
    if (k)
        k->gen++;
    for (edge_slice_t *s = self->slices, *next; s; s = next) {
        next = s->next;
        if (s->key && s->key->key_id == key_id)
            s_retire(self, s);
    }
}

size_t edge_purse_drain(edge_purse_t *self)
{
    size_t n = 0;
    for (size_t i = 0; i < self->nbuckets; i++)
        for (s_key_t *k = self->buckets[i]; k; k = k->next)
            k->gen++;
    for (edge_slice_t *s = self->slices, *next; s; s = next) {
        next = s->next;
        s_retire(self, s);
    }
    s_flush_all(self); /* deferred charges go now */
    for (edge_slice_t *s = self->slices; s; s = s->next)
        n++;
    return n;
}

edge_purse_t *edge_purse_new(edge_worker_t *w, const edge_purse_conf_t *conf)
{
    edge_purse_t *self = fb_calloc(1, sizeof(*self));
    self->w = w;
    self->conf = *conf;
    self->epoch = atomic_load(&w->edge->key_epoch);
    if (self->conf.slice_calls < 1)
        self->conf.slice_calls = 1;
    self->nbuckets = BUCKETS_MIN;
    self->buckets = fb_calloc(self->nbuckets, sizeof(*self->buckets));
    self->acks_tail = &self->acks;
    self->held_tail = &self->held;
    self->sync_wait_tail = &self->sync_wait;
    self->sync_sends_tail = &self->sync_sends;
    uv_check_init(w->loop, &self->flush);
    self->flush.data = self;
    uv_idle_init(w->loop, &self->flush_wake);
    self->flush_wake.data = self;
    uv_timer_init(w->loop, &self->sweep);
    self->sweep.data = self;
    uv_timer_start(&self->sweep, s_on_sweep, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&self->sweep);
    uv_timer_init(w->loop, &self->defer);
    self->defer.data = self;
    s_ask_identity(self);
    return self;
}

bool edge_purse_alive(const edge_purse_t *self)
{
    return self && !self->dead;
}

void edge_purse_shutdown(edge_purse_t *self)
{
    self->dead = true;
    uv_timer_stop(&self->sweep);
}

static void s_on_handle_closed(uv_handle_t *h)
{
    edge_purse_t *self = h->data;
    if (++self->closed_handles == 4) {
        free(self->buckets);
        free(self);
    }
}

void edge_purse_destroy(edge_purse_t **self_p)
{
    FB_ASSERT(self_p);
    edge_purse_t *self = *self_p;
    if (!self)
        return;
    *self_p = NULL;
    /* the process is ending: what is left open expires in the ledger, and
     * deferred charges not written by now are never written */
    int64_t lost = 0;
    size_t lost_calls = 0;
    for (s_opening_t *o = self->orphans, *next; o; o = next) {
        next = o->next_orphan;
        s_opening_free(o);
    }
    s_acks_free(self->acks);
    s_acks_free(self->held);
    s_acks_free(self->sync_wait);
    for (s_write_t *wr = self->sync_sends, *next; wr; wr = next) {
        next = wr->next_send;
        s_write_drop(wr);
    }
    if (self->syncing)
        self->syncing->purse = NULL; /* it ends on its own */
    if (self->recovery)
        s_recovery_free(self, EDGE_JOURNAL_KEEP); /* another edge finishes it */
    for (s_write_t *wr = self->resend, *next; wr; wr = next) {
        next = wr->next_resend;
        for (s_item_t *it = wr->items, *n2; it; it = n2) {
            n2 = it->next;
            lost += it->fn ? 0 : it->cost;
            lost_calls += it->fn ? 0 : 1;
            json_decref(it->call);
            free(it);
        }
        json_decref(wr->body);
        free(wr);
    }
    for (edge_slice_t *s = self->slices, *next; s; s = next) {
        next = s->next;
        for (s_item_t *it = s->items, *n2; it; it = n2) {
            n2 = it->next;
            lost += it->fn ? 0 : it->cost;
            lost_calls += it->fn ? 0 : 1;
            json_decref(it->call);
            free(it);
        }
        free(s);
    }
    for (size_t i = 0; i < self->nbuckets; i++) {
        for (s_key_t *k = self->buckets[i], *next; k; k = next) {
            next = k->next;
            for (s_wait_t *wt = k->waiters, *n2; wt; wt = n2) {
                n2 = wt->next;
                free(wt);
            }
            free(k);
        }
    }
    uv_close((uv_handle_t *)&self->flush, s_on_handle_closed);
    uv_close((uv_handle_t *)&self->flush_wake, s_on_handle_closed);
    uv_close((uv_handle_t *)&self->sweep, s_on_handle_closed);
    uv_close((uv_handle_t *)&self->defer, s_on_handle_closed);
    /* deferred charges not written are in the journal, left for another edge
     * (the lock goes with the file's descriptor) */
    bool kept = self->journal && self->deferred_out > 0;
    if (kept)
        fb_log(FB_LOG_WARN, NULL, "deferred charges not written as the edge stops are left in its journal",
               "path=%s calls=%zu", edge_journal_path(self->journal), self->deferred_out);
    edge_journal_close(&self->journal, !kept);
    if (lost_calls > 0 && !kept)
        s_unbilled(lost_calls, lost, "stopped");
}
