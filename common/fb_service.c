/* fb_service - start-up, configuration, signals and shutdown of a service. */
#include "fb_service.h"
#include "fb_curve.h"
#include "fb_endpoint.h"
#include "fb_log.h"
#include "fb_util.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fb_service_t {
    const fb_service_def_t *def;
    uv_loop_t loop;
    fb_config_var_t *vars; /* common + service variables */
    size_t var_count;
    fb_config_t *config;
    char replica[128];
    fb_curve_t *curve;     /* own CurveZMQ keys, or NULL */
    fb_curve_auth_t *auth; /* ZAP authenticator, or NULL */
    fb_rpc_server_t *rpc;
    uv_signal_t sigint, sigterm;
    void (*on_stop)(void *arg);
    void *on_stop_arg;
    int signals;         /* stop signals received */
    uv_timer_t drain;    /* default stop: waits for the calls in flight */
    int64_t drain_until; /* ... until then (FAREBOX_STOP_GRACE_MS) */
    int exit_code;
    bool flag; /* the definition's extra flag was given: no RPC */
};

static const fb_config_var_t s_common_vars[] = {
    {"FAREBOX_LOG_LEVEL", FB_CFG_ENUM, "info", 0, 0, "debug|info|warn|error", NULL,
     "lowest log level written (debug, info, warn, error)"},
    {"FAREBOX_REPLICA", FB_CFG_STRING, "", 0, 0, NULL, NULL,
     "this replica's name in logs and health replies (default: hostname-pid)"},
    {"FAREBOX_RPC_MAX_MESSAGE", FB_CFG_INT, "1048576", 1024, 67108864, NULL, NULL,
     "largest RPC request or reply in bytes"},
    {"FAREBOX_RPC_HEARTBEAT_MS", FB_CFG_INT, "1000", 50, 60000, NULL, NULL,
     "RPC heartbeat interval; a peer silent for 3 intervals is treated as dead"},
    {"FAREBOX_RPC_ATTEMPT_MS", FB_CFG_INT, "2000", 10, 600000, NULL, NULL,
     "how long a call waits for one replica before it is retried on another (not the edge's x402 "
     "verifications and settlements: they wait their whole deadline on one replica, which would otherwise "
     "start the same work twice)"},
    {"FAREBOX_RPC_RESOLVE_MS", FB_CFG_INT, "2000", 100, 600000, NULL, NULL,
     "how often service names in endpoint lists are resolved again (new replicas)"},
    {"FAREBOX_CURVE_SECRET_KEY", FB_CFG_SECRET, "", 0, 0, NULL, fb_curve_check_key,
     "this process's CurveZMQ secret key (Z85); set to encrypt and authenticate RPC"},
};

static const fb_config_var_t s_server_vars[] = {
    {"FAREBOX_RPC_MAX_INFLIGHT", FB_CFG_INT, "20000", 1, 10000000, NULL, NULL,
     "calls one replica holds at once; beyond it answers overloaded"},
    {"FAREBOX_STOP_GRACE_MS", FB_CFG_INT, "10000", 0, 600000, NULL, NULL,
     "on SIGTERM, how long calls (and an edge's requests and streams) in flight may take to finish"},
    {"FAREBOX_CURVE_CLIENTS_DIR", FB_CFG_STRING, "", 0, 0, NULL, NULL,
     "directory of client public key certificates allowed to call (required with a secret key)"},
};

static const fb_config_var_t s_ledger_vars[] = {
    {"FAREBOX_LEDGER_ENDPOINT", FB_CFG_STRING, "tcp://127.0.0.1:7110-7119", 0, 0, NULL, fb_endpoint_check,
     "where ledger replicas are: endpoint list, DNS names re-resolved, port ranges allowed"},
    {"FAREBOX_LEDGER_SERVER_KEY", FB_CFG_STRING, "", 0, 0, NULL, fb_curve_check_key,
     "the ledger's CurveZMQ public key (Z85), needed with FAREBOX_CURVE_SECRET_KEY"},
};

