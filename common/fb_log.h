/* fb_log - structured logs: one JSON object per line on stdout.
 *
 * Every line carries time (RFC 3339, UTC, milliseconds), level, service,
 * replica, request_id (when there is one), msg, and the fields given in a
 * printf-style format of space-separated key=%conv pairs, for example
 *
 *     fb_log(FB_LOG_INFO, rid, "replica up", "endpoint=%s inflight=%d", ep, n);
 *
 * gcc checks the argument types against the format. %s values become JSON
 * strings (NULL becomes null), integer conversions become JSON numbers, %f/%g
 * become numbers, %.*s takes a counted string. A value written literally in the
 * format (key=word) is a string.
 *
 * Secrets registered with fb_log_redact() are replaced by "[redacted]" wherever
 * they would appear in a line: a safety net, not a licence to log secrets. */
#ifndef FB_LOG_H
#define FB_LOG_H

#include <stdbool.h>

typedef enum { FB_LOG_DEBUG = 0, FB_LOG_INFO, FB_LOG_WARN, FB_LOG_ERROR } fb_log_level_t;

/* fb_log_init - name the service and replica that every line carries. The
 * strings are copied. Call once at start, before any thread logs. */
void fb_log_init(const char *service, const char *replica);

/* fb_log_set_level - lines below min are dropped. */
void fb_log_set_level(fb_log_level_t min);

/* fb_log_parse_level - "debug", "info", "warn" or "error". Returns 0, or -1 for
 * any other text. */
int fb_log_parse_level(const char *text, fb_log_level_t *out);

/* fb_log_redact - never print this string (at least 6 bytes). Copied. Call at
 * start, before any thread logs. */
void fb_log_redact(const char *secret);

/* fb_log_set_fd - write lines to fd instead of stdout (tests). */
void fb_log_set_fd(int fd);

/* fb_log_enabled - true when a line at this level would be written. */
bool fb_log_enabled(fb_log_level_t level);

/* fb_log - write one line. request_id may be NULL; fields may be NULL. */
void fb_log(fb_log_level_t level, const char *request_id, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 4, 5)));

int fb_log_test(bool verbose);

#endif
