/* fb_http - what the HTTP servers (the edge, the mock model) share on top of
 * libh2o's libuv flavour: listeners with SO_REUSEPORT (one per worker thread),
 * TLS contexts with ALPN h2/http1.1, JSON replies, and a guard that tells an
 * asynchronous handler whether its request still exists. */
#ifndef FB_HTTP_H
#define FB_HTTP_H

#include <h2o.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

/* fb_http_check_hostport - fb_config_check_fn for "HOST:PORT" listen
 * addresses (IPv4, [IPv6] or a name; port 0 picks a free port). */
int fb_http_check_hostport(const char *text, char *err, size_t errlen);

/* admit - asked for each accepted connection with its peer's address: a
 * negative answer closes it at once; anything else is a token handed back
 * to left when the connection closes. */
typedef int(fb_http_admit_fn)(void *arg, const struct sockaddr *peer);
typedef void(fb_http_left_fn)(void *arg, const struct sockaddr *peer, int token);

/* The connections a server has open, so that a stop can end idle keep-alive
 * ones (h2o 2.2 has no way to close HTTP/1 connections it is not using), and
 * optionally who may open one. */
typedef struct {
    h2o_linklist_t list; /* open connections */
    size_t count;
    fb_http_admit_fn *admit; /* NULL: every connection is taken */
    fb_http_left_fn *left;
    void *arg;
} fb_http_conns_t;

void fb_http_conns_init(fb_http_conns_t *conns);

/* fb_http_conns_shutdown - shut every open connection down in both
 * directions: h2o reads the end of the stream and closes each connection
 * itself (disposing any request still on it). count drops as they close. */
void fb_http_conns_shutdown(fb_http_conns_t *conns);

/* fb_http_listen - listen on "HOST:PORT" and hand every connection to h2o with
 * actx (which must outlive the listener); connections are tracked in conns
 * when it is not NULL. Returns the listener (caller owns it: close with
 * fb_http_close), or NULL with a reason in err. *port_out gets the bound port
 * when not NULL. */
uv_tcp_t *fb_http_listen(uv_loop_t *loop, h2o_accept_ctx_t *actx, fb_http_conns_t *conns,
                         const char *hostport, int *port_out, char *err, size_t errlen);

/* fb_http_close - stop listening and free the listener. Nulls *listener_p. */
void fb_http_close(uv_tcp_t **listener_p);

/* fb_http_tls_new - a server TLS context from PEM certificate chain and key
 * files, offering h2 (when http2) and http/1.1 by ALPN. Returns NULL with err
 * filled. */
SSL_CTX *fb_http_tls_new(const char *cert_file, const char *key_file, bool http2, char *err, size_t errlen);

/* fb_http_send - send a complete response: status, content type and body (the
 * body is copied into the request's pool). */
void fb_http_send(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len);

/* fb_http_header - the value of a request header (lower-case name), or a
 * {NULL, 0} iovec when absent. */
h2o_iovec_t fb_http_header(h2o_req_t *req, const char *name);
/* fb_http_header_all - every line of header name in order, joined with ','
 * (one list, as RFC 9110 reads a repeated list header); base NULL if absent. */
h2o_iovec_t fb_http_header_all(h2o_req_t *req, const char *name);

/* fb_http_set_header - add a response header; name and value are copied. */
void fb_http_set_header(h2o_req_t *req, const char *name, const char *value, size_t value_len);

/* --- request guard ---------------------------------------------------------
 * An asynchronous handler takes a guard on its request; the guard's req turns
 * NULL when h2o disposes the request (client gone, connection closed), so that
 * a late completion never touches freed memory. The guard itself is freed when
 * both the request is gone and the handler released it. */
typedef struct fb_http_guard_t {
    h2o_req_t *req; /* the request, or NULL once disposed */
    int refs;       /* the pool's reference + the handler's */
} fb_http_guard_t;

fb_http_guard_t *fb_http_guard_new(h2o_req_t *req);
void fb_http_guard_release(fb_http_guard_t **guard_p);

#endif
