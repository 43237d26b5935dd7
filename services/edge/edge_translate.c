/* edge_translate - OpenAI chat completions <-> Anthropic messages. */
#include "edge_translate.h"
#include "edge_catalog.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *s_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static json_t *s_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return NULL;
}

/* --- requests ------------------------------------------------------------------------ */

/* An image_url part as an Anthropic image block: data: URLs become base64
 * sources, other URLs url sources. */
static json_t *s_image(json_t *part, char *err, size_t errlen)
{
    json_t *iu = json_object_get(part, "image_url");
    const char *url = json_string_value(json_is_object(iu) ? json_object_get(iu, "url") : iu);
    if (!url)
        return s_fail(err, errlen, "an image_url part needs image_url.url");
    json_t *source;
    if (strncmp(url, "data:", 5) == 0) {
        const char *semi = strstr(url, ";base64,");
        if (!semi || semi == url + 5 || semi - (url + 5) > 100)
            return s_fail(err, errlen, "an image data URL must be data:<media type>;base64,<data>");
        source = json_pack("{ss ss% ss}", "type", "base64", "media_type", url + 5, (size_t)(semi - (url + 5)),
                           "data", semi + 8);
    } else {
        source = json_pack("{ss ss}", "type", "url", "url", url);
    }
    return json_pack("{ss so}", "type", "image", "source", source);
}

/* Content (a string or an array of parts) as Anthropic content blocks
 * appended to blocks. cache_control on a part is kept. */
static int s_content(json_t *content, json_t *blocks, char *err, size_t errlen)
{
    if (json_is_null(content) || !content)
        return 0;
    if (json_is_string(content)) {
        if (json_string_length(content) > 0)
            json_array_append_new(blocks, json_pack("{ss sO}", "type", "text", "text", content));
        return 0;
    }
    if (!json_is_array(content)) {
        s_fail(err, errlen, "message content must be a string or an array of parts");
        return -1;
    }
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *block = NULL;
        if (type && strcmp(type, "text") == 0 && json_is_string(json_object_get(part, "text")))
            block = json_pack("{ss sO}", "type", "text", "text", json_object_get(part, "text"));
        else if (type && strcmp(type, "image_url") == 0)
            block = s_image(part, err, errlen);
        else
            s_fail(err, errlen, "content part %zu: type %s has no counterpart for this model", i,
                   type ? type : "(missing)");
        if (!block)
            return -1;
        json_t *cc = json_object_get(part, "cache_control");
        if (cc)
            json_object_set(block, "cache_control", cc);
        json_array_append_new(blocks, block);
    }
    return 0;
}

/* System content (string or text parts) as text blocks appended to sys,
 * each part's cache_control kept. */
static int s_system_text(json_t *content, json_t *sys, char *err, size_t errlen)
{
    json_t *blocks = json_array();
    int rc = s_content(content, blocks, err, errlen);
    size_t i;
    json_t *b;
    json_array_foreach(blocks, i, b)
    {
        if (!json_is_string(json_object_get(b, "text"))) {
            s_fail(err, errlen, "system messages may hold only text");
            rc = -1;
            break;
        }
    }
    if (rc == 0)
        json_array_extend(sys, blocks);
    json_decref(blocks);
    return rc;
}

/* Anthropic's system: one string of the texts, or the blocks themselves when
 * one of them marks a cache breakpoint (a string cannot carry it). NULL for
 * none. */
static json_t *s_system(json_t *sys)
{
    if (json_array_size(sys) == 0)
        return NULL;
    fb_buf_t text = {0};
    size_t i;
    json_t *b;
    json_array_foreach(sys, i, b)
    {
        if (json_object_get(b, "cache_control")) {
            fb_buf_free(&text);
            return json_incref(sys);
        }
        if (text.len)
            fb_buf_append_str(&text, "\n\n");
        fb_buf_append_str(&text, json_string_value(json_object_get(b, "text")));
    }
    json_t *out = json_stringn(text.data ? text.data : "", text.len);
    fb_buf_free(&text);
    return out;
}

