/* farebox-rpc - call farebox's internal RPC from a shell, measure it, make keys.
 *
 *   farebox-rpc call  --endpoint LIST [options] METHOD [JSON_BODY]
 *   farebox-rpc bench --endpoint LIST [--concurrency N] [--seconds S] [--method M] [--payload BYTES | --body
 * JSON] farebox-rpc keygen DIR NAME
 *
 * Options of call and bench: --deadline MS, --attempt MS, --idem KEY, --trace ID,
 * --server-key Z85 (with FAREBOX_CURVE_SECRET_KEY or _FILE in the environment
 * for CurveZMQ). call prints the reply as one JSON object and exits 0 for "ok",
 * 1 for an error reply, 2 for bad usage. bench prints one JSON object. */
#include "fb_config.h"
#include "fb_curve.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_rpc_client.h"
#include "fb_util.h"

#include <czmq.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *endpoint, *method, *body_json, *idem, *trace, *server_key, *service;
    uint32_t deadline_ms, attempt_ms;
    int concurrency;
    double seconds;
    size_t payload;
} s_opts_t;

static void s_usage(void)
{
    fprintf(
        stderr,
        "usage: farebox-rpc call --endpoint LIST [--deadline MS] [--attempt MS] [--idem KEY] [--trace ID]\n"
        "                        [--server-key Z85] [--service NAME] METHOD [JSON_BODY]\n"
        "       farebox-rpc bench --endpoint LIST [--concurrency N] [--seconds S] [--method M]\n"
        "                        [--payload BYTES | --body JSON] [--deadline MS] [--attempt MS]\n"
        "       farebox-rpc keygen DIR NAME\n");
    exit(2);
}

static void s_parse(int argc, char **argv, int first, s_opts_t *o)
{
    int positional = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] == '-' && a[1] == '-' && !v)
            s_usage();
        if (strcmp(a, "--endpoint") == 0)
            o->endpoint = argv[++i];
        else if (strcmp(a, "--deadline") == 0)
            o->deadline_ms = (uint32_t)atoi(argv[++i]);
        else if (strcmp(a, "--attempt") == 0)
            o->attempt_ms = (uint32_t)atoi(argv[++i]);
        else if (strcmp(a, "--idem") == 0)
            o->idem = argv[++i];
        else if (strcmp(a, "--trace") == 0)
            o->trace = argv[++i];
        else if (strcmp(a, "--server-key") == 0)
            o->server_key = argv[++i];
        else if (strcmp(a, "--service") == 0)
            o->service = argv[++i];
        else if (strcmp(a, "--concurrency") == 0)
            o->concurrency = atoi(argv[++i]);
        else if (strcmp(a, "--seconds") == 0)
            o->seconds = atof(argv[++i]);
        else if (strcmp(a, "--method") == 0)
            o->method = argv[++i];
        else if (strcmp(a, "--payload") == 0)
            o->payload = (size_t)atol(argv[++i]);
        else if (strcmp(a, "--body") == 0)
            o->body_json = argv[++i];
        else if (a[0] == '-' && a[1] == '-')
            s_usage();
        else if (positional == 0 && (positional = 1))
            o->method = a;
        else if (positional == 1 && (positional = 2))
            o->body_json = a;
        else
            s_usage();
    }
    if (!o->endpoint || !o->method)
        s_usage();
}

/* Packs the JSON body (an object) into sb. Exits 2 on bad JSON. */
static void s_body(const char *json, msgpack_sbuffer *sb)
{
    if (!json)
        return;
    json_error_t jerr;
    json_t *j = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        fprintf(stderr, "farebox-rpc: the body must be a JSON object (%s)\n",
                j ? "not an object" : jerr.text);
        exit(2);
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (fb_mp_pack_json(&pk, j) != 0) {
        fprintf(stderr, "farebox-rpc: the body is nested too deeply\n");
        exit(2);
    }
    json_decref(j);
}

