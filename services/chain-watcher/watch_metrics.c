/* watch_metrics - Prometheus text format of the chain-watcher's figures. */
#include "watch_metrics.h"
#include "fb_http.h"
#include "fb_jsonrpc.h"
#include "fb_log.h"
#include "fb_util.h"
#include "watch_evm.h"
#include "watch_svm.h"

#include <stdlib.h>
#include <string.h>

struct watch_metrics_t {
    watcher_t *w;
    h2o_globalconf_t conf;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept;
    fb_http_conns_t conns; /* open scrape connections, shut at stop */
    uv_tcp_t *listener;
};

typedef struct {
    h2o_handler_t super;
    watch_metrics_t *self;
} s_handler_t;

/* per chain endpoint of every scanner, one metric family after the other */
static void s_endpoints(const watcher_t *w, FILE *out)
{
    static const char *names[4] = {"calls_total", "failures_total", "last_latency_seconds", "resting"};
    const struct fb_jsonrpc_t *rpcs[2] = {NULL, NULL};
    const char *nets[2] = {"", ""};
    if (w->evm)
        rpcs[0] = watch_evm_rpc(w->evm, &nets[0]);
    if (w->svm)
        rpcs[1] = watch_svm_rpc(w->svm, &nets[1]);
    for (int m = 0; m < 4; m++) {
        for (int r = 0; r < 2; r++) {
            fb_jsonrpc_endpoint_stat_t st[8];
            size_t n = rpcs[r] ? fb_jsonrpc_stats(rpcs[r], st, 8) : 0;
            for (size_t i = 0; i < n; i++) {
                fprintf(out, "farebox_watch_rpc_%s{network=\"%s\",endpoint=\"%s\"} ", names[m], nets[r],
                        st[i].url);
                if (m == 0)
                    fprintf(out, "%llu\n", (unsigned long long)st[i].calls);
                else if (m == 1)
                    fprintf(out, "%llu\n", (unsigned long long)st[i].failures);
                else if (m == 2)
                    fprintf(out, "%.6f\n", (double)st[i].last_latency_us / 1e6);
                else
                    fprintf(out, "%d\n", st[i].resting ? 1 : 0);
            }
        }
    }
}

void watch_metrics_write(const watcher_t *w, FILE *out)
{
    if (w->evm)
        watch_evm_metrics(w->evm, out);
    if (w->svm)
        watch_svm_metrics(w->svm, out);
    s_endpoints(w, out);
}

static int s_on_req(h2o_handler_t *h, h2o_req_t *req)
{
    watch_metrics_t *self = ((s_handler_t *)h)->self;
    if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, H2O_STRLIT("/metrics"))) {
        fb_http_send(req, 404, "text/plain", "not found\n", 10);
        return 0;
    }
    if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"))) {
        fb_http_send(req, 405, "text/plain", "GET only\n", 9);
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    FB_ASSERT(out);
    watch_metrics_write(self->w, out);
    fclose(out);
    fb_http_send(req, 200, "text/plain; version=0.0.4", text, len);
    free(text);
    return 0;
}

watch_metrics_t *watch_metrics_new(watcher_t *w, const char *hostport, char *err, size_t errlen)
{
    watch_metrics_t *self = fb_calloc(1, sizeof(*self));
    self->w = w;
    h2o_config_init(&self->conf);
    h2o_hostconf_t *host =
        h2o_config_register_host(&self->conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    s_handler_t *h = (s_handler_t *)h2o_create_handler(path, sizeof(*h));
    h->super.on_req = s_on_req;
    h->self = self;
    h2o_context_init(&self->ctx, w->loop, &self->conf);
    self->accept.ctx = &self->ctx;
    self->accept.hosts = self->conf.hosts;
    int port = 0;
    fb_http_conns_init(&self->conns);
    self->listener = fb_http_listen(w->loop, &self->accept, &self->conns, hostport, &port, err, errlen);
    if (!self->listener) {
        h2o_context_dispose(&self->ctx);
        h2o_config_dispose(&self->conf);
        free(self);
        return NULL;
    }
    fb_log(FB_LOG_INFO, NULL, "metrics listening", "listen=%s port=%d", hostport, port);
    return self;
}

void watch_metrics_destroy(watch_metrics_t **self_p)
{
    watch_metrics_t *self = *self_p;
    if (!self)
        return;
    fb_http_close(&self->listener);
    /* keep-alive scrapers: shut their connections and let h2o close them */
    fb_http_conns_shutdown(&self->conns);
    for (int i = 0; i < 100 && self->conns.count > 0; i++)
        uv_run(self->w->loop, UV_RUN_NOWAIT);
    /* h2o cannot dispose a context with a connection still open; the process
     * is ending then, so it is left as it is */
    if (self->conns.count == 0) {
        if (h2o_timeout_is_linked(&self->ctx.http2._graceful_shutdown_timeout))
            h2o_timeout_unlink(&self->ctx.http2._graceful_shutdown_timeout);
        h2o_context_dispose(&self->ctx);
        h2o_config_dispose(&self->conf);
        free(self);
    }
    *self_p = NULL;
}
