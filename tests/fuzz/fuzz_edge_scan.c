/* fuzz_edge_scan - the input is a provider's answer or a caller's chat
 * completions request, read by the edge's scans (edge_scan.h) without
 * building a document. Property: whatever a scan answers for, jansson reads
 * the same text to the same values (usage; model, messages, stream,
 * include_usage, max tokens, n) - the scans only ever skip the full parse,
 * never change what it would decide. */
#include "edge_scan.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FUZZ_ASSERT(edge_scan_agrees((const char *)data, size));
    return 0;
}
