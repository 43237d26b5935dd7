/* fb_rpc_server - ROUTER socket, frame handling, dispatch, replies. */
#include "fb_rpc_server.h"
#include "fb_endpoint.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"
#include "fb_zuv.h"

#include <czmq.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ROUTE_FRAMES_MAX 4   /* routing frames before the payload */
#define BURST_MAX        256 /* requests taken per wake before yielding */

typedef struct {
    char *name;            /* method name */
    fb_rpc_handler_fn *fn; /* handler */
    void *arg;             /* handler argument */
} s_route_t;

struct fb_rpc_server_t {
    uv_loop_t *loop;       /* the loop we run in */
    zsock_t *sock;         /* ROUTER socket */
    void *zs;              /* raw handle of sock */
    fb_zuv_t *watch;       /* readability of sock */
    bool paused;           /* stopping: new calls refused as overloaded, health still answered */
    char *service;         /* service name */
    char *replica;         /* replica name */
    char endpoint[320];    /* bound endpoint */
    size_t max_message;    /* request size limit */
    uint32_t max_inflight; /* concurrent call limit */
    size_t inflight;       /* calls not yet answered */
    s_route_t *routes;     /* method table */
    size_t route_count;
    fb_rpc_batch_fn *batch_fn; /* end-of-burst hook */
    void *batch_arg;
    fb_rpc_health_fn *health_fn;
    void *health_arg;
    msgpack_sbuffer out; /* reply encoding buffer, reused */
    int64_t started_ms;  /* for uptime */
    uint64_t served;     /* calls answered */
};

struct fb_rpc_call_t {
    fb_rpc_server_t *server;           /* owner */
    zmq_msg_t route[ROUTE_FRAMES_MAX]; /* routing frames, echoed back */
    int route_count;
    zmq_msg_t payload;              /* request bytes; objects point in here */
    msgpack_zone zone;              /* storage of the unpacked request */
    fb_rpc_request_t req;           /* decoded envelope */
    int64_t deadline;               /* monotonic ms */
    int64_t received_us;            /* for the debug log of durations */
    char trace[FB_RPC_STR_MAX + 1]; /* trace id as C string */
};

/* --- sending ---------------------------------------------------------------- */

