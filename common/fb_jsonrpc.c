/* fb_jsonrpc - JSON-RPC over libcurl multi in libuv (fb_curlm), with
 * failover. */
#include "fb_jsonrpc.h"
#include "fb_curlm.h"
#include "fb_log.h"
#include "fb_util.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ENDPOINTS_MAX   8
#define REST_MIN_MS     1000
#define REST_MAX_MS     30000
#define RETRY_AFTER_MAX 60000

typedef struct {
    char url[256];
    char shown[256];    /* fb_jsonrpc_url_shown */
    int64_t rest_until; /* monotonic ms; 0 when healthy */
    int64_t rest_ms;    /* next backoff */
    uint64_t calls, failures;
    int64_t last_latency_us;
    bool barred;   /* fb_jsonrpc_bar: never picked */
    int check;     /* fb_jsonrpc_check's verdict: 1 passed, -1 failed, 0 not yet */
    char why[160]; /* the last failed verdict's */
    bool checking;
    int64_t check_due; /* monotonic ms */
} s_endpoint_t;

typedef struct s_request {
    struct s_request *next; /* pending list */
    struct fb_jsonrpc_t *client;
    CURL *easy;
    char *body; /* the JSON-RPC request */
    char *method;
    fb_jsonrpc_done_fn *done;
    void *arg;
    char *resp; /* the answer so far */
    size_t resp_len, resp_cap;
    bool too_large;
    int64_t retry_after_ms; /* from a 429's Retry-After */
    int endpoint;           /* index of the endpoint of this attempt */
    int pinned;             /* 1 + the only endpoint this request may use (a check's); 0: any */
    int64_t held_since;     /* monotonic ms */
    uint32_t attempt;
    uint32_t tried; /* bit per endpoint tried */
    int64_t started_us;
    bool held; /* every endpoint barred: sent once one is not */
} s_request_t;

struct fb_jsonrpc_t {
    uv_loop_t *loop;
    fb_curlm_t *curlm; /* the transfers, on the loop */
    char *chain;
    s_endpoint_t endpoints[ENDPOINTS_MAX];
    int nendpoints;
    uint32_t timeout_ms, attempts;
    size_t max_response;
    struct curl_slist *headers;
    s_request_t *requests; /* in flight */
    uint64_t next_id;
    bool dead;
    /* fb_jsonrpc_check */
    char *check_method, *check_params;
    fb_jsonrpc_verdict_fn *verdict;
    void *verdict_arg;
    uint32_t check_every_ms;
    uv_timer_t *timer; /* checks due, held calls' ends */
};

#define CHECK_TICK_MS  200
#define CHECK_RETRY_MS 1000

/* --- endpoints ------------------------------------------------------------------- */

void fb_jsonrpc_url_shown(const char *url, char *out, size_t len)
{
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    size_t alen = strcspn(host, "/?#");
    const char *at = NULL;
    for (const char *q = host; q < host + alen; q++)
        if (*q == '@')
            at = q;
    const char *from = at ? at + 1 : host;
    const char *rest = host + alen;
    if (!at && (rest[0] == '\0' || (rest[0] == '/' && rest[1] == '\0'))) {
        snprintf(out, len, "%s", url);
        return;
    }
    uint32_t h = 2166136261u; /* FNV-1a: tells URLs apart, no secret to keep */
    for (const char *q = url; *q; q++)
        h = (h ^ (uint8_t)*q) * 16777619u;
    snprintf(out, len, "%.*s%.*s/...%04x", (int)(host - url), url, (int)(host + alen - from), from,
             (unsigned)(h & 0xffff));
}

static int s_parse_urls(const char *text, s_endpoint_t *out, char *err, size_t errlen)
{
    int n = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        size_t len = (size_t)(end - p);
        while (len > 0 && p[len - 1] == ' ')
            len--;
        if (n == ENDPOINTS_MAX) {
            snprintf(err, errlen, "at most %d URLs", ENDPOINTS_MAX);
            return -1;
        }
        if (len >= sizeof(out[0].url) || (strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0)) {
            snprintf(err, errlen,
                     "each URL must start with http:// or https:// and be shorter than 256 characters");
            return -1;
        }
        if (out) {
            memset(&out[n], 0, sizeof(out[n]));
            memcpy(out[n].url, p, len);
            fb_jsonrpc_url_shown(out[n].url, out[n].shown, sizeof(out[n].shown));
            out[n].rest_ms = REST_MIN_MS;
        }
        n++;
        p = end;
    }
    if (n == 0) {
        snprintf(err, errlen, "no URL given");
        return -1;
    }
    return n;
}