static fb_rpc_client_t *s_client(uv_loop_t *loop, const s_opts_t *o, fb_curve_t **curve)
{
    static const fb_config_var_t vars[] = {{"FAREBOX_CURVE_SECRET_KEY", FB_CFG_SECRET, "", 0, 0, NULL,
                                            fb_curve_check_key, "CurveZMQ secret key of this client"}};
    char err[512];
    fb_config_t *cfg = fb_config_load(vars, 1, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "farebox-rpc: %s\n", err);
        exit(2);
    }
    const char *secret = fb_config_str(cfg, "FAREBOX_CURVE_SECRET_KEY");
    *curve = secret[0] ? fb_curve_new(secret, err, sizeof(err)) : NULL;
    fb_config_destroy(&cfg);
    fb_rpc_client_config_t cc = {
        .service = o->service ? o->service : "service",
        .endpoints = o->endpoint,
        .attempt_timeout_ms = o->attempt_ms,
        .heartbeat_ms = 500,
        .resolve_ms = 1000,
        .max_message = 64 << 20,
        .curve = *curve,
        .server_key = o->server_key,
    };
    fb_rpc_client_t *c = fb_rpc_client_new(loop, &cc, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "farebox-rpc: %s\n", err);
        exit(2);
    }
    return c;
}

/* --- call -------------------------------------------------------------------------- */

typedef struct {
    int exit_code;
    bool done;
} s_call_state_t;

static void s_print_reply(const fb_rpc_reply_t *r)
{
    json_t *out = json_object();
    json_object_set_new(out, "status", json_string(r->ok ? "ok" : "error"));
    if (!r->ok) {
        json_object_set_new(out, "code", json_string(r->code));
        json_object_set_new(out, "message", json_string(r->message));
    }
    json_object_set_new(out, "replica", json_string(r->replica));
    char *body = fb_mp_to_json(r->body);
    json_error_t jerr;
    json_t *jb = json_loads(body, JSON_DECODE_ANY, &jerr);
    json_object_set_new(out, "body", jb ? jb : json_string(body));
    free(body);
    char *text = json_dumps(out, JSON_COMPACT);
    puts(text);
    free(text);
    json_decref(out);
}

static void s_call_done(void *arg, const fb_rpc_reply_t *reply)
{
    s_call_state_t *st = arg;
    s_print_reply(reply);
    st->exit_code = reply->ok ? 0 : 1;
    st->done = true;
}

static int s_cmd_call(s_opts_t *o)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    fb_curve_t *curve = NULL;
    fb_rpc_client_t *c = s_client(&loop, o, &curve);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    s_body(o->body_json, &sb);
    s_call_state_t st = {2, false};
    fb_rpc_call_opts_t co = {.method = o->method,
                             .idem = o->idem,
                             .trace = o->trace,
                             .deadline_ms = o->deadline_ms ? o->deadline_ms : 5000,
                             .attempt_ms = o->attempt_ms};
    fb_rpc_client_call(c, &co, sb.size ? sb.data : NULL, sb.size, s_call_done, &st);
    while (!st.done)
        uv_run(&loop, UV_RUN_ONCE);
    fb_rpc_client_destroy(&c);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    fb_curve_destroy(&curve);
    msgpack_sbuffer_destroy(&sb);
    zsys_shutdown();
    return st.exit_code;
}

/* --- bench: closed loop of N outstanding calls --------------------------------------- */

typedef struct {
    fb_rpc_client_t *client;
    fb_rpc_call_opts_t opts;
    msgpack_sbuffer body;
    int64_t end_us;
    int outstanding;
    uint64_t ok, errors;
    int64_t *lat;
    size_t count, cap;
    char first_error[320];
} s_bench_t;

typedef struct {
    s_bench_t *b;
    int64_t t0;
} s_slot_t;

static void s_bench_issue(s_slot_t *slot);

static void s_bench_done(void *arg, const fb_rpc_reply_t *reply)
{
    s_slot_t *slot = arg;
    s_bench_t *b = slot->b;
    int64_t now = fb_mono_us();
    if (reply->ok) {
        b->ok++;
        if (b->count == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 65536;
            b->lat = fb_realloc(b->lat, b->cap * sizeof(*b->lat));
        }
        b->lat[b->count++] = now - slot->t0;
    } else {
        if (b->errors++ == 0)
            snprintf(b->first_error, sizeof(b->first_error), "%s: %s", reply->code, reply->message);
    }
    if (now < b->end_us)
        s_bench_issue(slot);
    else
        b->outstanding--;
}

static void s_bench_issue(s_slot_t *slot)
{
    s_bench_t *b = slot->b;
    slot->t0 = fb_mono_us();
    fb_rpc_client_call(b->client, &b->opts, b->body.size ? b->body.data : NULL, b->body.size, s_bench_done,
                       slot);
}

