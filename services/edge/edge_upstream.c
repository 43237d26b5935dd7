/* edge_upstream - provider calls on libcurl multi. */
#include "edge_upstream.h"
#include "edge_metrics.h"
#include "fb_curlm.h"
#include "fb_util.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct edge_call_t {
    edge_worker_t *w;
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    edge_call_fn_t fn;
    void *arg;
    long status;
    bool aborted; /* on_data asked to stop */
    edge_provider_t provider;
    int kind; /* of its easy handle: its route (fb_curlm_easy) */
    int64_t t0_us;
};

static size_t s_on_write(char *ptr, size_t size, size_t n, void *userdata)
{
    edge_call_t *c = userdata;
    size_t len = size * n;
    if (!c->status)
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &c->status);
    if (c->fn.on_data(c->arg, c->status, ptr, len) != 0) {
        c->aborted = true;
        return 0;
    }
    return len;
}

static void s_free(edge_call_t *c)
{
    if (c->w->curlm)
        fb_curlm_recycle(c->w->curlm, c->easy, c->kind);
    else
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
    free(c->body);
    free(c);
}

static void s_on_done(void *arg, CURL *easy, CURLcode cc)
{
    edge_call_t *c = arg;
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    edge_call_result_t result = EDGE_CALL_OK;
    char why[160] = "";
    if (c->aborted) {
        result = EDGE_CALL_ABORTED;
        snprintf(why, sizeof(why), "aborted");
    } else if (cc == CURLE_OPERATION_TIMEDOUT) {
        result = EDGE_CALL_TIMEOUT;
        snprintf(why, sizeof(why), "%s", curl_easy_strerror(cc));
    } else if (cc != CURLE_OK) {
        result = EDGE_CALL_FAILED;
        snprintf(why, sizeof(why), "%s", curl_easy_strerror(cc));
    }
    edge_metrics_upstream(c->provider, fb_mono_us() - c->t0_us,
                          result == EDGE_CALL_OK && status >= 200 && status <= 299);
    edge_call_fn_t fn = c->fn;
    void *fn_arg = c->arg;
    s_free(c);
    fn.on_done(fn_arg, result, status, why);
}

static struct curl_slist *s_header(struct curl_slist *list, const char *name, const char *value)
{
    char line[1024];
    snprintf(line, sizeof(line), "%s: %s", name, value);
    struct curl_slist *l = curl_slist_append(list, line);
    FB_ASSERT(l);
    return l;
}

static const char *s_path(edge_provider_t provider)
{
    return provider == EDGE_PROVIDER_ANTHROPIC ? "/v1/messages" : "/v1/chat/completions";
}

static struct curl_slist *s_headers(edge_provider_t provider, const char *api_key,
                                    const char *anthropic_version, const char *anthropic_beta)
{
    struct curl_slist *l = s_header(NULL, "Content-Type", "application/json");
    l = s_header(l, "Expect", ""); /* no 100-continue round trip */
    if (provider == EDGE_PROVIDER_ANTHROPIC) {
        l = s_header(l, "anthropic-version", anthropic_version ? anthropic_version : "2023-06-01");
        if (anthropic_beta)
            l = s_header(l, "anthropic-beta", anthropic_beta);
        if (api_key)
            l = s_header(l, "x-api-key", api_key);
    } else if (api_key) {
        char bearer[600];
        snprintf(bearer, sizeof(bearer), "Bearer %s", api_key);
        l = s_header(l, "Authorization", bearer);
    }
    return l;
}

/* s_env_proxy - the proxy libcurl would find in the environment for url */
static char *s_env_proxy(const char *url)
{
    const char *colon = strstr(url, "://");
    size_t n = colon ? (size_t)(colon - url) : 0;
    char var[64] = "";
    if (n > 0 && n < 32) {
        for (size_t i = 0; i < n; i++)
            var[i] = (char)(url[i] >= 'A' && url[i] <= 'Z' ? url[i] + 32 : url[i]);
        memcpy(var + n, "_proxy", 7);
    }
    const char *v = var[0] ? getenv(var) : NULL;
    if (!v && var[0] && strcmp(var, "http_proxy") != 0) { /* HTTP_PROXY is never read (CGI's httpoxy) */
        for (size_t i = 0; var[i]; i++)
            var[i] = (char)(var[i] >= 'a' && var[i] <= 'z' ? var[i] - 32 : var[i]);
        v = getenv(var);
    }
    if (!v)
        v = getenv("all_proxy");
    if (!v)
        v = getenv("ALL_PROXY");
    return fb_strdup(v ? v : "");
}