/* Sampling settings: Anthropic's temperature is 0..1 (OpenAI's 0..2, capped
 * here), and its newer models refuse temperature and top_p together (top_p
 * is then left out). */
static void s_sampling(json_t *in, json_t *out)
{
    json_t *t = json_object_get(in, "temperature"), *p = json_object_get(in, "top_p");
    bool has_t = t && !json_is_null(t);
    if (has_t)
        json_object_set_new(out, "temperature",
                            json_is_number(t) && json_number_value(t) > 1.0 ? json_real(1.0)
                                                                            : json_incref(t));
    if (p && !json_is_null(p) && !has_t)
        json_object_set(out, "top_p", p);
}

/* The last message of msgs if it has role, else a new one appended. */
static json_t *s_message_for(json_t *msgs, const char *role)
{
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    if (last && strcmp(json_string_value(json_object_get(last, "role")), role) == 0)
        return json_object_get(last, "content");
    json_t *content = json_array();
    json_array_append_new(msgs, json_pack("{ss so}", "role", role, "content", content));
    return content;
}

static int s_tool_calls(json_t *calls, json_t *blocks, char *err, size_t errlen)
{
    size_t i;
    json_t *c;
    json_array_foreach(calls, i, c)
    {
        json_t *fn = json_object_get(c, "function");
        const char *id = json_string_value(json_object_get(c, "id"));
        const char *name = json_string_value(json_object_get(fn, "name"));
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        if (!id || !name) {
            s_fail(err, errlen, "tool_calls[%zu] needs id and function.name", i);
            return -1;
        }
        json_error_t jerr;
        json_t *input = args && args[0] ? json_loads(args, 0, &jerr) : json_object();
        if (!json_is_object(input)) {
            json_decref(input);
            s_fail(err, errlen, "tool_calls[%zu].function.arguments must be a JSON object", i);
            return -1;
        }
        json_array_append_new(
            blocks, json_pack("{ss ss ss so}", "type", "tool_use", "id", id, "name", name, "input", input));
    }
    return 0;
}

static json_t *s_tools(json_t *tools, char *err, size_t errlen)
{
    json_t *out = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        json_t *fn = json_object_get(t, "function");
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!type || strcmp(type, "function") != 0 || !json_is_string(json_object_get(fn, "name"))) {
            json_decref(out);
            return s_fail(err, errlen, "tools[%zu] must be {type: function, function: {name, ...}}", i);
        }
        json_t *params = json_object_get(fn, "parameters");
        json_t *tool = json_pack("{sO so}", "name", json_object_get(fn, "name"), "input_schema",
                                 params ? json_incref(params) : json_pack("{ss}", "type", "object"));
        if (json_is_string(json_object_get(fn, "description")))
            json_object_set(tool, "description", json_object_get(fn, "description"));
        if (json_object_get(t, "cache_control"))
            json_object_set(tool, "cache_control", json_object_get(t, "cache_control"));
        json_array_append_new(out, tool);
    }
    return out;
}

static json_t *s_tool_choice(json_t *choice, json_t *parallel, char *err, size_t errlen)
{
    json_t *out = NULL;
    const char *s = json_string_value(choice);
    if (!choice || (s && strcmp(s, "auto") == 0))
        out = json_pack("{ss}", "type", "auto");
    else if (s && strcmp(s, "none") == 0)
        out = json_pack("{ss}", "type", "none");
    else if (s && strcmp(s, "required") == 0)
        out = json_pack("{ss}", "type", "any");
    else if (json_is_object(choice) &&
             json_is_string(json_object_get(json_object_get(choice, "function"), "name")))
        out = json_pack("{ss sO}", "type", "tool", "name",
                        json_object_get(json_object_get(choice, "function"), "name"));
    else
        return s_fail(err, errlen,
                      "tool_choice must be auto, none, required or {type: function, function: {name}}");
    if (json_is_false(parallel) && strcmp(json_string_value(json_object_get(out, "type")), "none") != 0)
        json_object_set_new(out, "disable_parallel_tool_use", json_true());
    return out;
}

