/* edge_reverse - Anthropic messages -> OpenAI chat completions, and back. */
#include "edge_reverse.h"

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

/* --- requests ----------------------------------------------------------------------------- */

/* Text of a string or of an array of text blocks. Returns -1 for other blocks. */
static int s_text(json_t *content, fb_buf_t *out, const char *sep)
{
    if (json_is_string(content)) {
        fb_buf_append_str(out, json_string_value(content));
        return 0;
    }
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "text"));
        if (!t)
            return -1;
        if (out->len && sep)
            fb_buf_append_str(out, sep);
        fb_buf_append_str(out, t);
    }
    return json_is_array(content) ? 0 : -1;
}

static json_t *s_image_part(json_t *block, char *err, size_t errlen)
{
    json_t *src = json_object_get(block, "source");
    const char *type = json_string_value(json_object_get(src, "type"));
    if (type && strcmp(type, "base64") == 0) {
        const char *mt = json_string_value(json_object_get(src, "media_type")),
                   *data = json_string_value(json_object_get(src, "data"));
        if (!mt || !data)
            return s_fail(err, errlen, "an image source needs media_type and data");
        size_t n = strlen(mt) + strlen(data) + 16;
        char *url = fb_malloc(n);
        snprintf(url, n, "data:%s;base64,%s", mt, data);
        json_t *part = json_pack("{ss s{ss}}", "type", "image_url", "image_url", "url", url);
        free(url);
        return part;
    }
    if (type && strcmp(type, "url") == 0 && json_is_string(json_object_get(src, "url")))
        return json_pack("{ss s{sO}}", "type", "image_url", "image_url", "url", json_object_get(src, "url"));
    return s_fail(err, errlen, "image sources must be base64 or url");
}