void edge_route_prepare(edge_route_t *r)
{
    const char *no_proxy = getenv("no_proxy");
    if (!no_proxy)
        no_proxy = getenv("NO_PROXY");
    r->no_proxy = no_proxy ? no_proxy : "";
    size_t len = strlen(r->base_url) + strlen(s_path(r->provider)) + 1;
    r->url = fb_malloc(len);
    snprintf(r->url, len, "%s%s", r->base_url, s_path(r->provider));
    if (r->provider == EDGE_PROVIDER_OPENAI)
        r->headers = s_headers(r->provider, r->api_key, NULL, NULL);
    r->proxy = s_env_proxy(r->url);
    r->curlu = curl_url();
    FB_ASSERT(r->curlu && curl_url_set(r->curlu, CURLUPART_URL, r->url, 0) == CURLUE_OK);
}

void edge_route_release(edge_route_t *r)
{
    free(r->url);
    curl_url_cleanup(r->curlu);
    curl_slist_free_all(r->headers);
    free(r->proxy);
    r->url = r->proxy = NULL;
    r->curlu = NULL;
    r->headers = NULL;
}

bool edge_call_has_fallback(const edge_worker_t *w, int route)
{
    return w->edge->routes[route].fallback >= 0;
}

bool edge_call_retryable(edge_call_result_t result, long status, int64_t elapsed_ms, int64_t deadline_ms)
{
    if (result == EDGE_CALL_FAILED || result == EDGE_CALL_TIMEOUT)
        return status == 0 && elapsed_ms < deadline_ms;
    if (result != EDGE_CALL_OK)
        return false;
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504 || status == 529;
}

edge_call_t *edge_call_start(edge_worker_t *w, int route, bool fallback, uint32_t timeout_ms,
                             const char *body, size_t len, const char *anthropic_version,
                             const char *anthropic_beta, const edge_call_fn_t *fn, void *arg)
{
    FB_ASSERT(route >= 0 && route < w->edge->route_count);
    if (fallback) {
        route = w->edge->routes[route].fallback;
        FB_ASSERT(route >= 0);
    }
    const edge_route_t *r = &w->edge->routes[route];
    edge_call_t *c = fb_calloc(1, sizeof(*c));
    c->w = w;
    c->provider = r->provider;
    c->t0_us = fb_mono_us();
    c->fn = *fn;
    c->arg = arg;
    c->body = fb_malloc(len + 1);
    memcpy(c->body, body, len);
    c->body[len] = '\0';
    if (!r->headers) /* Anthropic's vary by call */
        c->headers = s_headers(r->provider, r->api_key, anthropic_version, anthropic_beta);
    /* a handle keeps its route's options between calls: only this call's
     * are set on one used before */
    c->kind = route;
    bool configured;
    CURL *e = fb_curlm_easy(w->curlm, c->kind, &configured);
    c->easy = e;
    if (!configured) {
        curl_easy_setopt(e, CURLOPT_CURLU, r->curlu);
        curl_easy_setopt(e, CURLOPT_PROXY, r->proxy);
        curl_easy_setopt(e, CURLOPT_NOPROXY, r->no_proxy);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)w->edge->upstream_connect_ms);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        /* no Accept-Encoding: answers come as sent (identity), not compressed
         * for libcurl to inflate: answers are small or streamed, and asking
         * for compression cost ~4% of a paid call's instructions */
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_write);
    }
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers ? c->headers : r->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ms ? timeout_ms : w->edge->upstream_timeout_ms));
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    fb_curlm_add(w->curlm, e, s_on_done, c);
    return c;
}

void edge_call_cancel(edge_call_t **call_p)
{
    FB_ASSERT(call_p);
    edge_call_t *c = *call_p;
    if (!c)
        return;
    fb_curlm_remove(c->w->curlm, c->easy);
    s_free(c);
    *call_p = NULL;
}

