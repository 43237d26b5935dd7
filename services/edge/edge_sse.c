/* edge_sse - server-sent events, read incrementally. */
#include "edge_sse.h"

#include <stdio.h>
#include <string.h>

/* One line of an event block: the field name and value ("data: x" gives
 * "data" and "x"; one space after the colon is dropped, as the SSE standard
 * says). */
static void s_field(edge_sse_t *self, const char *line, size_t len, const char **name, size_t *name_len)
{
    const char *colon = memchr(line, ':', len);
    size_t flen = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    size_t vlen = colon ? len - flen - 1 : 0;
    if (vlen > 0 && value[0] == ' ') {
        value++;
        vlen--;
    }
    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        fb_buf_append(&self->data, value, vlen);
        fb_buf_append(&self->data, "\n", 1);
    } else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        *name = value;
        *name_len = vlen;
    }
}

/* Parses the complete block pending[0..end) and hands it to fn. */
static int s_emit(edge_sse_t *self, size_t end, edge_sse_event_fn *fn, void *arg)
{
    const char *p = self->pending.data, *stop = p + end;
    const char *name = "";
    size_t name_len = 0;
    fb_buf_reset(&self->data);
    while (p < stop) {
        const char *nl = memchr(p, '\n', (size_t)(stop - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(stop - p);
        size_t l = len;
        if (l > 0 && p[l - 1] == '\r')
            l--;
        if (l > 0 && p[0] != ':')
            s_field(self, p, l, &name, &name_len);
        p += len + (nl ? 1 : 0);
    }
    char name_buf[64];
    if (name_len >= sizeof(name_buf))
        name_len = sizeof(name_buf) - 1;
    memcpy(name_buf, name, name_len);
    name_buf[name_len] = '\0';
    if (self->data.len > 0)
        self->data.len--; /* the last data line's "\n" */
    fb_buf_append(&self->data, "", 0);
    edge_sse_event_t ev = {name_buf, self->data.data ? self->data.data : "", self->data.len,
                           self->pending.data, end};
    if (self->data.len == 0 && name_len == 0)
        return 0; /* comments only (keep-alive): nothing to report */
    return fn(arg, &ev);
}

int edge_sse_feed(edge_sse_t *self, const char *bytes, size_t len, edge_sse_event_fn *fn, void *arg)
{
    fb_buf_append(&self->pending, bytes, len);
    for (;;) {
        /* the end of an event is a blank line: "\n\n", or with "\r" before either "\n" */
        const char *p = self->pending.data + self->scanned;
        const char *end = self->pending.data + self->pending.len;
        size_t block = 0;
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            if (!nl)
                break;
            const char *next = nl + 1;
            if (next < end && *next == '\n') {
                block = (size_t)(next + 1 - self->pending.data);
                break;
            }
            if (next + 1 < end && next[0] == '\r' && next[1] == '\n') {
                block = (size_t)(next + 2 - self->pending.data);
                break;
            }
            if (next >= end || (next[0] == '\r' && next + 1 >= end)) {
                p = nl; /* the blank line may still come: look here again */
                break;
            }
            p = next;
        }
        if (!block) {
            self->scanned = (size_t)(p - self->pending.data);
            if (self->pending.len > EDGE_SSE_EVENT_MAX)
                return -1;
            return 0;
        }
        if (s_emit(self, block, fn, arg) != 0)
            return -1;
        fb_buf_consume(&self->pending, block);
        self->scanned = 0;
    }
}

size_t edge_sse_pending(const edge_sse_t *self)
{
    return self->pending.len;
}

void edge_sse_free(edge_sse_t *self)
{
    fb_buf_free(&self->pending);
    fb_buf_free(&self->data);
    self->scanned = 0;
}

/* --- self-test --------------------------------------------------------------------- */

typedef struct {
    int count;
    char names[8][64];
    char data[8][256];
    size_t raw_len[8];
} s_seen_t;

static int s_collect(void *arg, const edge_sse_event_t *ev)
{
    s_seen_t *s = arg;
    if (s->count < 8) {
        snprintf(s->names[s->count], 64, "%s", ev->name);
        snprintf(s->data[s->count], 256, "%s", ev->data);
        s->raw_len[s->count] = ev->raw_len;
    }
    s->count++;
    return 0;
}

int edge_sse_test(bool verbose)
{
    FB_UNUSED(verbose);
    const char stream[] = "event: message_start\ndata: {\"a\":1}\n\n"
                          ": ping\n\n"
                          "data: line1\r\ndata: line2\r\n\r\n"
                          "data: [DONE]\n\n";
    /* byte by byte, and whole: the same events */
    for (int mode = 0; mode < 2; mode++) {
        edge_sse_t p = {0};
        s_seen_t seen = {0};
        if (mode == 0) {
            for (size_t i = 0; i < sizeof(stream) - 1; i++)
                FB_ASSERT(edge_sse_feed(&p, stream + i, 1, s_collect, &seen) == 0);
        } else {
            FB_ASSERT(edge_sse_feed(&p, stream, sizeof(stream) - 1, s_collect, &seen) == 0);
        }
        FB_ASSERT(seen.count == 3);
        FB_ASSERT(strcmp(seen.names[0], "message_start") == 0 && strcmp(seen.data[0], "{\"a\":1}") == 0);
        FB_ASSERT(seen.raw_len[0] == strlen("event: message_start\ndata: {\"a\":1}\n\n"));
        FB_ASSERT(strcmp(seen.names[1], "") == 0 && strcmp(seen.data[1], "line1\nline2") == 0);
        FB_ASSERT(strcmp(seen.data[2], "[DONE]") == 0);
        FB_ASSERT(edge_sse_pending(&p) == 0);
        edge_sse_free(&p);
    }
    /* an unfinished event stays pending */
    edge_sse_t p = {0};
    s_seen_t seen = {0};
    FB_ASSERT(edge_sse_feed(&p, "data: x\n", 8, s_collect, &seen) == 0);
    FB_ASSERT(seen.count == 0 && edge_sse_pending(&p) == 8);
    FB_ASSERT(edge_sse_feed(&p, "\n", 1, s_collect, &seen) == 0);
    FB_ASSERT(seen.count == 1 && strcmp(seen.data[0], "x") == 0);
    edge_sse_free(&p);
    return 0;
}
