/* edge_limit - token buckets and in-flight caps shared by the workers. */
#include "edge_limit.h"
#include "fb_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS      (1u << 16) /* buckets kept at once */
#define PROBE      4          /* slots tried for one caller */
#define STRIPES    64         /* mutexes over the slots */
#define KEY_SLOTS  (1u << 14) /* keys with calls in flight at once */
#define KEY_PROBE  8
#define MILLI      1000       /* a token, in the buckets' unit */
#define PEER_SLOTS (1u << 14) /* addresses with connections open at once, counted */
#define PEER_PROBE 8

typedef struct {
    uint64_t hash;   /* 0: free */
    int64_t tokens;  /* milli-tokens */
    int64_t last_ms; /* when tokens was last brought up to date */
} s_slot_t;

typedef struct {
    int64_t key_id; /* 0: free */
    int64_t count;
} s_inflight_t;

typedef struct {
    uint64_t hash; /* of the address; 0: free */
    int64_t count; /* its open connections */
} s_peer_t;

#define TRUSTED_MAX 16

typedef struct {
    uint8_t addr[16];
    size_t len; /* 4 or 16 */
    int prefix; /* bits that must match */
} s_cidr_t;

struct edge_limit_t {
    s_cidr_t trusted[TRUSTED_MAX]; /* proxies whose X-Forwarded-For is believed */
    int ntrusted;
    edge_bucket_conf_t conf[2]; /* 0: IP, 1: key */
    int64_t key_concurrency;
    uint8_t hash_key[crypto_shorthash_KEYBYTES]; /* random: callers cannot aim at one slot */
    s_slot_t *slots;
    pthread_mutex_t stripes[STRIPES];
    s_inflight_t *inflight;
    pthread_mutex_t inflight_lock;
    int64_t conn_max, conn_per_peer; /* 0: no cap */
    int64_t conns;                   /* open in the process */
    s_peer_t *peers;
    pthread_mutex_t peers_lock;
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
    self->peers = fb_calloc(PEER_SLOTS, sizeof(*self->peers));
    pthread_mutex_init(&self->peers_lock, NULL);
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
    pthread_mutex_destroy(&self->peers_lock);
    free(self->slots);
    free(self->inflight);
    free(self->peers);
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

void edge_limit_connections(edge_limit_t *self, int64_t max, int64_t per_peer)
{
    self->conn_max = max;
    self->conn_per_peer = per_peer;
}

static bool s_trusted(const edge_limit_t *self, const uint8_t *addr, size_t len);

/* The hash a peer's connections are counted under: of its IPv4 address (an
 * IPv4-mapped IPv6 one too) or its IPv6 /64. 0 when it has none, or is a
 * trusted proxy (whose connections carry many clients). */
static uint64_t s_peer_hash(const edge_limit_t *self, const struct sockaddr *peer)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    uint8_t in[1 + 16];
    size_t n, counted;
    in[0] = 2;
    if (peer->sa_family == AF_INET) {
        memcpy(in + 1, &((const struct sockaddr_in *)peer)->sin_addr, 4);
        n = counted = 4;
    } else if (peer->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)peer)->sin6_addr.s6_addr;
        bool v4 = memcmp(a, mapped, sizeof(mapped)) == 0;
        memcpy(in + 1, v4 ? a + 12 : a, v4 ? 4 : 16);
        n = v4 ? 4 : 16;
        counted = v4 ? 4 : 8;
    } else {
        return 0;
    }
    if (s_trusted(self, in + 1, n))
        return 0;
    uint64_t h;
    crypto_shorthash((uint8_t *)&h, in, counted + 1, self->hash_key);
    return h | 1;
}

/* The slot of h among the counted peers (with add, a free one taken), or
 * NULL. Under peers_lock. */
