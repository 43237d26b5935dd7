/* fb_http - listeners, TLS and response helpers over libh2o (libuv flavour). */
#include "fb_http.h"
#include "fb_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int s_split(const char *text, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text)
        return -1;
    size_t hl = (size_t)(colon - text);
    const char *h = text;
    if (h[0] == '[') {
        if (hl < 2 || h[hl - 1] != ']')
            return -1;
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    snprintf(port, portlen, "%s", colon + 1);
    for (const char *p = port; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    return atoi(port) <= 65535 ? 0 : -1;
}

int fb_http_check_hostport(const char *text, char *err, size_t errlen)
{
    char host[256], port[8];
    if (s_split(text, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(err, errlen, "must be HOST:PORT (for example 127.0.0.1:8402 or [::]:8402)");
        return -1;
    }
    return 0;
}

/* A listener: the libuv handle first (freed as one block), then where its
 * connections go. */
typedef struct {
    uv_tcp_t tcp;
    h2o_accept_ctx_t *actx;
    fb_http_conns_t *conns; /* or NULL */
} s_listener_t;

/* An accepted connection, linked into its registry while open. */
typedef struct {
    uv_tcp_t tcp;
    h2o_linklist_t link;
    fb_http_conns_t *owner;
    bool admitted; /* owner->admit took it: owner->left is told when it closes */
    int token;
    struct sockaddr_storage peer;
} s_conn_t;

static void s_conn_closed(uv_handle_t *h)
{
    s_conn_t *c = (s_conn_t *)h;
    if (c->owner) {
        h2o_linklist_unlink(&c->link);
        c->owner->count--;
        if (c->admitted)
            c->owner->left(c->owner->arg, (const struct sockaddr *)&c->peer, c->token);
    }
    free(c);
}

static void s_on_accept(uv_stream_t *listener, int status)
{
    if (status != 0)
        return;
    s_listener_t *l = (s_listener_t *)listener;
    s_conn_t *conn = fb_calloc(1, sizeof(*conn));
    uv_tcp_init(listener->loop, &conn->tcp);
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0) {
        uv_close((uv_handle_t *)&conn->tcp, s_conn_closed);
        return;
    }
    if (l->conns && l->conns->admit) {
        int len = (int)sizeof(conn->peer);
        if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&conn->peer, &len) != 0 ||
            (conn->token = l->conns->admit(l->conns->arg, (const struct sockaddr *)&conn->peer)) < 0) {
            uv_close((uv_handle_t *)&conn->tcp, s_conn_closed);
            return;
        }
        conn->admitted = true;
    }
    if (l->conns) {
        conn->owner = l->conns;
        h2o_linklist_insert(&l->conns->list, &conn->link);
        l->conns->count++;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&conn->tcp, s_conn_closed);
    h2o_accept(l->actx, sock);
}

void fb_http_conns_init(fb_http_conns_t *conns)
{
    memset(conns, 0, sizeof(*conns));
    h2o_linklist_init_anchor(&conns->list);
}

void fb_http_conns_shutdown(fb_http_conns_t *conns)
{
    for (h2o_linklist_t *n = conns->list.next; n != &conns->list; n = n->next) {
        s_conn_t *c = H2O_STRUCT_FROM_MEMBER(s_conn_t, link, n);
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            shutdown(fd, SHUT_RDWR);
    }
}

uv_tcp_t *fb_http_listen(uv_loop_t *loop, h2o_accept_ctx_t *actx, fb_http_conns_t *conns,
                         const char *hostport, int *port_out, char *err, size_t errlen)
{
    char host[256], port[8];
    if (s_split(hostport, host, sizeof(host), port, sizeof(port)) != 0) {
        snprintf(err, errlen, "bad listen address \"%s\"", hostport);
        return NULL;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "could not resolve %s: %s", host, gai_strerror(gai));
        return NULL;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        snprintf(err, errlen, "could not listen on %s: %s", hostport, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return NULL;
    }
    freeaddrinfo(res);
    if (port_out) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    }
    s_listener_t *l = fb_calloc(1, sizeof(*l));
    l->actx = actx;
    l->conns = conns;
    uv_tcp_init(loop, &l->tcp);
    if (uv_tcp_open(&l->tcp, fd) != 0 || uv_listen((uv_stream_t *)&l->tcp, 4096, s_on_accept) != 0) {
        snprintf(err, errlen, "could not listen on %s", hostport);
        uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
        return NULL;
    }
    return &l->tcp;
}

