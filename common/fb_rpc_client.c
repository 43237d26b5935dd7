/* fb_rpc_client - replica discovery, least-loaded dispatch, retries, heartbeats.
 *
 * One ROUTER socket connects to every replica endpoint; each connection gets
 * the endpoint text as its routing id (ZMQ_CONNECT_ROUTING_ID), so a call is
 * addressed to one chosen replica. ZMQ_IMMEDIATE stays 0 because libzmq only
 * keeps a connect routing id across reconnections that way; whether a replica
 * is really up is learnt from the socket monitor (handshake succeeded,
 * disconnected) instead, and calls are only sent to replicas that are up. */
#include "fb_rpc_client.h"
#include "fb_endpoint.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"
#include "fb_zuv.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#define MAX_TRIED           4           /* replicas remembered per call, to prefer fresh ones */
#define PING_GEN            0xffffffffu /* generation marking ping ids */
#define SILENT_BEATS        3           /* heartbeats without an answer before a replica is skipped */
#define TRIED_PENALTY       (1u << 30)  /* score added to a replica this call already tried */
#define OVERLOAD_BACKOFF_MS 5           /* pause before resending a call a replica refused */

typedef struct s_replica {
    char endpoint[128];  /* "tcp://10.0.0.5:7110"; also the routing id */
    size_t endpoint_len; /* strlen(endpoint) */
    int target;          /* index of the configured endpoint it came from */
    bool present;        /* in the latest resolution of its target */
    bool connected;      /* handshake succeeded and no disconnect since */
    bool responsive;     /* answered recently */
    int64_t last_heard;  /* monotonic ms of the last message from it */
    int64_t ping_sent;   /* monotonic ms of the unanswered ping, 0 if none */
    uint32_t inflight;   /* calls assigned to it now */
    uint32_t timeouts;   /* attempt timeouts since its last answer */
    uint64_t sent, answered;
} s_replica_t;

typedef struct s_call {
    struct fb_rpc_client_t *client; /* owner */
    uint32_t slot;                  /* index in client->calls */
    uint32_t gen;                   /* generation, part of the wire id; 0 while free */
    bool active;                    /* started and not completed */
    bool queued;                    /* waiting for a replica */
    bool ever_sent;                 /* reached at least one replica */
    char *frame;                    /* encoded request, resent on retry */
    size_t frame_len;
    fb_rpc_done_fn *done;
    void *arg;
    int64_t deadline;     /* monotonic ms */
    uint32_t attempt_ms;  /* per-attempt timeout */
    bool once;            /* one attempt for the whole deadline: sent elsewhere only if its replica is gone */
    s_replica_t *replica; /* current assignment, NULL when queued */
    s_replica_t *tried[MAX_TRIED];
    int tried_count;
    uint32_t qnext; /* queue link (slot index + 1, 0 = end) */
    uint32_t fnext; /* free list link (slot index + 1, 0 = end) */
    char method[FB_RPC_METHOD_MAX + 1];
    char trace[FB_RPC_STR_MAX + 1];
    const char *refused; /* fb_rpc_client_refuse: the error code its timer completes it with */
    char refused_why[160];
    uv_timer_t timer; /* attempt or deadline timer */
} s_call_t;

typedef struct {
    fb_endpoint_t ep;     /* as configured */
    uv_getaddrinfo_t req; /* DNS request in flight */
    bool resolving;       /* req is in flight */
    struct fb_rpc_client_t *client;
} s_target_t;

struct fb_rpc_client_t {
    uv_loop_t *loop;
    char *service;       /* for logs and errors */
    uint32_t attempt_ms; /* default attempt timeout */
    uint32_t heartbeat_ms;
    uint32_t resolve_ms;
    size_t max_message;
    zsock_t *sock;    /* ROUTER connected to the replicas */
    void *zs;         /* raw handle */
    zsock_t *monitor; /* PAIR receiving socket events */
    void *zm;
    fb_zuv_t *watch_sock, *watch_monitor;
    s_target_t *targets;
    size_t target_count;
    s_replica_t **replicas;
    size_t replica_count;
    size_t rr;        /* round-robin cursor for ties */
    s_call_t **calls; /* slots, grown on demand, never moved */
    uint32_t call_cap;
    uint32_t free_head;              /* free list (slot + 1) */
    uint32_t queue_head, queue_tail; /* waiting calls (slot + 1) */
    size_t pending;                  /* active calls */
    uv_timer_t heartbeat;            /* heartbeat and housekeeping */
    uv_timer_t resolve;              /* DNS refresh */
    msgpack_zone zone;               /* storage of the reply being handled */
    msgpack_sbuffer sb;              /* encoding scratch */
    int closing_handles;             /* handles to be closed before free */
    int resolving;                   /* DNS requests in flight */
    bool dead;                       /* destroy was called */
    int64_t last_unavailable_log;
};