int edge_upstream_test(bool verbose)
{
    FB_UNUSED(verbose);
    struct curl_slist *l = s_header(NULL, "x-api-key", "k");
    FB_ASSERT(strcmp(l->data, "x-api-key: k") == 0);
    curl_slist_free_all(l);
    /* the proxy from the environment, as libcurl reads it (unset variables
     * restored afterwards: the test runs in a process of its own) */
    static const char *vars[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                                 "HTTPS_PROXY", "all_proxy",  "ALL_PROXY"};
    char *saved[FB_ARRAY_SIZE(vars)];
    for (size_t i = 0; i < FB_ARRAY_SIZE(vars); i++) {
        saved[i] = getenv(vars[i]) ? fb_strdup(getenv(vars[i])) : NULL;
        unsetenv(vars[i]);
    }
    struct {
        const char *set, *value, *url, *want;
    } proxies[] = {
        {NULL, NULL, "http://127.0.0.1:9", ""},
        {"HTTP_PROXY", "http://up:1", "http://127.0.0.1:9", ""}, /* never read for http */
        {"http_proxy", "http://low:2", "http://127.0.0.1:9", "http://low:2"},
        {"HTTPS_PROXY", "http://up:3", "https://api.openai.com", "http://up:3"},
        {"https_proxy", "http://low:4", "https://api.openai.com", "http://low:4"},
        {"ALL_PROXY", "socks5://all:5", "http://127.0.0.1:9", "http://low:2"},
        {"http_proxy", NULL, "http://127.0.0.1:9", "socks5://all:5"},
        {"all_proxy", "socks5://low:6", "HTTP://127.0.0.1:9", "socks5://low:6"},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(proxies); i++) {
        if (proxies[i].set && proxies[i].value)
            setenv(proxies[i].set, proxies[i].value, 1);
        else if (proxies[i].set)
            unsetenv(proxies[i].set);
        char *got = s_env_proxy(proxies[i].url);
        FB_ASSERT(strcmp(got, proxies[i].want) == 0);
        free(got);
    }
    for (size_t i = 0; i < FB_ARRAY_SIZE(vars); i++) {
        if (saved[i])
            setenv(vars[i], saved[i], 1);
        else
            unsetenv(vars[i]);
        free(saved[i]);
    }
    edge_route_t r = {.provider = EDGE_PROVIDER_OPENAI, .base_url = "http://127.0.0.1:9", .api_key = "sk-x"};
    edge_route_prepare(&r);
    FB_ASSERT(strcmp(r.url, "http://127.0.0.1:9/v1/chat/completions") == 0);
    FB_ASSERT(strcmp(r.headers->next->next->data, "Authorization: Bearer sk-x") == 0);
    edge_route_release(&r);
    FB_ASSERT(!r.url && !r.headers && !r.curlu);
    r = (edge_route_t){.provider = EDGE_PROVIDER_OPENAI, .base_url = "http://b:1"};
    edge_route_prepare(&r);
    FB_ASSERT(strcmp(r.url, "http://b:1/v1/chat/completions") == 0);
    FB_ASSERT(r.headers->next->next == NULL); /* a route without a key sends none */
    edge_route_release(&r);
    r = (edge_route_t){.provider = EDGE_PROVIDER_ANTHROPIC, .base_url = "http://127.0.0.1:9"};
    edge_route_prepare(&r);
    FB_ASSERT(strcmp(r.url, "http://127.0.0.1:9/v1/messages") == 0 && !r.headers);
    edge_route_release(&r);
    /* unreachable, overloaded or failing routes are retried; refusals and spent deadlines are not */
    FB_ASSERT(edge_call_retryable(EDGE_CALL_FAILED, 0, 10, 1000));
    FB_ASSERT(edge_call_retryable(EDGE_CALL_TIMEOUT, 0, 10000, 239000));
    FB_ASSERT(!edge_call_retryable(EDGE_CALL_TIMEOUT, 0, 239000, 239000));
    FB_ASSERT(!edge_call_retryable(EDGE_CALL_FAILED, 200, 10, 1000)); /* an answer began */
    FB_ASSERT(!edge_call_retryable(EDGE_CALL_ABORTED, 0, 10, 1000));
    static const long again[] = {429, 500, 502, 503, 504, 529},
                      not_again[] = {200, 400, 401, 403, 404, 413, 422};
    for (size_t i = 0; i < FB_ARRAY_SIZE(again); i++)
        FB_ASSERT(edge_call_retryable(EDGE_CALL_OK, again[i], 10, 1000));
    for (size_t i = 0; i < FB_ARRAY_SIZE(not_again); i++)
        FB_ASSERT(!edge_call_retryable(EDGE_CALL_OK, not_again[i], 10, 1000));
    return 0;
}
