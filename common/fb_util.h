/* fb_util - allocation that aborts on out-of-memory, an always-on assert, clocks.
 *
 * Programming errors (misuse of an API) stop the process through FB_ASSERT, in
 * release builds too. Input from outside never reaches an assert: it gets an
 * error path. */
#ifndef FB_UTIL_H
#define FB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define FB_UNUSED(x)     ((void)(x))

/* FB_ASSERT - abort with file, line and expression when cond is false. Stays on
 * in release builds (no NDEBUG dependency). */
#define FB_ASSERT(cond)                                                                                      \
    do {                                                                                                     \
        if (__builtin_expect(!(cond), 0))                                                                    \
            fb_assert_fail(#cond, __FILE__, __LINE__);                                                       \
    } while (0)

void fb_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* Allocation: never returns NULL; aborts the process when memory is exhausted. */
void *fb_malloc(size_t size);
void *fb_calloc(size_t count, size_t size);
void *fb_realloc(void *ptr, size_t size);
char *fb_strdup(const char *s);
char *fb_strndup(const char *s, size_t len);

/* fb_now_ms - wall clock, milliseconds since the Unix epoch. */
int64_t fb_now_ms(void);
/* fb_mono_ms - monotonic clock in milliseconds, for durations and deadlines. */
int64_t fb_mono_ms(void);
/* fb_mono_us - monotonic clock in microseconds, for latency measurement. */
int64_t fb_mono_us(void);

/* fb_memeq_ct - compare two buffers of equal length in constant time.
 * Returns true when equal. Use for secrets and MACs. */
bool fb_memeq_ct(const void *a, const void *b, size_t len);

/* fb_streq_n - true when the counted string (s, len) equals the C string z. */
bool fb_streq_n(const char *s, size_t len, const char *z);

/* fb_utf8_clean - s made valid UTF-8 in place: each byte that does not start
 * or continue a well-formed sequence (overlong forms, surrogates, above
 * U+10FFFF, a sequence cut short, as at the end of a truncated buffer) becomes
 * '?'. Text from outside goes through it before jansson, which refuses
 * anything else. Returns how many bytes were replaced. */
size_t fb_utf8_clean(char *s);

/* fb_copy_str - copy the C string src (NULL: "") into dst of cap bytes
 * (cap >= 1), cut to cap - 1 bytes, always terminated; returns the length
 * copied. What snprintf(dst, cap, "%s", src) does, without its formatting. */
size_t fb_copy_str(char *dst, size_t cap, const char *src);

/* fb_random_hex - fill out with 2*nbytes lowercase hex digits from the system's
 * CSPRNG and a terminating NUL; out must hold 2*nbytes+1 bytes. */
void fb_random_hex(char *out, size_t nbytes);

/* fb_read_file - read a whole file (at most max bytes) into a NUL-terminated
 * buffer. Returns the buffer (caller owns it, free with free()) and sets *len,
 * or NULL with errno set when the file cannot be read or is larger than max. */
char *fb_read_file(const char *path, size_t max, size_t *len);

/* fb_buf_t - a growable byte buffer, always NUL-terminated after len bytes
 * once anything was appended. Zero-initialised is empty; fb_buf_free releases. */
typedef struct {
    char *data;
    size_t len, cap;
} fb_buf_t;

void fb_buf_append(fb_buf_t *b, const void *data, size_t len);
void fb_buf_append_str(fb_buf_t *b, const char *s);
/* fb_buf_consume - drop the first n bytes (n <= len). */
void fb_buf_consume(fb_buf_t *b, size_t n);
void fb_buf_reset(fb_buf_t *b);
void fb_buf_free(fb_buf_t *b);

int fb_util_test(bool verbose);

#endif
