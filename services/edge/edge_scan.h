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

/* What jansson would make of a value: absent, null, true, false, an
 * integer (value), or anything else. */
typedef enum {
    EDGE_SCAN_ABSENT = 0,
    EDGE_SCAN_NULL,
    EDGE_SCAN_TRUE,
    EDGE_SCAN_FALSE,
    EDGE_SCAN_INTEGER,
    EDGE_SCAN_OTHER
} edge_scan_kind_t;

typedef struct {
    edge_scan_kind_t kind;
    int64_t value; /* EDGE_SCAN_INTEGER */
} edge_scan_value_t;

/* What a chat completions request says about its price and its route. */
typedef struct {
    const char *model; /* the model's bytes in the request (a string without escapes) */
    size_t model_len;
    int64_t messages;                        /* elements when messages is an array, else -1 */
    edge_scan_value_t stream, include_usage; /* stream_options.include_usage */
    edge_scan_value_t max_completion_tokens, max_tokens, n;
} edge_scan_request_t;

#define EDGE_SCAN_REQUEST_BYTES 16384 /* longer requests: the full parse */

/* edge_scan_openai_request - the fields above of the chat completions
 * request json[0..len). Returns true with *out filled when the request is
 * a JSON object jansson would read (with JSON_REJECT_DUPLICATES) to the same
 * values, within the scan's subset (printable ASCII, no \u escape, no key
 * escaped or twice in an object, integers of at most 18 digits and short
 * reals, at most EDGE_SCAN_TOKENS tokens) and its model a plain string;
 * false when the scan cannot tell (the caller parses the request fully). */
bool edge_scan_openai_request(const char *json, size_t len, edge_scan_request_t *out);

/* edge_scan_agrees - both scans of json[0..len) against jansson's reading
 * of the same text: false when a scan answered where jansson reads
 * something else (a bug; the self-test and the fuzz driver edge_scan). */
bool edge_scan_agrees(const char *json, size_t len);

/* edge_scan_test - self-test: against jansson's reading of the same texts. */
int edge_scan_test(bool verbose);

#endif