json_t *edge_tr_request(json_t *in, const char *upstream_model, int64_t max_tokens, char *err, size_t errlen)
{
    json_t *n = json_object_get(in, "n");
    if (n && !(json_is_integer(n) && json_integer_value(n) == 1))
        return s_fail(err, errlen, "n must be 1 for this model");
    json_t *rf = json_object_get(in, "response_format");
    const char *rft = json_string_value(json_object_get(rf, "type"));
    if (rf && !json_is_null(rf) && !(rft && strcmp(rft, "text") == 0))
        return s_fail(err, errlen, "response_format %s is not available for this model", rft ? rft : "?");
    json_t *out = json_pack("{ss sI}", "model", upstream_model, "max_tokens", (json_int_t)max_tokens);
    json_t *msgs = json_array();
    json_t *sys = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(in, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *content = json_object_get(m, "content");
        int rc = 0;
        if (!role) {
            s_fail(err, errlen, "messages[%zu] needs a role", i);
            rc = -1;
        } else if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            rc = s_system_text(content, sys, err, errlen);
        } else if (strcmp(role, "user") == 0) {
            /* an empty one is left out: Anthropic refuses a message with no
             * content, and joins the turns around it */
            json_t *blocks = json_array();
            rc = s_content(content, blocks, err, errlen);
            if (rc == 0 && json_array_size(blocks) > 0)
                json_array_extend(s_message_for(msgs, "user"), blocks);
            json_decref(blocks);
        } else if (strcmp(role, "assistant") == 0) {
            json_t *blocks = json_array();
            rc = s_content(content, blocks, err, errlen);
            if (rc == 0 && json_is_array(json_object_get(m, "tool_calls")))
                rc = s_tool_calls(json_object_get(m, "tool_calls"), blocks, err, errlen);
            if (rc == 0 && json_array_size(blocks) > 0)
                json_array_extend(s_message_for(msgs, "assistant"), blocks);
            json_decref(blocks);
        } else if (strcmp(role, "tool") == 0) {
            const char *id = json_string_value(json_object_get(m, "tool_call_id"));
            json_t *blocks = json_array();
            if (!id) {
                s_fail(err, errlen, "messages[%zu] (tool) needs tool_call_id", i);
                rc = -1;
            } else {
                rc = s_content(content, blocks, err, errlen);
            }
            if (rc == 0)
                json_array_append_new(
                    s_message_for(msgs, "user"),
                    json_pack("{ss ss sO}", "type", "tool_result", "tool_use_id", id, "content", blocks));
            json_decref(blocks);
        } else {
            s_fail(err, errlen, "messages[%zu]: role %s is not known", i, role);
            rc = -1;
        }
        if (rc != 0) {
            json_decref(sys);
            json_decref(msgs);
            json_decref(out);
            return NULL;
        }
    }
    /* a message whose content is only text keeps the short string form */
    json_object_set_new(out, "messages", msgs);
    json_t *system = s_system(sys);
    json_decref(sys);
    if (system)
        json_object_set_new(out, "system", system);
    static const char *same[] = {"top_k", "stream"};
    for (size_t k = 0; k < FB_ARRAY_SIZE(same); k++) {
        json_t *v = json_object_get(in, same[k]);
        if (v && !json_is_null(v))
            json_object_set(out, same[k], v);
    }
    s_sampling(in, out);
    /* Anthropic's metadata holds user_id alone: OpenAI's metadata (tags
     * for stored completions) has no counterpart */
    json_t *user = json_object_get(json_object_get(in, "metadata"), "user_id");
    if (!json_is_string(user))
        user = json_object_get(in, "user");
    if (json_is_string(user))
        json_object_set_new(out, "metadata", json_pack("{sO}", "user_id", user));
    json_t *stop = json_object_get(in, "stop");
    if (json_is_string(stop))
        json_object_set_new(out, "stop_sequences", json_pack("[O]", stop));
    else if (json_is_array(stop) && json_array_size(stop) > 0)
        json_object_set(out, "stop_sequences", stop);
    json_t *tools = json_object_get(in, "tools");
    if (json_is_array(tools) && json_array_size(tools) > 0) {
        json_t *t = s_tools(tools, err, errlen);
        json_t *tc = t ? s_tool_choice(json_object_get(in, "tool_choice"),
                                       json_object_get(in, "parallel_tool_calls"), err, errlen)
                       : NULL;
        if (!t || !tc) {
            json_decref(t);
            json_decref(out);
            return NULL;
        }
        json_object_set_new(out, "tools", t);
        json_object_set_new(out, "tool_choice", tc);
    }
    return out;
}

