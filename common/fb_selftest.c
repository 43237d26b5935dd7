/* fb_selftest - runs the x_test() of every class: all of them, or those named
 * on the command line. ctest runs one class per test entry.
 *
 *   farebox-selftest [-v] [class ...]      farebox-selftest --list */
#include "fb_config.h"
#include "fb_curlm.h"
#include "fb_curve.h"
#include "fb_endpoint.h"
#include "fb_jsonrpc.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_rpc_msg.h"
#include "fb_util.h"

#include "edge_routes.h"
#include "edge_admin.h"
#include "edge_auth.h"
#include "edge_catalog.h"
#include "edge_chat.h"
#include "edge_sse.h"
#include "edge_translate.h"
#include "edge_reverse.h"
#include "edge_upstream.h"
#include "edge_journal.h"
#include "edge_x402.h"
#include "edge_limit.h"
#include "edge_metrics.h"
#include "edge_scan.h"
#include "edge_facilitator.h"
#include "edge_reply.h"
#include "fb_apikey.h"
#include "fb_codec.h"
#include "fb_eip712.h"
#include "fb_evm.h"
#include "fb_keccak.h"
#include "fb_ethtx.h"
#include "fb_rlp.h"
#include "fb_hdkey.h"
#include "fb_secp.h"
#include "fb_solana.h"
#include "fb_x402.h"
#include "ledger_rpc.h"
#include "evm_exact.h"
#include "svm_exact.h"
#include "message_proof.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*test)(bool verbose);
} s_test_t;

/* one entry per class; keep in step with FAREBOX_SELFTESTS in tests/tests.cmake */
// clang-format off
static const s_test_t s_tests[] = {
    {"fb_util", fb_util_test},
    {"fb_log", fb_log_test},
    {"fb_config", fb_config_test},
    {"fb_msgpack", fb_msgpack_test},
    {"fb_endpoint", fb_endpoint_test},
    {"fb_curve", fb_curve_test},
    {"fb_curlm", fb_curlm_test},
    {"fb_jsonrpc", fb_jsonrpc_test},
    {"fb_rpc_msg", fb_rpc_msg_test},
    {"fb_codec", fb_codec_test},
    {"fb_apikey", fb_apikey_test},
    {"fb_keccak", fb_keccak_test},
    {"fb_evm", fb_evm_test},
    {"fb_secp", fb_secp_test},
    {"fb_hdkey", fb_hdkey_test},
    {"fb_eip712", fb_eip712_test},
    {"fb_rlp", fb_rlp_test},
    {"fb_ethtx", fb_ethtx_test},
    {"fb_solana", fb_solana_test},
    {"fb_x402", fb_x402_test},
    {"edge_routes", edge_routes_test},
    {"edge_facilitator", edge_facilitator_test},
    {"edge_reply", edge_reply_test},
    {"edge_catalog", edge_catalog_test},
    {"edge_auth", edge_auth_test},
    {"edge_admin", edge_admin_test},
    {"edge_sse", edge_sse_test},
    {"edge_translate", edge_translate_test},
    {"edge_reverse", edge_reverse_test},
    {"edge_chat", edge_chat_test},
    {"edge_upstream", edge_upstream_test},
    {"edge_journal", edge_journal_test},
    {"edge_x402", edge_x402_test},
    {"edge_limit", edge_limit_test},
    {"edge_metrics", edge_metrics_test},
    {"edge_scan", edge_scan_test},
    {"ledger_rpc", ledger_rpc_test},
    {"evm_exact", evm_exact_test},
    {"svm_exact", svm_exact_test},
    {"message_proof", message_proof_test},
};
// clang-format on

int main(int argc, char **argv)
{
    bool verbose = false;
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        verbose = true;
        first = 2;
    }
    if (argc > 1 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < FB_ARRAY_SIZE(s_tests); i++)
            printf("%s\n", s_tests[i].name);
        return 0;
    }
    zsys_handler_set(NULL);
    int ran = 0;
    for (size_t i = 0; i < FB_ARRAY_SIZE(s_tests); i++) {
        bool wanted = first >= argc;
        for (int a = first; a < argc; a++)
            wanted |= strcmp(argv[a], s_tests[i].name) == 0;
        if (!wanted)
            continue;
        printf(" * %s: ", s_tests[i].name);
        fflush(stdout);
        if (s_tests[i].test(verbose) != 0) {
            printf("FAILED\n");
            return 1;
        }
        printf("OK\n");
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no such test\n");
        return 2;
    }
    zsys_shutdown();
    return 0;
}
