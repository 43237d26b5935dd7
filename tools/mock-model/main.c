/* farebox-mock-model - the built-in mock upstream LLM, for development, tests
 * and benchmarks (no provider key needed, nothing leaves the machine).
 *
 * Serves OpenAI's POST /v1/chat/completions and Anthropic's POST /v1/messages,
 * non-streaming and streaming (SSE), with usage in both dialects, plus
 * GET /v1/models and GET /healthz.
 *
 * The reply is deterministic text of N tokens, N = the request's max_tokens
 * (max_completion_tokens) capped by FAREBOX_MOCK_REPLY_TOKENS. Usage counts one
 * input token per 4 bytes of message text (rounded up).
 *
 * Directives in the last message's text steer a call (they pass unchanged
 * through any proxy):
 *   [mock:tokens=N]   reply with N tokens
 *   [mock:fail=S]     answer HTTP status S with an error body
 *   [mock:hang]       never answer
 *   [mock:cut=N]      stream N tokens, then drop the connection (no usage)
 *   [mock:nousage]    stream without a usage event
 *   [mock:delay=MS]   wait MS before the first byte
 *   [mock:rate=N]     stream N tokens per second
 *   [mock:tool=NAME]  call tool NAME with {"city":"Paris"} (the request must
 *                     offer it first in tools, in its own dialect's shape)
 *   [mock:cache_read=N]  N of the input tokens were read from the prompt cache
 *   [mock:cache_write=N] N of them were written to it (Anthropic only: OpenAI
 *                     reports cached_tokens within prompt_tokens, no writes)
 *
 * Configuration: FAREBOX_MOCK_LISTEN (127.0.0.1:8404), FAREBOX_MOCK_TOKENS_PER_S
 * (0: all at once), FAREBOX_MOCK_LATENCY_MS (before the first token),
 * FAREBOX_MOCK_REPLY_TOKENS (default reply length, 16). */
#include "fb_config.h"
#include "fb_http.h"
#include "fb_log.h"
#include "fb_util.h"

#include <czmq.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const fb_config_var_t s_vars[] = {
    {"FAREBOX_MOCK_LISTEN", FB_CFG_STRING, "127.0.0.1:8404", 0, 0, NULL, fb_http_check_hostport,
     "listen address of the mock model"},
    {"FAREBOX_MOCK_TOKENS_PER_S", FB_CFG_INT, "0", 0, 1000000, NULL, NULL,
     "streaming speed in tokens per second (0: everything at once)"},
    {"FAREBOX_MOCK_LATENCY_MS", FB_CFG_INT, "0", 0, 600000, NULL, NULL, "delay before the first token"},
    {"FAREBOX_MOCK_REPLY_TOKENS", FB_CFG_INT, "16", 1, 1000000, NULL, NULL, "tokens in a reply by default"},
    {"FAREBOX_LOG_LEVEL", FB_CFG_ENUM, "info", 0, 0, "debug|info|warn|error", NULL,
     "lowest log level written"},
};

static const char *s_words[] = {"The ", "mock ", "model ", "says ", "hello ", "from ", "farebox. "};

typedef struct {
    h2o_globalconf_t h2o;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept;
    uv_loop_t *loop;
    int64_t tokens_per_s, latency_ms, reply_tokens;
} s_mock_t;

static s_mock_t s_mock;

typedef enum { DIALECT_OPENAI, DIALECT_ANTHROPIC } s_dialect_t;

/* One call being answered. */
typedef struct {
    h2o_generator_t super; /* must be first: h2o calls proceed/stop with it */
    h2o_req_t *req;        /* the request; the call lives in its pool's lifetime */
    s_dialect_t dialect;
    bool stream, usage, sending, started, finished;
    int64_t tokens, sent, cut_after;
    int64_t input_tokens;            /* all of them, cached or not */
    int64_t cache_read, cache_write; /* of input_tokens */
    bool cache_seen;                 /* report them (a [mock:cache_...] directive) */
    int64_t rate;                    /* tokens per second, 0: all at once */
    char tool[64];                   /* the tool to call, or "" */
    char model[128];
    char id[40];
    uv_timer_t timer; /* first token delay, token pacing */
} s_call_t;

/* --- request reading ------------------------------------------------------------- */

static int64_t s_directive(const char *text, const char *name, int64_t dflt)
{
    char key[64];
    snprintf(key, sizeof(key), "[mock:%s", name);
    const char *p = text ? strstr(text, key) : NULL;
    if (!p)
        return dflt;
    p += strlen(key);
    if (*p == ']')
        return 1;
    if (*p == '=')
        return strtoll(p + 1, NULL, 10);
    return dflt;
}