void fb_http_close(uv_tcp_t **listener_p)
{
    FB_ASSERT(listener_p);
    if (*listener_p) {
        uv_close((uv_handle_t *)*listener_p, (uv_close_cb)free);
        *listener_p = NULL;
    }
}

SSL_CTX *fb_http_tls_new(const char *cert_file, const char *key_file, bool http2, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    FB_ASSERT(ctx);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errlen, "could not load the TLS certificate %s: %s", cert_file,
                 ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "could not load the TLS key %s (or it does not match the certificate)",
                 key_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    static const h2o_iovec_t http1_only[] = {{H2O_STRLIT("http/1.1")}, {NULL, 0}};
    h2o_ssl_register_alpn_protocols(ctx, http2 ? h2o_http2_alpn_protocols : http1_only);
    return ctx;
}

void fb_http_send(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len)
{
    static const char *reasons[] = {[200] = "OK",
                                    [201] = "Created",
                                    [400] = "Bad Request",
                                    [401] = "Unauthorized",
                                    [402] = "Payment Required",
                                    [403] = "Forbidden",
                                    [404] = "Not Found",
                                    [405] = "Method Not Allowed",
                                    [413] = "Payload Too Large",
                                    [429] = "Too Many Requests",
                                    [500] = "Internal Server Error",
                                    [501] = "Not Implemented",
                                    [502] = "Bad Gateway",
                                    [503] = "Service Unavailable",
                                    [504] = "Gateway Timeout"};
    req->res.status = status;
    req->res.reason = status >= 0 && (size_t)status < FB_ARRAY_SIZE(reasons) && reasons[status]
                          ? reasons[status]
                          : "Status";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
                   strlen(content_type));
    char *copy = h2o_mem_alloc_pool(&req->pool, len + 1);
    memcpy(copy, body, len);
    h2o_send_inline(req, copy, len);
}

h2o_iovec_t fb_http_header(h2o_req_t *req, const char *name)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, strlen(name), -1);
    if (i < 0)
        return h2o_iovec_init(NULL, 0);
    return req->headers.entries[i].value;
}

h2o_iovec_t fb_http_header_all(h2o_req_t *req, const char *name)
{
    size_t nl = strlen(name), total = 0, count = 0;
    h2o_iovec_t one = h2o_iovec_init(NULL, 0);
    for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, name, nl, i)) >= 0;) {
        one = req->headers.entries[i].value;
        total += one.len + 1;
        count++;
    }
    if (count <= 1)
        return one;
    char *joined = h2o_mem_alloc_pool(&req->pool, total);
    size_t at = 0;
    for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, name, nl, i)) >= 0;) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (at)
            joined[at++] = ',';
        memcpy(joined + at, v.base, v.len);
        at += v.len;
    }
    return h2o_iovec_init(joined, at);
}

void fb_http_set_header(h2o_req_t *req, const char *name, const char *value, size_t value_len)
{
    size_t nl = strlen(name);
    char *n = h2o_mem_alloc_pool(&req->pool, nl);
    memcpy(n, name, nl);
    char *v = h2o_mem_alloc_pool(&req->pool, value_len + 1);
    memcpy(v, value, value_len);
    h2o_add_header_by_str(&req->pool, &req->res.headers, n, nl, 1, NULL, v, value_len);
}

/* The pool side of a guard: disposed when h2o clears the request's pool. */
typedef struct {
    fb_http_guard_t *guard;
} s_guard_link_t;

static void s_on_pool_dispose(void *p)
{
    s_guard_link_t *link = p;
    fb_http_guard_t *g = link->guard;
    g->req = NULL;
    if (--g->refs == 0)
        free(g);
}

fb_http_guard_t *fb_http_guard_new(h2o_req_t *req)
{
    fb_http_guard_t *g = fb_calloc(1, sizeof(*g));
    g->req = req;
    g->refs = 2;
    s_guard_link_t *link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), s_on_pool_dispose);
    link->guard = g;
    return g;
}

void fb_http_guard_release(fb_http_guard_t **guard_p)
{
    FB_ASSERT(guard_p && *guard_p);
    fb_http_guard_t *g = *guard_p;
    if (--g->refs == 0)
        free(g);
    *guard_p = NULL;
}