int fb_jsonrpc_check_urls(const char *text, char *err, size_t errlen)
{
    s_endpoint_t tmp[ENDPOINTS_MAX];
    return s_parse_urls(text, tmp, err, errlen) > 0 ? 0 : -1;
}

/* The next endpoint for a request: healthy ones not tried yet, in order; if
 * none, the one that comes out of rest first; never a barred one (-1 when
 * every one is). */
static int s_pick(fb_jsonrpc_t *self, s_request_t *r)
{
    int64_t now = fb_mono_ms();
    int best = -1;
    for (int i = 0; i < self->nendpoints; i++) {
        if ((r->tried & (1u << i)) || self->endpoints[i].barred)
            continue;
        if (self->endpoints[i].rest_until <= now)
            return i;
        if (best < 0 || self->endpoints[i].rest_until < self->endpoints[best].rest_until)
            best = i;
    }
    if (best >= 0)
        return best;
    /* every endpoint tried once: start over with the least rested */
    r->tried = 0;
    for (int i = 0; i < self->nendpoints; i++)
        if (!self->endpoints[i].barred &&
            (best < 0 || self->endpoints[i].rest_until < self->endpoints[best].rest_until))
            best = i;
    return best;
}

static void s_rest(fb_jsonrpc_t *self, int i, int64_t retry_after_ms, const char *why)
{
    s_endpoint_t *e = &self->endpoints[i];
    int64_t ms = retry_after_ms > 0 ? (retry_after_ms > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : retry_after_ms)
                                    : e->rest_ms;
    e->rest_until = fb_mono_ms() + ms;
    e->rest_ms = e->rest_ms * 2 > REST_MAX_MS ? REST_MAX_MS : e->rest_ms * 2;
    e->failures++;
    fb_log(FB_LOG_WARN, NULL, "chain endpoint failed", "chain=%s url=%s reason=%s rest_ms=%lld", self->chain,
           e->shown, why, (long long)ms);
}

static void s_healthy(fb_jsonrpc_t *self, int i)
{
    s_endpoint_t *e = &self->endpoints[i];
    if (e->rest_until)
        fb_log(FB_LOG_INFO, NULL, "chain endpoint back", "chain=%s url=%s", self->chain, e->shown);
    e->rest_until = 0;
    e->rest_ms = REST_MIN_MS;
}

/* --- transfers -------------------------------------------------------------------- */

static size_t s_on_data(char *ptr, size_t size, size_t n, void *userdata)
{
    s_request_t *r = userdata;
    size_t len = size * n;
    if (r->resp_len + len > r->client->max_response) {
        r->too_large = true;
        return 0; /* abort the transfer */
    }
    if (r->resp_len + len + 1 > r->resp_cap) {
        r->resp_cap = (r->resp_len + len + 1) * 2;
        r->resp = fb_realloc(r->resp, r->resp_cap);
    }
    memcpy(r->resp + r->resp_len, ptr, len);
    r->resp_len += len;
    r->resp[r->resp_len] = '\0';
    return len;
}

static size_t s_on_header(char *buf, size_t size, size_t n, void *userdata)
{
    s_request_t *r = userdata;
    size_t len = size * n;
    if (len > 12 && strncasecmp(buf, "retry-after:", 12) == 0) {
        long secs = strtol(buf + 12, NULL, 10);
        if (secs > 0 && secs < 3600)
            r->retry_after_ms = secs * 1000;
    }
    return len;
}

static void s_transfer_done(void *arg, CURL *easy, CURLcode cc);