static void s_send_reply(fb_rpc_server_t *self, zmq_msg_t *route, int route_count, const msgpack_object *id,
                         const char *code, const char *message, const char *body, size_t body_len)
{
    fb_zuv_touch(self->watch);
    msgpack_sbuffer_clear(&self->out);
    fb_rpc_reply_pack(&self->out, id, code, message, self->replica, body, body_len);
    for (int i = 0; i < route_count; i++) {
        /* zmq_msg_send consumes the message */
        if (zmq_msg_send(&route[i], self->zs, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            fb_log(FB_LOG_WARN, NULL, "rpc reply dropped", "reason=%s", zmq_strerror(errno));
            for (int k = i; k < route_count; k++)
                zmq_msg_close(&route[k]);
            return;
        }
    }
    if (zmq_send(self->zs, self->out.data, self->out.size, ZMQ_DONTWAIT) < 0)
        fb_log(FB_LOG_WARN, NULL, "rpc reply dropped", "reason=%s", zmq_strerror(errno));
    self->served++;
}

static void s_call_free(fb_rpc_call_t *call)
{
    for (int i = 0; i < call->route_count; i++)
        zmq_msg_close(&call->route[i]); /* no-op for frames already sent */
    zmq_msg_close(&call->payload);
    msgpack_zone_destroy(&call->zone);
    call->server->inflight--;
    free(call);
}

static void s_call_answer(fb_rpc_call_t **call_p, const char *code, const char *message, const char *body,
                          size_t body_len)
{
    FB_ASSERT(call_p && *call_p);
    fb_rpc_call_t *call = *call_p;
    fb_rpc_server_t *self = call->server;
    if (fb_log_enabled(FB_LOG_DEBUG))
        fb_log(FB_LOG_DEBUG, call->trace[0] ? call->trace : NULL, "rpc call answered",
               "method=%.*s status=%s code=%s us=%lld", (int)call->req.method_len, call->req.method,
               code ? "error" : "ok", code, (long long)(fb_mono_us() - call->received_us));
    s_send_reply(self, call->route, call->route_count, call->req.id, code, message, body, body_len);
    call->route_count = 0;
    s_call_free(call);
    *call_p = NULL;
}

void fb_rpc_call_reply(fb_rpc_call_t **call_p, const char *body, size_t body_len)
{
    s_call_answer(call_p, NULL, NULL, body, body_len);
}

void fb_rpc_call_error(fb_rpc_call_t **call_p, const char *code, const char *body, size_t body_len,
                       const char *fmt, ...)
{
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    s_call_answer(call_p, code, message, body, body_len);
}

const fb_rpc_request_t *fb_rpc_call_request(const fb_rpc_call_t *call)
{
    return &call->req;
}

int64_t fb_rpc_call_deadline(const fb_rpc_call_t *call)
{
    return call->deadline;
}

const char *fb_rpc_call_trace(const fb_rpc_call_t *call)
{
    return call->trace;
}

/* --- built-in methods -------------------------------------------------------- */

static void s_health(void *arg, fb_rpc_call_t *call)
{
    fb_rpc_server_t *self = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    /* service fields are packed into a scratch buffer first to count them */
    msgpack_sbuffer extra;
    msgpack_sbuffer_init(&extra);
    msgpack_packer epk;
    msgpack_packer_init(&epk, &extra, msgpack_sbuffer_write);
    int n = self->health_fn ? self->health_fn(self->health_arg, &epk) : 0;
    msgpack_pack_map(&pk, 6 + (size_t)n);
    fb_mp_pack_kv_cstr(&pk, "service", self->service);
    fb_mp_pack_kv_cstr(&pk, "replica", self->replica);
    fb_mp_pack_kv_cstr(&pk, "version", FAREBOX_VERSION);
    fb_mp_pack_kv_int(&pk, "uptime_ms", fb_mono_ms() - self->started_ms);
    fb_mp_pack_kv_uint(&pk, "inflight", self->inflight - 1);
    fb_mp_pack_kv_uint(&pk, "served", self->served);
    msgpack_sbuffer_write(&sb, extra.data, extra.size);
    fb_rpc_call_reply(&call, sb.data, sb.size);
    msgpack_sbuffer_destroy(&extra);
    msgpack_sbuffer_destroy(&sb);
}

/* --- receiving --------------------------------------------------------------- */

static s_route_t *s_find_route(fb_rpc_server_t *self, const char *m, size_t n)
{
    for (size_t i = 0; i < self->route_count; i++)
        if (fb_streq_n(m, n, self->routes[i].name))
            return &self->routes[i];
    return NULL;
}

/* Takes one whole message off the socket. Returns 1 when a message was handled
 * (or dropped), 0 when none was waiting. */
static int s_receive_one(fb_rpc_server_t *self)
{
    fb_rpc_call_t *call = fb_calloc(1, sizeof(*call));
    call->server = self;
    self->inflight++;
    zmq_msg_init(&call->payload);
    msgpack_zone_init(&call->zone, 1024);

    /* frames: routing frames (identity, and an empty delimiter from REQ
     * clients), then exactly one payload frame */
    zmq_msg_t frame;
    int frames = 0;
    bool too_many = false;
    for (;;) {
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, self->zs, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            if (frames == 0) {
                s_call_free(call);
                return 0;
            }
            break; /* cannot happen mid-message; treat as end */
        }
        frames++;
        bool more = zmq_msg_more(&frame);
        if (!more) {
            zmq_msg_move(&call->payload, &frame);
            zmq_msg_close(&frame);
            break;
        }
        if (call->route_count < ROUTE_FRAMES_MAX) {
            zmq_msg_init(&call->route[call->route_count]);
            zmq_msg_move(&call->route[call->route_count++], &frame);
        } else {
            too_many = true;
        }
        zmq_msg_close(&frame);
    }
    call->received_us = fb_mono_us();
    if (too_many || call->route_count == 0) {
        fb_log(FB_LOG_WARN, NULL, "rpc message dropped", "reason=%s frames=%d",
               too_many ? "too many frames" : "no routing frame", frames);
        s_call_free(call);
        return 1;
    }

    const char *data = zmq_msg_data(&call->payload);
    size_t size = zmq_msg_size(&call->payload);
    msgpack_object root;
    bool readable = fb_mp_unpack(data, size, &call->zone, &root) == 0;
    if (size > self->max_message) {
        /* libzmq caps messages at twice the limit, so reading the envelope to
         * name the request in the error is cheap */
        const char *code;
        char why[256];
        if (readable)
            fb_rpc_request_decode(&root, &call->req, &code, why, sizeof(why));
        fb_rpc_call_error(&call, FB_RPC_E_TOO_LARGE, NULL, 0, "request of %zu bytes is over the limit of %zu",
                          size, self->max_message);
        return 1;
    }
    if (!readable) {
        fb_log(FB_LOG_WARN, NULL, "rpc request is not valid msgpack", "bytes=%zu", size);
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "request is not one valid msgpack object");
        return 1;
    }
    const char *code;
    char why[256];
    if (fb_rpc_request_decode(&root, &call->req, &code, why, sizeof(why)) != 0) {
        fb_log(FB_LOG_WARN, NULL, "rpc request refused", "code=%s reason=%s", code, why);
        fb_rpc_call_error(&call, code, NULL, 0, "%s", why);
        return 1;
    }
    if (call->req.trace) {
        memcpy(call->trace, call->req.trace, call->req.trace_len);
        call->trace[call->req.trace_len] = '\0';
    }
    call->deadline = fb_mono_ms() + (int64_t)call->req.deadline_ms;
    if (self->paused && !fb_streq_n(call->req.method, call->req.method_len, "health")) {
        /* stopping: new work goes to another replica (clients take overloaded as "try
         * another"), while health answers keep the calls in flight here waited for */
        fb_rpc_call_error(&call, FB_RPC_E_OVERLOADED, NULL, 0, "replica %s is stopping", self->replica);
        return 1;
    }

    if (self->inflight > self->max_inflight) {
        fb_rpc_call_error(&call, FB_RPC_E_OVERLOADED, NULL, 0, "replica %s has %zu calls in flight",
                          self->replica, self->inflight - 1);
        return 1;
    }
    s_route_t *route = s_find_route(self, call->req.method, call->req.method_len);
    if (!route) {
        fb_rpc_call_error(&call, FB_RPC_E_UNKNOWN_METHOD, NULL, 0, "%s has no method \"%.*s\"", self->service,
                          (int)call->req.method_len, call->req.method);
        return 1;
    }
    route->fn(route->arg, call);
    return 1;
}

