/* fb_curlm - libcurl multi on a libuv loop.
 *
 * CURLMOPT_SOCKETFUNCTION tells which sockets to watch: each gets a uv_poll_t,
 * attached to the socket with curl_multi_assign. CURLMOPT_TIMERFUNCTION asks
 * for one wake-up: a uv_timer_t. Both answer with curl_multi_socket_action;
 * finished transfers are collected with curl_multi_info_read.
 *
 * A kept-alive connection is handed back (CURL_POLL_REMOVE) after every
 * transfer and reported again by the next one; its uv_poll_t stays (found
 * again by fd), and is closed when libcurl closes the socket
 * (CURLOPT_CLOSESOCKETFUNCTION), which saves setting up a watcher per call.
 * That holds only for the connections' sockets, which libcurl opens through
 * CURLOPT_OPENSOCKETFUNCTION (so they are known). Any other socket it reports
 * (the socket pair its resolver thread signals through, when a URL names a
 * host) it closes itself, without the callback, right after CURL_POLL_REMOVE:
 * its watcher is closed at that REMOVE, while the fd is still that socket. A
 * watcher left on a closed fd would outlive it in libuv: the next socket
 * given the same fd number (a client's connection accepted by the server on
 * this loop) would have its first input handed to that watcher, whose stop
 * takes the fd out of epoll, and the connection would never be read.
 * Between transfers it keeps watching for input, which is what the next
 * transfer asks for: libuv's uv_poll_start re-registers the fd with epoll on
 * every call (two epoll_ctl), so a watcher is only restarted when the events
 * asked for change. An idle connection that turns readable (the provider
 * closed it) stops being watched until it is reported again; libcurl finds
 * it dead when it next looks for a connection to reuse. */
#include "fb_curlm.h"
#include "fb_util.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One transfer in flight, reached through the easy handle's CURLOPT_PRIVATE. */
typedef struct s_xfer {
    struct s_xfer *prev, *next;
    CURL *easy;
    fb_curlm_done_fn *done;
    void *arg;
} s_xfer_t;

typedef struct s_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct fb_curlm_t *owner;
    struct s_sock *prev, *next; /* every one not yet freed */
    int events;                 /* UV_READABLE | UV_WRITABLE being watched, 0 when stopped */
    bool assigned;              /* libcurl holds it (curl_multi_assign) until CURL_POLL_REMOVE */
    bool conn;                  /* a connection's socket: closed through s_on_close_socket */
    bool gone;                  /* libcurl closed the fd; the handle is closing or closed */
    bool handle_closed;
} s_sock_t;

struct fb_curlm_t {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    s_xfer_t *xfers;                           /* transfers in flight */
    s_sock_t *socks;                           /* sockets with a watcher, busy or idle */
    s_sock_t **byfd;                           /* the connections' ones, by fd */
    bool *opened;                              /* by fd: a connection's socket libcurl has open */
    CURL *pool[FB_CURLM_KINDS][FB_CURLM_POOL]; /* easy handles given back, by kind */
    size_t pooled[FB_CURLM_KINDS];
    size_t nbyfd;
    size_t running;
    int closing; /* handles still closing after destroy */
    bool dead;
};

static pthread_once_t s_curl_once = PTHREAD_ONCE_INIT;

static void s_curl_init(void)
{
    FB_ASSERT(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
}

static void s_check_done(fb_curlm_t *self)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(self->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *easy = m->easy_handle;
        CURLcode result = m->data.result;
        s_xfer_t *x = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
        FB_ASSERT(x);
        fb_curlm_done_fn *done = x->done;
        void *arg = x->arg;
        fb_curlm_remove(self, easy);
        done(arg, easy, result);
    }
}

/* Watches s for events (0: stops), touching libuv only on a change. */
static void s_watch(s_sock_t *s, int events);

static void s_on_poll(uv_poll_t *h, int status, int events)
{
    s_sock_t *s = h->data;
    if (!s->assigned) {
        /* idle between transfers and readable: closed by the peer (or sent
         * something unasked); not watched until a transfer reports it */
        if (status < 0)
            s->events = 0; /* libuv stopped it already */
        s_watch(s, 0);
        return;
    }
    int flags = 0;
    if (status < 0) {
        /* libuv stopped watching (POLLERR): a later request re-arms it */
        s->events = 0;
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    fb_curlm_t *self = s->owner;
    int running;
    curl_multi_socket_action(self->multi, s->fd, flags, &running);
    s_check_done(self);
}

static void s_free_if_closed(fb_curlm_t *self)
{
    if (self->dead && self->closing == 0) {
        free(self->byfd);
        free(self->opened);
        free(self);
    }
}

/* Frees a socket's record once its handle is closed and libcurl let go of it. */
static void s_sock_maybe_free(fb_curlm_t *self, s_sock_t *s)
{
    if (!s->handle_closed || s->assigned)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        self->socks = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s);
}