/* One Anthropic message as OpenAI messages appended to out. */
static int s_message(json_t *m, size_t idx, json_t *out, char *err, size_t errlen)
{
    const char *role = json_string_value(json_object_get(m, "role"));
    json_t *content = json_object_get(m, "content");
    if (!role || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
        s_fail(err, errlen, "messages[%zu].role must be user or assistant", idx);
        return -1;
    }
    if (json_is_string(content)) {
        json_array_append_new(out, json_pack("{ss sO}", "role", role, "content", content));
        return 0;
    }
    if (!json_is_array(content)) {
        s_fail(err, errlen, "messages[%zu].content must be a string or an array of blocks", idx);
        return -1;
    }
    bool user = strcmp(role, "user") == 0;
    json_t *parts = json_array(), *calls = json_array();
    fb_buf_t text = {0};
    size_t i;
    json_t *b;
    int rc = 0;
    json_array_foreach(content, i, b)
    {
        const char *type = json_string_value(json_object_get(b, "type"));
        if (!type) {
            s_fail(err, errlen, "messages[%zu].content[%zu] has no type", idx, i);
            rc = -1;
            break;
        }
        if (strcmp(type, "text") == 0 && json_is_string(json_object_get(b, "text"))) {
            if (user)
                json_array_append_new(
                    parts, json_pack("{ss sO}", "type", "text", "text", json_object_get(b, "text")));
            else
                fb_buf_append_str(&text, json_string_value(json_object_get(b, "text")));
        } else if (strcmp(type, "image") == 0 && user) {
            json_t *p = s_image_part(b, err, errlen);
            if (!p) {
                rc = -1;
                break;
            }
            json_array_append_new(parts, p);
        } else if (strcmp(type, "tool_use") == 0 && !user) {
            char *args = json_dumps(json_object_get(b, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
            json_array_append_new(calls, json_pack("{sO ss s{sO ss}}", "id", json_object_get(b, "id"), "type",
                                                   "function", "function", "name", json_object_get(b, "name"),
                                                   "arguments", args ? args : "{}"));
            free(args);
        } else if (strcmp(type, "tool_result") == 0 && user) {
            /* a tool's answer is its own message, before the user's other content */
            fb_buf_t r = {0};
            json_t *rc_content = json_object_get(b, "content");
            if (rc_content && s_text(rc_content, &r, "\n") != 0) {
                fb_buf_free(&r);
                s_fail(err, errlen, "messages[%zu].content[%zu]: tool results may hold only text here", idx,
                       i);
                rc = -1;
                break;
            }
            json_array_append_new(out, json_pack("{ss sO ss%}", "role", "tool", "tool_call_id",
                                                 json_object_get(b, "tool_use_id"), "content",
                                                 r.data ? r.data : "", r.len));
            fb_buf_free(&r);
        } else if (strcmp(type, "thinking") == 0 || strcmp(type, "redacted_thinking") == 0) {
            /* the other provider cannot read it */
        } else {
            s_fail(err, errlen, "messages[%zu].content[%zu]: %s blocks have no counterpart for this model",
                   idx, i, type);
            rc = -1;
            break;
        }
    }
    if (rc == 0) {
        if (user && json_array_size(parts) > 0) {
            json_array_append_new(out, json_pack("{ss sO}", "role", "user", "content", parts));
        } else if (!user && (text.len || json_array_size(calls))) {
            json_t *msg = json_pack("{ss}", "role", "assistant");
            json_object_set_new(msg, "content", text.len ? json_stringn(text.data, text.len) : json_null());
            if (json_array_size(calls))
                json_object_set(msg, "tool_calls", calls);
            json_array_append_new(out, msg);
        }
    }
    json_decref(parts);
    json_decref(calls);
    fb_buf_free(&text);
    return rc;
}

json_t *edge_rev_request(json_t *in, const char *upstream_model, char *err, size_t errlen)
{
    json_t *msgs = json_array();
    json_t *sys = json_object_get(in, "system");
    if (sys) {
        fb_buf_t t = {0};
        if (s_text(sys, &t, "\n\n") != 0) {
            fb_buf_free(&t);
            json_decref(msgs);
            return s_fail(err, errlen, "system must be a string or text blocks");
        }
        json_array_append_new(
            msgs, json_pack("{ss ss%}", "role", "system", "content", t.data ? t.data : "", t.len));
        fb_buf_free(&t);
    }
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(in, "messages"), i, m)
    {
        if (s_message(m, i, msgs, err, errlen) != 0) {
            json_decref(msgs);
            return NULL;
        }
    }
    json_t *out = json_pack("{ss so}", "model", upstream_model, "messages", msgs);
    json_object_set(out, "max_tokens", json_object_get(in, "max_tokens"));
    static const char *same[] = {"temperature", "top_p", "stream"};
    for (size_t k = 0; k < FB_ARRAY_SIZE(same); k++)
        if (json_object_get(in, same[k]))
            json_object_set(out, same[k], json_object_get(in, same[k]));
    if (json_is_true(json_object_get(in, "stream")))
        json_object_set_new(out, "stream_options", json_pack("{sb}", "include_usage", 1));
    if (json_is_array(json_object_get(in, "stop_sequences")))
        json_object_set(out, "stop", json_object_get(in, "stop_sequences"));
    json_t *user = json_object_get(json_object_get(in, "metadata"), "user_id");
    if (json_is_string(user))
        json_object_set(out, "user", user);
    json_t *tools = json_object_get(in, "tools");
    if (json_is_array(tools) && json_array_size(tools)) {
        json_t *t = json_array();
        json_t *tool;
        json_array_foreach(tools, i, tool)
        {
            if (!json_is_string(json_object_get(tool, "name"))) {
                json_decref(t);
                json_decref(out);
                return s_fail(err, errlen, "tools[%zu] needs a name (server tools have no counterpart)", i);
            }
            json_t *fn = json_pack("{sO}", "name", json_object_get(tool, "name"));
            if (json_object_get(tool, "description"))
                json_object_set(fn, "description", json_object_get(tool, "description"));
            json_t *schema = json_object_get(tool, "input_schema");
            json_object_set_new(fn, "parameters",
                                schema ? json_incref(schema) : json_pack("{ss}", "type", "object"));
            json_array_append_new(t, json_pack("{ss so}", "type", "function", "function", fn));
        }
        json_object_set_new(out, "tools", t);
        json_t *choice = json_object_get(in, "tool_choice");
        const char *ct = json_string_value(json_object_get(choice, "type"));
        if (ct && strcmp(ct, "any") == 0)
            json_object_set_new(out, "tool_choice", json_string("required"));
        else if (ct && strcmp(ct, "none") == 0)
            json_object_set_new(out, "tool_choice", json_string("none"));
        else if (ct && strcmp(ct, "tool") == 0)
            json_object_set_new(out, "tool_choice",
                                json_pack("{ss s{sO}}", "type", "function", "function", "name",
                                          json_object_get(choice, "name")));
        if (json_is_true(json_object_get(choice, "disable_parallel_tool_use")))
            json_object_set_new(out, "parallel_tool_calls", json_false());
    }
    return out;
}

/* --- answers ------------------------------------------------------------------------------ */

const char *edge_rev_stop_reason(const char *finish_reason)
{
    if (!finish_reason)
        return NULL;
    if (strcmp(finish_reason, "length") == 0)
        return "max_tokens";
    if (strcmp(finish_reason, "tool_calls") == 0 || strcmp(finish_reason, "function_call") == 0)
        return "tool_use";
    if (strcmp(finish_reason, "content_filter") == 0)
        return "refusal";
    return "end_turn";
}

/* OpenAI's cached prompt tokens, within prompt_tokens (0..prompt_tokens). */
static int64_t s_cached(json_t *usage, int64_t prompt)
{
    json_t *c = json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
    int64_t n = json_is_integer(c) && json_integer_value(c) > 0 ? json_integer_value(c) : 0;
    return n < prompt ? n : (prompt > 0 ? prompt : 0);
}

/* Anthropic's usage: input_tokens leaves out those read from the cache. */
static json_t *s_usage(json_t *usage)
{
    int64_t prompt = json_integer_value(json_object_get(usage, "prompt_tokens"));
    int64_t cached = s_cached(usage, prompt);
    return json_pack("{sI sI sI}", "input_tokens", (json_int_t)(prompt - cached), "cache_read_input_tokens",
                     (json_int_t)cached, "output_tokens",
                     (json_int_t)json_integer_value(json_object_get(usage, "completion_tokens")));
}

json_t *edge_rev_response(json_t *o, const char *model)
{
    json_t *choice = json_array_get(json_object_get(o, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    if (!json_is_object(msg))
        return NULL;
    json_t *content = json_array();
    json_t *text = json_object_get(msg, "content");
    if (json_is_string(text) && json_string_length(text))
        json_array_append_new(content, json_pack("{ss sO}", "type", "text", "text", text));
    size_t i;
    json_t *call;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, call)
    {
        json_t *fn = json_object_get(call, "function");
        const char *args = json_string_value(json_object_get(fn, "arguments"));
        json_error_t jerr;
        json_t *input = args && args[0] ? json_loads(args, 0, &jerr) : json_object();
        if (!json_is_object(input)) {
            json_decref(input);
            input = json_object();
        }
        json_array_append_new(content, json_pack("{ss sO sO so}", "type", "tool_use", "id",
                                                 json_object_get(call, "id"), "name",
                                                 json_object_get(fn, "name"), "input", input));
    }
    const char *stop = edge_rev_stop_reason(json_string_value(json_object_get(choice, "finish_reason")));
    json_t *id = json_object_get(o, "id");
    return json_pack("{so ss ss ss so so so so}", "id", id ? json_incref(id) : json_string("msg"), "type",
                     "message", "role", "assistant", "model", model, "content", content, "stop_reason",
                     stop ? json_string(stop) : json_null(), "stop_sequence", json_null(), "usage",
                     s_usage(json_object_get(o, "usage")));
}

/* --- streams ------------------------------------------------------------------------------ */

void edge_rev_stream_init(edge_rev_stream_t *st, const char *model)
{
    memset(st, 0, sizeof(*st));
    snprintf(st->model, sizeof(st->model), "%s", model);
    snprintf(st->id, sizeof(st->id), "msg");
    st->block = -1;
    st->tool_of_block = -1;
}

/* One event; data NULL (json_pack refused a value) leaves it out, as in
 * edge_translate.c. */
static void s_event(fb_buf_t *out, const char *name, json_t *data)
{
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
    json_decref(data);
    if (!text)
        return;
    fb_buf_append_str(out, "event: ");
    fb_buf_append_str(out, name);
    fb_buf_append_str(out, "\ndata: ");
    fb_buf_append_str(out, text);
    fb_buf_append_str(out, "\n\n");
    free(text);
}

static void s_close_block(edge_rev_stream_t *st, fb_buf_t *out)
{
    if (st->block < 0)
        return;
    s_event(out, "content_block_stop",
            json_pack("{ss si}", "type", "content_block_stop", "index", st->block));
    st->block = -1;
    st->tool_of_block = -1;
}

static void s_start(edge_rev_stream_t *st, fb_buf_t *out)
{
    if (st->started)
        return;
    st->started = true;
    s_event(out, "message_start",
            json_pack("{ss s{ss ss ss ss s[] so so s{si si}}}", "type", "message_start", "message", "id",
                      st->id, "type", "message", "role", "assistant", "model", st->model, "content",
                      "stop_reason", json_null(), "stop_sequence", json_null(), "usage", "input_tokens", 0,
                      "output_tokens", 0));
}

int edge_rev_stream_chunk(edge_rev_stream_t *st, json_t *chunk, fb_buf_t *out)
{
    if (st->finished)
        return 0;
    if (!chunk) { /* [DONE] */
        s_start(st, out);
        s_close_block(st, out);
        s_event(out, "message_delta",
                json_pack("{ss s{ss so} s{sI sI sI}}", "type", "message_delta", "delta", "stop_reason",
                          st->stop_reason[0] ? st->stop_reason : "end_turn", "stop_sequence", json_null(),
                          "usage", "input_tokens", (json_int_t)st->input_tokens, "cache_read_input_tokens",
                          (json_int_t)st->cached_tokens, "output_tokens", (json_int_t)st->output_tokens));
        s_event(out, "message_stop", json_pack("{ss}", "type", "message_stop"));
        st->finished = true;
        return 0;
    }
    const char *id = json_string_value(json_object_get(chunk, "id"));
    if (id && !st->started && strlen(id) < sizeof(st->id)) /* whole or not at all */
        snprintf(st->id, sizeof(st->id), "%s", id);
    s_start(st, out);
    json_t *usage = json_object_get(chunk, "usage");
    if (json_is_object(usage)) {
        int64_t prompt = json_integer_value(json_object_get(usage, "prompt_tokens"));
        st->cached_tokens = s_cached(usage, prompt);
        st->input_tokens = prompt - st->cached_tokens;
        st->output_tokens = json_integer_value(json_object_get(usage, "completion_tokens"));
    }
    json_t *choice = json_array_get(json_object_get(chunk, "choices"), 0);
    json_t *delta = json_object_get(choice, "delta");
    json_t *text = json_object_get(delta, "content");
    /* each tool call entry may open a block: a chunk carries at most the
     * calls an answer may make, and an answer at most that many blocks (text
     * between them included) */
    if (json_array_size(json_object_get(delta, "tool_calls")) > EDGE_REV_TOOLS)
        return -1;
    if (json_is_string(text) && json_string_length(text)) {
        if ((st->block < 0 || st->tool_of_block >= 0) && st->next_block >= EDGE_REV_BLOCKS)
            return -1;
        if (st->block < 0 || st->tool_of_block >= 0) {
            s_close_block(st, out);
            st->block = st->next_block++;
            s_event(out, "content_block_start",
                    json_pack("{ss si s{ss ss}}", "type", "content_block_start", "index", st->block,
                              "content_block", "type", "text", "text", ""));
        }
        s_event(out, "content_block_delta",
                json_pack("{ss si s{ss sO}}", "type", "content_block_delta", "index", st->block, "delta",
                          "type", "text_delta", "text", text));
    }
    size_t i;
    json_t *call;
    json_array_foreach(json_object_get(delta, "tool_calls"), i, call)
    {
        int tool = (int)json_integer_value(json_object_get(call, "index"));
        json_t *fn = json_object_get(call, "function");
        if (st->block < 0 || st->tool_of_block != tool) {
            if (st->next_block >= EDGE_REV_BLOCKS)
                return -1;
            s_close_block(st, out);
            st->block = st->next_block++;
            st->tool_of_block = tool;
            const char *cid = json_string_value(json_object_get(call, "id")),
                       *name = json_string_value(json_object_get(fn, "name"));
            s_event(out, "content_block_start",
                    json_pack("{ss si s{ss ss ss s{}}}", "type", "content_block_start", "index", st->block,
                              "content_block", "type", "tool_use", "id", cid ? cid : "", "name",
                              name ? name : "", "input"));
        }
        json_t *args = json_object_get(fn, "arguments");
        if (json_is_string(args) && json_string_length(args))
            s_event(out, "content_block_delta",
                    json_pack("{ss si s{ss sO}}", "type", "content_block_delta", "index", st->block, "delta",
                              "type", "input_json_delta", "partial_json", args));
    }
    const char *stop = edge_rev_stop_reason(json_string_value(json_object_get(choice, "finish_reason")));
    if (stop)
        snprintf(st->stop_reason, sizeof(st->stop_reason), "%s", stop);
    return 0;
}

/* --- self-test ---------------------------------------------------------------------------- */

static json_t *s_json(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    FB_ASSERT(j);
    return j;
}

int edge_reverse_test(bool verbose)
{
    FB_UNUSED(verbose);
    char err[256];
    json_t *in =
        s_json("{\"model\":\"gpt\",\"max_tokens\":50,\"system\":[{\"type\":\"text\",\"text\":\"be brief\"}],"
               "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"look\"},"
               "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/"
               "png\",\"data\":\"AAAA\"}}]},"
               "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"tu1\",\"name\":\"f\","
               "\"input\":{\"a\":1}}]},"
               "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"tu1\","
               "\"content\":\"ok\"}]}],"
               "\"tools\":[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":{"
               "\"type\":\"any\"},"
               "\"stop_sequences\":[\"X\"],\"stream\":true}");
    json_t *out = edge_rev_request(in, "gpt-up", err, sizeof(err));
    FB_ASSERT(out);
    json_t *msgs = json_object_get(out, "messages");
    FB_ASSERT(json_array_size(msgs) == 4);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_array_get(msgs, 0), "content")), "be brief") ==
              0);
    json_t *img = json_array_get(json_object_get(json_array_get(msgs, 1), "content"), 1);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_object_get(img, "image_url"), "url")),
                     "data:image/png;base64,AAAA") == 0);
    json_t *tc = json_array_get(json_object_get(json_array_get(msgs, 2), "tool_calls"), 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
                     "{\"a\":1}") == 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_array_get(msgs, 3), "role")), "tool") == 0);
    FB_ASSERT(strcmp(json_string_value(json_object_get(out, "tool_choice")), "required") == 0);
    FB_ASSERT(json_is_true(json_object_get(json_object_get(out, "stream_options"), "include_usage")));
    json_decref(out);
    json_decref(in);
    in = s_json("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"document\"}]}]}");
    FB_ASSERT(!edge_rev_request(in, "m", err, sizeof(err)) && err[0]);
    json_decref(in);

    json_t *o = s_json(
        "{\"id\":\"c1\",\"choices\":[{\"message\":{\"content\":\"hi\",\"tool_calls\":[{\"id\":\"t\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"b\\\":2}\"}}]},\"finish_reason\":\"tool_calls\"}],"
        "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}");
    json_t *a = edge_rev_response(o, "gpt");
    FB_ASSERT(strcmp(json_string_value(json_object_get(a, "stop_reason")), "tool_use") == 0);
    FB_ASSERT(json_integer_value(json_object_get(
                  json_object_get(json_array_get(json_object_get(a, "content"), 1), "input"), "b")) == 2);
    FB_ASSERT(json_integer_value(json_object_get(json_object_get(a, "usage"), "output_tokens")) == 4);
    json_decref(a);
    json_decref(o);

    edge_rev_stream_t st;
    edge_rev_stream_init(&st, "gpt");
    fb_buf_t buf = {0};
    const char *chunks[] = {
        "{\"id\":\"c2\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"He\"}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t1\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"\"}}]}}]}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}",
        "{\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}",
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(chunks); i++) {
        json_t *c = s_json(chunks[i]);
        edge_rev_stream_chunk(&st, c, &buf);
        json_decref(c);
    }
    edge_rev_stream_chunk(&st, NULL, &buf);
    FB_ASSERT(strstr(buf.data,
                     "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"c2\""));
    FB_ASSERT(strstr(buf.data, "\"text_delta\",\"text\":\"He\""));
    FB_ASSERT(strstr(buf.data, "\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"f\""));
    FB_ASSERT(strstr(buf.data, "\"stop_reason\":\"tool_use\""));
    FB_ASSERT(strstr(buf.data, "\"output_tokens\":6"));
    FB_ASSERT(strstr(buf.data, "event: message_stop"));
    fb_buf_free(&buf);

    /* a provider's stream opening block after block is broken off at the
     * cap, and one chunk cannot carry more calls than an answer may make */
    edge_rev_stream_init(&st, "gpt");
    int opened = 0, rc = 0;
    for (int i = 0; rc == 0 && i < 1000; i++) {
        char text[160];
        snprintf(text, sizeof(text),
                 "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":%d,\"id\":\"t\",\"function\":{"
                 "\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}",
                 i % 2);
        json_t *c = s_json(text);
        if ((rc = edge_rev_stream_chunk(&st, c, &buf)) == 0)
            opened++;
        json_decref(c);
    }
    FB_ASSERT(rc == -1 && opened == EDGE_REV_BLOCKS);
    fb_buf_free(&buf);
    edge_rev_stream_init(&st, "gpt");
    json_t *calls = json_array();
    for (int i = 0; i <= EDGE_REV_TOOLS; i++)
        json_array_append_new(calls, json_pack("{si s{ss}}", "index", 0, "function", "arguments", "x"));
    json_t *many = json_pack("{s[{s{so}}]}", "choices", "delta", "tool_calls", calls);
    FB_ASSERT(edge_rev_stream_chunk(&st, many, &buf) == -1);
    json_decref(many);
    fb_buf_free(&buf);
    return 0;
}