static void s_on_readable(void *arg)
{
    fb_rpc_server_t *self = arg;
    int n = 0;
    while (n < BURST_MAX && s_receive_one(self))
        n++;
    if (n > 0 && self->batch_fn)
        self->batch_fn(self->batch_arg);
}

/* --- life cycle ------------------------------------------------------------------ */

static int s_bind(fb_rpc_server_t *self, const char *bind, char *err, size_t errlen)
{
    fb_endpoint_t eps[FB_ENDPOINT_LIST_MAX];
    int count = fb_endpoint_parse_list(bind, eps, FB_ENDPOINT_LIST_MAX, err, errlen);
    if (count < 0)
        return -1;
    int bound = 0;
    for (int i = 0; i < count; i++) {
        fb_endpoint_t *ep = &eps[i];
        bool ok = false;
        for (unsigned port = ep->port_lo; port <= ep->port_hi && !ok; port++) {
            char addr[300];
            fb_endpoint_format(addr, sizeof(addr), ep->host, ep->is_ipv6, (uint16_t)port);
            if (zmq_bind(self->zs, addr) == 0) {
                ok = true;
                if (!bound)
                    snprintf(self->endpoint, sizeof(self->endpoint), "%s", addr);
            } else if (errno != EADDRINUSE) {
                snprintf(err, errlen, "could not bind %s: %s", addr, zmq_strerror(errno));
                return -1;
            }
        }
        if (!ok) {
            snprintf(err, errlen, "no free port in %s:%u-%u", ep->host, ep->port_lo, ep->port_hi);
            return -1;
        }
        bound++;
    }
    return 0;
}

