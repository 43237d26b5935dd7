/* edge_worker - per-loop HTTP serving and graceful stop. */
#include "edge_worker.h"
#include "edge_auth.h"
#include "edge_chat.h"
#include "edge_limit.h"
#include "edge_metrics.h"
#include "edge_purse.h"
#include "edge_x402.h"
#include "fb_curlm.h"
#include "fb_http.h"
#include "fb_log.h"
#include "fb_util.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

edge_worker_t *edge_worker_of(h2o_context_t *ctx)
{
    return (edge_worker_t *)((char *)ctx - offsetof(edge_worker_t, ctx));
}

#define CONNS_CLOSE_MS  2000  /* after the requests, how long connections get to close */
#define PURSE_MARGIN_MS 60000 /* a slice's hold outlives its last call by this much more */

/* A stop runs in two steps: the requests in flight finish (up to the grace
 * period), then every connection still open is shut down and closes. */
static void s_drain_check(uv_timer_t *t)
{
    edge_worker_t *self = t->data;
    int64_t now = fb_mono_ms();
    if (!self->conns_closing) {
        if (self->active_requests > 0 && now < self->stop_deadline)
            return;
        if (self->active_requests)
            fb_log(FB_LOG_WARN, NULL, "stop grace period over", "worker=%d requests_in_flight=%llu",
                   self->index, (unsigned long long)self->active_requests);
        self->conns_closing = true;
        self->stop_deadline = now + CONNS_CLOSE_MS;
        fb_http_conns_shutdown(&self->conns);
    }
    /* ... and the money of requests whose client left (charges); once no
     * request is left, the slices' uncharged rest is given back */
    if ((self->conns.count > 0 || self->active_requests > 0) && now < self->stop_deadline)
        return;
    size_t slices = edge_purse_drain(self->purse);
    if (slices > 0 && now < self->stop_deadline)
        return;
    if (slices > 0)
        fb_log(FB_LOG_WARN, NULL,
               "prepaid slices still open at exit; their rest is released when they expire",
               "worker=%d slices=%zu", self->index, slices);
    if (self->conns.count > 0)
        fb_log(FB_LOG_WARN, NULL, "connections still open at exit", "worker=%d connections=%zu", self->index,
               self->conns.count);
    uv_timer_stop(t);
    if (self->index == 0)
        fb_service_exit(self->edge->service, 0);
    else
        uv_stop(self->loop);
}

/* The stop proper: no new connection, no more keep-alive, the requests in
 * flight finish. */
static void s_stop_serving(uv_timer_t *t)
{
    edge_worker_t *self = t->data;
    fb_http_close(&self->listen_plain);
    fb_http_close(&self->listen_tls);
    h2o_context_request_shutdown(&self->ctx); /* GOAWAY on HTTP/2, no more keep-alive on HTTP/1 */
    self->stop_deadline = fb_mono_ms() + self->edge->grace_ms;
    uv_timer_start(&self->drain, s_drain_check, 0, 20);
}

/* SIGTERM: /healthz and /readyz answer 503 at once; with a stop delay the edge
 * goes on serving everything else as before for that long, so that a load
 * balancer checking it takes it out of rotation before its listener closes
 * and its idle connections are shut (no request is then sent to an edge that
 * is closing its connections). */
static void s_begin_stop(edge_worker_t *self)
{
    if (self->stopping)
        return;
    self->stopping = true;
    uint32_t delay = self->edge->stop_delay_ms;
    if (delay == 0) {
        s_stop_serving(&self->drain);
        return;
    }
    if (self->index == 0)
        fb_log(FB_LOG_INFO, NULL, "stopping: health checks fail first", "delay_ms=%u", delay);
    uv_timer_start(&self->drain, s_stop_serving, delay, 0);
}

static void s_on_key_watch(uv_timer_t *t)
{
    edge_chat_watch_keys(t->data);
}

static void s_on_wake(uv_async_t *h)
{
    s_begin_stop(h->data);
}

/* A client connection is taken under the process's caps (edge_limit). */
static int s_admit(void *arg, const struct sockaddr *peer)
{
    edge_worker_t *self = arg;
    int token = edge_limit_connect(self->edge->limits, peer);
    if (token < 0)
        edge_metrics_connection_refused();
    return token;
}

static void s_left(void *arg, const struct sockaddr *peer, int token)
{
    edge_worker_t *self = arg;
    edge_limit_disconnect(self->edge->limits, peer, token);
}

