/* farebox-bench-http - open-loop HTTP/1.1 load for bench/run edge: requests
 * start on a fixed schedule (RATE per second), whatever the answers do, and
 * each one's latency runs from its scheduled start to its last byte, so that
 * time spent waiting for a free connection counts too (a closed-loop tool
 * like wrk would send less when the server slows down and hide that wait).
 *
 *   farebox-bench-http URL BODY_FILE RATE SECONDS CONNECTIONS [HEADER...]
 *
 * POSTs BODY_FILE to URL over at most CONNECTIONS keep-alive connections
 * (libcurl multi on libuv). The first second is a warm-up at the same rate
 * whose calls are not counted. Prints one JSON line: calls (answered 2xx),
 * errors, calls_per_s, p50_us, p99_us, p999_us and max_us. */
#include "fb_curlm.h"
#include "fb_util.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WARMUP_US 1000000
#define DRAIN_US  10000000 /* the longest wait for calls still running at the end */
#define TICK_MS   1

typedef struct {
    uv_loop_t *loop;
    fb_curlm_t *curlm;
    uv_timer_t tick;
    const char *url;
    char *body;
    size_t body_len;
    struct curl_slist *headers;
    double rate;
    int64_t t0_us, end_us; /* the schedule: warm-up, then the measured part */
    uint64_t started;      /* calls started so far (the schedule's index) */
    uint64_t running;
    uint64_t ok, errors;
    int64_t *lat;
    size_t count, cap;
    char first_error[256];
} s_load_t;

typedef struct {
    s_load_t *load;
    int64_t t0_us; /* handed to libcurl */
    bool counted;  /* after the warm-up */
} s_req_t;

static size_t s_discard(char *ptr, size_t size, size_t n, void *arg)
{
    FB_UNUSED(ptr);
    FB_UNUSED(arg);
    return size * n;
}

static void s_done(void *arg, CURL *easy, CURLcode result)
{
    s_req_t *r = arg;
    s_load_t *l = r->load;
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    fb_curlm_recycle(l->curlm, easy, 0);
    l->running--;
    if (r->counted) {
        if (result == CURLE_OK && status >= 200 && status <= 299) {
            l->ok++;
            if (l->count == l->cap) {
                l->cap = l->cap ? l->cap * 2 : 65536;
                l->lat = fb_realloc(l->lat, l->cap * sizeof(*l->lat));
            }
            l->lat[l->count++] = fb_mono_us() - r->t0_us;
        } else if (l->errors++ == 0) {
            snprintf(l->first_error, sizeof(l->first_error), "status %ld, %s", status,
                     curl_easy_strerror(result));
        }
    }
    free(r);
}

static void s_start(s_load_t *l, int64_t due_us)
{
    s_req_t *r = fb_calloc(1, sizeof(*r));
    r->load = l;
    r->t0_us = fb_mono_us();
    r->counted = due_us >= l->t0_us + WARMUP_US;
    bool configured;
    CURL *e = fb_curlm_easy(l->curlm, 0, &configured);
    if (!configured) { /* every request is the same */
        curl_easy_setopt(e, CURLOPT_URL, l->url);
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, l->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)l->body_len);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, l->headers);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_discard);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    }
    l->running++;
    fb_curlm_add(l->curlm, e, s_done, r);
}

static void s_on_tick(uv_timer_t *t)
{
    s_load_t *l = t->data;
    int64_t now = fb_mono_us();
    for (;;) {
        int64_t due = l->t0_us + (int64_t)((double)l->started * 1e6 / l->rate);
        if (due > now || due >= l->end_us)
            break;
        l->started++;
        s_start(l, due);
    }
    int64_t next = l->t0_us + (int64_t)((double)l->started * 1e6 / l->rate);
    if (next >= l->end_us)
        uv_timer_stop(t);
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

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: %s URL BODY_FILE RATE SECONDS CONNECTIONS [HEADER...]\n", argv[0]);
        return 2;
    }
    s_load_t l = {0};
    l.url = argv[1];
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 2;
    }
    l.body = fb_malloc(1 << 20);
    l.body_len = fread(l.body, 1, (1 << 20) - 1, f);
    fclose(f);
    l.rate = atof(argv[3]);
    double seconds = atof(argv[4]);
    long conns = atol(argv[5]);
    if (l.rate <= 0 || seconds <= 0 || conns < 1) {
        fprintf(stderr, "RATE, SECONDS and CONNECTIONS must be positive\n");
        return 2;
    }
    for (int i = 6; i < argc; i++)
        l.headers = curl_slist_append(l.headers, argv[i]);
    l.headers = curl_slist_append(l.headers, "Expect:");
    uv_loop_t loop;
    uv_loop_init(&loop);
    l.loop = &loop;
    l.curlm = fb_curlm_new(&loop);
    fb_curlm_keep(l.curlm, (size_t)conns);
    fb_curlm_max_connections(l.curlm, conns);
    l.t0_us = fb_mono_us();
    l.end_us = l.t0_us + WARMUP_US + (int64_t)(seconds * 1e6);
    uv_timer_init(&loop, &l.tick);
    l.tick.data = &l;
    uv_timer_start(&l.tick, s_on_tick, 0, TICK_MS);
    while (uv_is_active((uv_handle_t *)&l.tick) || (l.running > 0 && fb_mono_us() < l.end_us + DRAIN_US))
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&l.tick, NULL);
    qsort(l.lat, l.count, sizeof(*l.lat), s_cmp);
    printf("{\"calls\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"still_running\":%" PRIu64
           ",\"calls_per_s\":%.1f,\"p50_us\":%" PRId64 ",\"p99_us\":%" PRId64 ",\"p999_us\":%" PRId64
           ",\"max_us\":%" PRId64 ",\"first_error\":\"%s\"}\n",
           l.ok, l.errors, l.running, (double)l.ok / seconds, s_pct(&l, 0.5), s_pct(&l, 0.99),
           s_pct(&l, 0.999), l.count ? l.lat[l.count - 1] : 0, l.first_error);
    fb_curlm_destroy(&l.curlm);
    uv_run(&loop, UV_RUN_NOWAIT);
    curl_slist_free_all(l.headers);
    free(l.lat);
    free(l.body);
    return 0; /* errors and calls still running are in the figures */
}
