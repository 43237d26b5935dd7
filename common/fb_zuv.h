/* fb_zuv - a ZeroMQ socket watched by a libuv loop.
 *
 * ZMQ_FD only says "the socket's state may have changed", edge-style, and any
 * call on the socket (a send, a connect) can consume that signal. So the socket
 * is checked (ZMQ_EVENTS) when its fd turns readable, and again before the loop
 * next polls if it was touched since (its owner calls fb_zuv_touch after every
 * other call on it: idle sockets cost nothing per loop turn); while messages
 * remain after a burst, an idle handle keeps the loop from sleeping.
 * on_readable must receive with ZMQ_DONTWAIT until EAGAIN or until it has taken
 * a fair share (it is called again at once if messages remain). */
#ifndef FB_ZUV_H
#define FB_ZUV_H

#include <stdbool.h>
#include <uv.h>

typedef struct fb_zuv_t fb_zuv_t;
typedef void(fb_zuv_fn)(void *arg);

/* fb_zuv_new - watch zsock (a raw libzmq socket handle) on loop.
 * Returns the watcher (caller owns it); aborts if the fd cannot be watched. */
fb_zuv_t *fb_zuv_new(uv_loop_t *loop, void *zsock, fb_zuv_fn *on_readable, void *arg);

/* fb_zuv_touch - the socket was used outside on_readable (a send, a connect,
 * an option): check it before the loop next sleeps. NULL is ignored. */
void fb_zuv_touch(fb_zuv_t *self);

/* fb_zuv_destroy - stop watching; memory is released once libuv has closed the
 * handles (the loop must run once more). The socket itself is not closed.
 * Nulls *self_p. */
void fb_zuv_destroy(fb_zuv_t **self_p);

#endif