/* The text value of [mock:NAME=VALUE] into out ("" when absent). */
static void s_directive_text(const char *text, const char *name, char *out, size_t cap)
{
    char key[64];
    snprintf(key, sizeof(key), "[mock:%s=", name);
    const char *p = text ? strstr(text, key) : NULL;
    out[0] = '\0';
    if (!p)
        return;
    p += strlen(key);
    size_t n = 0;
    while (p[n] && p[n] != ']' && n + 1 < cap)
        n++;
    memcpy(out, p, n);
    out[n] = '\0';
}

/* Total text length of messages (and system prompt) and the last message text. */
static void s_scan_messages(json_t *body, size_t *bytes, const char **last)
{
    *bytes = 0;
    *last = "";
    json_t *sys = json_object_get(body, "system");
    if (json_is_string(sys))
        *bytes += json_string_length(sys);
    json_t *msgs = json_object_get(body, "messages");
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        json_t *content = json_object_get(m, "content");
        if (json_is_string(content)) {
            *bytes += json_string_length(content);
            *last = json_string_value(content);
        } else if (json_is_array(content)) {
            size_t k;
            json_t *part;
            json_array_foreach(content, k, part)
            {
                json_t *t = json_object_get(part, "text");
                if (json_is_string(t)) {
                    *bytes += json_string_length(t);
                    *last = json_string_value(t);
                }
            }
        }
    }
}

/* --- output ------------------------------------------------------------------------ */

static const char *s_token(int64_t i)
{
    return s_words[i % (int64_t)FB_ARRAY_SIZE(s_words)];
}

static void s_send_json(h2o_req_t *req, int status, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    fb_http_send(req, status, "application/json", text, strlen(text));
    free(text);
    json_decref(j);
}

static json_t *s_usage_openai(s_call_t *c, int64_t out)
{
    json_t *u = json_pack("{sI sI sI}", "prompt_tokens", (json_int_t)c->input_tokens, "completion_tokens",
                          (json_int_t)out, "total_tokens", (json_int_t)(c->input_tokens + out));
    if (c->cache_seen)
        json_object_set_new(u, "prompt_tokens_details",
                            json_pack("{sI}", "cached_tokens", (json_int_t)c->cache_read));
    return u;
}

/* Anthropic's input_tokens leave out the tokens read from or written to the cache. */
static json_t *s_usage_anthropic(s_call_t *c, int64_t out)
{
    json_t *u =
        json_pack("{sI sI}", "input_tokens", (json_int_t)(c->input_tokens - c->cache_read - c->cache_write),
                  "output_tokens", (json_int_t)out);
    if (c->cache_seen)
        json_object_update_new(u,
                               json_pack("{sI sI}", "cache_creation_input_tokens", (json_int_t)c->cache_write,
                                         "cache_read_input_tokens", (json_int_t)c->cache_read));
    return u;
}

static void s_send_whole(s_call_t *c, h2o_req_t *req)
{
    size_t cap = (size_t)c->tokens * 10 + 1, len = 0;
    char *text = fb_malloc(cap);
    text[0] = '\0';
    for (int64_t i = 0; i < c->tokens; i++) {
        const char *w = s_token(i);
        size_t wl = strlen(w);
        if (len + wl + 1 > cap)
            break;
        memcpy(text + len, w, wl + 1);
        len += wl;
    }
    json_t *j;
    if (c->tool[0] && c->dialect == DIALECT_OPENAI) {
        j = json_pack("{ss ss sI ss s[{sI s{ss so s[{ss ss s{ss ss}}]} so ss}] so}", "id", c->id, "object",
                      "chat.completion", "created", (json_int_t)(fb_now_ms() / 1000), "model", c->model,
                      "choices", "index", (json_int_t)0, "message", "role", "assistant", "content",
                      json_null(), "tool_calls", "id", "call_mock1", "type", "function", "function", "name",
                      c->tool, "arguments", "{\"city\":\"Paris\"}", "logprobs", json_null(), "finish_reason",
                      "tool_calls", "usage", s_usage_openai(c, c->tokens));
    } else if (c->tool[0]) {
        j = json_pack("{ss ss ss ss s[{ss ss ss s{ss}}] ss so so}", "id", c->id, "type", "message", "role",
                      "assistant", "model", c->model, "content", "type", "tool_use", "id", "toolu_mock1",
                      "name", c->tool, "input", "city", "Paris", "stop_reason", "tool_use", "stop_sequence",
                      json_null(), "usage", s_usage_anthropic(c, c->tokens));
    } else if (c->dialect == DIALECT_OPENAI) {
        j = json_pack("{ss ss sI ss s[{sI s{ss ss} so ss}] so}", "id", c->id, "object", "chat.completion",
                      "created", (json_int_t)(fb_now_ms() / 1000), "model", c->model, "choices", "index",
                      (json_int_t)0, "message", "role", "assistant", "content", text, "logprobs", json_null(),
                      "finish_reason", "length", "usage", s_usage_openai(c, c->tokens));
    } else {
        j = json_pack("{ss ss ss ss s[{ss ss}] ss so so}", "id", c->id, "type", "message", "role",
                      "assistant", "model", c->model, "content", "type", "text", "text", text, "stop_reason",
                      "max_tokens", "stop_sequence", json_null(), "usage", s_usage_anthropic(c, c->tokens));
    }
    free(text);
    s_send_json(req, 200, j);
}

