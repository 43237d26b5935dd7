/* edge_chat - the paid routes: POST /v1/chat/completions (also
 * /api/v1/chat/completions), POST /v1/messages and POST /api/v1/prompt.
 *
 * One call, prepaid with an API key:
 *   read     the body is checked and the provider's request made first, so
 *            that bad input is refused before anything is held
 *   key      the key is looked up in the ledger (state, allowlist)
 *   hold     the worst case is held: ceil(body bytes x input price / 10^6) +
 *            ceil(max tokens x output price / 10^6) (the model's output cap
 *            when the caller gives none); the ledger checks revocation, the
 *            key's cap and the balance
 *   upstream the provider is called on the loop; streams are passed on as
 *            their events arrive (translated for Anthropic models on the
 *            OpenAI route)
 *   commit   the cost of the reported usage (input and output each rounded
 *            up, never more than the hold) is committed, the rest released;
 *            a provider failure before any output voids the hold; a client
 *            that leaves mid-call has the provider call cancelled and pays
 *            the input plus the output produced; a stream without usage is
 *            charged from a conservative count of what was delivered. */
#ifndef EDGE_CHAT_H
#define EDGE_CHAT_H

#include "edge.h"

int edge_chat_completions(edge_worker_t *w, h2o_req_t *req, const char *rid);
int edge_chat_messages(edge_worker_t *w, h2o_req_t *req, const char *rid);
int edge_chat_prompt(edge_worker_t *w, h2o_req_t *req, const char *rid);

/* edge_chat_watch_keys - look up again (uncached) the keys of this worker's
 * prepaid calls running for more than a second, and cut the calls of a key
 * found revoked (run every second by the worker): every key each second up to
 * 1,024 keys, more in turn. */
void edge_chat_watch_keys(edge_worker_t *w);

/* edge_chat_output_estimate - the conservative output token count of a
 * stream that reported no usage: the larger of the content events delivered
 * and a third of the text bytes (rounded up), and at least 1. */
int64_t edge_chat_output_estimate(int64_t events, int64_t bytes);

/* edge_chat_input_unbounded - whether a request's input can cost more tokens
 * than its body has bytes: it names media or documents by URL, files by id,
 * or server tools (web search or fetch, code execution, MCP servers), whose
 * content the provider adds. Such a call's ceiling counts the model's whole
 * context as input. */
bool edge_chat_input_unbounded(const char *body, size_t len);

/* edge_chat_image_input - the input tokens a request's body bounds when the
 * only input it has beyond its bytes is images (OpenAI's image_url parts,
 * Anthropic's image blocks, nothing else in them), each costing at most
 * image_tokens: its bytes less the images' data or URLs, plus image_tokens
 * per image. -1 when it has other such input, or image_tokens is 0. */
int64_t edge_chat_image_input(const char *body, size_t len, int64_t image_tokens);

int edge_chat_test(bool verbose);

#endif
