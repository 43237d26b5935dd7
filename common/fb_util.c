/* fb_util - allocation, assert, clocks, constant-time compare, file reading. */
#include "fb_util.h"

#include <errno.h>
#include <jansson.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void fb_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}

static void s_out_of_memory(size_t size)
{
    fprintf(stderr, "out of memory allocating %zu bytes\n", size);
    abort();
}

void *fb_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        s_out_of_memory(size);
    return p;
}

void *fb_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        s_out_of_memory(count * size);
    return p;
}

void *fb_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        s_out_of_memory(size);
    return p;
}

char *fb_strdup(const char *s)
{
    return fb_strndup(s, strlen(s));
}

char *fb_strndup(const char *s, size_t len)
{
    char *p = fb_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

int64_t fb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fb_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t fb_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool fb_memeq_ct(const void *a, const void *b, size_t len)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char diff = 0;
    for (size_t i = 0; i < len; i++)
        diff |= x[i] ^ y[i];
    return diff == 0;
}

/* The length of the well-formed UTF-8 sequence at p (RFC 3629), 0 if none. */
static size_t s_utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n == 0)
        return 0;
    /* the second byte's range rules out overlong forms, surrogates and values above U+10FFFF */
    unsigned char lo = c == 0xe0   ? 0xa0
                       : c == 0xf0 ? 0x90
                                   : 0x80,
                  hi = c == 0xed   ? 0x9f
                       : c == 0xf4 ? 0x8f
                                   : 0xbf;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

size_t fb_utf8_clean(char *s)
{
    size_t replaced = 0;
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = s_utf8_len(p); /* a NUL inside a sequence fails its range check */
        if (n == 0) {
            *p++ = '?';
            replaced++;
        } else {
            p += n;
        }
    }
    return replaced;
}

bool fb_streq_n(const char *s, size_t len, const char *z)
{
    size_t zl = strlen(z);
    return zl == len && (len == 0 || memcmp(s, z, len) == 0);
}

size_t fb_copy_str(char *dst, size_t cap, const char *src)
{
    FB_ASSERT(dst && cap >= 1);
    size_t n = src ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
    return n;
}

void fb_random_hex(char *out, size_t nbytes)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char buf[64];
    FB_ASSERT(nbytes <= sizeof(buf));
    size_t got = 0;
    while (got < nbytes) {
        ssize_t n = getrandom(buf + got, nbytes - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        FB_ASSERT(n > 0);
        got += (size_t)n;
    }
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = digits[buf[i] >> 4];
        out[2 * i + 1] = digits[buf[i] & 15];
    }
    out[2 * nbytes] = '\0';
}

char *fb_read_file(const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    if (st.st_size < 0 || (size_t)st.st_size > max) {
        close(fd);
        errno = EFBIG;
        return NULL;
    }
    size_t cap = (size_t)st.st_size + 1, used = 0;
    char *buf = fb_malloc(cap);
    for (;;) {
        if (used + 1 == cap) {
            if (cap - 1 >= max) {
                free(buf);
                close(fd);
                errno = EFBIG;
                return NULL;
            }
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            buf = fb_realloc(buf, cap);
        }
        ssize_t n = read(fd, buf + used, cap - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            close(fd);
            errno = e;
            return NULL;
        }
        if (n == 0)
            break;
        used += (size_t)n;
    }
    close(fd);
    buf[used] = '\0';
    if (len)
        *len = used;
    return buf;
}

void fb_buf_append(fb_buf_t *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        b->data = fb_realloc(b->data, cap);
        b->cap = cap;
    }
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void fb_buf_append_str(fb_buf_t *b, const char *s)
{
    fb_buf_append(b, s, strlen(s));
}

