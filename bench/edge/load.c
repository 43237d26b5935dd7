/* farebox-bench-http - open-loop HTTP/1.1 load for bench/run edge: requests
 * start on a fixed schedule (RATE per second), whatever the answers do, and
 * each one's latency runs from its scheduled start to its last byte, so that
 * time spent waiting for a free connection counts too (a closed-loop tool
 * like wrk would send less when the server slows down and hide that wait).
 *
 *   farebox-bench-http URL BODY_FILE RATE SECONDS CONNECTIONS [HEADER...]
 *
 * POSTs BODY_FILE to URL (http://host:port/path) over at most CONNECTIONS
 * keep-alive connections. The first second is a warm-up at the same rate
 * whose calls are not counted. Prints one JSON line: calls (answered 2xx),
 * errors, calls_per_s, p50_us, p99_us, p999_us and max_us.
 *
 * It shares the machine with what it measures, so it is written to cost
 * little: one thread on epoll, the request's bytes built once, answers read
 * with one parse of their head (Content-Length or chunked). Its libcurl
 * predecessor took ~40 us of CPU a call, more than nginx's proxying. */
#include "fb_util.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WARMUP_US  1000000
#define DRAIN_US   10000000 /* the longest wait for calls still running at the end */
#define TIMEOUT_US 30000000 /* a call unanswered this long is an error */
#define ANSWER_MAX (1 << 20)
#define EVENTS     256
/* Calls due are started together on a 1 ms tick, like the libcurl version's:
 * spread evenly instead (one wake-up each), the mock alone cost ~80 % more
 * CPU a call at 8,000 calls/s on the benchmark machine, and so did this tool. */
#define TICK_US 1000

typedef struct {
    int fd;
    bool connecting, busy;
    int64_t due_us; /* the call it carries: its scheduled start */
    size_t sent;    /* bytes of the request written */
    char *buf;
    size_t len, cap;
} s_conn_t;

typedef struct {
    int ep;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *req;
    size_t req_len;
    double rate;
    int64_t t0_us, end_us;
    uint64_t started; /* calls due so far (the schedule's index) */
    int64_t *backlog; /* due times of calls waiting for a connection (a ring) */
    size_t back_head, back_count, back_cap;
    s_conn_t *conns;
    size_t nconns, open;
    uint64_t running, ok, errors;
    int64_t *lat;
    size_t count, cap;
    char first_error[256];
} s_load_t;

static void s_error(s_load_t *l, int64_t due_us, const char *what)
{
    if (due_us < l->t0_us + WARMUP_US)
        return;
    if (l->errors++ == 0)
        snprintf(l->first_error, sizeof(l->first_error), "%s", what);
}

static void s_close(s_load_t *l, s_conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        l->open--;
    }
    c->fd = -1;
    c->connecting = c->busy = false;
    c->len = 0;
}

static void s_watch(s_load_t *l, s_conn_t *c, int op, bool out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(l->ep, op, c->fd, &ev) != 0) {
        perror("epoll_ctl");
        exit(1);
    }
}

static void s_finish(s_load_t *l, s_conn_t *c, bool keep);

static void s_send(s_load_t *l, s_conn_t *c)
{
    while (c->sent < l->req_len) {
        ssize_t n = send(c->fd, l->req + c->sent, l->req_len - c->sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            s_watch(l, c, EPOLL_CTL_MOD, true);
            return;
        }
        if (n <= 0) {
            s_error(l, c->due_us, "send failed");
            s_finish(l, c, false);
            return;
        }
        c->sent += (size_t)n;
    }
}

/* Puts the call due at due_us on c (connected, or being connected). */
static void s_assign(s_load_t *l, s_conn_t *c, int64_t due_us)
{
    c->busy = true;
    c->due_us = due_us;
    c->sent = 0;
    c->len = 0;
    if (!c->connecting)
        s_send(l, c);
}

static s_conn_t *s_connect(s_load_t *l, s_conn_t *c)
{
    c->fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(1);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    l->open++;
    c->connecting = true;
    if (connect(c->fd, (struct sockaddr *)&l->addr, l->addrlen) == 0)
        c->connecting = false;
    else if (errno != EINPROGRESS) {
        s_close(l, c);
        return NULL;
    }
    s_watch(l, c, EPOLL_CTL_ADD, c->connecting);
    return c;
}

static void s_start(s_load_t *l, int64_t due_us)
{
    l->running++;
    s_conn_t *idle = NULL, *closed = NULL;
    for (size_t i = 0; i < l->nconns && !idle; i++) {
        s_conn_t *c = &l->conns[i];
        if (c->fd >= 0 && !c->busy)
            idle = c;
        else if (c->fd < 0 && !closed)
            closed = c;
    }
    if (!idle && closed)
        idle = s_connect(l, closed);
    if (!idle && !closed && l->back_count < l->back_cap) {
        l->backlog[(l->back_head + l->back_count++) % l->back_cap] = due_us;
        return;
    }
    if (!idle) {
        l->running--;
        s_error(l, due_us, closed ? "connect failed" : "backlog full");
        return;
    }
    s_assign(l, idle, due_us);
}