/* Starts an attempt on the next endpoint. */
static void s_attempt(fb_jsonrpc_t *self, s_request_t *r)
{
    r->endpoint = r->pinned ? r->pinned - 1 : s_pick(self, r);
    if (r->endpoint < 0 && !r->held)
        r->held_since = fb_mono_ms();
    r->held = r->endpoint < 0;
    if (r->held)
        return; /* sent once an endpoint may take it (or failed by the check's timer, or destroy) */
    r->tried |= 1u << r->endpoint;
    r->attempt++;
    r->resp_len = 0;
    r->too_large = false;
    r->retry_after_ms = 0;
    r->started_us = fb_mono_us();
    if (r->resp)
        r->resp[0] = '\0';
    CURL *e = curl_easy_init();
    FB_ASSERT(e);
    r->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, self->endpoints[r->endpoint].url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, self->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)self->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)self->timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, s_on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    self->endpoints[r->endpoint].calls++;
    fb_curlm_add(self->curlm, e, s_transfer_done, r);
}

static void s_unlink(fb_jsonrpc_t *self, s_request_t *r)
{
    for (s_request_t **pp = &self->requests; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            return;
        }
    }
}

static void s_finish(fb_jsonrpc_t *self, s_request_t *r, json_t *result, const char *error, int64_t code,
                     const char *message)
{
    s_unlink(self, r);
    r->done(r->arg, result, error, code, message);
    free(r->body);
    free(r->method);
    free(r->resp);
    free(r);
}

/* One transfer ended: an answer, or a failure to try elsewhere. */
static void s_transfer_done(void *arg, CURL *easy, CURLcode cc)
{
    s_request_t *r = arg;
    fb_jsonrpc_t *self = r->client;
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(easy);
    r->easy = NULL;
    char why[160] = "";
    json_t *doc = NULL;
    if (r->too_large)
        snprintf(why, sizeof(why), "answer larger than %zu bytes", self->max_response);
    else if (cc != CURLE_OK)
        snprintf(why, sizeof(why), "%s", curl_easy_strerror(cc));
    else if (status != 200)
        snprintf(why, sizeof(why), "HTTP status %ld", status);
    else {
        json_error_t jerr;
        doc = r->resp ? json_loadb(r->resp, r->resp_len, 0, &jerr) : NULL;
        if (!doc || !json_is_object(doc)) {
            snprintf(why, sizeof(why), "not a JSON-RPC answer");
            json_decref(doc);
            doc = NULL;
        }
    }
    if (!doc) {
        s_rest(self, r->endpoint, status == 429 ? (r->retry_after_ms ? r->retry_after_ms : REST_MIN_MS) : 0,
               why);
        if (r->attempt < self->attempts && !self->dead && !r->pinned) {
            s_attempt(self, r);
            return;
        }
        s_finish(self, r, NULL, cc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "unavailable", 0, why);
        return;
    }
    s_endpoint_t *e = &self->endpoints[r->endpoint];
    e->last_latency_us = fb_mono_us() - r->started_us;
    s_healthy(self, r->endpoint);
    json_t *err = json_object_get(doc, "error");
    if (err && !json_is_null(err)) {
        json_t *code = json_object_get(err, "code"), *msg = json_object_get(err, "message");
        s_finish(self, r, NULL, "rpc_error", json_is_integer(code) ? (int64_t)json_integer_value(code) : 0,
                 json_is_string(msg) ? json_string_value(msg) : "error");
    } else {
        json_t *result = json_object_get(doc, "result");
        if (!result) {
            s_finish(self, r, NULL, "unavailable", 0, "answer without a result");
        } else {
            s_finish(self, r, result, NULL, 0, NULL);
        }
    }
    json_decref(doc);
}

static s_request_t *s_request_new(fb_jsonrpc_t *self, const char *method, json_t *params,
                                  fb_jsonrpc_done_fn *done, void *arg)
{
    s_request_t *r = fb_calloc(1, sizeof(*r));
    r->client = self;
    r->done = done;
    r->arg = arg;
    r->method = fb_strdup(method);
    json_t *req = json_pack("{ss sI ss so}", "jsonrpc", "2.0", "id", (json_int_t)++self->next_id, "method",
                            method, "params", params ? params : json_array());
    r->body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    r->next = self->requests;
    self->requests = r;
    return r;
}

/* --- public ------------------------------------------------------------------------- */