static s_peer_t *s_peer_slot(edge_limit_t *self, uint64_t h, bool add)
{
    uint32_t base = (uint32_t)(h >> 32) & (PEER_SLOTS - 1);
    s_peer_t *free_slot = NULL;
    for (uint32_t i = 0; i < PEER_PROBE; i++) {
        s_peer_t *p = &self->peers[(base + i) & (PEER_SLOTS - 1)];
        if (p->hash == h)
            return p;
        if (!free_slot && p->hash == 0)
            free_slot = p;
    }
    if (!add || !free_slot)
        return NULL;
    free_slot->hash = h;
    free_slot->count = 0;
    return free_slot;
}

/* tokens: 0 counted in the process only, 1 also under its address */
int edge_limit_connect(edge_limit_t *self, const struct sockaddr *peer)
{
    uint64_t h = self->conn_per_peer > 0 ? s_peer_hash(self, peer) : 0;
    int token = -1;
    pthread_mutex_lock(&self->peers_lock);
    if (self->conn_max <= 0 || self->conns < self->conn_max) {
        /* no slot at all (thousands of addresses at once): the process's cap alone */
        s_peer_t *slot = h ? s_peer_slot(self, h, true) : NULL;
        if (!slot)
            token = 0;
        else if (slot->count < self->conn_per_peer) {
            slot->count++;
            token = 1;
        }
        if (token >= 0)
            self->conns++;
    }
    pthread_mutex_unlock(&self->peers_lock);
    return token;
}

void edge_limit_disconnect(edge_limit_t *self, const struct sockaddr *peer, int token)
{
    uint64_t h = token == 1 ? s_peer_hash(self, peer) : 0;
    pthread_mutex_lock(&self->peers_lock);
    self->conns--;
    s_peer_t *slot = h ? s_peer_slot(self, h, false) : NULL;
    if (slot && --slot->count <= 0)
        slot->hash = 0;
    pthread_mutex_unlock(&self->peers_lock);
}

int64_t edge_limit_open_connections(edge_limit_t *self)
{
    pthread_mutex_lock(&self->peers_lock);
    int64_t n = self->conns;
    pthread_mutex_unlock(&self->peers_lock);
    return n;
}

/* An address (4 or 16 bytes) from text. Returns its length or 0. */
static size_t s_parse_ip(const char *text, size_t n, uint8_t out[16])
{
    char buf[64];
    while (n > 0 && (*text == ' ' || *text == '\t')) {
        text++;
        n--;
    }
    while (n > 0 && (text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return 0;
    memcpy(buf, text, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, out) == 1)
        return 4;
    if (inet_pton(AF_INET6, buf, out) == 1)
        return 16;
    return 0;
}

int edge_limit_trust(edge_limit_t *self, const char *list, char *err, size_t errlen)
{
    int n = 0;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        s_cidr_t c = {0};
        const char *slash = memchr(p, '/', len);
        c.len = s_parse_ip(p, slash ? (size_t)(slash - p) : len, c.addr);
        c.prefix = (int)c.len * 8;
        if (c.len && slash) {
            char *e;
            long bits = strtol(slash + 1, &e, 10);
            if (e != p + len || bits < 0 || bits > (long)c.len * 8)
                c.len = 0;
            c.prefix = (int)bits;
        }
        if (!c.len || n == TRUSTED_MAX) {
            snprintf(err, errlen, "%.*s is not an IPv4 or IPv6 address or CIDR block (at most %d entries)",
                     (int)(len > 60 ? 60 : len), p, TRUSTED_MAX);
            return -1;
        }
        if (self)
            self->trusted[n] = c;
        n++;
        p += len + (end ? 1 : 0);
    }
    if (self)
        self->ntrusted = n;
    return 0;
}

static bool s_trusted(const edge_limit_t *self, const uint8_t *addr, size_t len)
{
    for (int i = 0; i < self->ntrusted; i++) {
        const s_cidr_t *c = &self->trusted[i];
        if (c->len != len)
            continue;
        int full = c->prefix / 8, rest = c->prefix % 8;
        if (memcmp(c->addr, addr, (size_t)full) != 0)
            continue;
        if (rest && ((c->addr[full] ^ addr[full]) & (0xff << (8 - rest))))
            continue;
        return true;
    }
    return false;
}

