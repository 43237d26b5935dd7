/* farebox-test-echo - a service built on the common RPC layer, for testing it.
 *
 * Methods: echo (returns its body), sleep (answers after body.ms milliseconds;
 * with body.hang true, never answers: a hung replica). Every reply names the
 * replica, so tests can see how calls spread. Not part of a deployment. */
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_service.h"
#include "fb_util.h"

#include <stdlib.h>
#include <string.h>

static const fb_service_def_t s_def = {
    .name = "test-echo",
    .summary = "echo service for RPC tests",
    .rpc_bind = "tcp://127.0.0.1:7190-7199",
};

static void s_echo(void *arg, fb_rpc_call_t *call)
{
    FB_UNUSED(arg);
    const msgpack_object *body = fb_rpc_call_request(call)->body;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *body);
    fb_rpc_call_reply(&call, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

typedef struct {
    uv_timer_t timer;
    fb_rpc_call_t *call;
} s_sleep_t;

static void s_sleep_done(uv_timer_t *t)
{
    s_sleep_t *s = t->data;
    fb_rpc_call_reply(&s->call, NULL, 0);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static void s_sleep(void *arg, fb_rpc_call_t *call)
{
    uv_loop_t *loop = arg;
    const msgpack_object *body = fb_rpc_call_request(call)->body;
    bool hang = false;
    fb_mp_get_bool(body, "hang", &hang);
    if (hang)
        return; /* never answered: the caller must retry elsewhere */
    int64_t ms = 0;
    if (!fb_mp_get_int64(body, "ms", &ms) || ms < 0 || ms > 600000) {
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "body.ms must be 0..600000");
        return;
    }
    s_sleep_t *s = fb_calloc(1, sizeof(*s));
    s->call = call;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, s_sleep_done, (uint64_t)ms, 0);
}

int main(int argc, char **argv)
{
    fb_service_t *svc = fb_service_new(argc, argv, &s_def);
    fb_rpc_server_handle(fb_service_rpc(svc), "echo", s_echo, NULL);
    fb_rpc_server_handle(fb_service_rpc(svc), "sleep", s_sleep, fb_service_loop(svc));
    int code = fb_service_run(svc);
    fb_service_destroy(&svc);
    return code;
}