static void s_dispatch(fb_rpc_client_t *self, s_call_t *call);
static void s_final_free(fb_rpc_client_t *self);
static void s_flush_queue(fb_rpc_client_t *self);

/* --- replicas ---------------------------------------------------------------- */

static s_replica_t *s_find_replica(fb_rpc_client_t *self, const char *ep, size_t len)
{
    for (size_t i = 0; i < self->replica_count; i++) {
        s_replica_t *r = self->replicas[i];
        if (r->endpoint_len == len && memcmp(r->endpoint, ep, len) == 0)
            return r;
    }
    return NULL;
}

static void s_add_replica(fb_rpc_client_t *self, int target, const char *ep)
{
    s_replica_t *r = s_find_replica(self, ep, strlen(ep));
    if (r) {
        if (!r->present) {
            r->present = true;
            zmq_setsockopt(self->zs, ZMQ_CONNECT_ROUTING_ID, r->endpoint, r->endpoint_len);
            zmq_connect(self->zs, r->endpoint);
            fb_zuv_touch(self->watch_sock);
        }
        return;
    }
    r = fb_calloc(1, sizeof(*r));
    fb_copy_str(r->endpoint, sizeof(r->endpoint), ep);
    r->endpoint_len = strlen(r->endpoint);
    r->target = target;
    r->present = true;
    self->replicas = fb_realloc(self->replicas, (self->replica_count + 1) * sizeof(*self->replicas));
    self->replicas[self->replica_count++] = r;
    zmq_setsockopt(self->zs, ZMQ_CONNECT_ROUTING_ID, r->endpoint, r->endpoint_len);
    fb_zuv_touch(self->watch_sock);
    if (zmq_connect(self->zs, r->endpoint) != 0)
        fb_log(FB_LOG_WARN, NULL, "rpc connect failed", "service=%s endpoint=%s reason=%s", self->service,
               r->endpoint, zmq_strerror(errno));
    else
        fb_log(FB_LOG_DEBUG, NULL, "rpc replica added", "service=%s endpoint=%s", self->service, r->endpoint);
}

/* Sends the calls assigned to r elsewhere: all of them when r went away
 * (disconnected, retired), those that may run twice when it only went
 * silent — a call made for one attempt stays, and ends at its deadline if r
 * never answers (a replica busy with it, or draining, may still finish it). */
static void s_reassign_from(fb_rpc_client_t *self, s_replica_t *r, bool gone)
{
    for (uint32_t i = 0; i < self->call_cap; i++) {
        s_call_t *c = self->calls[i];
        if (c && c->active && c->replica == r && (gone || !c->once)) {
            r->inflight--;
            c->replica = NULL;
            uv_timer_stop(&c->timer);
            s_dispatch(self, c);
        }
    }
}

static void s_replica_down(fb_rpc_client_t *self, s_replica_t *r, const char *why)
{
    if (!r->connected)
        return;
    r->connected = false;
    r->ping_sent = 0;
    fb_log(FB_LOG_INFO, NULL, "rpc replica down", "service=%s endpoint=%s reason=%s inflight=%u",
           self->service, r->endpoint, why, r->inflight);
    s_reassign_from(self, r, true);
}

static void s_replica_up(fb_rpc_client_t *self, s_replica_t *r)
{
    r->connected = true;
    r->responsive = true;
    r->timeouts = 0;
    r->ping_sent = 0;
    r->last_heard = fb_mono_ms();
    fb_log(FB_LOG_INFO, NULL, "rpc replica up", "service=%s endpoint=%s", self->service, r->endpoint);
    s_flush_queue(self);
}

static void s_replica_heard(fb_rpc_client_t *self, s_replica_t *r)
{
    r->last_heard = fb_mono_ms();
    r->ping_sent = 0;
    r->timeouts = 0;
    if (!r->responsive && r->connected) {
        r->responsive = true;
        fb_log(FB_LOG_INFO, NULL, "rpc replica responsive again", "service=%s endpoint=%s", self->service,
               r->endpoint);
        s_flush_queue(self);
    }
}

/* Removes replicas that left the resolution and have no calls any more. */
static void s_prune_replicas(fb_rpc_client_t *self)
{
    size_t w = 0;
    for (size_t i = 0; i < self->replica_count; i++) {
        s_replica_t *r = self->replicas[i];
        if (!r->present && r->inflight == 0) {
            fb_log(FB_LOG_DEBUG, NULL, "rpc replica removed", "service=%s endpoint=%s", self->service,
                   r->endpoint);
            for (uint32_t k = 0; k < self->call_cap; k++) {
                s_call_t *c = self->calls[k];
                for (int t = 0; c && t < c->tried_count; t++)
                    if (c->tried[t] == r)
                        c->tried[t] = NULL;
            }
            free(r);
        } else {
            self->replicas[w++] = r;
        }
    }
    self->replica_count = w;
}

