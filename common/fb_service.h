/* fb_service - what every farebox service does the same way at start and stop.
 *
 * fb_service_new() handles the command line (--help, --version, --config-doc),
 * loads and validates the configuration (common variables, RPC server and
 * client variables, then the service's own), sets up JSON logging, the libuv
 * loop, SIGINT/SIGTERM handling, CurveZMQ and the RPC server. A bad value stops
 * the process with one line naming the variable (exit status 2). */
#ifndef FB_SERVICE_H
#define FB_SERVICE_H

#include "fb_config.h"
#include "fb_rpc_client.h"
#include "fb_rpc_server.h"

#include <stdbool.h>
#include <uv.h>

typedef struct fb_service_t fb_service_t;

/* The services another one can call; each brings FAREBOX_<NAME>_ENDPOINT and
 * FAREBOX_<NAME>_SERVER_KEY variables. */
typedef enum { FB_PEER_LEDGER = 1, FB_PEER_VERIFIER = 2, FB_PEER_CHAIN_WATCHER = 4 } fb_peer_t;

typedef struct {
    const char *name;            /* "ledger", "edge", ... */
    const char *summary;         /* one line for --help */
    const char *rpc_bind;        /* default FAREBOX_RPC_BIND */
    unsigned peers;              /* FB_PEER_* bits this service calls */
    const fb_config_var_t *vars; /* the service's own variables */
    size_t var_count;
    const char *flag;      /* an extra command-line flag ("--migrate"), or NULL */
    const char *flag_help; /* ... and its line in --help */
} fb_service_def_t;

/* fb_service_new - start a service from its definition and the command line.
 * Returns the service (caller owns it). Exits the process for --help,
 * --version, --config-doc and for configuration errors. */
fb_service_t *fb_service_new(int argc, char **argv, const fb_service_def_t *def);

/* fb_service_destroy - tear everything down. Nulls *self_p. */
void fb_service_destroy(fb_service_t **self_p);

uv_loop_t *fb_service_loop(fb_service_t *self);
const fb_config_t *fb_service_config(const fb_service_t *self);
fb_rpc_server_t *fb_service_rpc(fb_service_t *self);
const char *fb_service_replica(const fb_service_t *self);
/* fb_service_flag - whether the definition's extra flag was given; a service
 * started with it has loaded its configuration but serves no RPC (one-shot). */
bool fb_service_flag(const fb_service_t *self);

/* fb_service_client - a new RPC client to a peer service, from configuration,
 * running on loop (a client belongs to one loop and its thread). Caller owns it. */
fb_rpc_client_t *fb_service_client(fb_service_t *self, fb_peer_t peer, uv_loop_t *loop);

/* fb_service_on_stop - fn runs on the first SIGINT or SIGTERM instead of an
 * immediate stop; it must call fb_service_exit() when in-flight work is done.
 * A second signal stops at once. */
void fb_service_on_stop(fb_service_t *self, void (*fn)(void *arg), void *arg);

/* fb_service_exit - stop the loop; fb_service_run() then returns code. */
void fb_service_exit(fb_service_t *self, int code);

/* fb_service_run - run the loop until the service exits. Returns the exit
 * status for main(). */
int fb_service_run(fb_service_t *self);

/* fb_service_fail_config - print a configuration error line and exit(2). */
void fb_service_fail_config(const char *line) __attribute__((noreturn));

#endif