/* The call on c is over (answered, or failed): the next waiting one takes c. */
static void s_finish(s_load_t *l, s_conn_t *c, bool keep)
{
    c->busy = false;
    l->running--;
    if (!keep)
        s_close(l, c);
    if (l->back_count == 0)
        return;
    int64_t due = l->backlog[l->back_head];
    l->back_head = (l->back_head + 1) % l->back_cap;
    l->back_count--;
    l->running--; /* s_start counts it again */
    s_start(l, due);
}

/* The length of a whole chunked body at p (n bytes), or 0 if not all here. */
static size_t s_chunked(const char *p, size_t n)
{
    size_t at = 0;
    for (;;) {
        char *end;
        const char *line = p + at;
        const char *nl = memchr(line, '\n', n - at);
        if (!nl)
            return 0;
        unsigned long size = strtoul(line, &end, 16);
        at = (size_t)(nl - p) + 1;
        if (size == 0) { /* no trailers sent by the servers measured */
            return n - at >= 2 ? at + 2 : 0;
        }
        if (n - at < size + 2)
            return 0;
        at += size + 2;
    }
}

/* Reads what c's server sent; once the answer is whole, the call is over. */
static void s_read(s_load_t *l, s_conn_t *c)
{
    for (;;) {
        if (c->cap - c->len < 4096) {
            if (c->cap >= ANSWER_MAX) {
                s_error(l, c->due_us, "answer too large");
                s_finish(l, c, false);
                return;
            }
            c->cap = c->cap ? c->cap * 2 : 8192;
            c->buf = fb_realloc(c->buf, c->cap);
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            if (c->busy) {
                s_error(l, c->due_us, "connection closed before the answer");
                s_finish(l, c, false);
            } else {
                s_close(l, c);
            }
            return;
        }
        c->len += (size_t)n;
        if ((size_t)n < c->cap - c->len) /* read all there was: no second recv to hear EAGAIN */
            break;
    }
    if (!c->busy) /* nothing asked: stray bytes */
        return;
    c->buf[c->len] = '\0';
    char *head_end = strstr(c->buf, "\r\n\r\n");
    if (!head_end)
        return;
    size_t head = (size_t)(head_end - c->buf) + 4;
    int status = c->len > 12 ? atoi(c->buf + 9) : 0;
    long length = -1;
    bool chunked = false, close_after = false;
    for (char *h = strstr(c->buf, "\r\n") + 2; h < head_end; h = strstr(h, "\r\n") + 2) {
        if (strncasecmp(h, "content-length:", 15) == 0)
            length = atol(h + 15);
        else if (strncasecmp(h, "transfer-encoding:", 18) == 0) {
            const char *word = strstr(h, "chunked");
            chunked = word && word < strstr(h, "\r\n");
        } else if (strncasecmp(h, "connection:", 11) == 0 && strncasecmp(h + 11, " close", 6) == 0)
            close_after = true;
    }
    size_t whole;
    if (chunked) {
        whole = s_chunked(c->buf + head, c->len - head);
        if (whole == 0)
            return;
    } else if (length >= 0) {
        if (c->len - head < (size_t)length)
            return;
        whole = (size_t)length;
    } else {
        s_error(l, c->due_us, "an answer without a length");
        s_finish(l, c, false);
        return;
    }
    if (c->due_us >= l->t0_us + WARMUP_US) {
        if (status >= 200 && status <= 299) {
            l->ok++;
            if (l->count == l->cap) {
                l->cap = l->cap ? l->cap * 2 : 65536;
                l->lat = fb_realloc(l->lat, l->cap * sizeof(*l->lat));
            }
            l->lat[l->count++] = fb_mono_us() - c->due_us;
        } else {
            char what[64];
            snprintf(what, sizeof(what), "status %d", status);
            s_error(l, c->due_us, what);
        }
    }
    if (head + whole != c->len)
        close_after = true; /* more than was asked for */
    s_finish(l, c, !close_after);
}

static void s_event(s_load_t *l, s_conn_t *c, uint32_t events)
{
    if (c->connecting) {
        int err = 0;
        socklen_t elen = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
            if (c->busy)
                s_error(l, c->due_us, "connect failed");
            s_finish(l, c, false);
            return;
        }
        c->connecting = false;
        s_watch(l, c, EPOLL_CTL_MOD, false);
        if (c->busy)
            s_send(l, c);
        return;
    }
    if ((events & EPOLLOUT) && c->busy) {
        s_watch(l, c, EPOLL_CTL_MOD, false);
        s_send(l, c);
    }
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        s_read(l, c);
}

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t s_pct(const s_load_t *l, double q)
{
    if (l->count == 0)
        return 0;
    size_t i = (size_t)(q * (double)l->count);
    return l->lat[i < l->count ? i : l->count - 1];
}

