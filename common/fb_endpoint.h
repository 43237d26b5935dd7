/* fb_endpoint - RPC endpoint lists: "tcp://HOST:PORT[-PORT][,tcp://...]".
 *
 * HOST is an IPv4 address, an IPv6 address in brackets, "*" (bind only) or a
 * DNS name that may resolve to many addresses (one per replica, as docker
 * compose and Kubernetes publish a service). A port range lets several
 * replicas share one host: a server binds the first free port of the range, a
 * client connects to every port of it. */
#ifndef FB_ENDPOINT_H
#define FB_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_ENDPOINT_HOST_MAX  253
#define FB_ENDPOINT_RANGE_MAX 64 /* ports in one range */
#define FB_ENDPOINT_LIST_MAX  16 /* endpoints in one list */

typedef struct {
    char host[FB_ENDPOINT_HOST_MAX + 1]; /* without brackets */
    uint16_t port_lo, port_hi;           /* inclusive; equal for a single port */
    bool is_ip;                          /* host is a numeric address */
    bool is_ipv6;                        /* host is a numeric IPv6 address */
    bool is_wildcard;                    /* host is "*" */
} fb_endpoint_t;

/* fb_endpoint_parse_list - parse a comma-separated list.
 * Returns the number of endpoints written to out (1..max), or -1 with a reason
 * in err. */
int fb_endpoint_parse_list(const char *text, fb_endpoint_t *out, size_t max, char *err, size_t errlen);

/* fb_endpoint_check - fb_config_check_fn for endpoint lists. */
int fb_endpoint_check(const char *text, char *err, size_t errlen);

/* fb_endpoint_format - "tcp://HOST:PORT" for one numeric host and port
 * (brackets added for IPv6). Returns out. */
char *fb_endpoint_format(char *out, size_t outlen, const char *host, bool ipv6, uint16_t port);

/* fb_endpoint_normalize - rewrite an endpoint as libzmq reports it into the
 * form fb_endpoint_format() makes: an IPv4-mapped IPv6 host
 * ("tcp://[::ffff:10.0.0.5]:7110", seen after reconnections on IPv6-enabled
 * sockets) becomes "tcp://10.0.0.5:7110". Returns the length written to out
 * (NUL-terminated), or 0 when it does not fit. */
size_t fb_endpoint_normalize(const char *in, size_t len, char *out, size_t cap);

int fb_endpoint_test(bool verbose);

#endif
