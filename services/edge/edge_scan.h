/* edge_scan - the usage of a provider's whole answer read without building
 * it as a JSON document. An OpenAI chat completion passes through the edge as
 * the provider sent it; all the edge needs of it is its usage, and parsing the
 * whole answer into jansson values cost ~13 % of the edge's CPU at its peak.
 * jsmn tokenizes it in place (no allocation) and the usage is read from the
 * tokens. The scan is conservative: it answers only for an answer jansson
 * would read the same way (printable ASCII, one top-level object, the usage
 * once, plain non-negative integers); anything else is left to the full
 * parse, which decides as before. */
#ifndef EDGE_SCAN_H
#define EDGE_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EDGE_SCAN_TOKENS 256 /* tokens of an answer the scan reads; more: the full parse */

typedef struct {
    int64_t prompt_tokens, completion_tokens;
    int64_t cached_tokens; /* usage.prompt_tokens_details.cached_tokens, 0 when absent */
} edge_scan_usage_t;

/* edge_scan_openai_usage - the usage of an OpenAI chat completion in
 * json[0..len). Returns true with *out filled when the answer is a JSON object
 * whose top-level usage has prompt_tokens and completion_tokens; false when
 * the scan cannot tell (the caller parses the answer fully). */
bool edge_scan_openai_usage(const char *json, size_t len, edge_scan_usage_t *out);

/* edge_scan_test - self-test: against jansson's reading of the same texts. */
int edge_scan_test(bool verbose);

#endif