static int s_target(s_load_t *l, const char *url, char *host, size_t host_size, const char **path)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *slash = strchr(h, '/');
    *path = slash ? slash : "/";
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hl == 0 || hl >= host_size)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    char name[256];
    const char *port = "80";
    char *colon = strrchr(host, ':');
    snprintf(name, sizeof(name), "%.*s", colon ? (int)(colon - host) : (int)hl, host);
    if (colon)
        port = colon + 1;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(name, port, &hints, &ai) != 0)
        return -1;
    memcpy(&l->addr, ai->ai_addr, ai->ai_addrlen);
    l->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s URL BODY_FILE RATE SECONDS CONNECTIONS [HEADER...]\n", argv[0]);
        return 2;
    }
    s_load_t l = {0};
    char host[300];
    const char *path;
    if (s_target(&l, argv[1], host, sizeof(host), &path) != 0) {
        fprintf(stderr, "URL must be http://host:port/path, reachable: %s\n", argv[1]);
        return 2;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 2;
    }
    char *body = fb_malloc(1 << 20);
    size_t body_len = fread(body, 1, (1 << 20) - 1, f);
    fclose(f);
    l.rate = atof(argv[3]);
    double seconds = atof(argv[4]);
    long conns = atol(argv[5]);
    if (l.rate <= 0 || seconds <= 0 || conns < 1 || conns > 10000) {
        fprintf(stderr, "RATE and SECONDS must be positive, CONNECTIONS 1..10000\n");
        return 2;
    }
    size_t headers = 0;
    for (int i = 6; i < argc; i++)
        headers += strlen(argv[i]) + 2;
    l.req = fb_malloc(strlen(path) + strlen(host) + headers + body_len + 128);
    int n = sprintf(l.req, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n", path, host, body_len);
    for (int i = 6; i < argc; i++)
        n += sprintf(l.req + n, "%s\r\n", argv[i]);
    n += sprintf(l.req + n, "\r\n");
    memcpy(l.req + n, body, body_len);
    l.req_len = (size_t)n + body_len;
    free(body);
    l.nconns = (size_t)conns;
    l.conns = fb_calloc(l.nconns, sizeof(*l.conns));
    for (size_t i = 0; i < l.nconns; i++)
        l.conns[i].fd = -1;
    l.back_cap = (size_t)(l.rate * (seconds + 1)) + 1;
    l.backlog = fb_malloc(l.back_cap * sizeof(*l.backlog));
    l.ep = epoll_create1(EPOLL_CLOEXEC);
    if (l.ep < 0) {
        perror("epoll_create1");
        return 1;
    }
    l.t0_us = fb_mono_us();
    l.end_us = l.t0_us + WARMUP_US + (int64_t)(seconds * 1e6);
    struct epoll_event events[EVENTS];
    for (;;) {
        int64_t now = fb_mono_us();
        int64_t due = l.t0_us + (int64_t)((double)l.started * 1e6 / l.rate);
        while (due <= now && due < l.end_us) {
            l.started++;
            s_start(&l, now);
            due = l.t0_us + (int64_t)((double)l.started * 1e6 / l.rate);
        }
        bool scheduling = due < l.end_us;
        if (!scheduling && (l.running == 0 || now >= l.end_us + DRAIN_US))
            break;
        /* wake at the tick the next call is due by (or to give up on the last ones) */
        int64_t tick = l.t0_us + (due - l.t0_us + TICK_US - 1) / TICK_US * TICK_US;
        int64_t wait_us = scheduling ? (tick > now ? tick - now : 0) : l.end_us + DRAIN_US - now;
        struct timespec ts = {.tv_sec = wait_us / 1000000, .tv_nsec = (wait_us % 1000000) * 1000};
        int got = epoll_pwait2(l.ep, events, EVENTS, &ts, NULL);
        if (got < 0 && errno != EINTR) {
            perror("epoll_pwait2");
            return 1;
        }
        for (int i = 0; i < got; i++)
            s_event(&l, events[i].data.ptr, events[i].events);
        /* a call out longer than the timeout is given up */
        int64_t late = fb_mono_us() - TIMEOUT_US;
        for (size_t i = 0; i < l.nconns; i++) {
            s_conn_t *c = &l.conns[i];
            if (c->busy && c->due_us < late) {
                s_error(&l, c->due_us, "timed out");
                s_finish(&l, c, false);
            }
        }
    }
    qsort(l.lat, l.count, sizeof(*l.lat), s_cmp);
    printf("{\"calls\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"still_running\":%" PRIu64
           ",\"calls_per_s\":%.1f,\"p50_us\":%" PRId64 ",\"p99_us\":%" PRId64 ",\"p999_us\":%" PRId64
           ",\"max_us\":%" PRId64 ",\"first_error\":\"%s\"}\n",
           l.ok, l.errors, l.running, (double)l.ok / seconds, s_pct(&l, 0.5), s_pct(&l, 0.99),
           s_pct(&l, 0.999), l.count ? l.lat[l.count - 1] : 0, l.first_error);
    for (size_t i = 0; i < l.nconns; i++) {
        s_close(&l, &l.conns[i]);
        free(l.conns[i].buf);
    }
    close(l.ep);
    free(l.conns);
    free(l.backlog);
    free(l.lat);
    free(l.req);
    return 0; /* errors and calls still running are in the figures */
}
