/* fuzz_x402_header - the input is an x402 header value (PAYMENT-SIGNATURE,
 * X-PAYMENT or PAYMENT-REQUIRED): decoded as the verifier decodes it, then
 * every offline check the document reaches. Properties: the base64 decoder
 * agrees with libsodium's on every input; a decoded header re-encodes to a
 * header that decodes to the same document. */
#include "fb_codec.h"
#include "fb_x402.h"
#include "fuzz.h"
#include "x402_checks.h"

#include <sodium.h>
#include <stdbool.h>
#include <string.h>

/* farebox's base64 (padding optional, as the reference accepts) against
 * libsodium's unpadded decoder on the text without its trailing pads. Only
 * on ASCII: libsodium 1.0.18 (Debian 12) reads every byte above 0x7f as "/",
 * where farebox refuses the text. */
static void s_base64_agrees(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t cap = size / 4 * 3 + 3;
    uint8_t *ours = malloc(cap), *theirs = malloc(cap);
    FUZZ_ASSERT(ours && theirs);
    int got = fb_base64_decode(ours, cap, text, size);
    bool ascii = true;
    for (size_t i = 0; i < size; i++)
        ascii = ascii && data[i] <= 0x7f;
    if (!ascii) {
        FUZZ_ASSERT(got < 0);
    } else {
        size_t len = size;
        while (len > 0 && size - len < 2 && text[len - 1] == '=')
            len--;
        size_t their_len = 0;
        int rc = sodium_base642bin(theirs, cap, text, len, NULL, &their_len, NULL,
                                   sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
        FUZZ_ASSERT((got >= 0) == (rc == 0));
        if (got >= 0)
            FUZZ_ASSERT((size_t)got == their_len && memcmp(ours, theirs, their_len) == 0);
    }
    free(ours);
    free(theirs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    s_base64_agrees(data, size);
    char err[256];
    json_t *doc = fb_x402_decode_header((const char *)data, size, err, sizeof(err));
    if (!doc)
        return 0;
    char *again = fb_x402_encode_header(doc);
    json_t *back = fb_x402_decode_header(again, strlen(again), err, sizeof(err));
    FUZZ_ASSERT(back && json_equal(doc, back));
    json_decref(back);
    free(again);
    fuzz_x402_document(doc);
    json_decref(doc);
    return 0;
}