fb_rpc_server_t *fb_rpc_server_new(uv_loop_t *loop, const fb_rpc_server_config_t *config, char *err,
                                   size_t errlen)
{
    fb_rpc_server_t *self = fb_calloc(1, sizeof(*self));
    self->loop = loop;
    self->service = fb_strdup(config->service);
    self->replica = fb_strdup(config->replica);
    self->max_message = config->max_message;
    self->max_inflight = config->max_inflight;
    self->started_ms = fb_mono_ms();
    msgpack_sbuffer_init(&self->out);
    self->sock = zsock_new(ZMQ_ROUTER);
    FB_ASSERT(self->sock);
    self->zs = zsock_resolve(self->sock);
    zsock_set_linger(self->sock, 0);
    zsock_set_sndhwm(self->sock, 100000);
    zsock_set_rcvhwm(self->sock, 100000);
    zsock_set_ipv6(self->sock, 1);
    /* messages far above the limit drop the connection; those a little above
     * get a too_large reply */
    zsock_set_maxmsgsize(self->sock, (int)(config->max_message * 2 + 65536));
    zsock_set_heartbeat_ivl(self->sock, (int)config->heartbeat_ms);
    zsock_set_heartbeat_timeout(self->sock, (int)config->heartbeat_ms * 3);
    zsock_set_heartbeat_ttl(self->sock, (int)config->heartbeat_ms * 3);
    if (config->curve && fb_curve_apply_server(config->curve, self->zs) != 0) {
        snprintf(err, errlen, "could not enable CurveZMQ on the RPC socket");
        fb_rpc_server_destroy(&self);
        return NULL;
    }
    if (s_bind(self, config->bind, err, errlen) != 0) {
        fb_rpc_server_destroy(&self);
        return NULL;
    }
    fb_rpc_server_handle(self, "health", s_health, self);
    self->watch = fb_zuv_new(loop, self->zs, s_on_readable, self);
    return self;
}

void fb_rpc_server_destroy(fb_rpc_server_t **self_p)
{
    FB_ASSERT(self_p);
    fb_rpc_server_t *self = *self_p;
    if (!self)
        return;
    fb_zuv_destroy(&self->watch);
    zsock_destroy(&self->sock);
    for (size_t i = 0; i < self->route_count; i++)
        free(self->routes[i].name);
    free(self->routes);
    msgpack_sbuffer_destroy(&self->out);
    free(self->service);
    free(self->replica);
    free(self);
    *self_p = NULL;
}

const char *fb_rpc_server_endpoint(const fb_rpc_server_t *self)
{
    return self->endpoint;
}

void fb_rpc_server_handle(fb_rpc_server_t *self, const char *method, fb_rpc_handler_fn *fn, void *arg)
{
    FB_ASSERT(s_find_route(self, method, strlen(method)) == NULL);
    self->routes = fb_realloc(self->routes, (self->route_count + 1) * sizeof(*self->routes));
    self->routes[self->route_count++] = (s_route_t){fb_strdup(method), fn, arg};
}

void fb_rpc_server_on_batch(fb_rpc_server_t *self, fb_rpc_batch_fn *fn, void *arg)
{
    self->batch_fn = fn;
    self->batch_arg = arg;
}

void fb_rpc_server_on_health(fb_rpc_server_t *self, fb_rpc_health_fn *fn, void *arg)
{
    self->health_fn = fn;
    self->health_arg = arg;
}

void fb_rpc_server_pause(fb_rpc_server_t *self)
{
    self->paused = true;
}

size_t fb_rpc_server_inflight(const fb_rpc_server_t *self)
{
    return self->inflight;
}
