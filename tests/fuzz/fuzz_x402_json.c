/* fuzz_x402_json - the input is a JSON request body as the edge receives it:
 * a facilitator request ({x402Version, paymentPayload, paymentRequirements}),
 * a bare PaymentPayload or PaymentRequired, or a signed-message payment
 * proof (/api/v1/prompt's "payment"). Parsed with the edge's limits, then
 * every offline check it reaches. Structure-aware inputs reach deeper here
 * than through base64. */
#include "fuzz.h"
#include "message_proof.h"
#include "x402_checks.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!doc)
        return 0;
    if (json_is_object(doc)) {
        fuzz_x402_document(doc);
        msgproof_t m;
        char err[256];
        json_t *proof = json_object_get(doc, "payment");
        if (msgproof_parse(proof ? proof : doc, &m, err, sizeof(err)) == 0) {
            msgproof_check(&m, (int64_t)FUZZ_NOW * 1000, 300000, 60000);
            if (!m.reason) {
                FUZZ_ASSERT(strcmp(m.signer, m.from) == 0 && m.amount_micro == m.amount_cents * 10000);
                fuzz_passes++;
            }
        }
    }
    json_decref(doc);
    return 0;
}