fb_jsonrpc_t *fb_jsonrpc_new(uv_loop_t *loop, const fb_jsonrpc_config_t *config, char *err, size_t errlen)
{
    fb_jsonrpc_t *self = fb_calloc(1, sizeof(*self));
    int n = s_parse_urls(config->urls, self->endpoints, err, errlen);
    if (n < 0) {
        free(self);
        return NULL;
    }
    self->nendpoints = n;
    self->chain = fb_strdup(config->chain ? config->chain : "chain");
    self->timeout_ms = config->timeout_ms ? config->timeout_ms : 5000;
    self->attempts = config->attempts ? config->attempts : (uint32_t)n + 1;
    self->max_response = config->max_response ? config->max_response : 16u << 20;
    self->headers = curl_slist_append(NULL, "Content-Type: application/json");
    self->loop = loop;
    self->curlm = fb_curlm_new(loop);
    return self;
}

void fb_jsonrpc_call(fb_jsonrpc_t *self, const char *method, json_t *params, fb_jsonrpc_done_fn *done,
                     void *arg)
{
    FB_ASSERT(!self->dead && method && done);
    s_attempt(self, s_request_new(self, method, params, done, arg));
}

/* --- per-endpoint checks (fb_jsonrpc_check) ------------------------------------------------- */

typedef struct {
    fb_jsonrpc_t *self;
    int i;
} s_probe_t;

static void s_on_check(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_probe_t *probe = arg;
    fb_jsonrpc_t *self = probe->self;
    int i = probe->i;
    free(probe);
    if (self->dead)
        return;
    s_endpoint_t *e = &self->endpoints[i];
    e->checking = false;
    char why[200] = "";
    int verdict;
    if (error && strcmp(error, "rpc_error") != 0) {
        e->check_due = fb_mono_ms() + CHECK_RETRY_MS; /* not answered: its last verdict stands */
        return;
    }
    if (error)
        snprintf(why, sizeof(why), "%s answered an error: %s", self->check_method, message ? message : "");
    verdict = !error && self->verdict(self->verdict_arg, result, why, sizeof(why)) ? 1 : -1;
    e->check_due = fb_mono_ms() + self->check_every_ms;
    if (verdict != e->check) {
        if (verdict < 0)
            fb_log(FB_LOG_ERROR, NULL, "chain endpoint failed its check; it is not used",
                   "chain=%s url=%s why=%s", self->chain, e->shown, why);
        else if (e->check < 0)
            fb_log(FB_LOG_INFO, NULL, "chain endpoint passed its check; it is used again", "chain=%s url=%s",
                   self->chain, e->shown);
    }
    e->check = verdict;
    snprintf(e->why, sizeof(e->why), "%s", verdict < 0 ? why : "");
    fb_jsonrpc_bar(self, (size_t)i, verdict < 0);
}

/* Every tick: checks due are sent; held calls end when every endpoint failed
 * its check, or when they waited their whole time. */
static void s_on_tick(uv_timer_t *t)
{
    fb_jsonrpc_t *self = t->data;
    int64_t now = fb_mono_ms();
    bool all_failed = true;
    for (int i = 0; i < self->nendpoints; i++) {
        s_endpoint_t *e = &self->endpoints[i];
        all_failed = all_failed && e->check < 0;
        if (e->checking || now < e->check_due)
            continue;
        e->checking = true;
        s_probe_t *probe = fb_calloc(1, sizeof(*probe));
        probe->self = self;
        probe->i = i;
        s_request_t *r = s_request_new(self, self->check_method, json_loads(self->check_params, 0, NULL),
                                       s_on_check, probe);
        r->pinned = i + 1;
        s_attempt(self, r);
    }
    int64_t wait_ms = (int64_t)self->timeout_ms * self->attempts;
    for (s_request_t *r = self->requests, *next; r; r = next) {
        next = r->next;
        if (r->held && (all_failed || now - r->held_since >= wait_ms)) {
            char why[400];
            if (all_failed)
                snprintf(why, sizeof(why), "no endpoint of %s passed its check (%s: %s)", self->chain,
                         self->endpoints[0].shown, self->endpoints[0].why);
            else
                snprintf(why, sizeof(why), "no endpoint of %s passed its check in time", self->chain);
            s_finish(self, r, NULL, "unavailable", 0, why);
        }
    }
}