/* --- calls ------------------------------------------------------------------------ */

static uint64_t s_wire_id(const s_call_t *c)
{
    return ((uint64_t)c->gen << 32) | c->slot;
}

static void s_on_call_timer(uv_timer_t *t);

static s_call_t *s_call_alloc(fb_rpc_client_t *self)
{
    if (self->free_head == 0) {
        uint32_t old = self->call_cap, cap = old ? old * 2 : 64;
        self->calls = fb_realloc(self->calls, cap * sizeof(*self->calls));
        for (uint32_t i = old; i < cap; i++) {
            s_call_t *c = fb_calloc(1, sizeof(*c));
            c->client = self;
            c->slot = i;
            uv_timer_init(self->loop, &c->timer);
            c->timer.data = c;
            c->fnext = i + 1 < cap ? i + 2 : 0;
            self->calls[i] = c;
        }
        self->call_cap = cap;
        self->free_head = old + 1;
    }
    s_call_t *c = self->calls[self->free_head - 1];
    self->free_head = c->fnext;
    c->gen = c->gen + 1 >= PING_GEN ? 1 : c->gen + 1;
    c->active = true;
    c->queued = c->ever_sent = false;
    c->refused = NULL;
    c->replica = NULL;
    c->tried_count = 0;
    c->qnext = 0;
    self->pending++;
    return c;
}

static void s_queue_push(fb_rpc_client_t *self, s_call_t *c)
{
    c->queued = true;
    c->qnext = 0;
    if (self->queue_tail)
        self->calls[self->queue_tail - 1]->qnext = c->slot + 1;
    else
        self->queue_head = c->slot + 1;
    self->queue_tail = c->slot + 1;
}

static void s_queue_remove(fb_rpc_client_t *self, s_call_t *c)
{
    uint32_t prev = 0, cur = self->queue_head;
    while (cur && cur != c->slot + 1) {
        prev = cur;
        cur = self->calls[cur - 1]->qnext;
    }
    FB_ASSERT(cur);
    if (prev)
        self->calls[prev - 1]->qnext = c->qnext;
    else
        self->queue_head = c->qnext;
    if (self->queue_tail == c->slot + 1)
        self->queue_tail = prev;
    c->queued = false;
    c->qnext = 0;
}

/* Completes a call: releases its slot first, then runs the callback (which may
 * start new calls). */
static void s_complete(fb_rpc_client_t *self, s_call_t *c, const fb_rpc_reply_t *reply)
{
    FB_ASSERT(c->active);
    uv_timer_stop(&c->timer);
    if (c->queued)
        s_queue_remove(self, c);
    if (c->replica) {
        c->replica->inflight--;
        c->replica = NULL;
    }
    c->active = false;
    free(c->frame);
    c->frame = NULL;
    fb_rpc_done_fn *done = c->done;
    void *arg = c->arg;
    c->fnext = self->free_head;
    self->free_head = c->slot + 1;
    self->pending--;
    done(arg, reply);
}

/* Completes a call with a local error: unavailable when no replica was ever
 * reached, deadline_exceeded when one was but none answered in time. */
static void s_fail(fb_rpc_client_t *self, s_call_t *c, const char *code, const char *why)
{
    fb_rpc_reply_t reply;
    memset(&reply, 0, sizeof(reply));
    reply.ok = false;
    fb_copy_str(reply.code, sizeof(reply.code), code);
    snprintf(reply.message, sizeof(reply.message), "%s: %s", self->service, why);
    reply.body = fb_rpc_empty_map();
    s_complete(self, c, &reply);
}

static void s_fail_timeout(fb_rpc_client_t *self, s_call_t *c)
{
    if (c->ever_sent)
        s_fail(self, c, FB_RPC_E_DEADLINE, "no replica answered within the deadline");
    else
        s_fail(self, c, FB_RPC_E_UNAVAILABLE, "no replica is reachable");
}

static bool s_was_tried(const s_call_t *c, const s_replica_t *r)
{
    for (int i = 0; i < c->tried_count; i++)
        if (c->tried[i] == r)
            return true;
    return false;
}

/* The connected, responsive replica with the fewest calls in flight, preferring
 * ones this call has not tried; ties rotate over the usable replicas. NULL when
 * none is usable. */
