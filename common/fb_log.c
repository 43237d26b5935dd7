/* fb_log - one JSON object per line, built in a stack buffer, written with one
 * write(2) so that lines from several threads never interleave. */
#include "fb_log.h"
#include "fb_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 16384 /* longer lines are cut, and say so */
#define VALUE_MAX      4096  /* one string value is cut at this many bytes */
#define SECRETS_MAX    16

static char s_service[64] = "farebox";
static char s_replica[128] = "";
static fb_log_level_t s_min_level = FB_LOG_INFO;
static int s_fd = 1;
static char *s_secrets[SECRETS_MAX];
static size_t s_secret_count;

static const char *s_level_names[] = {"debug", "info", "warn", "error"};

void fb_log_init(const char *service, const char *replica)
{
    snprintf(s_service, sizeof(s_service), "%s", service);
    snprintf(s_replica, sizeof(s_replica), "%s", replica ? replica : "");
}

void fb_log_set_level(fb_log_level_t min)
{
    s_min_level = min;
}

int fb_log_parse_level(const char *text, fb_log_level_t *out)
{
    for (size_t i = 0; i < FB_ARRAY_SIZE(s_level_names); i++) {
        if (strcmp(text, s_level_names[i]) == 0) {
            *out = (fb_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void fb_log_redact(const char *secret)
{
    FB_ASSERT(secret);
    if (strlen(secret) < 6 || s_secret_count == SECRETS_MAX)
        return;
    for (size_t i = 0; i < s_secret_count; i++)
        if (strcmp(s_secrets[i], secret) == 0)
            return;
    s_secrets[s_secret_count++] = fb_strdup(secret);
}

void fb_log_set_fd(int fd)
{
    s_fd = fd;
}

bool fb_log_enabled(fb_log_level_t level)
{
    return level >= s_min_level;
}

/* A bounded output buffer: appends past the end are dropped and remembered. */
typedef struct {
    char *buf;
    size_t len, cap;
    bool cut;
} s_out_t;

static void s_put(s_out_t *o, const char *s, size_t n)
{
    if (o->len + n > o->cap) {
        n = o->cap - o->len;
        o->cut = true;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void s_putc(s_out_t *o, char c)
{
    s_put(o, &c, 1);
}

static void s_puts(s_out_t *o, const char *s)
{
    s_put(o, s, strlen(s));
}

/* JSON string body (no quotes) of n bytes; control characters escaped,
 * invalid UTF-8 bytes passed as \u00XX so the line stays valid JSON text. */
static void s_put_escaped(s_out_t *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (n > VALUE_MAX)
        n = VALUE_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            s_putc(o, '\\');
            s_putc(o, (char)c);
        } else if (c == '\n') {
            s_put(o, "\\n", 2);
        } else if (c == '\r') {
            s_put(o, "\\r", 2);
        } else if (c == '\t') {
            s_put(o, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f || c >= 0x80) {
            /* multi-byte UTF-8 sequences are kept when well-formed */
            size_t need = c >= 0xf0 && c < 0xf5 ? 3 : c >= 0xe0 ? 2 : c >= 0xc2 && c < 0xe0 ? 1 : 0;
            bool ok = c >= 0x80 && need > 0 && i + need < n;
            for (size_t k = 1; ok && k <= need; k++)
                ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
            if (ok) {
                s_put(o, s + i, need + 1);
                i += need;
            } else {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                s_put(o, esc, 6);
            }
        } else {
            s_putc(o, (char)c);
        }
    }
}

static void s_put_jstr(s_out_t *o, const char *s, size_t n)
{
    s_putc(o, '"');
    s_put_escaped(o, s, n);
    s_putc(o, '"');
}

static void s_put_key(s_out_t *o, const char *k, size_t n)
{
    s_put(o, ",", 1);
    s_put_jstr(o, k, n);
    s_putc(o, ':');
}

/* Formats the key=%conv fields, consuming va_list arguments in order. */
static void s_put_fields(s_out_t *o, const char *f, va_list ap)
{
    char num[64];
    while (*f) {
        while (*f == ' ')
            f++;
        if (!*f)
            break;
        const char *key = f;
        while (*f && *f != '=' && *f != ' ')
            f++;
        size_t keylen = (size_t)(f - key);
        if (*f != '=') { /* a bare word: log it as a flag */
            s_put_key(o, key, keylen);
            s_puts(o, "true");
            continue;
        }
        f++;
        s_put_key(o, key, keylen);
        if (*f != '%') {
            const char *v = f;
            while (*f && *f != ' ')
                f++;
            s_put_jstr(o, v, (size_t)(f - v));
            continue;
        }
        f++;
        /* flags and width are accepted and ignored; precision matters */
        while (*f && strchr("-+ #0", *f))
            f++;
        while (*f >= '0' && *f <= '9')
            f++;
        int precision = -1;
        if (*f == '.') {
            f++;
            if (*f == '*') {
                precision = va_arg(ap, int);
                f++;
            } else {
                precision = 0;
                while (*f >= '0' && *f <= '9')
                    precision = precision * 10 + (*f++ - '0');
            }
        }
        int lng = 0; /* 0 int, 1 long, 2 long long, 3 size_t, 4 intmax, -1 short/char */
        if (*f == 'l') {
            lng = 1;
            if (*++f == 'l') {
                lng = 2;
                f++;
            }
        } else if (*f == 'z' || *f == 't') {
            lng = 3;
            f++;
        } else if (*f == 'j') {
            lng = 4;
            f++;
        } else if (*f == 'h') {
            lng = -1;
            if (*++f == 'h')
                f++;
        }
        char conv = *f ? *f++ : 's';
        switch (conv) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (s == NULL)
                s_puts(o, "null");
            else
                s_put_jstr(o, s, precision >= 0 ? strnlen(s, (size_t)precision) : strlen(s));
            break;
        }
        case 'd':
        case 'i': {
            long long v = lng == 1   ? va_arg(ap, long)
                          : lng == 2 ? va_arg(ap, long long)
                          : lng == 3 ? (long long)va_arg(ap, ssize_t)
                          : lng == 4 ? (long long)va_arg(ap, intmax_t)
                                     : va_arg(ap, int);
            snprintf(num, sizeof(num), "%lld", v);
            s_puts(o, num);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long long v = lng == 1   ? va_arg(ap, unsigned long)
                                   : lng == 2 ? va_arg(ap, unsigned long long)
                                   : lng == 3 ? (unsigned long long)va_arg(ap, size_t)
                                   : lng == 4 ? (unsigned long long)va_arg(ap, uintmax_t)
                                              : va_arg(ap, unsigned int);
            if (conv == 'u') {
                snprintf(num, sizeof(num), "%llu", v);
                s_puts(o, num);
            } else {
                snprintf(num, sizeof(num), "\"%llx\"", v);
                s_puts(o, num);
            }
            break;
        }
        case 'f':
        case 'g':
        case 'e': {
            double v = va_arg(ap, double);
            if (v != v || v > 1e308 || v < -1e308)
                s_puts(o, "null");
            else {
                if (precision >= 0)
                    snprintf(num, sizeof(num), "%.*f", precision > 17 ? 17 : precision, v);
                else
                    snprintf(num, sizeof(num), "%.15g", v);
                s_puts(o, num);
            }
            break;
        }
        case 'p': {
            void *v = va_arg(ap, void *);
            snprintf(num, sizeof(num), "\"%p\"", v);
            s_puts(o, num);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            s_put_jstr(o, &c, 1);
            break;
        }
        default:
            s_puts(o, "null");
            break;
        }
        while (*f && *f != ' ')
            f++;
    }
}

/* Copies line to out, replacing every registered secret by [redacted]. */
static size_t s_redact(const char *line, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o < cap;) {
        bool hit = false;
        for (size_t k = 0; k < s_secret_count; k++) {
            size_t sl = strlen(s_secrets[k]);
            if (sl <= len - i && memcmp(line + i, s_secrets[k], sl) == 0) {
                static const char mark[] = "[redacted]";
                size_t ml = sizeof(mark) - 1;
                if (o + ml > cap)
                    ml = cap - o;
                memcpy(out + o, mark, ml);
                o += ml;
                i += sl;
                hit = true;
                break;
            }
        }
        if (!hit)
            out[o++] = line[i++];
    }
    return o;
}

void fb_log(fb_log_level_t level, const char *request_id, const char *msg, const char *fields, ...)
{
    if (level < s_min_level)
        return;
    char buf[LINE_MAX_BYTES];
    s_out_t o = {buf, 0, sizeof(buf) - 32, false};

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tbuf[160];
    snprintf(tbuf, sizeof(tbuf), "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\"",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             ts.tv_nsec / 1000000, s_level_names[level]);
    s_puts(&o, tbuf);
    s_put_key(&o, "service", 7);
    s_put_jstr(&o, s_service, strlen(s_service));
    s_put_key(&o, "replica", 7);
    s_put_jstr(&o, s_replica, strlen(s_replica));
    if (request_id) {
        s_put_key(&o, "request_id", 10);
        s_put_jstr(&o, request_id, strlen(request_id));
    }
    s_put_key(&o, "msg", 3);
    s_put_jstr(&o, msg ? msg : "", msg ? strlen(msg) : 0);
    if (fields) {
        va_list ap;
        va_start(ap, fields);
        s_put_fields(&o, fields, ap);
        va_end(ap);
    }
    /* the reserve of 32 bytes always has room for the closing marks */
    o.cap = sizeof(buf);
    if (o.cut)
        s_puts(&o, ",\"truncated\":true");
    s_puts(&o, "}\n");

    const char *line = buf;
    size_t len = o.len;
    char clean[LINE_MAX_BYTES + 64];
    if (s_secret_count) {
        len = s_redact(buf, o.len, clean, sizeof(clean));
        line = clean;
    }
    while (len > 0) {
        ssize_t n = write(s_fd, line, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        line += n;
        len -= (size_t)n;
    }
}

int fb_log_test(bool verbose)
{
    FB_UNUSED(verbose);
    char path[] = "/tmp/fb_log_testXXXXXX";
    int fd = mkstemp(path);
    FB_ASSERT(fd >= 0);
    fb_log_init("selftest", "r1");
    fb_log_set_fd(fd);
    fb_log_set_level(FB_LOG_INFO);
    fb_log(FB_LOG_DEBUG, NULL, "hidden", NULL);
    fb_log(FB_LOG_INFO, "req-1", "hello \"world\"\n",
           "count=%d big=%lld name=%s none=%s size=%zu ms=%.1f lit=up cnt=%.*s", -3, 9007199254740993LL,
           "a\tb", getenv("FB_LOG_TEST_UNSET_VARIABLE"), (size_t)7, 1.5, 3, "abcdef");
    fb_log_redact("s3cr3t-token-value");
    fb_log(FB_LOG_WARN, NULL, "leak s3cr3t-token-value here", "v=%s", "xs3cr3t-token-valuex");
    fb_log_set_fd(1);
    close(fd);

    size_t len;
    char *text = fb_read_file(path, 1 << 20, &len);
    unlink(path);
    FB_ASSERT(text);
    if (verbose)
        fputs(text, stdout);
    FB_ASSERT(strstr(text, "hidden") == NULL);
    FB_ASSERT(strstr(
        text, "\"level\":\"info\",\"service\":\"selftest\",\"replica\":\"r1\",\"request_id\":\"req-1\""));
    FB_ASSERT(strstr(text, "\"msg\":\"hello \\\"world\\\"\\n\""));
    FB_ASSERT(
        strstr(text, "\"count\":-3,\"big\":9007199254740993,\"name\":\"a\\tb\",\"none\":null,\"size\":7"));
    FB_ASSERT(strstr(text, "\"ms\":1.5,\"lit\":\"up\",\"cnt\":\"abc\"}"));
    FB_ASSERT(strstr(text, "s3cr3t") == NULL);
    FB_ASSERT(strstr(text, "\"msg\":\"leak [redacted] here\",\"v\":\"x[redacted]x\""));
    /* two lines, each ending in a newline */
    FB_ASSERT(len > 0 && text[len - 1] == '\n');
    free(text);
    /* forget the test secret */
    free(s_secrets[--s_secret_count]);
    return 0;
}