void fb_jsonrpc_check(fb_jsonrpc_t *self, const fb_jsonrpc_check_t *check)
{
    FB_ASSERT(!self->timer && check->method && check->verdict);
    json_t *params = json_loads(check->params ? check->params : "[]", 0, NULL);
    FB_ASSERT(json_is_array(params));
    json_decref(params);
    self->check_method = fb_strdup(check->method);
    self->check_params = fb_strdup(check->params ? check->params : "[]");
    self->verdict = check->verdict;
    self->verdict_arg = check->arg;
    self->check_every_ms = check->every_ms ? check->every_ms : 60000;
    for (int i = 0; i < self->nendpoints; i++)
        self->endpoints[i].barred = true; /* until it passes */
    self->timer = fb_calloc(1, sizeof(*self->timer));
    uv_timer_init(self->loop, self->timer);
    self->timer->data = self;
    uv_timer_start(self->timer, s_on_tick, 0, CHECK_TICK_MS);
}

static void s_timer_free(uv_handle_t *h)
{
    free(h);
}

void fb_jsonrpc_bar(fb_jsonrpc_t *self, size_t i, bool barred)
{
    if (i >= (size_t)self->nendpoints || self->endpoints[i].barred == barred)
        return;
    self->endpoints[i].barred = barred;
    if (barred)
        return;
    /* (sending finishes nothing at once: the list stays as it is) */
    for (s_request_t *r = self->requests; r; r = r->next)
        if (r->held)
            s_attempt(self, r);
}

void fb_jsonrpc_destroy(fb_jsonrpc_t **self_p)
{
    FB_ASSERT(self_p);
    fb_jsonrpc_t *self = *self_p;
    if (!self)
        return;
    self->dead = true;
    if (self->timer) {
        uv_timer_stop(self->timer);
        uv_close((uv_handle_t *)self->timer, s_timer_free);
    }
    while (self->requests) {
        s_request_t *r = self->requests;
        if (r->easy) {
            fb_curlm_remove(self->curlm, r->easy);
            curl_easy_cleanup(r->easy);
            r->easy = NULL;
        }
        s_finish(self, r, NULL, "unavailable", 0, "the client is shutting down");
    }
    fb_curlm_destroy(&self->curlm);
    curl_slist_free_all(self->headers);
    free(self->chain);
    free(self->check_method);
    free(self->check_params);
    free(self);
    *self_p = NULL;
}

size_t fb_jsonrpc_stats(const fb_jsonrpc_t *self, fb_jsonrpc_endpoint_stat_t *out, size_t max)
{
    size_t n = 0;
    int64_t now = fb_mono_ms();
    for (int i = 0; i < self->nendpoints && n < max; i++, n++) {
        const s_endpoint_t *e = &self->endpoints[i];
        snprintf(out[n].url, sizeof(out[n].url), "%s", e->shown);
        out[n].resting = e->rest_until > now;
        out[n].calls = e->calls;
        out[n].failures = e->failures;
        out[n].last_latency_us = e->last_latency_us;
        out[n].check = e->check;
    }
    return n;
}

int fb_jsonrpc_test(bool verbose)
{
    FB_UNUSED(verbose);
    static const struct {
        const char *url, *shown;
    } cases[] = {
        {"http://127.0.0.1:8545", "http://127.0.0.1:8545"},
        {"https://node.example/", "https://node.example/"},
        {"https://base-mainnet.g.alchemy.com/v2/SECRETKEY", "https://base-mainnet.g.alchemy.com/..."},
        {"https://user:pass@node.example:8443", "https://node.example:8443/..."},
        {"https://node.example?apikey=SECRET", "https://node.example/..."},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(cases); i++) {
        char out[256];
        fb_jsonrpc_url_shown(cases[i].url, out, sizeof(out));
        FB_ASSERT(strncmp(out, cases[i].shown, strlen(cases[i].shown)) == 0);
        FB_ASSERT(!strstr(out, "SECRET") && !strstr(out, "pass"));
    }
    /* two keys of one host are told apart */
    char a[256], b[256];
    fb_jsonrpc_url_shown("https://h.example/v2/KEYONE", a, sizeof(a));
    fb_jsonrpc_url_shown("https://h.example/v2/KEYTWO", b, sizeof(b));
    FB_ASSERT(strcmp(a, b) != 0);
    return 0;
}