edge_worker_t *edge_worker_new(edge_t *edge, int index, char *err, size_t errlen)
{
    edge_worker_t *self = fb_calloc(1, sizeof(*self));
    self->edge = edge;
    self->index = index;
    if (index == 0) {
        self->loop = fb_service_loop(edge->service);
    } else {
        FB_ASSERT(uv_loop_init(&self->own_loop) == 0);
        self->loop = &self->own_loop;
    }
    uv_async_init(self->loop, &self->wake, s_on_wake);
    self->wake.data = self;
    uv_timer_init(self->loop, &self->drain);
    self->drain.data = self;
    h2o_context_init(&self->ctx, self->loop, &edge->h2o);
    fb_http_conns_init(&self->conns);
    self->conns.admit = s_admit;
    self->conns.left = s_left;
    self->conns.arg = self;
    self->accept_plain.ctx = &self->ctx;
    self->accept_plain.hosts = edge->h2o.hosts;
    self->accept_tls = self->accept_plain;
    self->accept_tls.ssl_ctx = edge->tls;

    self->listen_plain = fb_http_listen(self->loop, &self->accept_plain, &self->conns, edge->http_listen,
                                        &self->http_port, err, errlen);
    if (!self->listen_plain)
        return NULL;
    if (edge->tls) {
        self->listen_tls = fb_http_listen(self->loop, &self->accept_tls, &self->conns, edge->https_listen,
                                          &self->https_port, err, errlen);
        if (!self->listen_tls)
            return NULL;
    }
    self->ledger = fb_service_client(edge->service, FB_PEER_LEDGER, self->loop);
    self->verifier = fb_service_client(edge->service, FB_PEER_VERIFIER, self->loop);
    self->watcher = fb_service_client(edge->service, FB_PEER_CHAIN_WATCHER, self->loop);
    self->curlm = fb_curlm_new(self->loop);
    fb_curlm_keep(self->curlm, edge->upstream_keepalive);
    self->x402 = edge_x402_new(self);
    self->metrics = edge_metrics_new(self->ledger, self->verifier);
    self->key_cache = edge_key_cache_new();
    edge_purse_conf_t purse = {
        .slice_calls = edge->slice_calls,
        .slice_max_micro = edge->slice_max_micro,
        .idle_ms = edge->slice_idle_ms,
        .max_age_ms = edge->slice_age_ms,
        /* a slice's hold outlives the last call it may take by the longest provider call */
        .hold_ttl_ms = edge->slice_age_ms + edge->upstream_timeout_ms + PURSE_MARGIN_MS,
        .answer_budget = edge->rpc_max_message / 2,
        .defer_ms = edge->charge_defer_ms,
        .journal_dir = edge->journal_dir,
        .journal_max_bytes = edge->journal_max_bytes,
        .journal_fsync = edge->journal_fsync,
        .recover = index == 0, /* one worker of each edge looks for dead edges' journals */
    };
    self->purse = edge_purse_new(self, &purse);
    uv_timer_init(self->loop, &self->key_watch);
    self->key_watch.data = self;
    uv_timer_start(&self->key_watch, s_on_key_watch, 1000, 1000);
    uv_unref((uv_handle_t *)&self->key_watch);
    if (index == 0)
        edge_metrics_bind(self->metrics); /* the first worker runs on the main thread */
    return self;
}

static void s_thread_main(void *arg)
{
    edge_worker_t *self = arg;
    edge_metrics_bind(self->metrics);
    uv_run(self->loop, UV_RUN_DEFAULT);
}

void edge_worker_start(edge_worker_t *self)
{
    FB_ASSERT(self->index > 0);
    FB_ASSERT(uv_thread_create(&self->thread, s_thread_main, self) == 0);
}

void edge_worker_stop(edge_worker_t *self)
{
    if (self->index == 0)
        s_begin_stop(self);
    else
        uv_async_send(&self->wake);
}

void edge_worker_join(edge_worker_t *self)
{
    if (self->index > 0)
        uv_thread_join(&self->thread);
}

static void s_close_walk(uv_handle_t *h, void *arg)
{
    FB_UNUSED(arg);
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void edge_worker_destroy(edge_worker_t **self_p)
{
    FB_ASSERT(self_p);
    edge_worker_t *self = *self_p;
    if (!self)
        return;
    edge_x402_destroy(&self->x402);
    edge_metrics_destroy(&self->metrics);
    edge_purse_shutdown(self->purse);
    /* the ledger's client goes last: the calls the others fail may still
     * write to the ledger (an x402 payment marked failed), not the reverse */
    fb_rpc_client_destroy(&self->verifier);
    fb_rpc_client_destroy(&self->watcher);
    fb_rpc_client_destroy(&self->ledger);
    edge_purse_destroy(&self->purse);
    edge_key_cache_destroy(&self->key_cache);
    fb_curlm_destroy(&self->curlm);
    fb_http_close(&self->listen_plain);
    fb_http_close(&self->listen_tls);
    uv_close((uv_handle_t *)&self->wake, NULL);
    uv_close((uv_handle_t *)&self->drain, NULL);
    uv_close((uv_handle_t *)&self->key_watch, NULL);
    uv_run(self->loop, UV_RUN_NOWAIT);
    /* h2o cannot dispose a context with connections still open: this happens
     * only when one outlived the stop (logged), just before the process ends */
    if (self->conns.count == 0) {
        /* h2o_context_request_shutdown armed a one-second GOAWAY resend (h2o
         * 2.2 links it even with no HTTP/2 connection): disarm it first */
        if (h2o_timeout_is_linked(&self->ctx.http2._graceful_shutdown_timeout))
            h2o_timeout_unlink(&self->ctx.http2._graceful_shutdown_timeout);
        h2o_context_dispose(&self->ctx);
    }
    if (self->index > 0) {
        uv_walk(self->loop, s_close_walk, NULL);
        uv_run(self->loop, UV_RUN_DEFAULT);
        uv_loop_close(self->loop);
    }
    free(self);
    *self_p = NULL;
}
