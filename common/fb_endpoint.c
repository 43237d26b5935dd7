/* fb_endpoint - parsing and formatting of RPC endpoint lists. */
#include "fb_endpoint.h"
#include "fb_util.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int s_port(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

static bool s_hostname_ok(const char *h)
{
    if (!*h)
        return false;
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '.' || *p == '_'))
            return false;
    return true;
}

static int s_parse_one(const char *s, size_t n, fb_endpoint_t *ep, char *err, size_t errlen)
{
    memset(ep, 0, sizeof(*ep));
    if (n < 6 || strncmp(s, "tcp://", 6) != 0) {
        snprintf(err, errlen, "endpoint \"%.*s\" must start with tcp://", (int)n, s);
        return -1;
    }
    s += 6;
    n -= 6;
    const char *colon;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close || (size_t)(close - s) + 1 >= n || close[1] != ':') {
            snprintf(err, errlen, "endpoint has a bad IPv6 address");
            return -1;
        }
        size_t hl = (size_t)(close - s) - 1;
        if (hl > FB_ENDPOINT_HOST_MAX) {
            snprintf(err, errlen, "endpoint host is too long");
            return -1;
        }
        memcpy(ep->host, s + 1, hl);
        struct in6_addr a6;
        if (inet_pton(AF_INET6, ep->host, &a6) != 1) {
            snprintf(err, errlen, "endpoint has a bad IPv6 address \"%s\"", ep->host);
            return -1;
        }
        ep->is_ip = ep->is_ipv6 = true;
        colon = close + 1;
    } else {
        colon = NULL;
        for (size_t i = 0; i < n; i++)
            if (s[i] == ':')
                colon = s + i;
        if (!colon) {
            snprintf(err, errlen, "endpoint \"tcp://%.*s\" has no port", (int)n, s);
            return -1;
        }
        size_t hl = (size_t)(colon - s);
        if (hl == 0 || hl > FB_ENDPOINT_HOST_MAX) {
            snprintf(err, errlen, "endpoint host is empty or too long");
            return -1;
        }
        memcpy(ep->host, s, hl);
        struct in_addr a4;
        if (strcmp(ep->host, "*") == 0)
            ep->is_wildcard = true;
        else if (inet_pton(AF_INET, ep->host, &a4) == 1)
            ep->is_ip = true;
        else if (!s_hostname_ok(ep->host)) {
            snprintf(err, errlen, "endpoint host \"%s\" is not a valid name", ep->host);
            return -1;
        }
    }
    const char *ps = colon + 1, *end = s + n;
    const char *dash = memchr(ps, '-', (size_t)(end - ps));
    if (s_port(ps, (size_t)((dash ? dash : end) - ps), &ep->port_lo) != 0 ||
        (dash && s_port(dash + 1, (size_t)(end - dash - 1), &ep->port_hi) != 0)) {
        snprintf(err, errlen, "endpoint port must be 1..65535 or a range LOW-HIGH");
        return -1;
    }
    if (!dash)
        ep->port_hi = ep->port_lo;
    if (ep->port_hi < ep->port_lo || ep->port_hi - ep->port_lo >= FB_ENDPOINT_RANGE_MAX) {
        snprintf(err, errlen, "endpoint port range must be ascending and at most %d ports",
                 FB_ENDPOINT_RANGE_MAX);
        return -1;
    }
    return 0;
}

int fb_endpoint_parse_list(const char *text, fb_endpoint_t *out, size_t max, char *err, size_t errlen)
{
    size_t count = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ')
            p++;
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n == 0) {
            snprintf(err, errlen, "empty endpoint in list");
            return -1;
        }
        if (count == max) {
            snprintf(err, errlen, "more than %zu endpoints in list", max);
            return -1;
        }
        if (s_parse_one(p, n, &out[count], err, errlen) != 0)
            return -1;
        count++;
        if (!comma)
            break;
        p = comma + 1;
    }
    return (int)count;
}

int fb_endpoint_check(const char *text, char *err, size_t errlen)
{
    fb_endpoint_t eps[FB_ENDPOINT_LIST_MAX];
    return fb_endpoint_parse_list(text, eps, FB_ENDPOINT_LIST_MAX, err, errlen) > 0 ? 0 : -1;
}