static const fb_config_var_t s_verifier_vars[] = {
    {"FAREBOX_VERIFIER_ENDPOINT", FB_CFG_STRING, "tcp://127.0.0.1:7120-7129", 0, 0, NULL, fb_endpoint_check,
     "where verifier replicas are: endpoint list, DNS names re-resolved, port ranges allowed"},
    {"FAREBOX_VERIFIER_SERVER_KEY", FB_CFG_STRING, "", 0, 0, NULL, fb_curve_check_key,
     "the verifier's CurveZMQ public key (Z85), needed with FAREBOX_CURVE_SECRET_KEY"},
};

static const fb_config_var_t s_watcher_vars[] = {
    {"FAREBOX_CHAIN_WATCHER_ENDPOINT", FB_CFG_STRING, "tcp://127.0.0.1:7130-7139", 0, 0, NULL,
     fb_endpoint_check,
     "where chain-watcher replicas are: endpoint list, DNS names re-resolved, port ranges allowed"},
    {"FAREBOX_CHAIN_WATCHER_SERVER_KEY", FB_CFG_STRING, "", 0, 0, NULL, fb_curve_check_key,
     "the chain-watcher's CurveZMQ public key (Z85), needed with FAREBOX_CURVE_SECRET_KEY"},
};

void fb_service_fail_config(const char *line)
{
    fprintf(stderr, "%s\n", line);
    fb_log(FB_LOG_ERROR, NULL, line, NULL);
    exit(2);
}

static void s_append(fb_service_t *self, const fb_config_var_t *vars, size_t n)
{
    self->vars = fb_realloc(self->vars, (self->var_count + n) * sizeof(*self->vars));
    memcpy(self->vars + self->var_count, vars, n * sizeof(*vars));
    self->var_count += n;
}

static void s_build_vars(fb_service_t *self)
{
    const fb_service_def_t *def = self->def;
    s_append(self, s_common_vars, FB_ARRAY_SIZE(s_common_vars));
    fb_config_var_t bind = {"FAREBOX_RPC_BIND",
                            FB_CFG_STRING,
                            def->rpc_bind,
                            0,
                            0,
                            NULL,
                            fb_endpoint_check,
                            "where this service serves RPC; the first free port of a range is taken"};
    s_append(self, &bind, 1);
    s_append(self, s_server_vars, FB_ARRAY_SIZE(s_server_vars));
    if (def->peers & FB_PEER_LEDGER)
        s_append(self, s_ledger_vars, FB_ARRAY_SIZE(s_ledger_vars));
    if (def->peers & FB_PEER_VERIFIER)
        s_append(self, s_verifier_vars, FB_ARRAY_SIZE(s_verifier_vars));
    if (def->peers & FB_PEER_CHAIN_WATCHER)
        s_append(self, s_watcher_vars, FB_ARRAY_SIZE(s_watcher_vars));
    if (def->var_count)
        s_append(self, def->vars, def->var_count);
}

static void s_on_drain_tick(uv_timer_t *t)
{
    fb_service_t *self = t->data;
    size_t n = fb_rpc_server_inflight(self->rpc);
    if (n > 0 && fb_mono_ms() < self->drain_until)
        return;
    if (n > 0)
        fb_log(FB_LOG_WARN, NULL, "stop grace period over", "calls_in_flight=%zu", n);
    uv_timer_stop(t);
    fb_service_exit(self, 0);
}

/* The first SIGTERM or SIGINT runs the service's own stop, or by default takes
 * no new call (fb_rpc_server_pause: callers send it to other replicas) and
 * exits once the calls in flight are answered; a second one exits at once. */
static void s_on_signal(uv_signal_t *h, int signum)
{
    fb_service_t *self = h->data;
    self->signals++;
    fb_log(FB_LOG_INFO, NULL, "stop requested", "signal=%d", signum);
    if (self->signals > 1) {
        fb_service_exit(self, 0);
    } else if (self->on_stop) {
        self->on_stop(self->on_stop_arg);
    } else {
        fb_rpc_server_pause(self->rpc);
        self->drain_until = fb_mono_ms() + fb_config_int(self->config, "FAREBOX_STOP_GRACE_MS");
        uv_timer_start(&self->drain, s_on_drain_tick, 0, 20);
    }
}

static void s_usage(const fb_service_def_t *def)
{
    printf("farebox-%s %s - %s\n\n"
           "usage: farebox-%s [--help | --version | --config-doc%s%s]\n\n",
           def->name, FAREBOX_VERSION, def->summary, def->name, def->flag ? " | " : "",
           def->flag ? def->flag : "");
    if (def->flag)
        printf("  %s  %s\n\n", def->flag, def->flag_help);
    printf("Configuration comes from FAREBOX_* environment variables; --config-doc lists them.\n");
}

