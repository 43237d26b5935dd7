/* edge_sse - an incremental reader of server-sent events (the streams of
 * OpenAI and Anthropic): bytes go in as they arrive, whole events come out,
 * each with its name, its data (data lines joined by "\n") and its raw bytes
 * for passing through unchanged. */
#ifndef EDGE_SSE_H
#define EDGE_SSE_H

#include "fb_util.h"

#include <stdbool.h>
#include <stddef.h>

#define EDGE_SSE_EVENT_MAX (4u << 20) /* bytes of one event */

typedef struct {
    const char *name; /* the "event:" field, "" when absent (NUL-terminated) */
    const char *data; /* the data lines joined by "\n" (NUL-terminated) */
    size_t data_len;
    const char *raw; /* the event's bytes as received, blank line included */
    size_t raw_len;
} edge_sse_event_t;

/* Called for each whole event; returns 0 to go on, -1 to stop reading. */
typedef int(edge_sse_event_fn)(void *arg, const edge_sse_event_t *ev);

typedef struct {
    fb_buf_t pending; /* bytes of the event not yet complete */
    fb_buf_t data;    /* scratch: the current event's data */
    size_t scanned;   /* bytes of pending already searched for the end of an event */
} edge_sse_t;

/* edge_sse_feed - read len bytes. Returns 0, or -1 when fn stopped the
 * reading or an event grew past EDGE_SSE_EVENT_MAX. */
int edge_sse_feed(edge_sse_t *self, const char *bytes, size_t len, edge_sse_event_fn *fn, void *arg);

/* edge_sse_pending - bytes received that do not make a whole event yet. */
size_t edge_sse_pending(const edge_sse_t *self);

void edge_sse_free(edge_sse_t *self);

int edge_sse_test(bool verbose);

#endif