/* An IPv4 address a dual-stack socket shows as ::ffff:a.b.c.d, as IPv4 (as the
 * trusted list and the buckets name it). */
static size_t s_unmapped(uint8_t *a, size_t n)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (n == 16 && memcmp(a, mapped, 12) == 0) {
        memmove(a, a + 12, 4);
        return 4;
    }
    return n;
}

static size_t s_client(const edge_limit_t *self, const struct sockaddr *peer, const char *xff, size_t len,
                       uint8_t out[16])
{
    size_t n = 0;
    if (peer->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)peer)->sin_addr, 4);
        n = 4;
    } else if (peer->sa_family == AF_INET6) {
        memcpy(out, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
        n = s_unmapped(out, 16);
    }
    if (!n || !self->ntrusted || !xff || !s_trusted(self, out, n))
        return n;
    /* right to left: each trusted proxy appended the address it saw */
    while (len > 0) {
        const char *comma = NULL;
        for (size_t i = len; i > 0; i--)
            if (xff[i - 1] == ',') {
                comma = xff + i - 1;
                break;
            }
        const char *item = comma ? comma + 1 : xff;
        uint8_t a[16];
        size_t alen = s_unmapped(a, s_parse_ip(item, (size_t)(xff + len - item), a));
        if (!alen)
            return n; /* garbage: the last trusted hop is the client we know */
        memcpy(out, a, alen);
        n = alen;
        if (!s_trusted(self, a, alen))
            return n;
        len = comma ? (size_t)(comma - xff) : 0;
    }
    return n;
}