fb_service_t *fb_service_new(int argc, char **argv, const fb_service_def_t *def)
{
    fb_service_t *self = fb_calloc(1, sizeof(*self));
    self->def = def;
    s_build_vars(self);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s_usage(def);
            exit(0);
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("farebox-%s %s\n", def->name, FAREBOX_VERSION);
            exit(0);
        } else if (strcmp(argv[i], "--config-doc") == 0) {
            fb_config_print_doc(self->vars, self->var_count, stdout);
            exit(0);
        } else if (def->flag && strcmp(argv[i], def->flag) == 0) {
            self->flag = true;
        } else {
            fprintf(stderr, "farebox-%s: unknown argument \"%s\" (try --help)\n", def->name, argv[i]);
            exit(2);
        }
    }

    char err[1024];
    self->config = fb_config_load(self->vars, self->var_count, err, sizeof(err));
    if (!self->config)
        fb_service_fail_config(err);
    const fb_config_t *cfg = self->config;
    if (fb_config_str(cfg, "FAREBOX_REPLICA")[0]) {
        snprintf(self->replica, sizeof(self->replica), "%s", fb_config_str(cfg, "FAREBOX_REPLICA"));
    } else {
        char host[64] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(self->replica, sizeof(self->replica), "%s-%d", host, (int)getpid());
    }
    fb_log_init(def->name, self->replica);
    fb_log_level_t level;
    fb_log_parse_level(fb_config_str(cfg, "FAREBOX_LOG_LEVEL"), &level);
    fb_log_set_level(level);
    FB_ASSERT(uv_loop_init(&self->loop) == 0);
    if (self->flag)
        return self;

    /* czmq must not install its own signal handlers: libuv owns signals */
    zsys_handler_set(NULL);
    zsys_init();

    const char *secret = fb_config_str(cfg, "FAREBOX_CURVE_SECRET_KEY");
    if (secret[0]) {
        self->curve = fb_curve_new(secret, err, sizeof(err));
        if (!self->curve)
            fb_service_fail_config("invalid configuration: FAREBOX_CURVE_SECRET_KEY is not a Z85 secret key");
        const char *dir = fb_config_str(cfg, "FAREBOX_CURVE_CLIENTS_DIR");
        if (!dir[0])
            fb_service_fail_config("invalid configuration: FAREBOX_CURVE_CLIENTS_DIR is required when "
                                   "FAREBOX_CURVE_SECRET_KEY is set (the client keys allowed to call)");
        self->auth = fb_curve_auth_new(dir);
        if (!self->auth)
            fb_service_fail_config("invalid configuration: FAREBOX_CURVE_CLIENTS_DIR: could not start the "
                                   "authenticator");
    }

    uv_signal_init(&self->loop, &self->sigint);
    uv_signal_init(&self->loop, &self->sigterm);
    self->sigint.data = self->sigterm.data = self;
    uv_signal_start(&self->sigint, s_on_signal, SIGINT);
    uv_signal_start(&self->sigterm, s_on_signal, SIGTERM);
    uv_timer_init(&self->loop, &self->drain);
    self->drain.data = self;
    signal(SIGPIPE, SIG_IGN);

    fb_rpc_server_config_t rc = {
        .service = def->name,
        .replica = self->replica,
        .bind = fb_config_str(cfg, "FAREBOX_RPC_BIND"),
        .max_message = (size_t)fb_config_int(cfg, "FAREBOX_RPC_MAX_MESSAGE"),
        .max_inflight = (uint32_t)fb_config_int(cfg, "FAREBOX_RPC_MAX_INFLIGHT"),
        .heartbeat_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_RPC_HEARTBEAT_MS"),
        .curve = self->curve,
    };
    self->rpc = fb_rpc_server_new(&self->loop, &rc, err, sizeof(err));
    if (!self->rpc) {
        char line[1200];
        snprintf(line, sizeof(line), "invalid configuration: FAREBOX_RPC_BIND: %s", err);
        fb_service_fail_config(line);
    }
    fb_log(FB_LOG_INFO, NULL, "rpc serving", "endpoint=%s curve=%s", fb_rpc_server_endpoint(self->rpc),
           self->curve ? "on" : "off");
    return self;
}