static void s_sock_closed(uv_handle_t *h)
{
    s_sock_t *s = h->data;
    fb_curlm_t *self = s->owner;
    s->handle_closed = true;
    s_sock_maybe_free(self, s);
    self->closing--;
    s_free_if_closed(self);
}

/* The fd is about to be closed: libuv lets go of it first (uv_close stops
 * watching at once, while the fd is still this socket's). */
static void s_sock_gone(fb_curlm_t *self, s_sock_t *s)
{
    if (self->byfd[s->fd] == s)
        self->byfd[s->fd] = NULL;
    s->gone = true;
    self->closing++;
    uv_close((uv_handle_t *)&s->poll, s_sock_closed);
}

/* Makes room in the by-fd tables for fd. */
static void s_fd_room(fb_curlm_t *self, curl_socket_t fd)
{
    if ((size_t)fd < self->nbyfd)
        return;
    size_t n = self->nbyfd ? self->nbyfd : 64;
    while (n <= (size_t)fd)
        n *= 2;
    self->byfd = fb_realloc(self->byfd, n * sizeof(*self->byfd));
    memset(self->byfd + self->nbyfd, 0, (n - self->nbyfd) * sizeof(*self->byfd));
    self->opened = fb_realloc(self->opened, n * sizeof(*self->opened));
    memset(self->opened + self->nbyfd, 0, (n - self->nbyfd) * sizeof(*self->opened));
    self->nbyfd = n;
}

static s_sock_t *s_sock_new(fb_curlm_t *self, curl_socket_t fd)
{
    FB_ASSERT(fd >= 0);
    s_fd_room(self, fd);
    s_sock_t *s = fb_calloc(1, sizeof(*s));
    s->fd = fd;
    s->owner = self;
    s->conn = self->opened[fd];
    FB_ASSERT(uv_poll_init_socket(self->loop, &s->poll, fd) == 0);
    s->poll.data = s;
    s->next = self->socks;
    if (s->next)
        s->next->prev = s;
    self->socks = s;
    if (s->conn)
        self->byfd[fd] = s;
    return s;
}

static void s_watch(s_sock_t *s, int events)
{
    if (events == s->events)
        return;
    s->events = events;
    if (events)
        uv_poll_start(&s->poll, events, s_on_poll);
    else
        uv_poll_stop(&s->poll);
}

static int s_on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    FB_UNUSED(easy);
    fb_curlm_t *self = userp;
    s_sock_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        /* a connection idle between transfers (watched for input, as the
         * next transfer will ask), or closed; any other socket is about to be
         * closed by libcurl: its watcher goes now */
        if (s) {
            s->assigned = false;
            if (s->gone)
                s_sock_maybe_free(self, s);
            else if (!s->conn)
                s_sock_gone(self, s);
            else
                s_watch(s, self->dead ? 0 : UV_READABLE);
        }
        return 0;
    }
    if (self->dead)
        return 0;
    if (s && s->gone) {
        /* a record of an fd closed earlier: this is another socket */
        s->assigned = false;
        s_sock_maybe_free(self, s);
        s = NULL;
    }
    if (!s) {
        s = (size_t)fd < self->nbyfd && self->opened[fd] ? self->byfd[fd] : NULL;
        if (!s)
            s = s_sock_new(self, fd);
        s->assigned = true;
        curl_multi_assign(self->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    s_watch(s, events);
    return 0;
}

/* libcurl opens a connection's socket (CURLOPT_OPENSOCKETFUNCTION): known as
 * one until s_on_close_socket. A record still kept for its fd belongs to a
 * socket that was closed unseen: dropped now, while nothing watches the fd. */
static curl_socket_t s_on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
    FB_UNUSED(purpose);
    fb_curlm_t *self = clientp;
    int fd = socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    s_fd_room(self, fd);
    if (self->byfd[fd])
        s_sock_gone(self, self->byfd[fd]);
    self->opened[fd] = true;
    return fd;
}

/* libcurl closes a connection's socket (CURLOPT_CLOSESOCKETFUNCTION). */
static int s_on_close_socket(void *clientp, curl_socket_t fd)
{
    fb_curlm_t *self = clientp;
    if (fd >= 0 && (size_t)fd < self->nbyfd) {
        if (self->byfd[fd])
            s_sock_gone(self, self->byfd[fd]);
        self->opened[fd] = false;
    }
    return close(fd);
}