/* Formats one SSE event into the request pool. */
static h2o_iovec_t s_event(h2o_req_t *req, const char *event, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    size_t n = strlen(text) + (event ? strlen(event) : 0) + 32;
    char *buf = h2o_mem_alloc_pool(&req->pool, n);
    int len = event ? snprintf(buf, n, "event: %s\ndata: %s\n\n", event, text)
                    : snprintf(buf, n, "data: %s\n\n", text);
    free(text);
    return h2o_iovec_init(buf, (size_t)len);
}

static h2o_iovec_t s_raw(h2o_req_t *req, const char *s)
{
    size_t n = strlen(s);
    char *buf = h2o_mem_alloc_pool(&req->pool, n);
    memcpy(buf, s, n);
    return h2o_iovec_init(buf, n);
}

/* The next piece of a stream: the opening events, one token, or the ending. */
static void s_stream_step(s_call_t *c)
{
    h2o_req_t *req = c->req;
    if (!req || c->finished)
        return;
    h2o_iovec_t bufs[4];
    size_t n = 0;
    bool final = false;
    if (!c->started) {
        c->started = true;
        if (c->dialect == DIALECT_ANTHROPIC) {
            bufs[n++] = s_event(req, "message_start",
                                json_pack("{ss s{ss ss ss ss s[] so so so}}", "type", "message_start",
                                          "message", "id", c->id, "type", "message", "role", "assistant",
                                          "model", c->model, "content", "stop_reason", json_null(),
                                          "stop_sequence", json_null(), "usage", s_usage_anthropic(c, 1)));
            bufs[n++] = s_event(req, "content_block_start",
                                json_pack("{ss sI s{ss ss}}", "type", "content_block_start", "index",
                                          (json_int_t)0, "content_block", "type", "text", "text", ""));
        } else {
            bufs[n++] =
                s_event(req, NULL,
                        json_pack("{ss ss sI ss s[{sI s{ss ss} so}]}", "id", c->id, "object",
                                  "chat.completion.chunk", "created", (json_int_t)(fb_now_ms() / 1000),
                                  "model", c->model, "choices", "index", (json_int_t)0, "delta", "role",
                                  "assistant", "content", "", "finish_reason", json_null()));
        }
    } else if (c->cut_after >= 0 && c->sent >= c->cut_after) {
        /* drop the connection without a proper end */
        c->finished = true;
        h2o_req_t *r = req;
        r->http1_is_persistent = 0;
        h2o_iovec_t none = {NULL, 0};
        h2o_send(r, &none, 0, H2O_SEND_STATE_ERROR);
        return;
    } else if (c->tool[0] && c->sent < c->tokens) {
        c->sent = c->tokens;
        if (c->dialect == DIALECT_ANTHROPIC) {
            bufs[n++] = s_event(req, "content_block_stop",
                                json_pack("{ss sI}", "type", "content_block_stop", "index", (json_int_t)0));
            bufs[n++] = s_event(req, "content_block_start",
                                json_pack("{ss sI s{ss ss ss s{}}}", "type", "content_block_start", "index",
                                          (json_int_t)1, "content_block", "type", "tool_use", "id",
                                          "toolu_mock1", "name", c->tool, "input"));
            bufs[n++] = s_event(req, "content_block_delta",
                                json_pack("{ss sI s{ss ss}}", "type", "content_block_delta", "index",
                                          (json_int_t)1, "delta", "type", "input_json_delta", "partial_json",
                                          "{\"city\":\"Paris\"}"));
        } else {
            bufs[n++] = s_event(
                req, NULL,
                json_pack("{ss ss sI ss s[{sI s{s[{sI ss ss s{ss ss}}]} so}]}", "id", c->id, "object",
                          "chat.completion.chunk", "created", (json_int_t)(fb_now_ms() / 1000), "model",
                          c->model, "choices", "index", (json_int_t)0, "delta", "tool_calls", "index",
                          (json_int_t)0, "id", "call_mock1", "type", "function", "function", "name", c->tool,
                          "arguments", "{\"city\":\"Paris\"}", "finish_reason", json_null()));
        }
    } else if (c->sent < c->tokens) {
        const char *w = s_token(c->sent++);
        if (c->dialect == DIALECT_ANTHROPIC)
            bufs[n++] = s_event(req, "content_block_delta",
                                json_pack("{ss sI s{ss ss}}", "type", "content_block_delta", "index",
                                          (json_int_t)0, "delta", "type", "text_delta", "text", w));
        else
            bufs[n++] = s_event(
                req, NULL,
                json_pack("{ss ss sI ss s[{sI s{ss} so}]}", "id", c->id, "object", "chat.completion.chunk",
                          "created", (json_int_t)(fb_now_ms() / 1000), "model", c->model, "choices", "index",
                          (json_int_t)0, "delta", "content", w, "finish_reason", json_null()));
    } else {
        final = true;
        c->finished = true;
        if (c->dialect == DIALECT_ANTHROPIC) {
            bufs[n++] = s_event(req, "content_block_stop",
                                json_pack("{ss sI}", "type", "content_block_stop", "index",
                                          (json_int_t)(c->tool[0] ? 1 : 0)));
            json_t *delta = json_pack("{ss s{ss so}}", "type", "message_delta", "delta", "stop_reason",
                                      c->tool[0] ? "tool_use" : "max_tokens", "stop_sequence", json_null());
            if (c->usage)
                json_object_set_new(delta, "usage", json_pack("{sI}", "output_tokens", (json_int_t)c->sent));
            bufs[n++] = s_event(req, "message_delta", delta);
            bufs[n++] = s_event(req, "message_stop", json_pack("{ss}", "type", "message_stop"));
        } else {
            bufs[n++] = s_event(
                req, NULL,
                json_pack("{ss ss sI ss s[{sI s{} ss}]}", "id", c->id, "object", "chat.completion.chunk",
                          "created", (json_int_t)(fb_now_ms() / 1000), "model", c->model, "choices", "index",
                          (json_int_t)0, "delta", "finish_reason", c->tool[0] ? "tool_calls" : "length"));
            if (c->usage)
                bufs[n++] =
                    s_event(req, NULL,
                            json_pack("{ss ss sI ss s[] so}", "id", c->id, "object", "chat.completion.chunk",
                                      "created", (json_int_t)(fb_now_ms() / 1000), "model", c->model,
                                      "choices", "usage", s_usage_openai(c, c->sent)));
            bufs[n++] = s_raw(req, "data: [DONE]\n\n");
        }
    }
    c->sending = true;
    h2o_send(req, bufs, n, final ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void s_on_timer(uv_timer_t *t)
{
    s_call_t *c = t->data;
    if (!c->req)
        return;
    if (!c->stream) {
        s_send_whole(c, c->req);
        return;
    }
    if (!c->sending)
        s_stream_step(c);
}

/* h2o asks for more: the previous piece is on its way. */
static void s_on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    FB_UNUSED(req);
    s_call_t *c = (s_call_t *)gen;
    c->sending = false;
    if (c->finished)
        return;
    if (c->rate > 0 && c->sent > 0) {
        uint64_t gap = (uint64_t)(1000 / c->rate);
        uv_timer_start(&c->timer, s_on_timer, gap, 0);
    } else {
        s_stream_step(c);
    }
}

static void s_on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    FB_UNUSED(req);
    s_call_t *c = (s_call_t *)gen;
    c->finished = true;
    uv_timer_stop(&c->timer);
}

