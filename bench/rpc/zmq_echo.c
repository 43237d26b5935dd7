/* farebox-bench-zmq-echo - the baseline of bench/run rpc: a bare ZeroMQ
 * REQ/REP echo with no envelope, no msgpack, no discovery.
 *
 *   farebox-bench-zmq-echo server ENDPOINT
 *   farebox-bench-zmq-echo client ENDPOINT CLIENTS SECONDS PAYLOAD_BYTES
 *
 * The client prints one JSON line: calls, seconds, calls_per_s, p50_us, p99_us. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

typedef struct {
    void *ctx;
    const char *endpoint;
    double seconds;
    size_t payload;
    int64_t *lat; /* latencies, microseconds */
    size_t count, cap;
} s_client_t;

static void *s_client(void *arg)
{
    s_client_t *c = arg;
    void *req = zmq_socket(c->ctx, ZMQ_REQ);
    zmq_connect(req, c->endpoint);
    char *buf = calloc(1, c->payload + 1), *in = malloc(c->payload + 64);
    int64_t end = s_now_us() + (int64_t)(c->seconds * 1e6);
    while (s_now_us() < end) {
        int64_t t0 = s_now_us();
        if (zmq_send(req, buf, c->payload, 0) < 0 || zmq_recv(req, in, c->payload + 64, 0) < 0)
            break;
        if (c->count == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 4096;
            c->lat = realloc(c->lat, c->cap * sizeof(*c->lat));
        }
        c->lat[c->count++] = s_now_us() - t0;
    }
    free(buf);
    free(in);
    zmq_close(req);
    return NULL;
}

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "server") == 0) {
        void *ctx = zmq_ctx_new();
        void *rep = zmq_socket(ctx, ZMQ_REP);
        if (zmq_bind(rep, argv[2]) != 0) {
            fprintf(stderr, "could not bind %s: %s\n", argv[2], zmq_strerror(zmq_errno()));
            return 1;
        }
        char buf[1 << 16];
        for (;;) {
            int n = zmq_recv(rep, buf, sizeof(buf), 0);
            if (n < 0)
                return 1;
            zmq_send(rep, buf, (size_t)(n > (int)sizeof(buf) ? (int)sizeof(buf) : n), 0);
        }
    }
    if (argc >= 6 && strcmp(argv[1], "client") == 0) {
        int clients = atoi(argv[3]);
        double seconds = atof(argv[4]);
        size_t payload = (size_t)atoi(argv[5]);
        void *ctx = zmq_ctx_new();
        s_client_t *cs = calloc((size_t)clients, sizeof(*cs));
        pthread_t *th = calloc((size_t)clients, sizeof(*th));
        for (int i = 0; i < clients; i++) {
            cs[i] = (s_client_t){.ctx = ctx, .endpoint = argv[2], .seconds = seconds, .payload = payload};
            pthread_create(&th[i], NULL, s_client, &cs[i]);
        }
        size_t total = 0;
        for (int i = 0; i < clients; i++) {
            pthread_join(th[i], NULL);
            total += cs[i].count;
        }
        int64_t *all = malloc((total ? total : 1) * sizeof(*all));
        size_t k = 0;
        for (int i = 0; i < clients; i++) {
            memcpy(all + k, cs[i].lat, cs[i].count * sizeof(*all));
            k += cs[i].count;
        }
        qsort(all, total, sizeof(*all), s_cmp);
        printf("{\"calls\":%zu,\"seconds\":%.3f,\"calls_per_s\":%.1f,\"p50_us\":%lld,\"p99_us\":%lld}\n",
               total, seconds, total / seconds, total ? (long long)all[total / 2] : 0,
               total ? (long long)all[(size_t)(total * 0.99)] : 0);
        return 0;
    }
    fprintf(stderr, "usage: %s server ENDPOINT | client ENDPOINT CLIENTS SECONDS PAYLOAD_BYTES\n", argv[0]);
    return 2;
}
