/* fb_curlm - libcurl's multi interface driven by a libuv loop: libcurl says
 * which sockets to watch (a uv_poll_t each) and when to wake it (one
 * uv_timer_t); transfers run side by side on the loop and never block it.
 * Shared by the chain JSON-RPC client and the edge's upstream calls.
 *
 * A transfer is an easy handle the caller configured; fb_curlm_add starts it
 * and its done callback runs once, from the loop, when it ends. The easy
 * handle's CURLOPT_PRIVATE belongs to this module. */
#ifndef FB_CURLM_H
#define FB_CURLM_H

#include <curl/curl.h>
#include <stdbool.h>
#include <uv.h>

typedef struct fb_curlm_t fb_curlm_t;

/* Completion of a transfer: result is libcurl's (CURLE_OK, or why it failed).
 * The easy handle was removed from the multi: the caller owns it again
 * (clean it up, or add it again). */
typedef void(fb_curlm_done_fn)(void *arg, CURL *easy, CURLcode result);

/* fb_curlm_new - a multi on loop (caller owns it). libcurl is initialised
 * once per process here. */
fb_curlm_t *fb_curlm_new(uv_loop_t *loop);

/* fb_curlm_keep - keep up to n idle connections open for reuse (libcurl's
 * default follows the number of transfers running, so a busy multi whose
 * transfers come and go keeps closing and reopening connections). */
void fb_curlm_keep(fb_curlm_t *self, size_t n);

/* fb_curlm_max_connections - open at most n connections at once; transfers
 * beyond wait for one (libcurl's default: no limit). */
void fb_curlm_max_connections(fb_curlm_t *self, long n);

/* fb_curlm_easy - an easy handle for a transfer of the caller's kind (0 ..
 * FB_CURLM_KINDS - 1): one given back earlier for the same kind, with the
 * options it had then (*configured = true), or a new one (false). A caller
 * sets the options all transfers of a kind share when !*configured, and the
 * ones of this transfer every time (libcurl keeps options between
 * transfers; resetting and setting them all again per call cost ~4% of a
 * paid call's instructions). The caller owns it. */
#define FB_CURLM_KINDS 40
CURL *fb_curlm_easy(fb_curlm_t *self, int kind, bool *configured);

/* fb_curlm_recycle - give back an easy handle of kind that is not in the
 * multi (done or removed): kept, options and all, for fb_curlm_easy (up to
 * FB_CURLM_POOL per kind), else cleaned up. */
#define FB_CURLM_POOL 64
void fb_curlm_recycle(fb_curlm_t *self, CURL *easy, int kind);

/* fb_curlm_destroy - transfers still running are removed without their done
 * callback (their owners clean the easy handles); the loop frees the rest
 * once its handles have closed. Nulls *self_p. */
void fb_curlm_destroy(fb_curlm_t **self_p);

/* fb_curlm_add - start easy; done(arg, easy, result) runs exactly once from
 * the loop, never inside this call, unless the transfer is removed first. */
void fb_curlm_add(fb_curlm_t *self, CURL *easy, fb_curlm_done_fn *done, void *arg);

/* fb_curlm_remove - stop easy before it ended; its done callback will not run.
 * Not from inside one of easy's own libcurl callbacks (return an abort value
 * there instead). */
void fb_curlm_remove(fb_curlm_t *self, CURL *easy);

/* fb_curlm_running - transfers added and not yet done or removed. */
size_t fb_curlm_running(const fb_curlm_t *self);

int fb_curlm_test(bool verbose);

#endif