static void s_on_timer(uv_timer_t *t)
{
    fb_curlm_t *self = t->data;
    int running;
    curl_multi_socket_action(self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s_check_done(self);
}

static int s_on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    FB_UNUSED(multi);
    fb_curlm_t *self = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&self->timer);
    else
        uv_timer_start(&self->timer, s_on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

fb_curlm_t *fb_curlm_new(uv_loop_t *loop)
{
    pthread_once(&s_curl_once, s_curl_init);
    fb_curlm_t *self = fb_calloc(1, sizeof(*self));
    self->loop = loop;
    self->multi = curl_multi_init();
    FB_ASSERT(self->multi);
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETFUNCTION, s_on_socket);
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERFUNCTION, s_on_curl_timer);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERDATA, self);
    uv_timer_init(loop, &self->timer);
    self->timer.data = self;
    return self;
}

void fb_curlm_keep(fb_curlm_t *self, size_t n)
{
    FB_ASSERT(self && n > 0 && n <= LONG_MAX);
    curl_multi_setopt(self->multi, CURLMOPT_MAXCONNECTS, (long)n);
}

void fb_curlm_max_connections(fb_curlm_t *self, long n)
{
    FB_ASSERT(self && n > 0);
    curl_multi_setopt(self->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, n);
}

CURL *fb_curlm_easy(fb_curlm_t *self, int kind, bool *configured)
{
    FB_ASSERT(kind >= 0 && kind < FB_CURLM_KINDS && configured);
    *configured = self->pooled[kind] > 0;
    CURL *e = *configured ? self->pool[kind][--self->pooled[kind]] : curl_easy_init();
    FB_ASSERT(e);
    return e;
}

void fb_curlm_recycle(fb_curlm_t *self, CURL *easy, int kind)
{
    FB_ASSERT(kind >= 0 && kind < FB_CURLM_KINDS);
    if (!easy)
        return;
    if (self->dead || self->pooled[kind] == FB_CURLM_POOL) {
        curl_easy_cleanup(easy);
        return;
    }
    self->pool[kind][self->pooled[kind]++] = easy;
}

void fb_curlm_add(fb_curlm_t *self, CURL *easy, fb_curlm_done_fn *done, void *arg)
{
    FB_ASSERT(self && !self->dead && easy && done);
    s_xfer_t *x = fb_calloc(1, sizeof(*x));
    x->easy = easy;
    x->done = done;
    x->arg = arg;
    x->next = self->xfers;
    if (x->next)
        x->next->prev = x;
    self->xfers = x;
    self->running++;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, s_on_open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, self);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, s_on_close_socket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, self);
    FB_ASSERT(curl_multi_add_handle(self->multi, easy) == CURLM_OK);
}

void fb_curlm_remove(fb_curlm_t *self, CURL *easy)
{
    s_xfer_t *x = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
    FB_ASSERT(x && x->easy == easy);
    curl_multi_remove_handle(self->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    if (x->prev)
        x->prev->next = x->next;
    else
        self->xfers = x->next;
    if (x->next)
        x->next->prev = x->prev;
    self->running--;
    free(x);
}

size_t fb_curlm_running(const fb_curlm_t *self)
{
    return self->running;
}

static void s_timer_closed(uv_handle_t *h)
{
    fb_curlm_t *self = h->data;
    self->closing--;
    s_free_if_closed(self);
}

void fb_curlm_destroy(fb_curlm_t **self_p)
{
    FB_ASSERT(self_p);
    fb_curlm_t *self = *self_p;
    if (!self)
        return;
    self->dead = true;
    while (self->xfers)
        fb_curlm_remove(self, self->xfers->easy);
    for (s_sock_t *s = self->socks, *next; s; s = next) {
        next = s->next;
        /* detached first, so that curl_multi_cleanup cannot hand it back to us;
         * the sockets it then closes are no longer watched */
        if (s->assigned && !s->gone)
            curl_multi_assign(self->multi, s->fd, NULL);
        s->assigned = false;
        if (!s->gone)
            s_sock_gone(self, s);
        else
            s_sock_maybe_free(self, s);
    }
    curl_multi_cleanup(self->multi);
    for (int k = 0; k < FB_CURLM_KINDS; k++)
        while (self->pooled[k])
            curl_easy_cleanup(self->pool[k][--self->pooled[k]]);
    self->closing++;
    uv_close((uv_handle_t *)&self->timer, s_timer_closed);
    *self_p = NULL;
}

/* --- self-test ------------------------------------------------------------------------ */

typedef struct {
    uv_tcp_t conn;
    int fd;   /* the accepted connection's */
    int seen; /* bytes read from it */
    char buf[16];
} s_test_server_t;

static void s_test_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
    FB_UNUSED(size);
    s_test_server_t *t = h->data;
    *buf = uv_buf_init(t->buf, sizeof(t->buf));
}