/* The call belongs to its request: when h2o disposes the request's pool (the
 * response is done or the client went away), the call is freed. */
typedef struct {
    s_call_t *call;
} s_owner_t;

static void s_call_closed(uv_handle_t *h)
{
    free(h->data);
}

static void s_owner_dispose(void *p)
{
    s_call_t *c = ((s_owner_t *)p)->call;
    c->req = NULL;
    uv_close((uv_handle_t *)&c->timer, s_call_closed);
}

static void s_error(h2o_req_t *req, s_dialect_t d, int status, const char *msg)
{
    json_t *j = d == DIALECT_ANTHROPIC ? json_pack("{ss s{ss ss}}", "type", "error", "error", "type",
                                                   "api_error", "message", msg)
                                       : json_pack("{s{ss ss so}}", "error", "message", msg, "type",
                                                   "server_error", "code", json_null());
    s_send_json(req, status, j);
}

static int s_chat(h2o_req_t *req, s_dialect_t dialect)
{
    json_error_t jerr;
    json_t *body = json_loadb(req->entity.base, req->entity.len, 0, &jerr);
    if (!body || !json_is_object(body)) {
        s_error(req, dialect, 400, "the body must be a JSON object");
        json_decref(body);
        return 0;
    }
    size_t bytes;
    const char *last;
    s_scan_messages(body, &bytes, &last);
    int64_t fail = s_directive(last, "fail", 0);
    if (fail >= 400 && fail <= 599) {
        char msg[96];
        snprintf(msg, sizeof(msg), "mock failure with status %lld", (long long)fail);
        s_error(req, dialect, (int)fail, msg);
        json_decref(body);
        return 0;
    }
    s_call_t *c = fb_calloc(1, sizeof(*c));
    c->super.proceed = s_on_proceed;
    c->super.stop = s_on_stop;
    c->dialect = dialect;
    c->req = req;
    json_t *model = json_object_get(body, "model");
    snprintf(c->model, sizeof(c->model), "%s", json_is_string(model) ? json_string_value(model) : "mock");
    char rnd[17];
    fb_random_hex(rnd, 8);
    snprintf(c->id, sizeof(c->id), "%s%s", dialect == DIALECT_ANTHROPIC ? "msg_mock" : "chatcmpl-mock", rnd);
    c->stream = json_is_true(json_object_get(body, "stream"));
    c->usage = s_directive(last, "nousage", 0) == 0;
    if (dialect == DIALECT_OPENAI && c->stream) {
        json_t *so = json_object_get(body, "stream_options");
        c->usage = c->usage && json_is_true(json_object_get(so, "include_usage"));
    }
    c->input_tokens = (int64_t)((bytes + 3) / 4);
    if (c->input_tokens == 0)
        c->input_tokens = 1;
    int64_t cr = s_directive(last, "cache_read", -1), cw = s_directive(last, "cache_write", -1);
    c->cache_seen = cr >= 0 || cw >= 0;
    c->cache_read = cr > 0 ? (cr < c->input_tokens ? cr : c->input_tokens) : 0;
    if (dialect == DIALECT_ANTHROPIC && cw > 0)
        c->cache_write = cw < c->input_tokens - c->cache_read ? cw : c->input_tokens - c->cache_read;
    json_t *mt = json_object_get(body, dialect == DIALECT_ANTHROPIC ? "max_tokens" : "max_completion_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(body, "max_tokens");
    c->tokens = s_directive(last, "tokens", s_mock.reply_tokens);
    if (json_is_integer(mt) && json_integer_value(mt) < c->tokens)
        c->tokens = json_integer_value(mt) > 0 ? json_integer_value(mt) : 1;
    c->cut_after = s_directive(last, "cut", -1);
    c->rate = s_directive(last, "rate", s_mock.tokens_per_s);
    s_directive_text(last, "tool", c->tool, sizeof(c->tool));
    if (c->tool[0]) {
        json_t *t0 = json_array_get(json_object_get(body, "tools"), 0);
        const char *offered = json_string_value(
            json_object_get(dialect == DIALECT_ANTHROPIC ? t0 : json_object_get(t0, "function"), "name"));
        if (!offered || strcmp(offered, c->tool) != 0) {
            s_error(req, dialect, 400, "the tool to call was not offered first in tools");
            json_decref(body);
            free(c);
            return 0;
        }
        c->tokens = 8;
    }
    int64_t delay = s_directive(last, "delay", s_mock.latency_ms);
    bool hang = s_directive(last, "hang", 0) != 0;
    json_decref(body);

    uv_timer_init(s_mock.loop, &c->timer);
    c->timer.data = c;
    s_owner_t *owner = h2o_mem_alloc_shared(&req->pool, sizeof(*owner), s_owner_dispose);
    owner->call = c;
    if (hang)
        return 0;
    if (c->stream) {
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                       H2O_STRLIT("text/event-stream"));
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
        h2o_start_response(req, &c->super);
    }
    uv_timer_start(&c->timer, s_on_timer, (uint64_t)(delay > 0 ? delay : 0), 0);
    return 0;
}

