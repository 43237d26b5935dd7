/* verifier_svm - Solana exact scheme: not built yet (README: what is not done
 * yet). Every Solana payment is answered "not implemented", never accepted. */
#include "verifier_internal.h"

#include <stdio.h>
#include <string.h>

void verifier_svm_run(verifier_t *v, bool settle, json_t *payload, json_t *requirements,
                      const fb_x402_payload_t *p, const fb_x402_requirements_t *r, const char *trace,
                      verifier_done_fn *done, void *arg)
{
    (void)v;
    (void)settle;
    (void)payload;
    (void)requirements;
    (void)r;
    (void)trace;
    verifier_result_t res;
    memset(&res, 0, sizeof(res));
    res.error_code = "not_implemented";
    snprintf(res.network, sizeof(res.network), "%s", p->network);
    snprintf(res.message, sizeof(res.message), "Solana payments are not implemented yet");
    done(arg, &res);
}