fb_rpc_client_t *fb_service_client(fb_service_t *self, fb_peer_t peer, uv_loop_t *loop)
{
    FB_ASSERT(self->def->peers & peer);
    const char *name = "ledger", *ep_var = "FAREBOX_LEDGER_ENDPOINT", *key_var = "FAREBOX_LEDGER_SERVER_KEY";
    if (peer == FB_PEER_VERIFIER)
        name = "verifier", ep_var = "FAREBOX_VERIFIER_ENDPOINT", key_var = "FAREBOX_VERIFIER_SERVER_KEY";
    else if (peer == FB_PEER_CHAIN_WATCHER)
        name = "chain-watcher", ep_var = "FAREBOX_CHAIN_WATCHER_ENDPOINT",
        key_var = "FAREBOX_CHAIN_WATCHER_SERVER_KEY";
    const fb_config_t *cfg = self->config;
    const char *key = fb_config_str(cfg, key_var);
    if (self->curve && !key[0]) {
        char line[256];
        snprintf(line, sizeof(line),
                 "invalid configuration: %s is required when FAREBOX_CURVE_SECRET_KEY is set", key_var);
        fb_service_fail_config(line);
    }
    fb_rpc_client_config_t cc = {
        .service = name,
        .endpoints = fb_config_str(cfg, ep_var),
        .attempt_timeout_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_RPC_ATTEMPT_MS"),
        .heartbeat_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_RPC_HEARTBEAT_MS"),
        .resolve_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_RPC_RESOLVE_MS"),
        .max_message = (size_t)fb_config_int(cfg, "FAREBOX_RPC_MAX_MESSAGE"),
        .curve = self->curve,
        .server_key = key[0] ? key : NULL,
    };
    char err[512];
    fb_rpc_client_t *client = fb_rpc_client_new(loop, &cc, err, sizeof(err));
    if (!client) {
        char line[700];
        snprintf(line, sizeof(line), "invalid configuration: %s: %s", ep_var, err);
        fb_service_fail_config(line);
    }
    return client;
}

uv_loop_t *fb_service_loop(fb_service_t *self)
{
    return &self->loop;
}

const fb_config_t *fb_service_config(const fb_service_t *self)
{
    return self->config;
}

fb_rpc_server_t *fb_service_rpc(fb_service_t *self)
{
    return self->rpc;
}

const char *fb_service_replica(const fb_service_t *self)
{
    return self->replica;
}

bool fb_service_flag(const fb_service_t *self)
{
    return self->flag;
}

void fb_service_on_stop(fb_service_t *self, void (*fn)(void *arg), void *arg)
{
    self->on_stop = fn;
    self->on_stop_arg = arg;
}

void fb_service_exit(fb_service_t *self, int code)
{
    self->exit_code = code;
    uv_stop(&self->loop);
}

int fb_service_run(fb_service_t *self)
{
    fb_log(FB_LOG_INFO, NULL, "started", "version=%s", FAREBOX_VERSION);
    uv_run(&self->loop, UV_RUN_DEFAULT);
    fb_log(FB_LOG_INFO, NULL, "stopped", "code=%d", self->exit_code);
    return self->exit_code;
}

static void s_walk_close(uv_handle_t *h, void *arg)
{
    FB_UNUSED(arg);
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void fb_service_destroy(fb_service_t **self_p)
{
    FB_ASSERT(self_p);
    fb_service_t *self = *self_p;
    if (!self)
        return;
    fb_rpc_server_destroy(&self->rpc);
    if (!self->flag) {
        uv_signal_stop(&self->sigint);
        uv_signal_stop(&self->sigterm);
    }
    /* let closing handles finish, then close whatever is left */
    uv_run(&self->loop, UV_RUN_NOWAIT);
    uv_walk(&self->loop, s_walk_close, NULL);
    uv_run(&self->loop, UV_RUN_DEFAULT);
    uv_loop_close(&self->loop);
    fb_curve_auth_destroy(&self->auth);
    fb_curve_destroy(&self->curve);
    fb_config_destroy(&self->config);
    free(self->vars);
    free(self);
    *self_p = NULL;
}