static s_replica_t *s_pick(fb_rpc_client_t *self, const s_call_t *c, s_replica_t **skip, int nskip)
{
    enum { CANDIDATES_MAX = 64 };
    s_replica_t *best[CANDIDATES_MAX];
    size_t nbest = 0;
    uint64_t best_score = UINT64_MAX;
    for (size_t i = 0; i < self->replica_count; i++) {
        s_replica_t *r = self->replicas[i];
        if (!r->present || !r->connected || !r->responsive)
            continue;
        bool skipped = false;
        for (int s = 0; s < nskip; s++)
            skipped |= skip[s] == r;
        if (skipped)
            continue;
        uint64_t score = r->inflight + (s_was_tried(c, r) ? TRIED_PENALTY : 0);
        if (score < best_score) {
            best_score = score;
            nbest = 0;
        }
        if (score == best_score && nbest < CANDIDATES_MAX)
            best[nbest++] = r;
    }
    if (nbest == 0)
        return NULL;
    return best[self->rr++ % nbest];
}

/* Sends the routing frame and the request; returns 0 or an errno value. */
static int s_send(fb_rpc_client_t *self, s_replica_t *r, const char *frame, size_t len)
{
    fb_zuv_touch(self->watch_sock);
    if (zmq_send(self->zs, r->endpoint, r->endpoint_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return errno;
    if (zmq_send(self->zs, frame, len, ZMQ_DONTWAIT) < 0)
        return errno;
    return 0;
}

static void s_arm(s_call_t *c, uint64_t ms)
{
    uv_timer_start(&c->timer, s_on_call_timer, ms, 0);
}

/* Places a call on a replica, or queues it until one is usable. */
static void s_dispatch(fb_rpc_client_t *self, s_call_t *c)
{
    int64_t now = fb_mono_ms();
    if (now >= c->deadline) {
        s_fail_timeout(self, c);
        return;
    }
    s_replica_t *skip[8];
    int nskip = 0;
    for (;;) {
        s_replica_t *r = s_pick(self, c, skip, nskip);
        if (!r)
            break;
        int err = s_send(self, r, c->frame, c->frame_len);
        if (err == 0) {
            c->replica = r;
            c->ever_sent = true;
            r->inflight++;
            r->sent++;
            if (!s_was_tried(c, r)) {
                if (c->tried_count == MAX_TRIED) {
                    memmove(c->tried, c->tried + 1, (MAX_TRIED - 1) * sizeof(c->tried[0]));
                    c->tried_count--;
                }
                c->tried[c->tried_count++] = r;
            }
            int64_t left = c->deadline - now;
            s_arm(c, (uint64_t)(left < c->attempt_ms ? left : c->attempt_ms));
            return;
        }
        if (err == EHOSTUNREACH)
            s_replica_down(self, r, "unreachable");
        if (nskip == (int)FB_ARRAY_SIZE(skip))
            break;
        skip[nskip++] = r; /* EAGAIN: its queue is full; try another */
    }
    /* nobody can take it now: wait for a replica, up to the deadline */
    s_queue_push(self, c);
    s_arm(c, (uint64_t)(c->deadline - now));
}

static void s_flush_queue(fb_rpc_client_t *self)
{
    /* dispatch may requeue calls: take the current queue first */
    uint32_t head = self->queue_head;
    self->queue_head = self->queue_tail = 0;
    while (head) {
        s_call_t *c = self->calls[head - 1];
        head = c->qnext;
        c->queued = false;
        c->qnext = 0;
        uv_timer_stop(&c->timer);
        s_dispatch(self, c);
    }
}

static void s_on_call_timer(uv_timer_t *t)
{
    s_call_t *c = t->data;
    fb_rpc_client_t *self = c->client;
    if (!c->active)
        return;
    if (c->refused) {
        s_fail(self, c, c->refused, c->refused_why);
        return;
    }
    if (c->queued) {
        s_queue_remove(self, c);
        s_fail_timeout(self, c);
        return;
    }
    s_replica_t *r = c->replica;
    if (r) { /* attempt timeout; with no replica this is the overload backoff */
        r->inflight--;
        r->timeouts++;
        c->replica = NULL;
        fb_log(FB_LOG_WARN, c->trace[0] ? c->trace : NULL, "rpc attempt timed out",
               "service=%s endpoint=%s method=%s", self->service, r->endpoint, c->method);
        if (r->timeouts >= 2 && r->responsive) {
            r->responsive = false;
            fb_log(FB_LOG_WARN, NULL, "rpc replica unresponsive", "service=%s endpoint=%s reason=%s",
                   self->service, r->endpoint, "attempt timeouts");
            s_reassign_from(self, r, false);
        }
    }
    s_dispatch(self, c);
}

void fb_rpc_client_call(fb_rpc_client_t *self, const fb_rpc_call_opts_t *opts, const char *body,
                        size_t body_len, fb_rpc_done_fn *done, void *arg)
{
    FB_ASSERT(!self->dead && opts && opts->method && done);
    s_call_t *c = s_call_alloc(self);
    c->done = done;
    c->arg = arg;
    c->attempt_ms = opts->attempt_ms ? opts->attempt_ms : self->attempt_ms;
    uint32_t budget = opts->deadline_ms ? opts->deadline_ms : 5000;
    c->deadline = fb_mono_ms() + budget;
    c->once = c->attempt_ms >= budget;
    fb_copy_str(c->method, sizeof(c->method), opts->method);
    fb_copy_str(c->trace, sizeof(c->trace), opts->trace);
    msgpack_sbuffer_clear(&self->sb);
    fb_rpc_request_pack(&self->sb, s_wire_id(c), opts->method, opts->idem, opts->trace, budget, body,
                        body_len);
    c->frame = fb_malloc(self->sb.size);
    memcpy(c->frame, self->sb.data, self->sb.size);
    c->frame_len = self->sb.size;
    /* never complete inside this function: dispatch now, but a failure to place
     * the call only queues it, and the timer reports */
    if (fb_mono_ms() >= c->deadline) {
        s_queue_push(self, c);
        s_arm(c, 0);
        return;
    }
    s_dispatch(self, c);
}

void fb_rpc_client_refuse(fb_rpc_client_t *self, const char *method, const char *code, const char *why,
                          fb_rpc_done_fn *done, void *arg)
{
    FB_ASSERT(!self->dead && method && code && done);
    s_call_t *c = s_call_alloc(self);
    c->done = done;
    c->arg = arg;
    fb_copy_str(c->method, sizeof(c->method), method);
    c->trace[0] = '\0';
    c->refused = code;
    fb_copy_str(c->refused_why, sizeof(c->refused_why), why);
    s_arm(c, 0); /* completed from the loop, never inside this function */
}

/* --- receiving ------------------------------------------------------------------ */

static void s_handle_reply(fb_rpc_client_t *self, s_replica_t *r, const char *data, size_t size)
{
    msgpack_zone_clear(&self->zone);
    msgpack_object root;
    fb_rpc_reply_t reply;
    const msgpack_object *id = NULL;
    if (size > self->max_message || fb_mp_unpack(data, size, &self->zone, &root) != 0 ||
        fb_rpc_reply_decode(&root, &reply, &id) != 0) {
        fb_log(FB_LOG_WARN, NULL, "rpc reply unreadable", "service=%s endpoint=%s bytes=%zu", self->service,
               r ? r->endpoint : "?", size);
        return;
    }
    uint64_t wid;
    if (!fb_mp_uint64(id, &wid)) {
        fb_log(FB_LOG_WARN, NULL, "rpc reply without a usable id", "service=%s code=%s message=%s",
               self->service, reply.code, reply.message);
        return;
    }
    uint32_t gen = (uint32_t)(wid >> 32), slot = (uint32_t)wid;
    if (gen == PING_GEN)
        return; /* a heartbeat answer: hearing it was the point */
    if (slot >= self->call_cap)
        return;
    s_call_t *c = self->calls[slot];
    if (!c->active || c->gen != gen)
        return; /* a late duplicate of a call already answered */
    if (!reply.ok && strcmp(reply.code, FB_RPC_E_OVERLOADED) == 0) {
        /* the replica refused to take it: try again shortly, preferring another */
        if (c->replica) {
            c->replica->inflight--;
            c->replica = NULL;
        }
        s_arm(c, OVERLOAD_BACKOFF_MS);
        return;
    }
    s_complete(self, c, &reply);
}

static void s_on_sock(void *arg)
{
    fb_rpc_client_t *self = arg;
    for (int n = 0; n < 256; n++) {
        zmq_msg_t rid, payload;
        zmq_msg_init(&rid);
        if (zmq_msg_recv(&rid, self->zs, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&rid);
            return;
        }
        zmq_msg_init(&payload);
        bool ok = zmq_msg_more(&rid) && zmq_msg_recv(&payload, self->zs, ZMQ_DONTWAIT) >= 0;
        if (ok && zmq_msg_more(&payload)) {
            /* more than [routing id, payload]: not ours; discard the rest */
            ok = false;
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            while (zmq_msg_more(&payload) && zmq_msg_recv(&extra, self->zs, ZMQ_DONTWAIT) >= 0 &&
                   zmq_msg_more(&extra))
                ;
            zmq_msg_close(&extra);
        }
        if (ok) {
            s_replica_t *r = s_find_replica(self, zmq_msg_data(&rid), zmq_msg_size(&rid));
            if (r) {
                r->answered++;
                s_replica_heard(self, r);
            }
            s_handle_reply(self, r, zmq_msg_data(&payload), zmq_msg_size(&payload));
        }
        zmq_msg_close(&rid);
        zmq_msg_close(&payload);
    }
}

static void s_on_monitor(void *arg)
{
    fb_rpc_client_t *self = arg;
    for (;;) {
        zmq_msg_t head, addr;
        zmq_msg_init(&head);
        if (zmq_msg_recv(&head, self->zm, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&head);
            return;
        }
        zmq_msg_init(&addr);
        if (!zmq_msg_more(&head) || zmq_msg_recv(&addr, self->zm, ZMQ_DONTWAIT) < 0 ||
            zmq_msg_size(&head) < 6) {
            zmq_msg_close(&head);
            zmq_msg_close(&addr);
            continue;
        }
        uint16_t event;
        memcpy(&event, zmq_msg_data(&head), sizeof(event));
        char ep[160];
        size_t eplen = fb_endpoint_normalize(zmq_msg_data(&addr), zmq_msg_size(&addr), ep, sizeof(ep));
        s_replica_t *r = eplen ? s_find_replica(self, ep, eplen) : NULL;
        if (!r)
            fb_log(FB_LOG_DEBUG, NULL, "rpc event for an unknown endpoint",
                   "service=%s endpoint=%.*s event=%u", self->service, (int)zmq_msg_size(&addr),
                   (const char *)zmq_msg_data(&addr), (unsigned)event);
        if (r) {
            if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
                s_replica_up(self, r);
            else if (event == ZMQ_EVENT_DISCONNECTED)
                s_replica_down(self, r, "disconnected");
            else if (event & (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                              ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL))
                fb_log(FB_LOG_WARN, NULL, "rpc handshake refused", "service=%s endpoint=%s event=%u",
                       self->service, r->endpoint, (unsigned)event);
        }
        zmq_msg_close(&head);
        zmq_msg_close(&addr);
    }
}

/* --- heartbeats and discovery ------------------------------------------------------ */

static void s_on_heartbeat(uv_timer_t *t)
{
    fb_rpc_client_t *self = t->data;
    int64_t now = fb_mono_ms();
    int64_t hb = self->heartbeat_ms;
    for (size_t i = 0; i < self->replica_count; i++) {
        s_replica_t *r = self->replicas[i];
        if (!r->connected || !r->present)
            continue;
        if (now - r->last_heard >= hb && (r->ping_sent == 0 || now - r->ping_sent >= hb)) {
            msgpack_sbuffer_clear(&self->sb);
            fb_rpc_request_pack(&self->sb, ((uint64_t)PING_GEN << 32) | (uint32_t)i, "health", NULL, NULL,
                                (uint64_t)hb * SILENT_BEATS, NULL, 0);
            if (s_send(self, r, self->sb.data, self->sb.size) == 0)
                r->ping_sent = now;
        }
        if (r->responsive && now - r->last_heard > hb * SILENT_BEATS) {
            r->responsive = false;
            fb_log(FB_LOG_WARN, NULL, "rpc replica unresponsive",
                   "service=%s endpoint=%s reason=%s silent_ms=%lld", self->service, r->endpoint,
                   "no heartbeat answer", (long long)(now - r->last_heard));
            s_reassign_from(self, r, false);
        }
    }
    s_prune_replicas(self);
}

/* Applies one target's new address set: connect new replicas, retire others. */
static void s_apply_resolution(fb_rpc_client_t *self, int target, char (*eps)[128], size_t count)
{
    for (size_t i = 0; i < self->replica_count; i++) {
        s_replica_t *r = self->replicas[i];
        if (r->target != target || !r->present)
            continue;
        bool keep = false;
        for (size_t k = 0; k < count && !keep; k++)
            keep = strcmp(eps[k], r->endpoint) == 0;
        if (!keep) {
            r->present = false;
            zmq_disconnect(self->zs, r->endpoint);
            fb_zuv_touch(self->watch_sock);
            fb_log(FB_LOG_INFO, NULL, "rpc replica retired", "service=%s endpoint=%s", self->service,
                   r->endpoint);
            bool was = r->connected;
            r->connected = false;
            if (was)
                s_reassign_from(self, r, true);
        }
    }
    for (size_t k = 0; k < count; k++)
        s_add_replica(self, target, eps[k]);
}

static void s_expand(const fb_endpoint_t *ep, const char *host, bool v6, char (*eps)[128], size_t *count,
                     size_t max)
{
    for (unsigned p = ep->port_lo; p <= ep->port_hi && *count < max; p++)
        fb_endpoint_format(eps[(*count)++], 128, host, v6, (uint16_t)p);
}

static void s_on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    s_target_t *t = req->data;
    fb_rpc_client_t *self = t->client;
    t->resolving = false;
    self->resolving--;
    if (self->dead) {
        uv_freeaddrinfo(res);
        if (self->resolving == 0 && self->closing_handles == 0)
            s_final_free(self); /* the last reference */
        return;
    }
    if (status != 0) {
        fb_log(FB_LOG_DEBUG, NULL, "rpc name not resolved", "service=%s host=%s reason=%s", self->service,
               t->ep.host, uv_strerror(status));
        return; /* keep what we had: a DNS hiccup must not drop live replicas */
    }
    enum { MAX_EPS = 256 };
    char(*eps)[128] = fb_malloc(MAX_EPS * 128);
    size_t count = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char host[INET6_ADDRSTRLEN];
        bool v6 = ai->ai_family == AF_INET6;
        if (ai->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, host, sizeof(host));
        else if (v6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, host, sizeof(host));
        else
            continue;
        char probe[128];
        fb_endpoint_format(probe, sizeof(probe), host, v6, t->ep.port_lo);
        bool dup = false;
        for (size_t k = 0; k < count && !dup; k++)
            dup = strcmp(eps[k], probe) == 0;
        if (!dup)
            s_expand(&t->ep, host, v6, eps, &count, MAX_EPS);
    }
    uv_freeaddrinfo(res);
    s_apply_resolution(self, (int)(t - self->targets), eps, count);
    free(eps);
}

