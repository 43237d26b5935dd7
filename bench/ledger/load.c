/* farebox-bench-ledger - load for bench/run ledger: CLIENTS concurrent clients,
 * each doing hold then commit (a "pair") as fast as answers come, for SECONDS.
 *
 *   farebox-bench-ledger ENDPOINT CLIENTS SECONDS FIRST_ACCOUNT LAST_ACCOUNT TAG
 *
 * Each pair picks an account at random in [FIRST, LAST] (one account: the hot
 * case). Prints one JSON line: pairs, errors, seconds, pairs_per_s, p50_us and
 * p99_us of a whole pair. TAG makes idempotency keys unique per run. */
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_rpc_client.h"
#include "fb_util.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct s_bench s_bench_t;

typedef struct {
    s_bench_t *b;
    int index;
    uint64_t n;      /* pairs started by this client */
    int64_t t0;      /* start of the current pair */
    int64_t hold_id; /* hold of the current pair */
} s_client_t;

struct s_bench {
    fb_rpc_client_t *rpc;
    int64_t first, last, end_us;
    const char *tag;
    uint64_t pairs, errors;
    int64_t *lat;
    size_t count, cap;
    int running;
    char first_error[300];
};

static void s_start(s_client_t *c);

static void s_fail(s_client_t *c, const fb_rpc_reply_t *r)
{
    if (c->b->errors++ == 0)
        snprintf(c->b->first_error, sizeof(c->b->first_error), "%s: %s", r->code, r->message);
    s_start(c);
}

static void s_committed(void *arg, const fb_rpc_reply_t *r)
{
    s_client_t *c = arg;
    s_bench_t *b = c->b;
    if (!r->ok) {
        s_fail(c, r);
        return;
    }
    b->pairs++;
    if (b->count == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 65536;
        b->lat = fb_realloc(b->lat, b->cap * sizeof(*b->lat));
    }
    b->lat[b->count++] = fb_mono_us() - c->t0;
    s_start(c);
}

static void s_held(void *arg, const fb_rpc_reply_t *r)
{
    s_client_t *c = arg;
    if (!r->ok || !fb_mp_get_int64(r->body, "hold_id", &c->hold_id)) {
        s_fail(c, r);
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    fb_mp_pack_kv_int(&pk, "hold_id", c->hold_id);
    fb_mp_pack_kv_int(&pk, "amount_micro", 700);
    char idem[96];
    snprintf(idem, sizeof(idem), "%s-c-%d-%llu", c->b->tag, c->index, (unsigned long long)c->n);
    fb_rpc_call_opts_t o = {.method = "ledger.commit", .idem = idem, .deadline_ms = 10000};
    fb_rpc_client_call(c->b->rpc, &o, sb.data, sb.size, s_committed, c);
    msgpack_sbuffer_destroy(&sb);
}

static void s_start(s_client_t *c)
{
    s_bench_t *b = c->b;
    if (fb_mono_us() >= b->end_us) {
        b->running--;
        return;
    }
    c->n++;
    c->t0 = fb_mono_us();
    int64_t account = b->first + (b->last > b->first ? rand() % (b->last - b->first + 1) : 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    fb_mp_pack_kv_int(&pk, "account_id", account);
    fb_mp_pack_kv_int(&pk, "amount_micro", 1000);
    fb_mp_pack_kv_int(&pk, "expires_in_ms", 60000);
    char idem[96];
    snprintf(idem, sizeof(idem), "%s-h-%d-%llu", b->tag, c->index, (unsigned long long)c->n);
    fb_rpc_call_opts_t o = {.method = "ledger.hold", .idem = idem, .deadline_ms = 10000};
    fb_rpc_client_call(b->rpc, &o, sb.data, sb.size, s_held, c);
    msgpack_sbuffer_destroy(&sb);
}

static int s_cmp(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s ENDPOINT CLIENTS SECONDS FIRST_ACCOUNT LAST_ACCOUNT TAG\n", argv[0]);
        return 2;
    }
    zsys_handler_set(NULL);
    fb_log_init("bench-ledger", "bench");
    fb_log_set_level(FB_LOG_ERROR);
    fb_log_set_fd(2);
    uv_loop_t loop;
    uv_loop_init(&loop);
    s_bench_t b = {0};
    char err[256];
    fb_rpc_client_config_t cc = {.service = "ledger", .endpoints = argv[1], .attempt_timeout_ms = 5000};
    b.rpc = fb_rpc_client_new(&loop, &cc, err, sizeof(err));
    if (!b.rpc) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    int clients = atoi(argv[2]);
    double seconds = atof(argv[3]);
    b.first = atoll(argv[4]);
    b.last = atoll(argv[5]);
    b.tag = argv[6];
    srand(42);
    int64_t wait_until = fb_mono_ms() + 10000;
    while (fb_rpc_client_ready(b.rpc) == 0 && fb_mono_ms() < wait_until)
        uv_run(&loop, UV_RUN_ONCE);
    s_client_t *cs = fb_calloc((size_t)clients, sizeof(*cs));
    int64_t start = fb_mono_us();
    b.end_us = start + (int64_t)(seconds * 1e6);
    b.running = clients;
    for (int i = 0; i < clients; i++) {
        cs[i] = (s_client_t){.b = &b, .index = i};
        s_start(&cs[i]);
    }
    while (b.running > 0)
        uv_run(&loop, UV_RUN_ONCE);
    double secs = (fb_mono_us() - start) / 1e6;
    qsort(b.lat, b.count, sizeof(*b.lat), s_cmp);
    printf("{\"pairs\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"pairs_per_s\":%.1f,\"p50_us\":%lld,\"p99_us\":"
           "%lld,"
           "\"clients\":%d,\"first_error\":\"%s\"}\n",
           (unsigned long long)b.pairs, (unsigned long long)b.errors, secs, b.pairs / secs,
           b.count ? (long long)b.lat[b.count / 2] : 0,
           b.count ? (long long)b.lat[(size_t)(b.count * 0.99)] : 0, clients, b.first_error);
    fb_rpc_client_destroy(&b.rpc);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(cs);
    free(b.lat);
    zsys_shutdown();
    return b.errors ? 1 : 0;
}
