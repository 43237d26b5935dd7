/* fb_jsonrpc - JSON-RPC 2.0 over HTTP to chain nodes (EVM, Solana), on
 * libcurl's multi interface inside a libuv loop: no call ever blocks the loop.
 *
 * A client has several endpoints for one chain. A call goes to the healthiest
 * endpoint; a transport failure, a timeout, an HTTP error status or an
 * unreadable answer sends it to the next one (failover), and the failing
 * endpoint rests for a while (backoff; an HTTP 429's Retry-After is obeyed)
 * before it is tried again (return). A JSON-RPC error object is the node's
 * answer: it is passed to the caller, not retried elsewhere. */
#ifndef FB_JSONRPC_H
#define FB_JSONRPC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct fb_jsonrpc_t fb_jsonrpc_t;

/* Completion. On success result is the JSON-RPC "result" (borrowed: valid
 * during the callback) and error is NULL. On failure result is NULL and error
 * names it: "rpc_error" (the node answered an error object: code and message
 * given), "unavailable" (no endpoint answered), "timeout". */
typedef void(fb_jsonrpc_done_fn)(void *arg, json_t *result, const char *error, int64_t code,
                                 const char *message);

typedef struct {
    const char *chain;   /* a name for logs: "eip155:84532" */
    const char *urls;    /* comma-separated http(s) URLs, at most 8 */
    uint32_t timeout_ms; /* per attempt */
    uint32_t attempts;   /* attempts of one call over all endpoints */
    size_t max_response; /* largest answer accepted, bytes */
} fb_jsonrpc_config_t;

typedef struct {
    char url[256];
    bool resting; /* in backoff now */
    int check;    /* fb_jsonrpc_check's verdict: 1 passed, -1 failed, 0 none yet (or no check) */
    uint64_t calls, failures;
    int64_t last_latency_us;
} fb_jsonrpc_endpoint_stat_t;

/* fb_jsonrpc_check_urls - fb_config_check_fn for an endpoint list. */
int fb_jsonrpc_check_urls(const char *text, char *err, size_t errlen);

/* fb_jsonrpc_url_shown - url as logs, metrics and status show it: scheme,
 * host and port only, since hosted providers put their API key in the path
 * (or the user part); anything after the host is "/..." and four hex digits
 * of a hash of the whole URL, so that two URLs of one host differ. */
void fb_jsonrpc_url_shown(const char *url, char *out, size_t len);

/* fb_jsonrpc_new - Returns the client (caller owns it) or NULL with err. */
fb_jsonrpc_t *fb_jsonrpc_new(uv_loop_t *loop, const fb_jsonrpc_config_t *config, char *err, size_t errlen);

/* fb_jsonrpc_destroy - pending calls complete with "unavailable" first. */
void fb_jsonrpc_destroy(fb_jsonrpc_t **self_p);

/* fb_jsonrpc_call - call method with params (a JSON array; the reference is
 * stolen). done runs exactly once, from the loop, never inside this call. */
void fb_jsonrpc_call(fb_jsonrpc_t *self, const char *method, json_t *params, fb_jsonrpc_done_fn *done,
                     void *arg);

/* fb_jsonrpc_bar - endpoint i (in the order of the URLs) is never used while
 * barred (it serves another chain, or it was not checked yet); calls made
 * while every endpoint is barred wait until one is not. */
void fb_jsonrpc_bar(fb_jsonrpc_t *self, size_t i, bool barred);

/* A check's verdict on one endpoint's answer: true when the endpoint may be
 * used; false (why said) when it must not (it serves another chain). */
typedef bool(fb_jsonrpc_verdict_fn)(void *arg, json_t *result, char *why, size_t whylen);

typedef struct {
    const char *method;             /* asked of each endpoint on its own, no failover */
    const char *params;             /* its params: JSON array text */
    fb_jsonrpc_verdict_fn *verdict; /* judges each answer */
    void *arg;
    uint32_t every_ms; /* each endpoint asked again this often; one that failed to answer, each second */
} fb_jsonrpc_check_t;

/* fb_jsonrpc_check - from now on, each endpoint is barred until its own
 * answer to the check passes the verdict, and again whenever a later answer
 * does not (one that fails to answer keeps its last verdict). A call made
 * while every endpoint is barred waits for one to pass, up to timeout_ms ×
 * attempts, and fails at once ("unavailable") when every endpoint has been
 * judged and none passed. Call once, before any call; the check's strings are
 * copied. Not with fb_jsonrpc_bar. */
void fb_jsonrpc_check(fb_jsonrpc_t *self, const fb_jsonrpc_check_t *check);

/* fb_jsonrpc_stats - per-endpoint figures; returns the count written. */
size_t fb_jsonrpc_stats(const fb_jsonrpc_t *self, fb_jsonrpc_endpoint_stat_t *out, size_t max);

int fb_jsonrpc_test(bool verbose);
#endif