void fb_buf_consume(fb_buf_t *b, size_t n)
{
    FB_ASSERT(n <= b->len);
    if (n == 0)
        return;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

void fb_buf_reset(fb_buf_t *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void fb_buf_free(fb_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int fb_util_test(bool verbose)
{
    {
        static const struct {
            const char *in, *out;
            size_t replaced;
        } utf8[] = {
            {"plain", "plain", 0},
            {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0},
            {"a\xff"
             "b",
             "a?b", 1},
            {"cut \xc3", "cut ?", 1},        /* a character cut by truncation */
            {"cut \xe2\x82", "cut ??", 2},   /* its bytes each replaced */
            {"\xc0\xaf", "??", 2},           /* an overlong '/' */
            {"\xed\xa0\x80", "???", 3},      /* a surrogate */
            {"\xf4\x90\x80\x80", "????", 4}, /* above U+10FFFF */
            {"\x80x", "?x", 1},              /* a lone continuation byte */
        };
        for (size_t i = 0; i < FB_ARRAY_SIZE(utf8); i++) {
            char buf[32];
            fb_copy_str(buf, sizeof(buf), utf8[i].in);
            FB_ASSERT(fb_utf8_clean(buf) == utf8[i].replaced);
            FB_ASSERT(strcmp(buf, utf8[i].out) == 0);
            json_t *j = json_string(buf);
            FB_ASSERT(j); /* what jansson takes */
            json_decref(j);
        }
    }
    {
        char d[4];
        FB_ASSERT(fb_copy_str(d, sizeof(d), "ab") == 2 && strcmp(d, "ab") == 0);
        FB_ASSERT(fb_copy_str(d, sizeof(d), "abc") == 3 && strcmp(d, "abc") == 0);
        FB_ASSERT(fb_copy_str(d, sizeof(d), "abcdef") == 3 && strcmp(d, "abc") == 0);
        FB_ASSERT(fb_copy_str(d, sizeof(d), NULL) == 0 && d[0] == '\0');
        FB_ASSERT(fb_copy_str(d, 1, "x") == 0 && d[0] == '\0');
    }
    {
        fb_buf_t b = {0};
        for (int i = 0; i < 100; i++)
            fb_buf_append_str(&b, "abcdefghij");
        FB_ASSERT(b.len == 1000 && b.data[1000] == '\0');
        fb_buf_consume(&b, 995);
        FB_ASSERT(b.len == 5 && strcmp(b.data, "fghij") == 0);
        fb_buf_reset(&b);
        FB_ASSERT(b.len == 0 && b.data[0] == '\0');
        fb_buf_free(&b);
        FB_ASSERT(!b.data && b.cap == 0);
    }
    FB_UNUSED(verbose);
    FB_ASSERT(fb_memeq_ct("abc", "abc", 3));
    FB_ASSERT(!fb_memeq_ct("abc", "abd", 3));
    FB_ASSERT(fb_memeq_ct("", "", 0));
    FB_ASSERT(fb_streq_n("health", 6, "health"));
    FB_ASSERT(!fb_streq_n("healt", 5, "health"));
    FB_ASSERT(!fb_streq_n("healthy", 7, "health"));

    char a[33], b[33];
    fb_random_hex(a, 16);
    fb_random_hex(b, 16);
    FB_ASSERT(strlen(a) == 32 && strcmp(a, b) != 0);

    int64_t m1 = fb_mono_ms(), m2 = fb_mono_ms();
    FB_ASSERT(m2 >= m1);
    FB_ASSERT(fb_now_ms() > 1600000000000LL);

    char path[] = "/tmp/fb_util_testXXXXXX";
    int fd = mkstemp(path);
    FB_ASSERT(fd >= 0);
    FB_ASSERT(write(fd, "hello\n", 6) == 6);
    close(fd);
    size_t len = 0;
    char *text = fb_read_file(path, 100, &len);
    FB_ASSERT(text && len == 6 && strcmp(text, "hello\n") == 0);
    free(text);
    FB_ASSERT(fb_read_file(path, 3, &len) == NULL && errno == EFBIG);
    unlink(path);
    FB_ASSERT(fb_read_file(path, 100, &len) == NULL && errno == ENOENT);
    return 0;
}