static void s_test_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    FB_UNUSED(buf);
    s_test_server_t *t = st->data;
    if (n > 0)
        t->seen += (int)n;
}

static void s_test_accept(uv_stream_t *listener, int status)
{
    s_test_server_t *t = listener->data;
    FB_ASSERT(status == 0);
    uv_tcp_init(listener->loop, &t->conn);
    t->conn.data = t;
    FB_ASSERT(uv_accept(listener, (uv_stream_t *)&t->conn) == 0);
    uv_os_fd_t fd;
    FB_ASSERT(uv_fileno((uv_handle_t *)&t->conn, &fd) == 0);
    t->fd = fd;
    FB_ASSERT(uv_read_start((uv_stream_t *)&t->conn, s_test_alloc, s_test_read) == 0);
}

/* After a socket libcurl reported is handed back and closed, the connection a
 * server on the same loop accepts next (given the lowest free fd: that one)
 * must be read: no watcher of ours is left on the fd. Round 0: a socket
 * libcurl opened without the open callback (its resolver's socket pair),
 * closed without the close callback right after CURL_POLL_REMOVE. Round 1: a
 * connection's socket, kept watched while idle, closed through the close
 * callback. */
int fb_curlm_test(bool verbose)
{
    FB_UNUSED(verbose);
    uv_loop_t loop;
    FB_ASSERT(uv_loop_init(&loop) == 0);
    fb_curlm_t *m = fb_curlm_new(&loop);
    uv_tcp_t listener;
    s_test_server_t t = {.fd = -1};
    struct sockaddr_in addr;
    FB_ASSERT(uv_ip4_addr("127.0.0.1", 0, &addr) == 0);
    uv_tcp_init(&loop, &listener);
    listener.data = &t;
    FB_ASSERT(uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0) == 0);
    FB_ASSERT(uv_listen((uv_stream_t *)&listener, 8, s_test_accept) == 0);
    int alen = sizeof(addr);
    FB_ASSERT(uv_tcp_getsockname(&listener, (struct sockaddr *)&addr, &alen) == 0);
    for (int round = 0; round < 2; round++) {
        int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* below the fds to come */
        FB_ASSERT(client >= 0);
        int pair[2] = {-1, -1};
        curl_socket_t fd;
        if (round == 0) {
            FB_ASSERT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
            fd = pair[0];
        } else {
            struct curl_sockaddr a = {.family = AF_INET, .socktype = SOCK_STREAM, .protocol = 0};
            fd = s_on_open_socket(m, CURLSOCKTYPE_IPCXN, &a);
            FB_ASSERT(fd >= 0 && m->opened[fd]);
        }
        FB_ASSERT(s_on_socket(NULL, fd, CURL_POLL_IN, m, NULL) == 0);
        s_sock_t *s = m->socks;
        FB_ASSERT(s && s->fd == fd && s->conn == (round == 1) && s->events == UV_READABLE);
        uv_run(&loop, UV_RUN_NOWAIT); /* registered with epoll */
        FB_ASSERT(s_on_socket(NULL, fd, CURL_POLL_REMOVE, m, s) == 0);
        if (round == 0) {
            close(pair[0]);
            close(pair[1]);
        } else {
            FB_ASSERT(!s->gone && s->events == UV_READABLE); /* kept while idle */
            FB_ASSERT(s_on_close_socket(m, fd) == 0);
            FB_ASSERT(s->gone && !m->opened[fd]);
        }
        /* a client connects and sends a byte: accepted on the fd just freed */
        t.fd = -1;
        t.seen = 0;
        FB_ASSERT(connect(client, (const struct sockaddr *)&addr, sizeof(addr)) == 0);
        FB_ASSERT(write(client, "x", 1) == 1);
        for (int i = 0; i < 200 && t.seen == 0; i++) {
            uv_run(&loop, UV_RUN_NOWAIT);
            if (t.seen == 0)
                usleep(1000);
        }
        if (t.fd != fd || t.seen != 1) {
            fprintf(stderr,
                    "round %d: the connection accepted on fd %d (the freed one: %d) read %d bytes of 1\n",
                    round, t.fd, fd, t.seen);
            return 1;
        }
        uv_close((uv_handle_t *)&t.conn, NULL);
        uv_run(&loop, UV_RUN_NOWAIT);
        close(client);
    }
    uv_close((uv_handle_t *)&listener, NULL);
    fb_curlm_destroy(&m);
    while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
        ;
    FB_ASSERT(uv_loop_close(&loop) == 0);
    return 0;
}