static void s_resolve_all(fb_rpc_client_t *self)
{
    for (size_t i = 0; i < self->target_count; i++) {
        s_target_t *t = &self->targets[i];
        if (t->ep.is_ip || t->resolving)
            continue;
        struct addrinfo hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        t->req.data = t;
        if (uv_getaddrinfo(self->loop, &t->req, s_on_resolved, t->ep.host, NULL, &hints) == 0) {
            t->resolving = true;
            self->resolving++;
        }
    }
}

static void s_on_resolve_timer(uv_timer_t *t)
{
    s_resolve_all(t->data);
}

/* --- life cycle --------------------------------------------------------------------- */

fb_rpc_client_t *fb_rpc_client_new(uv_loop_t *loop, const fb_rpc_client_config_t *config, char *err,
                                   size_t errlen)
{
    fb_endpoint_t eps[FB_ENDPOINT_LIST_MAX];
    int n = fb_endpoint_parse_list(config->endpoints, eps, FB_ENDPOINT_LIST_MAX, err, errlen);
    if (n < 0)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (eps[i].is_wildcard) {
            snprintf(err, errlen, "a client endpoint cannot use the * host");
            return NULL;
        }
    }
    fb_rpc_client_t *self = fb_calloc(1, sizeof(*self));
    self->loop = loop;
    self->service = fb_strdup(config->service);
    self->attempt_ms = config->attempt_timeout_ms ? config->attempt_timeout_ms : 2000;
    self->heartbeat_ms = config->heartbeat_ms ? config->heartbeat_ms : 1000;
    self->resolve_ms = config->resolve_ms ? config->resolve_ms : 2000;
    self->max_message = config->max_message ? config->max_message : 1 << 20;
    msgpack_zone_init(&self->zone, 4096);
    msgpack_sbuffer_init(&self->sb);

    self->sock = zsock_new(ZMQ_ROUTER);
    FB_ASSERT(self->sock);
    self->zs = zsock_resolve(self->sock);
    int one = 1, zero = 0, hwm = 100000, ivl = 100, ivl_max = 2000;
    int hb = (int)self->heartbeat_ms, hb3 = hb * SILENT_BEATS;
    int64_t maxmsg = (int64_t)self->max_message * 2 + 65536;
    zmq_setsockopt(self->zs, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
    zmq_setsockopt(self->zs, ZMQ_IMMEDIATE, &zero, sizeof(zero));
    zmq_setsockopt(self->zs, ZMQ_LINGER, &zero, sizeof(zero));
    zmq_setsockopt(self->zs, ZMQ_SNDHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(self->zs, ZMQ_RCVHWM, &hwm, sizeof(hwm));
    zmq_setsockopt(self->zs, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl));
    zmq_setsockopt(self->zs, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof(ivl_max));
    zmq_setsockopt(self->zs, ZMQ_HEARTBEAT_IVL, &hb, sizeof(hb));
    zmq_setsockopt(self->zs, ZMQ_HEARTBEAT_TIMEOUT, &hb3, sizeof(hb3));
    zmq_setsockopt(self->zs, ZMQ_HEARTBEAT_TTL, &hb3, sizeof(hb3));
    zmq_setsockopt(self->zs, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
    zmq_setsockopt(self->zs, ZMQ_IPV6, &one, sizeof(one));
    if (config->curve) {
        if (!config->server_key || fb_curve_apply_client(config->curve, self->zs, config->server_key) != 0) {
            snprintf(err, errlen, "CurveZMQ needs the %s server's 40-character Z85 public key",
                     config->service);
            zsock_destroy(&self->sock);
            msgpack_zone_destroy(&self->zone);
            msgpack_sbuffer_destroy(&self->sb);
            free(self->service);
            free(self);
            return NULL;
        }
    }
    char monaddr[64];
    snprintf(monaddr, sizeof(monaddr), "inproc://fb-rpc-monitor-%p", (void *)self);
    FB_ASSERT(zmq_socket_monitor(self->zs, monaddr,
                                 ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED |
                                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0);
    self->monitor = zsock_new(ZMQ_PAIR);
    FB_ASSERT(self->monitor);
    self->zm = zsock_resolve(self->monitor);
    FB_ASSERT(zmq_connect(self->zm, monaddr) == 0);
    self->watch_sock = fb_zuv_new(loop, self->zs, s_on_sock, self);
    self->watch_monitor = fb_zuv_new(loop, self->zm, s_on_monitor, self);

    self->target_count = (size_t)n;
    self->targets = fb_calloc((size_t)n, sizeof(*self->targets));
    for (int i = 0; i < n; i++) {
        self->targets[i].ep = eps[i];
        self->targets[i].client = self;
        if (eps[i].is_ip) {
            char list[FB_ENDPOINT_RANGE_MAX][128];
            size_t count = 0;
            s_expand(&eps[i], eps[i].host, eps[i].is_ipv6, list, &count, FB_ENDPOINT_RANGE_MAX);
            s_apply_resolution(self, i, list, count);
        }
    }
    uv_timer_init(loop, &self->heartbeat);
    self->heartbeat.data = self;
    uv_timer_start(&self->heartbeat, s_on_heartbeat, self->heartbeat_ms, self->heartbeat_ms);
    uv_timer_init(loop, &self->resolve);
    self->resolve.data = self;
    uv_timer_start(&self->resolve, s_on_resolve_timer, self->resolve_ms, self->resolve_ms);
    s_resolve_all(self);
    return self;
}

static void s_on_handle_closed(uv_handle_t *h)
{
    fb_rpc_client_t *self = h->data;
    if (h->type == UV_TIMER && h != (uv_handle_t *)&self->heartbeat && h != (uv_handle_t *)&self->resolve) {
        s_call_t *c = (s_call_t *)((char *)h - offsetof(s_call_t, timer));
        self = c->client;
        free(c);
    }
    if (--self->closing_handles == 0 && self->resolving == 0)
        s_final_free(self);
}

static void s_final_free(fb_rpc_client_t *self)
{
    free(self->targets);
    free(self);
}

void fb_rpc_client_destroy(fb_rpc_client_t **self_p)
{
    FB_ASSERT(self_p);
    fb_rpc_client_t *self = *self_p;
    if (!self)
        return;
    /* complete what is still pending, then take everything down */
    for (uint32_t i = 0; i < self->call_cap; i++) {
        s_call_t *c = self->calls[i];
        if (c->active)
            s_fail(self, c, FB_RPC_E_UNAVAILABLE, "the client is shutting down");
    }
    self->dead = true;
    fb_zuv_destroy(&self->watch_sock);
    fb_zuv_destroy(&self->watch_monitor);
    zmq_socket_monitor(self->zs, NULL, 0);
    zsock_destroy(&self->monitor);
    zsock_destroy(&self->sock);
    for (size_t i = 0; i < self->replica_count; i++)
        free(self->replicas[i]);
    free(self->replicas);
    for (size_t i = 0; i < self->target_count; i++)
        if (self->targets[i].resolving)
            uv_cancel((uv_req_t *)&self->targets[i].req);
    msgpack_zone_destroy(&self->zone);
    msgpack_sbuffer_destroy(&self->sb);
    free(self->service);
    self->closing_handles = 2 + (int)self->call_cap;
    for (uint32_t i = 0; i < self->call_cap; i++) {
        self->calls[i]->timer.data = self;
        uv_close((uv_handle_t *)&self->calls[i]->timer, s_on_handle_closed);
    }
    free(self->calls);
    self->calls = NULL;
    uv_close((uv_handle_t *)&self->heartbeat, s_on_handle_closed);
    uv_close((uv_handle_t *)&self->resolve, s_on_handle_closed);
    /* targets hold the DNS requests: freed with the last reference */
    *self_p = NULL;
}

size_t fb_rpc_client_ready(const fb_rpc_client_t *self)
{
    size_t n = 0;
    for (size_t i = 0; i < self->replica_count; i++) {
        const s_replica_t *r = self->replicas[i];
        n += r->present && r->connected && r->responsive;
    }
    return n;
}

size_t fb_rpc_client_stats(const fb_rpc_client_t *self, fb_rpc_replica_stat_t *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < self->replica_count && n < max; i++) {
        const s_replica_t *r = self->replicas[i];
        fb_copy_str(out[n].endpoint, sizeof(out[n].endpoint), r->endpoint);
        out[n].connected = r->connected;
        out[n].responsive = r->responsive;
        out[n].inflight = r->inflight;
        out[n].sent = r->sent;
        out[n].answered = r->answered;
        n++;
    }
    return n;
}

size_t fb_rpc_client_pending(const fb_rpc_client_t *self)
{
    return self->pending;
}
