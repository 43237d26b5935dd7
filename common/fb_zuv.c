/* fb_zuv - libuv integration of ZeroMQ sockets through ZMQ_FD and ZMQ_EVENTS. */
#include "fb_zuv.h"
#include "fb_util.h"

#include <stdlib.h>
#include <zmq.h>

#define ROUNDS_PER_WAKE 64

struct fb_zuv_t {
    uv_poll_t poll;       /* readability of ZMQ_FD */
    uv_prepare_t prepare; /* re-check before the loop sleeps */
    uv_idle_t idle;       /* keeps the loop awake while messages remain */
    void *zsock;          /* the watched socket, not owned */
    fb_zuv_fn *on_readable;
    void *arg;
    int open_handles; /* handles still to be closed by libuv */
    bool touched;     /* used since its last check: the fd's signal may be gone */
    bool dead;        /* destroy was called */
};

static bool s_readable(fb_zuv_t *self)
{
    int events = 0;
    size_t len = sizeof(events);
    if (zmq_getsockopt(self->zsock, ZMQ_EVENTS, &events, &len) != 0)
        return false;
    return (events & ZMQ_POLLIN) != 0;
}

static void s_on_idle(uv_idle_t *h);

static void s_check(fb_zuv_t *self)
{
    int rounds = 0;
    self->touched = false;
    while (!self->dead && s_readable(self)) {
        if (rounds++ == ROUNDS_PER_WAKE) {
            uv_idle_start(&self->idle, s_on_idle);
            return;
        }
        self->on_readable(self->arg);
    }
    if (!self->dead)
        uv_idle_stop(&self->idle);
}

static void s_on_poll(uv_poll_t *h, int status, int events)
{
    FB_UNUSED(status);
    FB_UNUSED(events);
    s_check(h->data);
}

static void s_on_prepare(uv_prepare_t *h)
{
    fb_zuv_t *self = h->data;
    if (self->touched)
        s_check(self);
}

static void s_on_idle(uv_idle_t *h)
{
    s_check(h->data);
}

fb_zuv_t *fb_zuv_new(uv_loop_t *loop, void *zsock, fb_zuv_fn *on_readable, void *arg)
{
    fb_zuv_t *self = fb_calloc(1, sizeof(*self));
    self->zsock = zsock;
    self->on_readable = on_readable;
    self->arg = arg;
    self->touched = true;
    int fd = -1;
    size_t len = sizeof(fd);
    FB_ASSERT(zmq_getsockopt(zsock, ZMQ_FD, &fd, &len) == 0);
    FB_ASSERT(uv_poll_init(loop, &self->poll, fd) == 0);
    FB_ASSERT(uv_prepare_init(loop, &self->prepare) == 0);
    FB_ASSERT(uv_idle_init(loop, &self->idle) == 0);
    self->poll.data = self->prepare.data = self->idle.data = self;
    self->open_handles = 3;
    uv_poll_start(&self->poll, UV_READABLE, s_on_poll);
    uv_prepare_start(&self->prepare, s_on_prepare);
    /* the prepare handle must not keep the loop alive on its own */
    uv_unref((uv_handle_t *)&self->prepare);
    return self;
}

void fb_zuv_touch(fb_zuv_t *self)
{
    if (self)
        self->touched = true;
}

static void s_on_close(uv_handle_t *h)
{
    fb_zuv_t *self = h->data;
    if (--self->open_handles == 0)
        free(self);
}

void fb_zuv_destroy(fb_zuv_t **self_p)
{
    FB_ASSERT(self_p);
    fb_zuv_t *self = *self_p;
    if (!self)
        return;
    self->dead = true;
    uv_close((uv_handle_t *)&self->poll, s_on_close);
    uv_close((uv_handle_t *)&self->prepare, s_on_close);
    uv_close((uv_handle_t *)&self->idle, s_on_close);
    *self_p = NULL;
}
