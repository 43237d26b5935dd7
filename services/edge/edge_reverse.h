/* edge_reverse - Anthropic's messages API in front of OpenAI's chat
 * completions: a /v1/messages request for an OpenAI-routed model (Claude Code
 * pointed at a GPT model, say) becomes a chat completions request (system,
 * text and image blocks, tools and tool_choice, tool_use and tool_result
 * blocks, stop sequences, max tokens), and the answer comes back as an
 * Anthropic message, streamed events included. The mirror of
 * edge_translate. */
#ifndef EDGE_REVERSE_H
#define EDGE_REVERSE_H

#include "fb_util.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* edge_rev_request - the chat completions body for an Anthropic messages
 * request (borrowed), for upstream_model. Returns it (caller owns), or NULL
 * with the reason in err (a 400). */
json_t *edge_rev_request(json_t *anthropic, const char *upstream_model, char *err, size_t errlen);

/* edge_rev_response - an Anthropic message for a chat.completion (borrowed),
 * naming model. Returns it (caller owns), or NULL when unreadable. */
json_t *edge_rev_response(json_t *openai, const char *model);

/* edge_rev_stop_reason - Anthropic's stop_reason for a finish_reason. */
const char *edge_rev_stop_reason(const char *finish_reason);

#define EDGE_REV_TOOLS  64                       /* tool calls one streamed answer may make */
#define EDGE_REV_BLOCKS (2 * EDGE_REV_TOOLS + 1) /* its content blocks: text between the calls */

typedef struct {
    char id[128];
    char model[160];
    bool started;      /* message_start written */
    int block;         /* index of the open content block, -1 when none */
    int next_block;    /* index the next block gets */
    int tool_of_block; /* OpenAI tool index of the open block, -1 for text */
    char stop_reason[32];
    int64_t input_tokens, output_tokens;
    int64_t cached_tokens; /* read from the prompt cache, not in input_tokens */
    bool finished;
} edge_rev_stream_t;

void edge_rev_stream_init(edge_rev_stream_t *st, const char *model);

/* edge_rev_stream_chunk - one OpenAI chunk (parsed), or NULL for "[DONE]",
 * as Anthropic events appended to out. Returns 0, or -1 for a chunk with
 * more tool calls than EDGE_REV_TOOLS, or one opening more content blocks
 * than an answer may have (the stream is then broken off). */
int edge_rev_stream_chunk(edge_rev_stream_t *st, json_t *chunk, fb_buf_t *out);

int edge_reverse_test(bool verbose);

#endif