static int s_on_req(h2o_handler_t *h, h2o_req_t *req)
{
    FB_UNUSED(h);
    h2o_iovec_t p = req->path_normalized;
    bool post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/healthz"))) {
        fb_http_send(req, 200, "application/json", "{\"status\":\"ok\",\"service\":\"mock-model\"}", 39);
        return 0;
    }
    if (h2o_memis(p.base, p.len, H2O_STRLIT("/v1/models"))) {
        static const char models[] =
            "{\"object\":\"list\",\"data\":[{\"id\":\"mock-gpt\",\"object\":\"model\"},"
            "{\"id\":\"mock-claude\",\"object\":\"model\"}]}";
        fb_http_send(req, 200, "application/json", models, sizeof(models) - 1);
        return 0;
    }
    if (post && h2o_memis(p.base, p.len, H2O_STRLIT("/v1/chat/completions")))
        return s_chat(req, DIALECT_OPENAI);
    if (post && h2o_memis(p.base, p.len, H2O_STRLIT("/v1/messages")))
        return s_chat(req, DIALECT_ANTHROPIC);
    fb_http_send(req, 404, "application/json", "{\"error\":{\"message\":\"not found\"}}", 33);
    return 0;
}

static void s_on_signal(uv_signal_t *h, int sig)
{
    FB_UNUSED(sig);
    uv_stop(h->loop);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--config-doc") == 0) {
        fb_config_print_doc(s_vars, FB_ARRAY_SIZE(s_vars), stdout);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr,
                "usage: farebox-mock-model [--config-doc]  (configuration from FAREBOX_MOCK_* variables)\n");
        return 2;
    }
    char err[512];
    fb_config_t *cfg = fb_config_load(s_vars, FB_ARRAY_SIZE(s_vars), err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    fb_log_init("mock-model", "mock");
    fb_log_level_t level;
    fb_log_parse_level(fb_config_str(cfg, "FAREBOX_LOG_LEVEL"), &level);
    fb_log_set_level(level);
    signal(SIGPIPE, SIG_IGN);
    s_mock.tokens_per_s = fb_config_int(cfg, "FAREBOX_MOCK_TOKENS_PER_S");
    s_mock.latency_ms = fb_config_int(cfg, "FAREBOX_MOCK_LATENCY_MS");
    s_mock.reply_tokens = fb_config_int(cfg, "FAREBOX_MOCK_REPLY_TOKENS");
    s_mock.loop = uv_default_loop();

    h2o_config_init(&s_mock.h2o);
    h2o_hostconf_t *host =
        h2o_config_register_host(&s_mock.h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *h = h2o_create_handler(path, sizeof(*h));
    h->on_req = s_on_req;
    h2o_context_init(&s_mock.ctx, s_mock.loop, &s_mock.h2o);
    s_mock.accept.ctx = &s_mock.ctx;
    s_mock.accept.hosts = s_mock.h2o.hosts;
    int port = 0;
    uv_tcp_t *listener = fb_http_listen(s_mock.loop, &s_mock.accept, NULL,
                                        fb_config_str(cfg, "FAREBOX_MOCK_LISTEN"), &port, err, sizeof(err));
    if (!listener) {
        fprintf(stderr, "invalid configuration: FAREBOX_MOCK_LISTEN: %s\n", err);
        return 2;
    }
    fb_log(FB_LOG_INFO, NULL, "mock model listening", "listen=%s port=%d tokens_per_s=%lld",
           fb_config_str(cfg, "FAREBOX_MOCK_LISTEN"), port, (long long)s_mock.tokens_per_s);
    uv_signal_t sigint, sigterm;
    uv_signal_init(s_mock.loop, &sigint);
    uv_signal_init(s_mock.loop, &sigterm);
    uv_signal_start(&sigint, s_on_signal, SIGINT);
    uv_signal_start(&sigterm, s_on_signal, SIGTERM);
    uv_run(s_mock.loop, UV_RUN_DEFAULT);
    fb_log(FB_LOG_INFO, NULL, "mock model stopped", NULL);
    fb_http_close(&listener);
    fb_config_destroy(&cfg);
    return 0;
}
