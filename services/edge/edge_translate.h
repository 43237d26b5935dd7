/* edge_translate - OpenAI's chat completions in front of Anthropic's messages
 * API: a /v1/chat/completions request for an Anthropic-routed model is
 * translated to a messages request (system prompt, messages, image parts,
 * tool definitions, tool calls and results, max tokens, stop sequences), and
 * the answer back (text, tool calls, stop reason, usage), streamed events
 * included. What has no counterpart is refused (n > 1, audio or file parts,
 * structured response_format) rather than silently dropped; sampling knobs
 * Anthropic lacks (penalties, seed, logprobs) are ignored, as other gateways
 * do. */
#ifndef EDGE_TRANSLATE_H
#define EDGE_TRANSLATE_H

#include "fb_util.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* edge_tr_request - the Anthropic messages body for an OpenAI chat request
 * (borrowed), with model set to upstream_model and max_tokens to max_tokens.
 * Returns the new body (caller owns it), or NULL with the reason in err (the
 * caller answers 400 invalid_request). */
json_t *edge_tr_request(json_t *openai, const char *upstream_model, int64_t max_tokens, char *err,
                        size_t errlen);

/* edge_tr_response - an OpenAI chat.completion for an Anthropic message
 * (borrowed), naming model. Returns the new document (caller owns it), or
 * NULL when the message is not readable. */
json_t *edge_tr_response(json_t *anthropic, const char *model);

/* edge_tr_usage - the billable tokens of an Anthropic usage object: input
 * counts cache writes and reads too. Returns 0 when input and output are
 * present, -1 when not. */
int edge_tr_usage(json_t *usage, int64_t *input, int64_t *output);

/* edge_tr_cache_tokens - of those input tokens, how many were read from
 * (cache_read_input_tokens) and written to (cache_creation_input_tokens)
 * the prompt cache; 0 for a figure absent or not a whole number. */
void edge_tr_cache_tokens(json_t *usage, int64_t *read, int64_t *write);

/* edge_tr_usage_running - folds the usage of a streamed Anthropic message
 * (message_start's, or a message_delta's: its counts are the message's so
 * far, and input and cache tokens grow when the provider runs a server tool)
 * into running figures: *input counts the cache reads and writes, as
 * edge_tr_usage's does. A figure absent keeps its value; *seen is set once
 * any input figure was given. */
void edge_tr_usage_running(json_t *usage, int64_t *input, int64_t *read, int64_t *write, bool *seen);

/* edge_tr_cache_1h_tokens - of the tokens written to the cache, how many
 * for an hour (usage.cache_creation.ephemeral_1h_input_tokens), or -1 when
 * the usage does not say. */
int64_t edge_tr_cache_1h_tokens(json_t *usage);

#define EDGE_TR_BLOCKS 128 /* content blocks one streamed message may have */

/* The state of one translated stream. */
typedef struct {
    char id[128];
    char model[160];
    int64_t created;
    bool include_usage;                  /* the caller asked for the usage chunk */
    int next_tool;                       /* next OpenAI tool_calls index */
    int16_t block_tool[EDGE_TR_BLOCKS];  /* Anthropic block -> tool index, -1 for text */
    int64_t input_tokens, output_tokens; /* as reported so far */
    int64_t cached_tokens;               /* of input_tokens, read from the prompt cache */
    int64_t cache_written;               /* of input_tokens, written to the prompt cache */
    bool input_seen, output_seen;
    bool finished; /* message_stop seen: [DONE] written */
} edge_tr_stream_t;

void edge_tr_stream_init(edge_tr_stream_t *st, const char *model, bool include_usage);

/* edge_tr_stream_event - one Anthropic stream event (name and parsed data) as
 * OpenAI chunks appended to out ("data: {...}\n\n" lines). Returns 0, or -1
 * when the event is not readable. An Anthropic "error" event becomes an
 * OpenAI error chunk. */
int edge_tr_stream_event(edge_tr_stream_t *st, const char *name, json_t *data, fb_buf_t *out);

/* edge_tr_finish_reason - OpenAI's finish_reason for an Anthropic stop_reason. */
const char *edge_tr_finish_reason(const char *stop_reason);

int edge_translate_test(bool verbose);

#endif