size_t edge_limit_client(const edge_limit_t *self, const struct sockaddr *peer, const char *xff, size_t len,
                         uint8_t out[16])
{
    size_t n = s_client(self, peer, xff, len, out);
    if (n == 16)
        memset(out + 8, 0, 8); /* an IPv6 host has a /64 to itself: one bucket for all of it */
    return n;
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
    /* trusted proxies and X-Forwarded-For */
    char err[200];
    FB_ASSERT(edge_limit_trust(NULL, "10.0.0.0/8,::1,nonsense", err, sizeof(err)) == -1);
    FB_ASSERT(edge_limit_trust(NULL, "10.0.0.0/33", err, sizeof(err)) == -1);
    FB_ASSERT(edge_limit_trust(l, "10.0.0.0/8,127.0.0.1", err, sizeof(err)) == 0);
    struct sockaddr_in proxy = {.sin_family = AF_INET}, direct = {.sin_family = AF_INET};
    inet_pton(AF_INET, "10.1.2.3", &proxy.sin_addr);
    inet_pton(AF_INET, "192.0.2.7", &direct.sin_addr);
    uint8_t out[16], want[4];
    const char *xff = "198.51.100.1, 203.0.113.9, 10.9.9.9";
    FB_ASSERT(edge_limit_client(l, (struct sockaddr *)&proxy, xff, strlen(xff), out) == 4);
    inet_pton(AF_INET, "203.0.113.9", want);
    FB_ASSERT(memcmp(out, want, 4) == 0); /* the right-most untrusted hop, not the spoofable first */
    FB_ASSERT(edge_limit_client(l, (struct sockaddr *)&direct, xff, strlen(xff), out) == 4);
    FB_ASSERT(memcmp(out, &direct.sin_addr, 4) == 0); /* an untrusted peer's header is ignored */
    FB_ASSERT(edge_limit_client(l, (struct sockaddr *)&proxy, "junk", 4, out) == 4);
    FB_ASSERT(memcmp(out, &proxy.sin_addr, 4) == 0);
    /* a trusted proxy seen through a dual-stack socket (::ffff:10.1.2.3) is trusted: its header is
     * read; an IPv6 client is its /64 */
    struct sockaddr_in6 proxy6 = {.sin6_family = AF_INET6}, host6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:10.1.2.3", &proxy6.sin6_addr);
    FB_ASSERT(edge_limit_client(l, (struct sockaddr *)&proxy6, xff, strlen(xff), out) == 4);
    FB_ASSERT(memcmp(out, want, 4) == 0);
    inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &host6.sin6_addr);
    uint8_t net64[16];
    inet_pton(AF_INET6, "2001:db8:1:2::", net64);
    FB_ASSERT(edge_limit_client(l, (struct sockaddr *)&host6, NULL, 0, out) == 16 &&
              memcmp(out, net64, 16) == 0);
    const char *xff6 = "2001:db8:1:2::77, ::ffff:10.9.9.9";
    FB_ASSERT(edge_limit_client(l, (struct sockaddr *)&proxy, xff6, strlen(xff6), out) == 16 &&
              memcmp(out, net64, 16) == 0);

    /* connections: two per address (an IPv6 /64, an IPv4-mapped one as IPv4), a trusted proxy
     * uncapped, five in all */
    edge_limit_connections(l, 5, 2);
    struct sockaddr_in6 v6a = {.sin6_family = AF_INET6}, v6b = {.sin6_family = AF_INET6},
                        v6c = {.sin6_family = AF_INET6}, mapped = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "2001:db8:1:2::1", &v6a.sin6_addr);
    inet_pton(AF_INET6, "2001:db8:1:2:ffff::9", &v6b.sin6_addr); /* the same /64 */
    inet_pton(AF_INET6, "2001:db8:1:3::1", &v6c.sin6_addr);      /* another */
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &mapped.sin6_addr);  /* direct's address */
    const struct sockaddr *sa_direct = (const struct sockaddr *)&direct,
                          *sa_mapped = (const struct sockaddr *)&mapped,
                          *sa_proxy = (const struct sockaddr *)&proxy;
    int t1 = edge_limit_connect(l, sa_direct), t2 = edge_limit_connect(l, sa_mapped);
    FB_ASSERT(t1 == 1 && t2 == 1);
    FB_ASSERT(edge_limit_connect(l, sa_direct) == -1);
    int t3 = edge_limit_connect(l, (const struct sockaddr *)&v6a),
        t4 = edge_limit_connect(l, (const struct sockaddr *)&v6b);
    FB_ASSERT(t3 == 1 && t4 == 1);
    FB_ASSERT(edge_limit_connect(l, (const struct sockaddr *)&v6c) == 1); /* five open */
    FB_ASSERT(edge_limit_open_connections(l) == 5);
    FB_ASSERT(edge_limit_connect(l, sa_proxy) == -1); /* the process's cap binds a proxy too */
    edge_limit_disconnect(l, (const struct sockaddr *)&v6c, 1);
    int tp = edge_limit_connect(l, sa_proxy);
    FB_ASSERT(tp == 0); /* a trusted proxy is not counted under its address */
    edge_limit_disconnect(l, sa_proxy, tp);
    FB_ASSERT(edge_limit_connect(l, (const struct sockaddr *)&v6b) == -1); /* its /64 is full */
    edge_limit_disconnect(l, (const struct sockaddr *)&v6a, t3);
    t3 = edge_limit_connect(l, (const struct sockaddr *)&v6b);
    FB_ASSERT(t3 == 1);
    edge_limit_disconnect(l, sa_direct, t1);
    edge_limit_disconnect(l, sa_mapped, t2);
    edge_limit_disconnect(l, (const struct sockaddr *)&v6b, t3);
    edge_limit_disconnect(l, (const struct sockaddr *)&v6b, t4);
    FB_ASSERT(edge_limit_open_connections(l) == 0);
    for (int i = 0; i < 2; i++)
        FB_ASSERT(edge_limit_connect(l, sa_direct) == 1); /* its slot freed and taken again */
    edge_limit_destroy(&l);
    FB_ASSERT(!l);
    return 0;
}