static int s_cmp(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

static int s_cmd_bench(s_opts_t *o)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    fb_curve_t *curve = NULL;
    s_bench_t b = {0};
    b.client = s_client(&loop, o, &curve);
    msgpack_sbuffer_init(&b.body);
    if (o->body_json) {
        s_body(o->body_json, &b.body);
    } else {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &b.body, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 1);
        fb_mp_pack_cstr(&pk, "data");
        char *pad = fb_calloc(1, o->payload + 1);
        memset(pad, 'x', o->payload);
        fb_mp_pack_strn(&pk, pad, o->payload);
        free(pad);
    }
    b.opts = (fb_rpc_call_opts_t){.method = o->method,
                                  .deadline_ms = o->deadline_ms ? o->deadline_ms : 5000,
                                  .attempt_ms = o->attempt_ms};
    /* wait until the replicas are connected, so that the spread is measured */
    int64_t wait_until = fb_mono_ms() + 5000;
    while (fb_rpc_client_ready(b.client) == 0 && fb_mono_ms() < wait_until)
        uv_run(&loop, UV_RUN_ONCE);
    int64_t settle = fb_mono_ms() + 300;
    while (fb_mono_ms() < settle)
        uv_run(&loop, UV_RUN_NOWAIT);
    int n = o->concurrency > 0 ? o->concurrency : 1;
    s_slot_t *slots = fb_calloc((size_t)n, sizeof(*slots));
    int64_t start = fb_mono_us();
    b.end_us = start + (int64_t)(o->seconds > 0 ? o->seconds * 1e6 : 3e6);
    b.outstanding = n;
    for (int i = 0; i < n; i++) {
        slots[i].b = &b;
        s_bench_issue(&slots[i]);
    }
    while (b.outstanding > 0)
        uv_run(&loop, UV_RUN_ONCE);
    double secs = (fb_mono_us() - start) / 1e6;
    qsort(b.lat, b.count, sizeof(*b.lat), s_cmp);
    fb_rpc_replica_stat_t stats[64];
    size_t ns = fb_rpc_client_stats(b.client, stats, 64);
    printf("{\"calls\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"calls_per_s\":%.1f,\"p50_us\":%lld,\"p99_us\":"
           "%lld,"
           "\"concurrency\":%d,\"payload\":%zu,\"first_error\":\"%s\",\"replicas\":[",
           (unsigned long long)b.ok, (unsigned long long)b.errors, secs, b.ok / secs,
           b.count ? (long long)b.lat[b.count / 2] : 0,
           b.count ? (long long)b.lat[(size_t)(b.count * 0.99)] : 0, n, o->payload, b.first_error);
    int printed = 0;
    for (size_t i = 0; i < ns; i++) {
        if (!stats[i].answered && !stats[i].connected)
            continue;
        printf("%s{\"endpoint\":\"%s\",\"answered\":%llu}", printed++ ? "," : "", stats[i].endpoint,
               (unsigned long long)stats[i].answered);
    }
    printf("]}\n");
    fb_rpc_client_destroy(&b.client);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    fb_curve_destroy(&curve);
    msgpack_sbuffer_destroy(&b.body);
    free(b.lat);
    free(slots);
    zsys_shutdown();
    return b.errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        s_usage();
    zsys_handler_set(NULL);
    fb_log_init("farebox-rpc", "cli");
    fb_log_set_level(FB_LOG_ERROR);
    fb_log_set_fd(2);
    if (strcmp(argv[1], "keygen") == 0) {
        if (argc != 4)
            s_usage();
        char sp[4096], pp[4096], pub[41];
        snprintf(sp, sizeof(sp), "%s/%s.key", argv[2], argv[3]);
        snprintf(pp, sizeof(pp), "%s/%s.pub", argv[2], argv[3]);
        if (fb_curve_keygen(sp, pp, pub) != 0) {
            fprintf(stderr, "farebox-rpc: could not write %s and %s\n", sp, pp);
            return 1;
        }
        printf("%s\n", pub);
        return 0;
    }
    s_opts_t o = {.concurrency = 1, .seconds = 3, .payload = 16};
    if (strcmp(argv[1], "call") == 0) {
        s_parse(argc, argv, 2, &o);
        return s_cmd_call(&o);
    }
    if (strcmp(argv[1], "bench") == 0) {
        o.method = "echo";
        s_parse(argc, argv, 2, &o);
        return s_cmd_bench(&o);
    }
    s_usage();
}