/* --- answers --------------------------------------------------------------------------- */

const char *edge_tr_finish_reason(const char *stop_reason)
{
    if (!stop_reason)
        return NULL;
    if (strcmp(stop_reason, "max_tokens") == 0 || strcmp(stop_reason, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop_reason, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(stop_reason, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn */
}

int edge_tr_usage(json_t *usage, int64_t *input, int64_t *output)
{
    json_t *in = json_object_get(usage, "input_tokens"), *out = json_object_get(usage, "output_tokens");
    if (!json_is_integer(in) || !json_is_integer(out) || json_integer_value(in) < 0 ||
        json_integer_value(out) < 0)
        return -1;
    int64_t total = json_integer_value(in);
    static const char *cache[] = {"cache_creation_input_tokens", "cache_read_input_tokens"};
    for (size_t i = 0; i < FB_ARRAY_SIZE(cache); i++) {
        json_t *c = json_object_get(usage, cache[i]);
        if (json_is_integer(c) && json_integer_value(c) > 0)
            total = edge_add_micro(total,
                                   json_integer_value(c)); /* saturating: a provider's nonsense never wraps */
    }
    *input = total;
    *output = json_integer_value(out);
    return 0;
}

void edge_tr_cache_tokens(json_t *usage, int64_t *read, int64_t *write)
{
    json_t *r = json_object_get(usage, "cache_read_input_tokens"),
           *w = json_object_get(usage, "cache_creation_input_tokens");
    *read = json_is_integer(r) && json_integer_value(r) > 0 ? json_integer_value(r) : 0;
    *write = json_is_integer(w) && json_integer_value(w) > 0 ? json_integer_value(w) : 0;
}

static bool s_count(json_t *v, int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = json_integer_value(v);
    return true;
}

void edge_tr_usage_running(json_t *usage, int64_t *input, int64_t *read, int64_t *write, bool *seen)
{
    int64_t in = 0, r = 0, w = 0;
    bool has_in = s_count(json_object_get(usage, "input_tokens"), &in),
         has_r = s_count(json_object_get(usage, "cache_read_input_tokens"), &r),
         has_w = s_count(json_object_get(usage, "cache_creation_input_tokens"), &w);
    if (!has_in && !has_r && !has_w)
        return;
    int64_t raw = 0; /* the uncached input so far: counts are 0 or more, so no subtraction overflows */
    if (*seen && *input > *read)
        raw = *input - *read > *write ? *input - *read - *write : 0;
    if (has_in)
        raw = in;
    if (has_r)
        *read = r;
    if (has_w)
        *write = w;
    *input = edge_add_micro(edge_add_micro(raw > 0 ? raw : 0, *read), *write);
    *seen = true;
}

int64_t edge_tr_cache_1h_tokens(json_t *usage)
{
    json_t *h = json_object_get(json_object_get(usage, "cache_creation"), "ephemeral_1h_input_tokens");
    return json_is_integer(h) && json_integer_value(h) >= 0 ? json_integer_value(h) : -1;
}

/* OpenAI's usage: prompt_tokens counts the cached ones, named in
 * prompt_tokens_details.cached_tokens (the tokens read from the cache). */
static json_t *s_usage_openai(int64_t in, int64_t out, int64_t cached)
{
    return json_pack("{sI sI sI s{sI}}", "prompt_tokens", (json_int_t)in, "completion_tokens",
                     (json_int_t)out, "total_tokens", (json_int_t)edge_add_micro(in, out),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)cached);
}

json_t *edge_tr_response(json_t *a, const char *model)
{
    json_t *content = json_object_get(a, "content");
    if (!json_is_array(content))
        return NULL;
    fb_buf_t text = {0};
    json_t *calls = json_array();
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        if (!type)
            continue;
        if (strcmp(type, "text") == 0 && json_is_string(json_object_get(b, "text"))) {
            fb_buf_append_str(&text, json_string_value(json_object_get(b, "text")));
        } else if (strcmp(type, "tool_use") == 0) {
            char *args = json_dumps(json_object_get(b, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
            json_array_append_new(calls, json_pack("{sO ss s{sO ss}}", "id", json_object_get(b, "id"), "type",
                                                   "function", "function", "name", json_object_get(b, "name"),
                                                   "arguments", args ? args : "{}"));
            free(args);
        }
    }
    json_t *msg = json_pack("{ss}", "role", "assistant");
    json_object_set_new(msg, "content",
                        text.len || !json_array_size(calls)
                            ? json_stringn(text.data ? text.data : "", text.len)
                            : json_null());
    fb_buf_free(&text);
    if (json_array_size(calls))
        json_object_set_new(msg, "tool_calls", calls);
    else
        json_decref(calls);
    json_object_set_new(msg, "refusal", json_null());
    const char *fr = edge_tr_finish_reason(json_string_value(json_object_get(a, "stop_reason")));
    int64_t in = 0, out = 0, cached = 0, written = 0;
    edge_tr_usage(json_object_get(a, "usage"), &in, &out);
    edge_tr_cache_tokens(json_object_get(a, "usage"), &cached, &written);
    json_t *id = json_object_get(a, "id");
    return json_pack("{so ss sI ss s[{sI so so so}] so}", "id", id ? json_incref(id) : json_string("msg"),
                     "object", "chat.completion", "created", (json_int_t)(fb_now_ms() / 1000), "model", model,
                     "choices", "index", (json_int_t)0, "message", msg, "logprobs", json_null(),
                     "finish_reason", fr ? json_string(fr) : json_null(), "usage",
                     s_usage_openai(in, out, cached));
}

/* --- streams --------------------------------------------------------------------------- */

void edge_tr_stream_init(edge_tr_stream_t *st, const char *model, bool include_usage)
{
    memset(st, 0, sizeof(*st));
    snprintf(st->model, sizeof(st->model), "%s", model);
    snprintf(st->id, sizeof(st->id), "chatcmpl");
    st->created = fb_now_ms() / 1000;
    st->include_usage = include_usage;
    for (size_t i = 0; i < EDGE_TR_BLOCKS; i++)
        st->block_tool[i] = -1;
}

/* One event. doc is NULL when json_pack refused what it was given (a value
 * missing or not UTF-8): the provider's odd event is left out, never a crash. */
static void s_data(fb_buf_t *out, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return;
    fb_buf_append_str(out, "data: ");
    fb_buf_append_str(out, text);
    fb_buf_append_str(out, "\n\n");
    free(text);
}

/* One chunk with one choice: delta (stolen) and finish_reason (may be NULL). */
static void s_chunk(edge_tr_stream_t *st, fb_buf_t *out, json_t *delta, const char *finish)
{
    s_data(out, json_pack("{ss ss sI ss s[{sI so so so}]}", "id", st->id, "object", "chat.completion.chunk",
                          "created", (json_int_t)st->created, "model", st->model, "choices", "index",
                          (json_int_t)0, "delta", delta, "logprobs", json_null(), "finish_reason",
                          finish ? json_string(finish) : json_null()));
}

static int s_block_index(json_t *data)
{
    json_t *i = json_object_get(data, "index");
    if (!json_is_integer(i) || json_integer_value(i) < 0 || json_integer_value(i) >= EDGE_TR_BLOCKS)
        return -1;
    return (int)json_integer_value(i);
}

int edge_tr_stream_event(edge_tr_stream_t *st, const char *name, json_t *data, fb_buf_t *out)
{
    if (!json_is_object(data))
        return -1;
    const char *type = json_string_value(json_object_get(data, "type"));
    if (!type)
        type = name;
    if (strcmp(type, "message_start") == 0) {
        json_t *msg = json_object_get(data, "message");
        const char *id = json_string_value(json_object_get(msg, "id"));
        if (id && strlen(id) < sizeof(st->id)) /* whole or not at all: cut, it may end mid-character */
            snprintf(st->id, sizeof(st->id), "%s", id);
        edge_tr_usage_running(json_object_get(msg, "usage"), &st->input_tokens, &st->cached_tokens,
                              &st->cache_written, &st->input_seen);
        s_chunk(st, out, json_pack("{ss ss}", "role", "assistant", "content", ""), NULL);
    } else if (strcmp(type, "content_block_start") == 0) {
        int idx = s_block_index(data);
        json_t *block = json_object_get(data, "content_block");
        const char *bt = json_string_value(json_object_get(block, "type"));
        if (idx < 0)
            return -1;
        if (bt && strcmp(bt, "tool_use") == 0) {
            const char *tid = json_string_value(json_object_get(block, "id"));
            const char *tname = json_string_value(json_object_get(block, "name"));
            st->block_tool[idx] = (int16_t)st->next_tool++;
            s_chunk(st, out,
                    json_pack("{s[{sI ss ss s{ss ss}}]}", "tool_calls", "index",
                              (json_int_t)st->block_tool[idx], "id", tid ? tid : "", "type", "function",
                              "function", "name", tname ? tname : "", "arguments", ""),
                    NULL);
        } else if (bt && strcmp(bt, "text") == 0) {
            const char *t = json_string_value(json_object_get(block, "text"));
            if (t && t[0])
                s_chunk(st, out, json_pack("{ss}", "content", t), NULL);
        }
    } else if (strcmp(type, "content_block_delta") == 0) {
        int idx = s_block_index(data);
        json_t *delta = json_object_get(data, "delta");
        const char *dt = json_string_value(json_object_get(delta, "type"));
        if (idx < 0 || !dt)
            return -1;
        if (strcmp(dt, "text_delta") == 0 && json_is_string(json_object_get(delta, "text"))) {
            s_chunk(st, out, json_pack("{sO}", "content", json_object_get(delta, "text")), NULL);
        } else if (strcmp(dt, "input_json_delta") == 0 && st->block_tool[idx] >= 0 &&
                   json_is_string(json_object_get(delta, "partial_json"))) {
            s_chunk(st, out,
                    json_pack("{s[{sI s{sO}}]}", "tool_calls", "index", (json_int_t)st->block_tool[idx],
                              "function", "arguments", json_object_get(delta, "partial_json")),
                    NULL);
        }
    } else if (strcmp(type, "message_delta") == 0) {
        json_t *usage = json_object_get(data, "usage");
        json_t *o = json_object_get(usage, "output_tokens");
        if (json_is_integer(o) && json_integer_value(o) >= 0) {
            st->output_tokens = json_integer_value(o);
            st->output_seen = true;
        }
        /* the usage chunk tells what is charged: the input as the message ended */
        edge_tr_usage_running(usage, &st->input_tokens, &st->cached_tokens, &st->cache_written,
                              &st->input_seen);
        const char *fr = edge_tr_finish_reason(
            json_string_value(json_object_get(json_object_get(data, "delta"), "stop_reason")));
        if (fr)
            s_chunk(st, out, json_object(), fr);
    } else if (strcmp(type, "message_stop") == 0) {
        if (st->include_usage)
            s_data(out, json_pack("{ss ss sI ss s[] so}", "id", st->id, "object", "chat.completion.chunk",
                                  "created", (json_int_t)st->created, "model", st->model, "choices", "usage",
                                  s_usage_openai(st->input_tokens, st->output_tokens, st->cached_tokens)));
        fb_buf_append_str(out, "data: [DONE]\n\n");
        st->finished = true;
    } else if (strcmp(type, "error") == 0) {
        json_t *e = json_object_get(data, "error");
        const char *msg = json_string_value(json_object_get(e, "message"));
        s_data(out, json_pack("{s{ss ss ss}}", "error", "message", msg ? msg : "the provider failed", "type",
                              "upstream_error", "code", "upstream_error"));
    }
    /* ping, content_block_stop and unknown events carry nothing for OpenAI */
    return 0;
}

/* --- self-test ------------------------------------------------------------------------- */

static json_t *s_json(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    FB_ASSERT(j);
    return j;
}

int edge_translate_test(bool verbose)
{
    FB_UNUSED(verbose);
    char err[256];
    /* a request with a system prompt, an image, a tool round trip and stop words */
    json_t *in = s_json(
        "{\"model\":\"claude\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is here?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
        "\"function\":{\"name\":\"look\",\"arguments\":\"{\\\"x\\\":1}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"a cat\"}],"
        "\"stop\":\"END\",\"temperature\":0.5,\"stream\":true,"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"look\",\"parameters\":{\"type\":"
        "\"object\"}}}],"
        "\"tool_choice\":\"required\",\"seed\":7}");
    json_t *out = edge_tr_request(in, "claude-up", 100, err, sizeof(err));
    FB_ASSERT(out);
    FB_ASSERT(strcmp(json_string_value(json_object_get(out, "model")), "claude-up") == 0);
    FB_ASSERT(json_integer_value(json_object_get(out, "max_tokens")) == 100);
    FB_ASSERT(strcmp(json_string_value(json_object_get(out, "system")), "be brief") == 0);
    json_t *msgs = json_object_get(out, "messages");
    FB_ASSERT(json_array_size(msgs) == 3);
    json_t *img = json_array_get(json_object_get(json_array_get(msgs, 0), "content"), 1);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_object_get(img, "source"), "media_type")),
                     "image/png") == 0);
    json_t *use = json_array_get(json_object_get(json_array_get(msgs, 1), "content"), 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(use, "type")), "tool_use") == 0);
    FB_ASSERT(json_integer_value(json_object_get(json_object_get(use, "input"), "x")) == 1);
    json_t *res = json_array_get(json_object_get(json_array_get(msgs, 2), "content"), 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(res, "tool_use_id")), "call_1") == 0);
    FB_ASSERT(strcmp(json_string_value(json_array_get(json_object_get(out, "stop_sequences"), 0)), "END") ==
              0);
    FB_ASSERT(
        strcmp(json_string_value(json_object_get(json_object_get(out, "tool_choice"), "type")), "any") == 0);
    FB_ASSERT(!json_object_get(out, "seed"));
    json_decref(out);
    json_decref(in);

    /* a system part marking a cache breakpoint keeps its blocks; sampling and
     * metadata as Anthropic takes them */
    in =
        s_json("{\"messages\":[{\"role\":\"system\",\"content\":[{\"type\":\"text\",\"text\":\"long\","
               "\"cache_control\":{\"type\":\"ephemeral\"}}]},{\"role\":\"developer\",\"content\":\"brief\"},"
               "{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":1.5,\"top_p\":0.9,"
               "\"metadata\":{\"tag\":\"a\"},\"user\":\"u1\"}");
    out = edge_tr_request(in, "m", 10, err, sizeof(err));
    FB_ASSERT(out);
    json_t *sys = json_object_get(out, "system");
    FB_ASSERT(json_array_size(sys) == 2);
    FB_ASSERT(json_object_get(json_array_get(sys, 0), "cache_control"));
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_array_get(sys, 1), "text")), "brief") == 0);
    FB_ASSERT(json_real_value(json_object_get(out, "temperature")) == 1.0);
    FB_ASSERT(!json_object_get(out, "top_p"));
    FB_ASSERT(json_object_size(json_object_get(out, "metadata")) == 1);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_object_get(out, "metadata"), "user_id")), "u1") ==
              0);
    json_decref(out);
    json_decref(in);
    in = s_json("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_p\":0.9,"
                "\"metadata\":{\"user_id\":\"u2\"},\"user\":\"u1\"}");
    out = edge_tr_request(in, "m", 10, err, sizeof(err));
    FB_ASSERT(out && json_real_value(json_object_get(out, "top_p")) == 0.9);
    FB_ASSERT(!json_object_get(out, "system"));
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_object_get(out, "metadata"), "user_id")), "u2") ==
              0);
    json_decref(out);
    json_decref(in);
    FB_ASSERT(strcmp(edge_tr_finish_reason("model_context_window_exceeded"), "length") == 0);
    /* an empty user message is left out */
    in = s_json(
        "{\"messages\":[{\"role\":\"user\",\"content\":\"\"},{\"role\":\"assistant\",\"content\":\"a\"},"
        "{\"role\":\"user\",\"content\":\"b\"}]}");
    out = edge_tr_request(in, "m", 10, err, sizeof(err));
    FB_ASSERT(out && json_array_size(json_object_get(out, "messages")) == 2);
    json_decref(out);
    json_decref(in);

    /* refusals */
    const char *bad[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":2}",
        "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}",
        "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":{\"type\":\"json_schema\"}"
        "}",
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(bad); i++) {
        in = s_json(bad[i]);
        FB_ASSERT(!edge_tr_request(in, "m", 10, err, sizeof(err)));
        FB_ASSERT(err[0]);
        json_decref(in);
    }

    /* an answer with text and a tool call */
    json_t *a =
        s_json("{\"id\":\"msg_1\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"},"
               "{\"type\":\"tool_use\",\"id\":\"tu_1\",\"name\":\"look\",\"input\":{\"x\":2}}],"
               "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":10,\"output_tokens\":5,"
               "\"cache_read_input_tokens\":3}}");
    json_t *r = edge_tr_response(a, "claude");
    FB_ASSERT(r);
    json_t *choice = json_array_get(json_object_get(r, "choices"), 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(choice, "finish_reason")), "tool_calls") == 0);
    json_t *msg = json_object_get(choice, "message");
    FB_ASSERT(strcmp(json_string_value(json_object_get(msg, "content")), "hi") == 0);
    json_t *call = json_array_get(json_object_get(msg, "tool_calls"), 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_object_get(call, "function"), "arguments")),
                     "{\"x\":2}") == 0);
    FB_ASSERT(json_integer_value(json_object_get(json_object_get(r, "usage"), "prompt_tokens")) == 13);
    FB_ASSERT(json_integer_value(json_object_get(
                  json_object_get(json_object_get(r, "usage"), "prompt_tokens_details"), "cached_tokens")) ==
              3);
    int64_t cr = -1, cw = -1;
    edge_tr_cache_tokens(json_object_get(a, "usage"), &cr, &cw);
    FB_ASSERT(cr == 3 && cw == 0);
    json_decref(r);
    json_decref(a);

    /* a stream */
    edge_tr_stream_t st;
    edge_tr_stream_init(&st, "claude", true);
    fb_buf_t buf = {0};
    const char *events[][2] = {
        {"message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"usage\":{\"input_"
                          "tokens\":7,\"output_tokens\":1}}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
                                "\"text\",\"text\":\"\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_"
                                "delta\",\"text\":\"Hel\"}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":"
                                "\"tool_use\",\"id\":\"tu\",\"name\":\"f\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_"
                                "json_delta\",\"partial_json\":\"{}\"}}"},
        {"message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{"
                          "\"output_tokens\":4,\"input_tokens\":9,\"cache_read_input_tokens\":5}}"},
        {"message_stop", "{\"type\":\"message_stop\"}"},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(events); i++) {
        json_t *d = s_json(events[i][1]);
        FB_ASSERT(edge_tr_stream_event(&st, events[i][0], d, &buf) == 0);
        json_decref(d);
    }
    /* the usage chunk gives the last message_delta's input: what is charged */
    FB_ASSERT(st.finished && st.input_tokens == 14 && st.cached_tokens == 5 && st.output_tokens == 4);
    FB_ASSERT(strstr(buf.data, "\"content\":\"Hel\""));
    FB_ASSERT(strstr(buf.data, "\"finish_reason\":\"stop\""));
    FB_ASSERT(strstr(buf.data, "\"name\":\"f\""));
    FB_ASSERT(strstr(buf.data, "\"prompt_tokens\":14,\"completion_tokens\":4"));
    FB_ASSERT(strstr(buf.data, "\"cached_tokens\":5"));
    FB_ASSERT(strstr(buf.data, "data: [DONE]\n\n"));
    fb_buf_free(&buf);
    return 0;
}
