/* farebox-verifier - checks and settles x402 payments.
 *
 *   rpc    verify, settle, supported, verify_message (proto/README.md)
 *   state  none of its own; payments are recorded through the ledger
 *
 * Not built yet: every payment method answers "not_implemented" (README). */
#include "fb_log.h"
#include "fb_service.h"
#include "fb_util.h"

static const fb_service_def_t s_def = {
    .name = "verifier",
    .summary = "verification and on-chain settlement of x402 payments",
    .rpc_bind = "tcp://127.0.0.1:7120-7129",
    .peers = FB_PEER_LEDGER,
};

static void s_not_implemented(void *arg, fb_rpc_call_t *call)
{
    const char *method = arg;
    fb_rpc_call_error(&call, FB_RPC_E_NOT_IMPLEMENTED, NULL, 0, "verifier.%s is not implemented yet", method);
}

int main(int argc, char **argv)
{
    fb_service_t *svc = fb_service_new(argc, argv, &s_def);
    static const char *methods[] = {"verify", "settle", "supported", "verify_message"};
    char name[64];
    for (size_t i = 0; i < FB_ARRAY_SIZE(methods); i++) {
        snprintf(name, sizeof(name), "verifier.%s", methods[i]);
        fb_rpc_server_handle(fb_service_rpc(svc), name, s_not_implemented, (void *)methods[i]);
    }
    int code = fb_service_run(svc);
    fb_service_destroy(&svc);
    return code;
}