char *fb_endpoint_format(char *out, size_t outlen, const char *host, bool ipv6, uint16_t port)
{
    snprintf(out, outlen, ipv6 ? "tcp://[%s]:%u" : "tcp://%s:%u", host, (unsigned)port);
    return out;
}

size_t fb_endpoint_normalize(const char *in, size_t len, char *out, size_t cap)
{
    static const char mapped[] = "tcp://[::ffff:";
    size_t ml = sizeof(mapped) - 1;
    if (len > ml && strncasecmp(in, mapped, ml) == 0) {
        const char *close = memchr(in + ml, ']', len - ml);
        if (close && close + 1 < in + len && close[1] == ':') {
            size_t hl = (size_t)(close - (in + ml)), pl = (size_t)(in + len - (close + 1));
            if (6 + hl + pl + 1 > cap)
                return 0;
            memcpy(out, "tcp://", 6);
            memcpy(out + 6, in + ml, hl);
            memcpy(out + 6 + hl, close + 1, pl);
            out[6 + hl + pl] = '\0';
            return 6 + hl + pl;
        }
    }
    if (len + 1 > cap)
        return 0;
    memcpy(out, in, len);
    out[len] = '\0';
    return len;
}

int fb_endpoint_test(bool verbose)
{
    FB_UNUSED(verbose);
    fb_endpoint_t eps[4];
    char err[256];
    FB_ASSERT(fb_endpoint_parse_list("tcp://127.0.0.1:7110-7119, tcp://ledger:7110,tcp://[::1]:9", eps, 4,
                                     err, sizeof(err)) == 3);
    FB_ASSERT(strcmp(eps[0].host, "127.0.0.1") == 0 && eps[0].port_lo == 7110 && eps[0].port_hi == 7119 &&
              eps[0].is_ip && !eps[0].is_ipv6);
    FB_ASSERT(strcmp(eps[1].host, "ledger") == 0 && !eps[1].is_ip && eps[1].port_lo == 7110 &&
              eps[1].port_hi == 7110);
    FB_ASSERT(strcmp(eps[2].host, "::1") == 0 && eps[2].is_ipv6 && eps[2].port_lo == 9);
    FB_ASSERT(fb_endpoint_parse_list("tcp://*:7000", eps, 4, err, sizeof(err)) == 1 && eps[0].is_wildcard);

    const char *bad[] = {"",
                         "udp://x:1",
                         "tcp://x",
                         "tcp://x:0",
                         "tcp://x:70000",
                         "tcp://x:9-1",
                         "tcp://x:1-100",
                         "tcp://:1",
                         "tcp://a b:1",
                         "tcp://[::1:1",
                         "tcp://[zz]:1",
                         "tcp://x:1,,tcp://y:2",
                         "tcp://x:1a",
                         "tcp://a:1,tcp://b:1,tcp://c:1,tcp://d:1,tcp://e:1"};
    for (size_t i = 0; i < FB_ARRAY_SIZE(bad); i++)
        FB_ASSERT(fb_endpoint_parse_list(bad[i], eps, 4, err, sizeof(err)) == -1 && err[0]);
    char out[64];
    const char *m = "tcp://[::ffff:127.0.0.1]:17311";
    FB_ASSERT(fb_endpoint_normalize(m, strlen(m), out, sizeof(out)) == 21 &&
              strcmp(out, "tcp://127.0.0.1:17311") == 0);
    const char *v6 = "tcp://[::1]:9";
    FB_ASSERT(fb_endpoint_normalize(v6, strlen(v6), out, sizeof(out)) == strlen(v6) && strcmp(out, v6) == 0);
    FB_ASSERT(fb_endpoint_normalize(m, strlen(m), out, 10) == 0);
    FB_ASSERT(strcmp(fb_endpoint_format(out, sizeof(out), "::1", true, 7), "tcp://[::1]:7") == 0);
    FB_ASSERT(strcmp(fb_endpoint_format(out, sizeof(out), "10.0.0.1", false, 7110), "tcp://10.0.0.1:7110") ==
              0);
    return 0;
}
