/* farebox-chain-watcher - finds USDC deposits on Base and Solana and has the
 * ledger credit each exactly once; follows settlement transactions.
 *
 *   rpc    deposit_address (proto/README.md)
 *
 * Not built yet: deposit scanning; its methods answer "not_implemented". */
#include "fb_log.h"
#include "fb_service.h"
#include "fb_util.h"

#include <stdio.h>

static const fb_service_def_t s_def = {
    .name = "chain-watcher",
    .summary = "USDC deposit detection on Base and Solana",
    .rpc_bind = "tcp://127.0.0.1:7130-7139",
    .peers = FB_PEER_LEDGER,
};

static void s_not_implemented(void *arg, fb_rpc_call_t *call)
{
    FB_UNUSED(arg);
    fb_rpc_call_error(&call, FB_RPC_E_NOT_IMPLEMENTED, NULL, 0,
                      "chain_watcher.deposit_address is not implemented yet");
}

int main(int argc, char **argv)
{
    fb_service_t *svc = fb_service_new(argc, argv, &s_def);
    fb_rpc_server_handle(fb_service_rpc(svc), "chain_watcher.deposit_address", s_not_implemented, NULL);
    int code = fb_service_run(svc);
    fb_service_destroy(&svc);
    return code;
}
