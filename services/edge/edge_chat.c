/* edge_chat - the paid routes: read, key, hold, upstream, commit. */
#include "edge_chat.h"
#include "edge_auth.h"
#include "edge_catalog.h"
#include "edge_idem.h"
#include "edge_limit.h"
#include "edge_purse.h"
#include "edge_metrics.h"
#include "edge_reply.h"
#include "edge_sse.h"
#include "edge_reverse.h"
#include "edge_scan.h"
#include "edge_translate.h"
#include "edge_upstream.h"
#include "edge_x402.h"
#include "fb_log.h"
#include "fb_util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

#define MONEY_DEADLINE_MS  10000      /* ledger calls of one request, retries included */
#define ERROR_BODY_MAX     (64 << 10) /* bytes of a provider's error answer kept */
#define ANSWER_MAX         (32 << 20) /* bytes of a provider's whole answer */
#define OUT_BACKLOG_MAX    (16 << 20) /* bytes waiting for a slow client */
#define SETTLE_DEADLINE_MS 60000      /* an x402 settlement, receipt included */
#define SETTLE_ASKS        1          /* more asks when a settlement's outcome is unknown */
/* Anthropic's own system prompt for a call with tools: 264 to 346 tokens by
 * model and tool_choice in its documentation, rounded up */
#define ANTHROPIC_TOOL_PROMPT_TOKENS 400
#define VERIFY_DEADLINE_MS           10000
#define MAX_CHOICES                  128 /* OpenAI's n, at most (the provider's own limit) */

typedef enum { ROUTE_CHAT, ROUTE_MESSAGES, ROUTE_PROMPT } s_route_t;

typedef struct s_chat s_chat_t;
typedef void(s_then_fn)(s_chat_t *c);

/* One paid call, from the request to the resolved hold. It outlives the
 * request when money is still moving (the commit after a client left). */
struct s_chat {
    h2o_generator_t super; /* first: h2o calls proceed/stop with it */
    edge_worker_t *w;
    h2o_req_t *req; /* NULL once h2o disposed the request */
    char rid[EDGE_ID_TEXT_MAX + 1];
    s_route_t route;
    edge_dialect_t dialect; /* of the caller's answers and errors */
    const edge_model_t *model;
    char requested[EDGE_MODEL_NAME_MAX + 1]; /* the model name the caller used */
    bool stream;                             /* the caller asked for a stream */
    bool caller_usage;                       /* ... with the usage chunk (OpenAI's stream_options) */
    bool translate;                          /* OpenAI caller, Anthropic provider */
    bool reverse;                            /* Anthropic caller, OpenAI provider */
    char *up_body;                           /* the provider's request */
    size_t up_len;
    char *anthropic_version, *anthropic_beta; /* passed to Anthropic, or NULL */
    /* money */
    int64_t input_estimate; /* tokens: the caller's body bytes */
    int64_t max_output;     /* tokens: the caller's max, or the model's cap */
    bool tool_prompt;       /* an Anthropic model called with tools: its tool prompt counts as input */
    int64_t choices;        /* answers asked for (OpenAI's n): each may reach max_output */
    int64_t hold_micro, account_id, key_id, hold_id;
    edge_purse_res_t res;  /* the call's ceiling reserved in its key's slice */
    int64_t charged_micro; /* what the commit took */
    bool money_done;       /* commit or void asked */
    /* x402 pay-per-call (no key): the payment, checked, recorded, settled at the first output */
    bool x402;
    char *pay_header;   /* PAYMENT-SIGNATURE or X-PAYMENT */
    int pay_version;    /* 1 or 2 */
    json_t *pay_req;    /* the requirements it meets */
    char *resource_url; /* this call's URL, for the quote */
    int64_t key_cap;    /* the key's spend cap in its lookup (-1: none) */
    int64_t authorization_id;
    const char *earlier_settle; /* served again for an earlier try's payment: "was" or "may be" settled */
    bool settling, settled;
    int settle_asks;      /* settles asked again after an unknown outcome */
    char *pay_response;   /* the PAYMENT-RESPONSE value */
    s_then_fn *gate_then; /* what waits for the settlement */
    s_then_fn *then;      /* what to do once the money is resolved */
    /* the provider's answer */
    edge_call_t *call;
    long up_status;
    int64_t call_t0_ms; /* the first provider call's start */
    bool retried;       /* ... and it failed: the second route took the call */
    fb_buf_t answer;    /* a whole answer, or an error body */
    edge_sse_t sse;
    edge_tr_stream_t tr;
    edge_rev_stream_t rev;
    bool up_ended;      /* [DONE] or message_stop seen */
    bool up_final;      /* the stream's last event before its end marker seen (usage, a stop reason) */
    char up_error[256]; /* why the stream ended badly, for the caller */
    bool up_transient;  /* ... an error event the provider may not repeat (overloaded, its own fault) */
    int64_t in_tokens, out_tokens;
    int64_t cache_read, cache_write; /* of in_tokens: read from / written to the provider's prompt cache */
    int64_t cache_write_1h;          /* of cache_write: written for an hour (priced apart) */
    bool in_seen, out_seen;
    int64_t out_events, out_bytes; /* content delivered, for a stream without usage */
    /* our answer */
    int err_status;
    const char *err_code;
    char err_msg[400];
    json_t *err_details;
    bool produced; /* output reached our side (a stream's first event, a whole answer) */
    bool started, sending, final_queued, final_sent;
    fb_buf_t out, flight; /* stream bytes waiting, and on their way */
    json_t *proof;        /* /api/v1/prompt's signed-message payment proof, or NULL */
    int pending;          /* ledger calls in flight */
    bool entered;         /* counted in the key's calls in flight */
    uint8_t mac[32];      /* the key's HMAC, to look it up again */
    int64_t t0_ms;
    /* an idempotent call (edge_idem.h): its name, and the stream as sent, to keep */
    edge_idem_t idem;
    s_then_fn *claim_then; /* what runs once the name is claimed */
    fb_buf_t rec;
    bool rec_over;              /* the stream outgrew what is kept */
    bool linked;                /* h2o holds the request's link to it (s_req_gone not run yet) */
    bool watched;               /* in the worker's list of calls watched each second */
    struct s_chat *prev, *next; /* that list */
};

/* --- lifetime ------------------------------------------------------------------------ */

static void s_maybe_free(s_chat_t *c)
{
    if (c->req || c->linked || c->call || c->pending)
        return;
    c->w->active_requests--;
    if (c->watched) {
        if (c->prev)
            c->prev->next = c->next;
        else
            c->w->chats = c->next;
        if (c->next)
            c->next->prev = c->prev;
    }
    if (c->entered)
        edge_limit_leave(c->w->edge->limits, c->key_id);
    if (c->started)
        edge_metrics_streams(-1);
    if (edge_purse_alive(c->w->purse))
        edge_idem_release(c->w, &c->idem); /* ended unpaid: the name is free again */
    fb_buf_free(&c->rec);
    free(c->up_body);
    free(c->anthropic_version);
    free(c->anthropic_beta);
    fb_buf_free(&c->answer);
    fb_buf_free(&c->out);
    fb_buf_free(&c->flight);
    edge_sse_free(&c->sse);
    json_decref(c->err_details);
    free(c->pay_header);
    json_decref(c->pay_req);
    free(c->resource_url);
    free(c->pay_response);
    json_decref(c->proof);
    free(c);
}

/* In the worker's list of calls looked at each second (a prepaid call's key
 * still valid, an HTTP/1.x client still there). */
static void s_watch(s_chat_t *c)
{
    if (c->watched)
        return;
    c->watched = true;
    c->prev = NULL;
    c->next = c->w->chats;
    if (c->next)
        c->next->prev = c;
    c->w->chats = c;
}

static void s_resolve(s_chat_t *c, int64_t cost, s_then_fn *then);
static void s_send_answer(s_chat_t *c);
static int64_t s_cost(s_chat_t *c);
static void s_mark_failed(s_chat_t *c, const char *reason);
static void s_x402_done(s_chat_t *c, const char *type, const fb_buf_t *a, const fb_buf_t *b);
static void s_gate(s_chat_t *c, s_then_fn *then);
static void s_set_pay_response(s_chat_t *c);

typedef struct {
    s_chat_t *chat;
} s_link_t;

/* h2o disposed the request: the client is gone or the answer is complete.
 * A provider call still running is cancelled, and the input plus the output
 * produced so far is charged. */
/* The client is gone (c->req NULL): a provider call still running is
 * cancelled, and the input plus the output produced so far is charged. */
static void s_client_gone(s_chat_t *c)
{
    if (c->call) {
        edge_call_cancel(&c->call);
        fb_log(FB_LOG_INFO, c->rid, "client left during the provider call", "model=%s events=%" PRId64,
               c->model->id, c->out_events);
        if (!c->out_seen && c->out_events == 0) {
            c->out_tokens = 0; /* nothing produced yet: the input only */
            c->out_seen = true;
        }
        if (!c->money_done)
            s_resolve(c, s_cost(c), NULL);
    } else if (c->x402 && !c->money_done && !c->settled && !c->settling && c->authorization_id) {
        c->money_done = true;
        s_mark_failed(c, "not served: the client left");
    }
    /* a named x402 stream the client left after its payment settled and its
     * output began: served and paid, so its name is done (no answer kept: a
     * retry is told idempotency_key_used), never freed for a free second serving */
    if (c->x402 && c->settled && c->started)
        s_x402_done(c, "text/event-stream", NULL, NULL);
}

/* h2o disposed the request: the client is gone or the answer is complete. */
static void s_req_gone(void *p)
{
    s_chat_t *c = ((s_link_t *)p)->chat;
    c->linked = false;
    if (c->req) {
        c->req = NULL;
        s_client_gone(c);
    }
    s_maybe_free(c);
}

/* An HTTP/1.x client that closed its connection while its provider call
 * runs: h2o reads nothing from the connection meanwhile, so it would learn
 * of it only at its next write (a model thinking for minutes before its first
 * token). Looked for each second (a peek at the socket: end of stream, or a
 * reset), the call ends as if h2o had disposed of it, and the connection is
 * shut and its response ended, so that h2o closes it. A client that only
 * half-closes (its requests sent, still reading) is taken as gone too, as
 * proxies do. */
static void s_check_client(s_chat_t *c)
{
    h2o_req_t *req = c->req;
    if (!req || !c->call || c->money_done || req->version >= 0x200 || !req->conn->callbacks->get_socket)
        return;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    int fd = sock ? h2o_socket_get_fd(sock) : -1;
    if (fd < 0)
        return;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)))
        return;
    fb_log(FB_LOG_INFO, c->rid, "the client closed its connection during the provider call",
           "model=%s events=%" PRId64, c->model->id, c->out_events);
    shutdown(fd, SHUT_RDWR);
    c->req = NULL; /* h2o keeps the request until it closes the connection: c->linked */
    s_client_gone(c);
    if (c->started) {
        if (!c->sending) /* a write in flight fails by itself */
            h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
    } else {
        req->http1_is_persistent = 0;
        req->res.status = 499;
        req->res.reason = "Client Closed Request";
        h2o_send_inline(req, "", 0);
    }
}

/* --- answering --------------------------------------------------------------------------- */

static void s_set_error(s_chat_t *c, int status, const char *code, json_t *details, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void s_set_error(s_chat_t *c, int status, const char *code, json_t *details, const char *fmt, ...)
{
    c->err_status = status;
    c->err_code = code;
    json_decref(c->err_details);
    c->err_details = details;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err_msg, sizeof(c->err_msg), fmt, ap);
    va_end(ap);
    static const char nothing[] = "; nothing was charged";
    size_t n = strlen(c->err_msg), k = sizeof(nothing) - 1;
    if (c->earlier_settle && n >= k && strcmp(c->err_msg + n - k, nothing) == 0)
        /* its payment is an earlier try's, which a retry with it and the same Idempotency-Key is
         * served for again */
        snprintf(c->err_msg + n - k, sizeof(c->err_msg) - (n - k),
                 "; this call's payment %s settled by an earlier try: retry with the same payment and "
                 "Idempotency-Key",
                 c->earlier_settle);
}

static void s_send_error(s_chat_t *c)
{
    if (!c->req)
        return;
    json_t *details = c->err_details;
    c->err_details = NULL;
    edge_error(c->req, c->dialect, c->err_status, c->err_code, details, "%s", c->err_msg);
}

/* Refuse the call before anything was held. */
static int s_refuse(s_chat_t *c, int status, const char *code, json_t *details, const char *msg)
{
    s_set_error(c, status, code, details, "%s", msg);
    s_send_error(c);
    return 0;
}

/* Keeps what a named call's stream sent, for a retry, up to the answer limit. */
static void s_record(s_chat_t *c, const char *data, size_t len)
{
    if (!c->idem.claimed || c->rec_over || len == 0)
        return;
    if (c->rec.len + len > c->w->edge->idem_answer_max) {
        c->rec_over = true;
        fb_buf_free(&c->rec);
        return;
    }
    fb_buf_append(&c->rec, data, len);
}

static void s_flush(s_chat_t *c)
{
    if (!c->req || !c->started || c->sending || c->final_sent)
        return;
    if (c->out.len == 0 && !c->final_queued)
        return;
    fb_buf_t t = c->flight;
    c->flight = c->out;
    c->out = t;
    fb_buf_reset(&c->out);
    s_record(c, c->flight.data, c->flight.len);
    h2o_iovec_t iov = h2o_iovec_init(c->flight.data, c->flight.len);
    c->final_sent = c->final_queued;
    c->sending = true;
    h2o_send(c->req, &iov, iov.len ? 1 : 0,
             c->final_sent ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static void s_on_proceed(h2o_generator_t *g, h2o_req_t *req)
{
    s_chat_t *c = (s_chat_t *)g;
    c->sending = false;
    fb_buf_reset(&c->flight);
    if (!c->req) {
        /* its client closed the connection while this write was in flight (s_check_client) */
        h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
        return;
    }
    s_flush(c);
}

static void s_on_stop(h2o_generator_t *g, h2o_req_t *req)
{
    FB_UNUSED(g);
    FB_UNUSED(req); /* the request's disposal follows: s_req_gone */
}

static void s_start_stream(s_chat_t *c)
{
    if (c->started || !c->req)
        return;
    h2o_req_t *req = c->req;
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("text/event-stream"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
    s_set_pay_response(c);
    c->started = true;
    edge_metrics_streams(1);
    h2o_start_response(req, &c->super);
}

/* The error event that ends a stream that ended badly, appended to out. */
static void s_stream_tail(s_chat_t *c, fb_buf_t *out)
{
    if (c->up_error[0]) {
        fb_utf8_clean(c->up_error); /* a provider's words, cut to fit */
        char esc[600];
        edge_json_escape(esc, sizeof(esc), c->up_error, strlen(c->up_error));
        char ev[800];
        int n = c->dialect == EDGE_ANTHROPIC
                    ? snprintf(ev, sizeof(ev),
                               "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                               "\"message\":\"%s\"}}\n\n",
                               esc)
                    : snprintf(ev, sizeof(ev),
                               "data: {\"error\":{\"message\":\"%s\",\"type\":\"api_error\",\"code\":"
                               "\"upstream_error\"}}\n\n",
                               esc);
        fb_buf_append(out, ev, (size_t)n);
    }
}

static void s_x402_done(s_chat_t *c, const char *type, const fb_buf_t *a, const fb_buf_t *b);

/* The end of a stream we started: an error event when it ended badly, then
 * the end of the response. */
static void s_close_stream(s_chat_t *c)
{
    if (!c->started) {
        if (c->x402 && !c->settled) {
            s_gate(c, s_close_stream);
            return;
        }
        s_start_stream(c);
    }
    s_stream_tail(c, &c->out);
    s_x402_done(c, "text/event-stream", &c->rec, &c->out);
    c->final_queued = true;
    s_flush(c);
}

/* --- money ------------------------------------------------------------------------------ */

int64_t edge_chat_output_estimate(int64_t events, int64_t bytes)
{
    int64_t by_bytes = bytes / 3 + (bytes % 3 != 0);
    int64_t n = events > by_bytes ? events : by_bytes;
    return n > 0 ? n : 1;
}

/* What the call costs: the reported usage, or the conservative counts where a
 * figure is missing; never more than the hold. */
/* What the input costs: the reported tokens, those read from or written to
 * the provider's prompt cache at their own prices, each part rounded up; the
 * request's size at the input price when nothing was reported. */
static int64_t s_input_cost(s_chat_t *c)
{
    if (!c->in_seen)
        return edge_cost_micro(c->input_estimate, c->model->input_price);
    edge_usage_t u = {.input = c->in_tokens,
                      .cache_read = c->cache_read,
                      .cache_write = c->cache_write,
                      .cache_write_1h = c->cache_write_1h};
    return edge_input_cost_micro(c->model, &u);
}

static int64_t s_cost_uncapped(s_chat_t *c)
{
    int64_t out = c->out_seen ? c->out_tokens : edge_chat_output_estimate(c->out_events, c->out_bytes);
    return edge_add_micro(s_input_cost(c), edge_cost_micro(out, c->model->output_price));
}

static int64_t s_cost(s_chat_t *c)
{
    int64_t cost = s_cost_uncapped(c);
    return cost > c->hold_micro ? c->hold_micro : cost;
}

static void s_on_money(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    if (!reply->ok) {
        fb_log(FB_LOG_ERROR, c->rid, "could not record the call's charge",
               "hold_id=%" PRId64 " amount_micro=%" PRId64 " code=%s message=%s", c->hold_id,
               c->charged_micro, reply->code, reply->message);
        if (c->then == s_send_answer) {
            /* an answer is only given once its charge is durable */
            s_set_error(c, 503, "unavailable", NULL,
                        "the charge for this call could not be recorded, so its answer is withheld (%s)",
                        reply->code);
            c->then = s_send_error;
        }
    } else {
        edge_metrics_money(EDGE_MONEY_COMMITTED, c->charged_micro);
        edge_metrics_money(EDGE_MONEY_RELEASED, c->hold_micro - c->charged_micro);
        if (c->charged_micro > 0)
            fb_log(FB_LOG_DEBUG, c->rid, "charged", "hold_id=%" PRId64 " amount_micro=%" PRId64, c->hold_id,
                   c->charged_micro);
    }
    if (c->then && c->req)
        c->then(c);
    s_maybe_free(c);
}

static void s_on_marked(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    if (!reply->ok && strcmp(reply->code, "settlement_exists") == 0)
        fb_log(FB_LOG_WARN, c->rid,
               "the x402 payment's settlement had begun: its outcome decides (a retry with the same payment "
               "and Idempotency-Key is served once it settles)",
               "authorization_id=%" PRId64, c->authorization_id);
    else if (!reply->ok)
        fb_log(FB_LOG_ERROR, c->rid, "could not mark the x402 authorization failed",
               "authorization_id=%" PRId64 " code=%s message=%s", c->authorization_id, reply->code,
               reply->message);
    s_maybe_free(c);
}

/* An x402 payment that will not be settled: the ledger marks its
 * authorization failed (it can then never be settled or used again). */
static void s_mark_failed(s_chat_t *c, const char *reason)
{
    if (!c->authorization_id)
        return;
    char idem[64];
    snprintf(idem, sizeof(idem), "x402-failed:%" PRId64, c->authorization_id);
    c->pending++;
    edge_rpc_json(c->w->ledger, "ledger.mark_failed",
                  json_pack("{sI ss}", "authorization_id", (json_int_t)c->authorization_id, "reason", reason),
                  idem, c->rid, MONEY_DEADLINE_MS, s_on_marked, c);
}

/* --- the x402 settlement gate: nothing goes out before the payment settled ----------
 * (FAREBOX_X402_SETTLE=broadcast: before its transfer is sent; the verifier's
 * tracker then follows it to its receipt, as one whose receipt is late) */

static void s_on_settled(void *arg, const fb_rpc_reply_t *reply);

/* Asks the verifier to settle the call's payment (again: it goes on with the
 * settlement it began for this authorization, if any). */
static void s_settle(s_chat_t *c)
{
    c->settling = true;
    c->pending++;
    char idem[64];
    snprintf(idem, sizeof(idem), "x402-settle:%" PRId64, c->authorization_id);
    edge_rpc_json_long(c->w->verifier, "verifier.settle",
                       json_pack("{ss sO sb}", "header", c->pay_header, "requirements", c->pay_req, "wait",
                                 !c->w->edge->x402_serve_broadcast),
                       idem, c->rid, SETTLE_DEADLINE_MS, s_on_settled, c);
}

static void s_on_settled(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    c->settling = false;
    if (edge_rpc_outcome_unknown(reply) && c->req && c->settle_asks < SETTLE_ASKS &&
        edge_purse_alive(c->w->purse)) {
        /* a settlement may have begun: asking again gets its outcome (the
         * caller waits) instead of reporting a failure it may not be */
        c->settle_asks++;
        fb_log(FB_LOG_WARN, c->rid, "an x402 settlement's outcome is unknown; the verifier is asked again",
               "authorization_id=%" PRId64 " code=%s", c->authorization_id, reply->code);
        s_settle(c);
        return;
    }
    json_t *b = edge_reply_json(reply);
    const char *tx = json_string_value(json_object_get(b, "transaction"));
    const char *reason = json_string_value(json_object_get(b, "errorReason"));
    const char *network = json_string_value(json_object_get(b, "network"));
    const char *payer = json_string_value(json_object_get(b, "payer"));
    /* a transaction sent whose receipt is late is followed by the verifier's tracker */
    bool ok = reply->ok && (json_is_true(json_object_get(b, "success")) ||
                            (reason && strcmp(reason, "settlement_pending") == 0 && tx && tx[0]));
    if (ok) {
        c->settled = true;
        edge_metrics_money(EDGE_MONEY_X402, c->hold_micro);
        c->pay_response = edge_x402_receipt(tx, network, payer);
        fb_log(FB_LOG_INFO, c->rid,
               json_is_true(json_object_get(b, "success")) ? "x402 payment settled"
                                                           : "x402 payment sent, not final yet",
               "network=%s transaction=%s amount_micro=%" PRId64, network ? network : "", tx ? tx : "",
               c->hold_micro);
        if (c->req && c->gate_then)
            c->gate_then(c);
        else if (!c->req && c->gate_then == s_send_answer)
            /* its client left while it settled: the whole answer it paid for is kept for a retry
             * of its name (a call without one is paid and lost: its client is gone) */
            s_x402_done(c, "application/json", &c->answer, NULL);
    } else {
        const char *why = reply->ok ? (reason ? reason : "settlement_failed") : reply->code;
        const char *msg = reply->ok ? json_string_value(json_object_get(b, "errorMessage")) : reply->message;
        fb_log(FB_LOG_WARN, c->rid, "x402 settlement failed: the call is not served", "reason=%s", why);
        if (c->call)
            edge_call_cancel(&c->call);
        /* refused by the ledger when a settlement had begun (its outcome decides) */
        c->money_done = true;
        s_mark_failed(c, "not served: the settlement failed");
        if (c->req && !c->started) {
            s_set_error(c, reply->ok ? 402 : 503, reply->ok ? "payment_invalid" : "unavailable",
                        json_pack("{ss}", "reason", why),
                        "the payment could not be settled (%s): %s; nothing was served", why, msg ? msg : "");
            s_send_error(c);
        }
    }
    json_decref(b);
    s_maybe_free(c);
}

/* Run then once the x402 payment is settled (at once for prepaid calls). */
static void s_gate(s_chat_t *c, s_then_fn *then)
{
    if (!c->x402 || c->settled) {
        then(c);
        return;
    }
    c->gate_then = then;
    if (c->settling)
        return;
    s_settle(c);
}

static void s_set_pay_response(s_chat_t *c)
{
    edge_x402_set_receipt(c->req, c->pay_version, c->pay_response);
}

/* The answer of a named call as the ledger keeps it: status, type, the text
 * of a and b (NULL: not kept, too large or not text) and its size; added to
 * call. */
static void s_add_answer(s_chat_t *c, json_t *call, const char *type, const fb_buf_t *a, const fb_buf_t *b)
{
    size_t n = a ? a->len + (b ? b->len : 0) : 0;
    json_object_set_new(call, "status", json_integer(200));
    json_object_set_new(call, "content_type", json_string(type));
    json_object_set_new(call, "answer_bytes", json_integer((json_int_t)n));
    if (!a || n > c->w->edge->idem_answer_max || (a == &c->rec && c->rec_over))
        return;
    fb_buf_t all = {0};
    fb_buf_append(&all, a->data ? a->data : "", a->len);
    if (b)
        fb_buf_append(&all, b->data ? b->data : "", b->len);
    /* kept as text: UTF-8 without NUL (what Postgres text holds; a refused item would fail its batch) */
    json_t *text =
        all.len && memchr(all.data, '\0', all.len) ? NULL : json_stringn(all.data ? all.data : "", all.len);
    if (text)
        json_object_set_new(call, "answer", text);
    fb_buf_free(&all);
}

/* A prepaid named call's charge carries its name: with the answer about to be
 * sent (then), it is done in the charge's transaction; without one (the
 * client left, the stream is cut short) its name is released. */
static json_t *s_charged_call(s_chat_t *c, s_then_fn *then)
{
    if (!c->idem.claimed || c->idem.resolved)
        return NULL;
    c->idem.resolved = true;
    json_t *call = edge_idem_call(&c->idem);
    if (!c->req)
        return call;
    if (then == s_send_answer) {
        s_add_answer(c, call, "application/json", &c->answer, NULL);
    } else if (then == s_close_stream && c->started) {
        fb_buf_t rest = {0};
        fb_buf_append(&rest, c->out.data ? c->out.data : "", c->out.len);
        s_stream_tail(c, &rest);
        s_add_answer(c, call, "text/event-stream", &c->rec, &rest);
        fb_buf_free(&rest);
    }
    return call;
}

static void s_on_answer_kept(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    if (!reply->ok)
        fb_log(FB_LOG_WARN, c->rid, "an x402 call's answer was not kept for a retry",
               "authorization_id=%" PRId64 " code=%s message=%s", c->authorization_id, reply->code,
               reply->message);
    s_maybe_free(c);
}

/* An x402 named call was served and its payment settled: its answer is kept
 * for a retry of the same payment (sent meanwhile; a retry before it is kept
 * waits for the lease, then is served again without paying again). a NULL:
 * the call is done, its answer not kept (the client left during it). */
static void s_x402_done(s_chat_t *c, const char *type, const fb_buf_t *a, const fb_buf_t *b)
{
    if (!c->x402 || !c->settled || !c->idem.claimed || c->idem.resolved)
        return;
    c->idem.resolved = true;
    json_t *call = edge_idem_call(&c->idem);
    s_add_answer(c, call, type, a, b);
    if (c->pay_response)
        json_object_set_new(call, "receipt", json_string(c->pay_response));
    char idem[EDGE_ID_TEXT_MAX + 32];
    snprintf(idem, sizeof(idem), "call-done:%s", c->idem.claim);
    c->pending++;
    edge_rpc_json(c->w->ledger, "ledger.call_done", call, idem, c->rid, MONEY_DEADLINE_MS, s_on_answer_kept,
                  c);
}

/* Resolve the hold: commit cost (0..hold), or void it when cost < 0; then
 * runs after the ledger answered (also when it failed: the hold expires). */
static void s_resolve(s_chat_t *c, int64_t cost, s_then_fn *then)
{
    FB_ASSERT(!c->money_done);
    c->money_done = true;
    c->then = then;
    int64_t full = cost >= 0 ? s_cost_uncapped(c) : 0;
    if (full > c->hold_micro) {
        /* the ceiling is the most a call pays: what its usage says above it is the operator's loss */
        fb_log(FB_LOG_WARN, c->rid,
               "a call's reported usage costs more than its ceiling: charged the ceiling",
               "model=%s cost_micro=%" PRId64 " ceiling_micro=%" PRId64, c->model->id, full, c->hold_micro);
        edge_metrics_money(EDGE_MONEY_CAPPED, full - c->hold_micro);
    }
    if (c->x402) {
        /* the payment is the quote, settled at the first output: a call that
         * ends unserved has its authorization marked failed, so it never settles */
        if ((cost < 0 || !c->req) && !c->settled && !c->settling)
            s_mark_failed(c, cost < 0 ? "not served: the call failed" : "not served: the client left");
        if (then && c->req)
            then(c);
        return;
    }
    if (c->res.slice && !edge_purse_alive(c->w->purse)) {
        /* a call that outlived its edge's stop (its slice closed, perhaps freed) */
        fb_log(FB_LOG_ERROR, c->rid, "a prepaid call ended after its edge's slices were closed: not charged",
               "cost_micro=%" PRId64, cost);
        c->res.slice = NULL;
    }
    if (!c->res.slice) {
        if (then && c->req)
            then(c);
        return;
    }
    if (cost < 0) {
        edge_purse_release(c->w->purse, &c->res);
        edge_metrics_money(EDGE_MONEY_RELEASED, c->hold_micro);
        if (then && c->req)
            then(c);
        return;
    }
    c->charged_micro = cost;
    c->pending++;
    edge_purse_charge(c->w->purse, &c->res, cost, c->rid, s_charged_call(c, then), s_on_money, c);
}

/* --- the provider's answer ------------------------------------------------------------- */

static void s_count_text(s_chat_t *c, json_t *text)
{
    if (json_is_string(text) && json_string_length(text) > 0) {
        c->out_events++;
        c->out_bytes += (int64_t)json_string_length(text);
    }
}

static void s_openai_usage(s_chat_t *c, json_t *usage)
{
    json_t *p = json_object_get(usage, "prompt_tokens"), *o = json_object_get(usage, "completion_tokens");
    if (json_is_integer(p) && json_integer_value(p) >= 0) {
        c->in_tokens = json_integer_value(p);
        c->in_seen = true;
        /* prompt_tokens counts the cached ones too */
        json_t *cached = json_object_get(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
        c->cache_read =
            json_is_integer(cached) && json_integer_value(cached) > 0 ? json_integer_value(cached) : 0;
        c->cache_write = 0;
    }
    if (json_is_integer(o) && json_integer_value(o) >= 0) {
        c->out_tokens = json_integer_value(o);
        c->out_seen = true;
    }
}

/* What an OpenAI chunk delivers: content and tool call arguments. */
static void s_openai_delta(s_chat_t *c, json_t *chunk)
{
    size_t i;
    json_t *choice;
    json_array_foreach(json_object_get(chunk, "choices"), i, choice)
    {
        json_t *delta = json_object_get(choice, "delta");
        s_count_text(c, json_object_get(delta, "content"));
        s_count_text(c, json_object_get(delta, "refusal"));
        s_count_text(c, json_object_get(delta, "reasoning_content")); /* compatible providers' reasoning */
        json_t *legacy = json_object_get(delta, "function_call");     /* the functions API's one call */
        s_count_text(c, json_object_get(legacy, "arguments"));
        s_count_text(c, json_object_get(legacy, "name"));
        size_t k;
        json_t *call;
        json_array_foreach(json_object_get(delta, "tool_calls"), k, call)
        {
            s_count_text(c, json_object_get(json_object_get(call, "function"), "arguments"));
            s_count_text(c, json_object_get(json_object_get(call, "function"), "name"));
        }
    }
}

/* What an Anthropic event tells: usage, delivered content, errors, the end. */
/* An error event inside a stream (both dialects put it under "error"). The
 * provider's own trouble — overloaded, its server failing, its rate limit —
 * is worth the second route when it comes before any output; a refusal of
 * the request is not. */
static void s_stream_error(s_chat_t *c, json_t *e)
{
    static const char *const transient[] = {"overloaded_error", "api_error", "rate_limit_error",
                                            "server_error", "timeout_error"};
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *type = json_string_value(json_object_get(e, "type"));
    snprintf(c->up_error, sizeof(c->up_error), "the provider failed mid-stream: %s", msg ? msg : "error");
    c->up_transient = false;
    for (size_t i = 0; type && i < FB_ARRAY_SIZE(transient); i++)
        c->up_transient |= strcmp(type, transient[i]) == 0;
}

static void s_anthropic_event(s_chat_t *c, json_t *d)
{
    const char *type = json_string_value(json_object_get(d, "type"));
    if (!type)
        return;
    if (strcmp(type, "message_start") == 0) {
        int64_t in, out;
        json_t *usage = json_object_get(json_object_get(d, "message"), "usage");
        if (json_is_integer(json_object_get(usage, "input_tokens"))) {
            json_t *u = json_deep_copy(usage);
            if (!json_is_integer(json_object_get(u, "output_tokens")))
                json_object_set_new(u, "output_tokens", json_integer(0));
            if (edge_tr_usage(u, &in, &out) == 0) {
                c->in_tokens = in;
                c->in_seen = true;
                edge_tr_cache_tokens(u, &c->cache_read, &c->cache_write);
                int64_t h = edge_tr_cache_1h_tokens(u);
                c->cache_write_1h = h > 0 ? h : 0;
            }
            json_decref(u);
        }
    } else if (strcmp(type, "content_block_delta") == 0) {
        json_t *delta = json_object_get(d, "delta");
        s_count_text(c, json_object_get(delta, "text"));
        s_count_text(c, json_object_get(delta, "partial_json"));
        s_count_text(c, json_object_get(delta, "thinking"));
    } else if (strcmp(type, "content_block_start") == 0) {
        json_t *block = json_object_get(d, "content_block");
        s_count_text(c, json_object_get(block, "text"));
        s_count_text(c, json_object_get(block, "name"));
    } else if (strcmp(type, "message_delta") == 0) {
        if (json_is_string(json_object_get(json_object_get(d, "delta"), "stop_reason")))
            c->up_final = true;
        json_t *usage = json_object_get(d, "usage");
        json_t *o = json_object_get(usage, "output_tokens");
        if (json_is_integer(o) && json_integer_value(o) >= 0) {
            c->out_tokens = json_integer_value(o);
            c->out_seen = true;
        }
        /* its counts are the message's so far: input and cache tokens grow
         * when the provider runs a server tool (a search, a fetch) */
        edge_tr_usage_running(usage, &c->in_tokens, &c->cache_read, &c->cache_write, &c->in_seen);
        int64_t h = edge_tr_cache_1h_tokens(usage);
        if (h >= 0)
            c->cache_write_1h = h;
    } else if (strcmp(type, "message_stop") == 0) {
        c->up_ended = true;
    } else if (strcmp(type, "error") == 0) {
        s_stream_error(c, json_object_get(d, "error"));
    }
}

static int s_on_event(void *arg, const edge_sse_event_t *ev)
{
    s_chat_t *c = arg;
    if (c->up_ended)
        return 0;
    json_error_t jerr;
    if (c->model->provider == EDGE_PROVIDER_OPENAI) {
        if (strcmp(ev->data, "[DONE]") == 0) {
            c->up_ended = true;
            if (c->reverse)
                edge_rev_stream_chunk(&c->rev, NULL, &c->out);
            else
                fb_buf_append(&c->out, ev->raw, ev->raw_len);
            return 0;
        }
        json_t *d = json_loadb(ev->data, ev->data_len, JSON_ALLOW_NUL, &jerr);
        bool forward = true;
        if (json_is_object(d)) {
            json_t *usage = json_object_get(d, "usage");
            if (json_is_object(usage)) {
                s_openai_usage(c, usage);
                c->up_final = true; /* asked for: the last chunk */
                /* the usage chunk farebox asked for and the caller did not */
                if (!c->caller_usage && !c->reverse && json_array_size(json_object_get(d, "choices")) == 0)
                    forward = false;
            }
            s_openai_delta(c, d);
            json_t *e = json_object_get(d, "error");
            if (e && !json_is_null(e)) {
                s_stream_error(c, e);
                forward = false;
            }
        }
        int rc = 0;
        if (forward && c->reverse && json_is_object(d) && edge_rev_stream_chunk(&c->rev, d, &c->out) != 0) {
            snprintf(c->up_error, sizeof(c->up_error),
                     "the provider's stream made more than %d tool calls or content blocks", EDGE_REV_TOOLS);
            rc = -1;
        } else if (forward && !c->reverse) {
            fb_buf_append(&c->out, ev->raw, ev->raw_len);
        }
        json_decref(d);
        return rc;
    }
    json_t *d = json_loadb(ev->data, ev->data_len, JSON_ALLOW_NUL, &jerr);
    if (json_is_object(d)) {
        s_anthropic_event(c, d);
        if (c->translate) {
            /* errors are ours to write at the end */
            const char *type = json_string_value(json_object_get(d, "type"));
            if (!type || strcmp(type, "error") != 0)
                edge_tr_stream_event(&c->tr, ev->name, d, &c->out);
        } else if (strcmp(ev->name, "error") != 0) {
            fb_buf_append(&c->out, ev->raw, ev->raw_len);
        }
    }
    json_decref(d);
    return 0;
}

static void s_begin_output(s_chat_t *c)
{
    s_start_stream(c);
    s_flush(c);
}

static int s_on_data(void *arg, long status, const char *data, size_t len)
{
    s_chat_t *c = arg;
    c->up_status = status;
    if (status < 200 || status > 299 || !c->stream) {
        size_t cap = status >= 200 && status <= 299 ? ANSWER_MAX : ERROR_BODY_MAX;
        if (c->answer.len + len > cap) {
            if (status >= 200 && status <= 299)
                return -1;
            len = cap - c->answer.len;
        }
        fb_buf_append(&c->answer, data, len);
        return 0;
    }
    if (edge_sse_feed(&c->sse, data, len, s_on_event, c) != 0)
        return -1;
    if (c->out.len > OUT_BACKLOG_MAX)
        return -1;
    /* the stream starts with its first content (or its end): a role-only
     * first chunk followed by a failure is a call that failed before any
     * output — nothing charged, an x402 payment not settled, the second
     * route still possible */
    if (c->out.len > 0 && (c->out_events > 0 || c->up_ended)) {
        c->produced = true;
        s_gate(c, s_begin_output);
    }
    return 0;
}

/* The provider's error message, from either dialect's envelope. */
static void s_upstream_message(s_chat_t *c, char *out, size_t cap)
{
    json_error_t jerr;
    json_t *d = json_loadb(c->answer.data ? c->answer.data : "", c->answer.len, 0, &jerr);
    const char *msg = json_string_value(json_object_get(json_object_get(d, "error"), "message"));
    snprintf(out, cap, "%s", msg ? msg : "no message");
    json_decref(d);
}

/* --- whole answers --------------------------------------------------------------------- */

static void s_send_answer(s_chat_t *c)
{
    if (c->x402 && !c->settled) {
        s_gate(c, s_send_answer);
        return;
    }
    s_set_pay_response(c);
    fb_http_send(c->req, 200, "application/json", c->answer.data, c->answer.len);
    s_x402_done(c, "application/json", &c->answer, NULL);
}

/* Chat402's answer of /api/v1/prompt. Costs are dollars written from the
 * integer micro-USDC (no floating point), as numbers like Chat402's. */
static void s_prompt_answer(s_chat_t *c, const char *text, size_t text_len)
{
    int64_t in = c->in_seen ? c->in_tokens : c->input_estimate;
    int64_t out = c->out_seen ? c->out_tokens : edge_chat_output_estimate(c->out_events, c->out_bytes);
    int64_t in_cost = s_input_cost(c);
    int64_t total = s_cost(c);
    int64_t out_cost = total - in_cost > 0 ? total - in_cost : 0;
    if (in_cost > total)
        in_cost = total;
    json_t *doc = json_pack("{sb ss% ss s{sI sI sI}}", "success", 1, "text", text, text_len, "model",
                            c->requested, "usage", "inputTokens", (json_int_t)in, "outputTokens",
                            (json_int_t)out, "totalTokens", (json_int_t)edge_add_micro(in, out));
    char *head = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char a[32], b[32], t[32], rid[300];
    edge_usd_text(a, in_cost);
    edge_usd_text(b, out_cost);
    edge_usd_text(t, total);
    edge_json_escape(rid, sizeof(rid), c->rid, strlen(c->rid));
    fb_buf_reset(&c->answer);
    fb_buf_append(&c->answer, head, strlen(head) - 1); /* without the closing brace */
    char tail[600];
    int n =
        snprintf(tail, sizeof(tail),
                 ",\"cost\":{\"inputCost\":%s,\"outputCost\":%s,\"totalCost\":%s,\"inputCostMicro\":%" PRId64
                 ",\"outputCostMicro\":%" PRId64 ",\"totalCostMicro\":%" PRId64 "},\"requestId\":\"%s\"}",
                 a, b, t, in_cost, out_cost, total, rid);
    fb_buf_append(&c->answer, tail, (size_t)n);
    free(head);
}

/* A complete 2xx answer: usage read, translated or passed on unchanged. */
static void s_whole_answer(s_chat_t *c)
{
    /* an OpenAI answer passed through as sent: its usage is all that is read */
    edge_scan_usage_t u;
    if (c->model->provider == EDGE_PROVIDER_OPENAI && !c->reverse && c->route != ROUTE_PROMPT &&
        edge_scan_openai_usage(c->answer.data, c->answer.len, &u)) {
        c->in_tokens = u.prompt_tokens;
        c->out_tokens = u.completion_tokens;
        c->in_seen = c->out_seen = true;
        c->cache_read = u.cached_tokens;
        c->cache_write = 0;
        s_resolve(c, s_cost(c), s_send_answer);
        return;
    }
    json_error_t jerr;
    /* \u0000 in content is valid JSON (a token the caller can ask for) */
    json_t *d = json_loadb(c->answer.data ? c->answer.data : "", c->answer.len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(d)) {
        json_decref(d);
        s_set_error(c, 502, "upstream_error", NULL,
                    "the provider's answer was not JSON; nothing was charged");
        s_resolve(c, -1, s_send_error);
        return;
    }
    fb_buf_t text = {0};
    if (c->model->provider == EDGE_PROVIDER_OPENAI) {
        s_openai_usage(c, json_object_get(d, "usage"));
        json_t *msg = json_object_get(json_array_get(json_object_get(d, "choices"), 0), "message");
        json_t *content = json_object_get(msg, "content");
        if (json_is_string(content))
            fb_buf_append(&text, json_string_value(content), json_string_length(content));
        /* counted as a stream's chunk of every answer (n of them) would be */
        json_t *as_chunk = json_object(), *deltas = json_array(), *choice;
        size_t i;
        json_array_foreach(json_object_get(d, "choices"), i, choice)
        {
            json_t *m = json_object_get(choice, "message");
            if (json_is_object(m))
                json_array_append_new(deltas, json_pack("{sO}", "delta", m));
        }
        json_object_set_new(as_chunk, "choices", deltas);
        s_openai_delta(c, as_chunk);
        json_decref(as_chunk);
    } else {
        int64_t in, out;
        if (edge_tr_usage(json_object_get(d, "usage"), &in, &out) == 0) {
            c->in_tokens = in;
            c->out_tokens = out;
            c->in_seen = c->out_seen = true;
            edge_tr_cache_tokens(json_object_get(d, "usage"), &c->cache_read, &c->cache_write);
            int64_t h = edge_tr_cache_1h_tokens(json_object_get(d, "usage"));
            c->cache_write_1h = h > 0 ? h : 0;
        }
        size_t i;
        json_t *b;
        json_array_foreach(json_object_get(d, "content"), i, b)
        {
            json_t *t = json_object_get(b, "text");
            if (json_is_string(t))
                fb_buf_append(&text, json_string_value(t), json_string_length(t));
            s_count_text(c, t);
            if (json_object_get(b, "input")) {
                char *args = json_dumps(json_object_get(b, "input"), JSON_COMPACT | JSON_ENCODE_ANY);
                c->out_events++;
                c->out_bytes += args ? (int64_t)strlen(args) : 0;
                free(args);
            }
        }
    }
    if (c->route == ROUTE_PROMPT) {
        s_prompt_answer(c, text.data ? text.data : "", text.len);
    } else if (c->translate || c->reverse) {
        json_t *o = c->translate ? edge_tr_response(d, c->requested) : edge_rev_response(d, c->requested);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        fb_buf_reset(&c->answer);
        if (s)
            fb_buf_append_str(&c->answer, s);
        free(s);
    }
    fb_buf_free(&text);
    json_decref(d);
    if (c->answer.len == 0) {
        s_set_error(c, 502, "upstream_error", NULL,
                    "the provider's answer could not be read; nothing was charged");
        s_resolve(c, -1, s_send_error);
        return;
    }
    s_resolve(c, s_cost(c), s_send_answer);
}

/* A provider that failed before any output: the hold is voided. */
static void s_upstream_failed(s_chat_t *c, edge_call_result_t result, long status, const char *why)
{
    char msg[300];
    if (result == EDGE_CALL_TIMEOUT) {
        s_set_error(c, 504, "upstream_timeout", NULL,
                    "the provider did not answer in time (%s); nothing was charged", why);
    } else if (result != EDGE_CALL_OK) {
        s_set_error(c, 502, "upstream_error", NULL,
                    "the provider could not be reached (%s); nothing was charged", why);
    } else if (status == 400 || status == 404 || status == 413 || status == 422) {
        s_upstream_message(c, msg, sizeof(msg));
        s_set_error(c, 400, "invalid_request", NULL, "the provider refused the request: %s", msg);
    } else if (status == 408 || status == 504) {
        s_set_error(c, 504, "upstream_timeout", NULL,
                    "the provider timed out (status %ld); nothing was charged", status);
    } else if (status == 401 || status == 403 || status == 429) {
        /* about the operator's account with the provider (its key, organization, quota): its
         * words are logged, not shown to callers */
        s_upstream_message(c, msg, sizeof(msg));
        fb_log(FB_LOG_ERROR, c->rid, "the provider refused the operator's account",
               "model=%s status=%ld message=%s", c->model->id, status, msg);
        s_set_error(c, 502, "upstream_error", NULL,
                    "the provider refused this gateway's account (status %ld); nothing was charged", status);
    } else {
        s_upstream_message(c, msg, sizeof(msg));
        s_set_error(c, 502, "upstream_error", NULL,
                    "the provider answered status %ld: %s; nothing was charged", status, msg);
    }
    fb_log(FB_LOG_WARN, c->rid, "provider call failed", "model=%s status=%ld reason=%s", c->model->id, status,
           why && why[0] ? why : c->err_msg);
    s_resolve(c, -1, s_send_error);
}

static void s_call_upstream(s_chat_t *c);

/* A stream that began and failed before any output, read again from the
 * start of the second route's: what the first told is forgotten. */
static void s_stream_restart(s_chat_t *c)
{
    edge_sse_free(&c->sse);
    memset(&c->sse, 0, sizeof(c->sse));
    if (c->translate)
        edge_tr_stream_init(&c->tr, c->requested, c->caller_usage);
    if (c->reverse)
        edge_rev_stream_init(&c->rev, c->requested);
    fb_buf_reset(&c->out);
    c->up_ended = c->up_transient = c->up_final = false;
    c->up_error[0] = '\0';
    c->in_tokens = c->out_tokens = c->cache_read = c->cache_write = c->cache_write_1h = 0;
    c->in_seen = c->out_seen = false;
    c->out_events = c->out_bytes = 0;
}

static void s_on_call_done(void *arg, edge_call_result_t result, long status, const char *why)
{
    s_chat_t *c = arg;
    c->call = NULL;
    if (!c->req) { /* cannot happen: a gone client cancels the call */
        s_maybe_free(c);
        return;
    }
    if (c->produced) {
        /* output was delivered: charge it, whatever happened after */
        if (result == EDGE_CALL_OK && c->up_final && !c->up_ended && !c->up_error[0]) {
            /* closed after its last event: only the end marker is missing, the caller gets it */
            static const char stop_data[] = "{\"type\":\"message_stop\"}",
                              stop_raw[] = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                              done_raw[] = "data: [DONE]\n\n";
            static const edge_sse_event_t done = {"", "[DONE]", 6, done_raw, sizeof(done_raw) - 1},
                                          stop = {"message_stop", stop_data, sizeof(stop_data) - 1, stop_raw,
                                                  sizeof(stop_raw) - 1};
            s_on_event(c, c->model->provider == EDGE_PROVIDER_OPENAI ? &done : &stop);
        }
        if (result != EDGE_CALL_OK && !c->up_error[0])
            snprintf(c->up_error, sizeof(c->up_error), "the provider's stream broke off: %s", why);
        else if (result == EDGE_CALL_OK && !c->up_ended && !c->up_error[0])
            snprintf(c->up_error, sizeof(c->up_error), "the provider's stream ended early");
        s_resolve(c, s_cost(c), s_close_stream);
        return;
    }
    /* a stream that began (2xx) yet failed or ended before any output: nothing reached the caller */
    bool began = c->stream && c->up_status >= 200 && c->up_status <= 299;
    if (began || result != EDGE_CALL_OK || status < 200 || status > 299) {
        int64_t elapsed = fb_mono_ms() - c->call_t0_ms;
        int64_t deadline = (int64_t)c->w->edge->upstream_timeout_ms - 1000;
        bool again =
            began ? result != EDGE_CALL_ABORTED && elapsed < deadline && (!c->up_error[0] || c->up_transient)
                  : edge_call_retryable(result, c->up_status ? c->up_status : status, elapsed, deadline);
        if (!c->retried && edge_call_has_fallback(c->w, c->model->route) && again) {
            /* nothing reached the caller: the provider's second route gets the call, once */
            const char *reason = c->up_error[0]  ? c->up_error
                                 : why && why[0] ? why
                                 : began         ? "the stream ended before any output"
                                                 : "error status";
            fb_log(FB_LOG_WARN, c->rid, "provider call failed; trying its second route",
                   "model=%s status=%ld reason=%s", c->model->id, status, reason);
            edge_metrics_upstream_fallback(c->model->provider);
            c->retried = true;
            c->up_status = 0;
            fb_buf_reset(&c->answer);
            if (began)
                s_stream_restart(c);
            s_call_upstream(c);
            return;
        }
        if (!began || result != EDGE_CALL_OK) {
            s_upstream_failed(c, result, status, why);
            return;
        }
    }
    if (c->stream) {
        if (c->up_error[0]) {
            fb_utf8_clean(c->up_error);
            s_set_error(c, 502, "upstream_error", NULL, "%s, before any output; nothing was charged",
                        c->up_error);
        } else {
            s_set_error(c, 502, "upstream_error", NULL,
                        "the provider's stream ended without output; nothing was charged");
        }
        s_resolve(c, -1, s_send_error);
        return;
    }
    s_whole_answer(c);
}

static void s_call_upstream(s_chat_t *c)
{
    static const edge_call_fn_t fn = {s_on_data, s_on_call_done};
    uint32_t timeout_ms = 0;
    if (c->retried) {
        /* the second try gets what is left of the call's time */
        int64_t left = (int64_t)c->w->edge->upstream_timeout_ms - (fb_mono_ms() - c->call_t0_ms);
        timeout_ms = left > 1 ? (uint32_t)left : 1;
    } else {
        c->call_t0_ms = fb_mono_ms();
    }
    c->call = edge_call_start(c->w, c->model->route, c->retried, timeout_ms, c->up_body, c->up_len,
                              c->anthropic_version, c->anthropic_beta, &fn, c);
    s_watch(c); /* an x402 call too: its client looked for each second */
}

/* --- key and hold ------------------------------------------------------------------------ */

static json_t *s_pick(json_t *body, const char *const *names, size_t n)
{
    json_t *d = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(body, names[i]);
        if (v)
            json_object_set(d, names[i], v);
    }
    return d;
}

/* The call's ceiling is reserved: call the provider. */
static void s_reserved(s_chat_t *c)
{
    c->hold_id = c->res.hold_id;
    edge_metrics_money(EDGE_MONEY_HELD, c->hold_micro);
    if (!c->req)
        s_resolve(c, -1, NULL); /* the client left while the slice was opened */
    else
        s_call_upstream(c);
}

static void s_on_reserved(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    if (reply->ok) {
        s_reserved(c);
        s_maybe_free(c);
        return;
    }
    json_t *body = edge_reply_json(reply);
    if (c->req) {
        static const char *const bal[] = {"required_micro", "balance_micro", "deficit_micro"};
        static const char *const cap[] = {"spend_cap_micro", "spent_micro", "held_micro", "required_micro",
                                          "remaining_micro"};
        if (strcmp(reply->code, "insufficient_balance") == 0)
            s_refuse(c, 402, "insufficient_balance", s_pick(body, bal, FB_ARRAY_SIZE(bal)),
                     "the balance does not cover this call's hold");
        else if (strcmp(reply->code, "spend_limit_exceeded") == 0)
            s_refuse(c, 403, "spend_limit_exceeded", s_pick(body, cap, FB_ARRAY_SIZE(cap)),
                     "this call's hold would pass the key's spend cap");
        else if (strcmp(reply->code, "key_revoked") == 0)
            s_refuse(c, 401, "key_revoked", NULL, "the API key was revoked");
        else if (strcmp(reply->code, "key_not_found") == 0 || strcmp(reply->code, "account_not_found") == 0)
            s_refuse(c, 401, "invalid_key", NULL, "the API key is not valid");
        else
            s_refuse(c, 503, "unavailable", NULL, "the ledger cannot be reached; nothing was charged");
    }
    json_decref(body);
    s_maybe_free(c);
}

/* Reserve the call's ceiling in its key's slice (at once, or once a slice is open). */
static void s_hold(s_chat_t *c)
{
    c->pending++;
    if (edge_purse_reserve(c->w->purse, c->account_id, c->key_id, c->key_cap, c->hold_micro, c->rid, &c->res,
                           s_on_reserved, c)) {
        c->pending--;
        s_reserved(c);
    }
}

/* The signed-message proof of /api/v1/prompt (Chat402's "pay from your own
 * wallet"): the wallet signed this request id and an amount in USDC cents.
 * The verifier checks the signature and its age and uses the request id up;
 * the call's ceiling must fit the signed amount, which caps what it costs. */
static void s_on_proof(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    json_t *b = edge_reply_json(reply);
    if (!c->req) {
        /* the client left: nothing was held */
    } else if (!reply->ok) {
        s_refuse(c, strcmp(reply->code, "bad_request") == 0 ? 400 : 503,
                 strcmp(reply->code, "bad_request") == 0 ? "invalid_request" : "unavailable", NULL,
                 reply->message);
    } else if (!json_is_true(json_object_get(b, "valid"))) {
        const char *reason = json_string_value(json_object_get(b, "reason"));
        const char *msg = json_string_value(json_object_get(b, "message"));
        s_set_error(c, 402, "payment_invalid", json_pack("{ss}", "reason", reason ? reason : "invalid"),
                    "the payment proof was refused: %s", msg ? msg : (reason ? reason : "invalid"));
        s_send_error(c);
    } else if (json_integer_value(json_object_get(b, "amount_micro")) < c->hold_micro) {
        s_set_error(
            c, 402, "payment_invalid",
            json_pack("{ss sI sI}", "reason", "amount_too_low", "required_micro", (json_int_t)c->hold_micro,
                      "signed_micro", json_integer_value(json_object_get(b, "amount_micro"))),
            "the signed amount does not cover this call's ceiling of %" PRId64 " micro-USDC", c->hold_micro);
        s_send_error(c);
    } else {
        s_hold(c);
    }
    json_decref(b);
    s_maybe_free(c);
}

static void s_check_proof(s_chat_t *c)
{
    json_t *body = json_deep_copy(c->proof);
    json_object_set_new(body, "consume", json_true());
    c->pending++;
    /* consuming the proof is not idempotent (a second try finds its request id used): one attempt */
    edge_rpc_json_long(c->w->verifier, "verifier.verify_message", body, NULL, c->rid, MONEY_DEADLINE_MS,
                       s_on_proof, c);
}

static bool s_model_allowed(s_chat_t *c, json_t *models)
{
    if (!json_is_array(models))
        return true; /* nil: every model */
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m)
    {
        const char *name = json_string_value(m);
        if (name && (strcmp(name, c->model->id) == 0 || strcmp(name, c->requested) == 0))
            return true;
    }
    return false;
}

/* --- idempotent calls: the name is claimed before any money moves --------------------- */

static bool s_str_is(json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

static void s_quote(s_chat_t *c, const char *code, const char *reason, const char *message);

static void s_on_claim(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    json_t *b = edge_reply_json(reply);
    bool claimed = reply->ok && json_is_true(json_object_get(b, "claimed"));
    /* a client gone meanwhile: released when c goes; so is a claim whose
     * outcome is unknown (it may have been made: released under its token,
     * its retries need not wait for its lease) */
    c->idem.claimed = claimed || edge_rpc_outcome_unknown(reply);
    if (claimed)
        edge_metrics_idem(json_is_true(json_object_get(b, "taken_over")) ? EDGE_IDEM_TAKEN_OVER
                                                                         : EDGE_IDEM_CLAIMED);
    else if (reply->ok)
        edge_metrics_idem(EDGE_IDEM_REPLAYED);
    else if (strcmp(reply->code, "idempotency_in_progress") == 0)
        edge_metrics_idem(EDGE_IDEM_IN_PROGRESS);
    else if (strcmp(reply->code, "idempotency_key_mismatch") == 0)
        edge_metrics_idem(EDGE_IDEM_MISMATCH);
    if (!c->req) {
        /* nothing was held */
    } else if (!reply->ok) {
        edge_idem_refused(c->req, c->dialect, reply);
    } else if (!claimed && c->x402 && s_str_is(json_object_get(b, "authorization_state"), "failed")) {
        /* served before its transfer was final (broadcast), and the transfer failed: unpaid */
        s_quote(c, "payment_invalid", "invalid_payment",
                "this payment's transfer failed on chain: the answer kept for it is not given again");
    } else if (!claimed) {
        fb_log(FB_LOG_INFO, c->rid, "a retried call: its kept answer is sent again", "scope=%s",
               c->idem.scope);
        edge_idem_replay(c->req, c->dialect, b, c->pay_version);
    } else if (c->x402 && json_integer_value(json_object_get(b, "authorization_id")) > 0) {
        /* an earlier serving of this payment accepted it and did not keep an
         * answer: serve it again; its settlement (done, or not yet) is asked
         * again and found, never made twice */
        const char *state = json_string_value(json_object_get(b, "authorization_state"));
        if (s_str_is(json_object_get(b, "authorization_state"), "failed")) {
            s_quote(c, "payment_invalid", "invalid_payment",
                    "this payment was not settled by an earlier try of this call and cannot be used again");
        } else {
            c->authorization_id = json_integer_value(json_object_get(b, "authorization_id"));
            c->earlier_settle =
                s_str_is(json_object_get(b, "authorization_state"), "settled") ? "was" : "may be";
            fb_log(FB_LOG_INFO, c->rid, "a retried x402 call is served again without a new payment",
                   "authorization_id=%" PRId64 " state=%s", c->authorization_id, state ? state : "");
            s_call_upstream(c);
        }
    } else {
        c->claim_then(c);
    }
    json_decref(b);
    s_maybe_free(c);
}

/* Claim the call's name, then run then (or answer: the kept answer, 409, 422). */
static void s_claim(s_chat_t *c, s_then_fn *then)
{
    const edge_t *edge = c->w->edge;
    /* the lease covers the longest serving: money before, the provider, money after */
    int64_t lease = (int64_t)edge->upstream_timeout_ms + 2 * MONEY_DEADLINE_MS +
                    (c->x402 ? VERIFY_DEADLINE_MS + (1 + SETTLE_ASKS) * SETTLE_DEADLINE_MS : 0);
    char idem[EDGE_ID_TEXT_MAX + 32];
    snprintf(idem, sizeof(idem), "call-claim:%s", c->idem.claim);
    c->claim_then = then;
    c->pending++;
    edge_rpc_json(c->w->ledger, "ledger.call_claim",
                  edge_idem_claim_body(&c->idem, lease, edge->idem_keep_ms), idem, c->rid, MONEY_DEADLINE_MS,
                  s_on_claim, c);
}

static void s_check_proof(s_chat_t *c);

/* The key may pay: check the signed proof or reserve the ceiling. */
static void s_key_pays(s_chat_t *c)
{
    if (c->proof)
        s_check_proof(c);
    else
        s_hold(c);
}

static void s_on_key(void *arg, const edge_key_t *k)
{
    s_chat_t *c = arg;
    c->pending--;
    if (!c->req) {
        s_maybe_free(c);
        return;
    }
    if (k->status != 200) {
        edge_key_error(c->req, c->dialect, k);
    } else if (!s_model_allowed(c, json_object_get(k->view, "models"))) {
        s_set_error(c, 403, "model_not_allowed", json_pack("{ss}", "model", c->model->id),
                    "this API key may not use model %s", c->model->id);
        s_send_error(c);
    } else if (!edge_limit_enter(c->w->edge->limits, k->key_id)) {
        edge_retry_after(c->req, 1000);
        s_set_error(c, 429, "rate_limited", NULL,
                    "this API key has %lld calls in flight, its limit; retry shortly",
                    (long long)c->w->edge->key_concurrency);
        s_send_error(c);
    } else {
        c->entered = true;
        c->account_id = k->account_id;
        c->key_id = k->key_id;
        json_t *cap = json_object_get(k->view, "spend_cap_micro");
        c->key_cap = json_is_integer(cap) ? json_integer_value(cap) : -1;
        memcpy(c->mac, k->mac, sizeof(c->mac));
        s_watch(c);
        if (c->idem.named) {
            snprintf(c->idem.scope, sizeof(c->idem.scope), "key:%" PRId64, c->key_id);
            s_claim(c, s_key_pays);
        } else {
            s_key_pays(c);
        }
    }
    s_maybe_free(c);
}

/* --- x402: quote, verify and record ------------------------------------------------------ */

/* 402 with a quote: PAYMENT-REQUIRED, and the same document in the error. */
static void s_quote(s_chat_t *c, const char *code, const char *reason, const char *message)
{
    char desc[200];
    snprintf(desc, sizeof(desc), "%s call", c->model->id);
    edge_x402_send_quote(c->w->x402, c->req, c->dialect, c->hold_micro, c->resource_url, desc, code, reason,
                         message);
}

static void s_on_linked(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    if (!reply->ok)
        fb_log(FB_LOG_WARN, c->rid,
               "an x402 call's payment was not linked to its name: a retry cannot reuse it",
               "authorization_id=%" PRId64 " code=%s message=%s", c->authorization_id, reply->code,
               reply->message);
    if (!c->req) {
        c->money_done = true;
        s_mark_failed(c, "not served: the client left");
    } else {
        s_call_upstream(c);
    }
    s_maybe_free(c);
}

/* The payment is accepted: tie it to the call's name before it is settled, so
 * that a retry of a settled call is served without paying again. */
static void s_link(s_chat_t *c)
{
    json_t *body = edge_idem_call(&c->idem);
    json_object_set_new(body, "authorization_id", json_integer(c->authorization_id));
    char idem[EDGE_ID_TEXT_MAX + 32];
    snprintf(idem, sizeof(idem), "call-link:%s", c->idem.claim);
    c->pending++;
    edge_rpc_json(c->w->ledger, "ledger.call_link", body, idem, c->rid, MONEY_DEADLINE_MS, s_on_linked, c);
}

static void s_on_verified(void *arg, const fb_rpc_reply_t *reply)
{
    s_chat_t *c = arg;
    c->pending--;
    json_t *b = edge_reply_json(reply);
    if (!reply->ok && strcmp(reply->code, "bad_request") == 0) {
        /* the verifier could not take the payment as it is (a reserved resource, say): the
         * payer's to change, not a reason to try again later */
        if (c->req) {
            char text[400];
            snprintf(text, sizeof(text), "the payment was refused: invalid_payload: %s", reply->message);
            s_quote(c, "payment_invalid", "invalid_payload", text);
        }
    } else if (!reply->ok) {
        if (c->req)
            s_refuse(c, 503, "unavailable", NULL,
                     "the payment could not be checked now; nothing was charged");
    } else if (!json_is_true(json_object_get(b, "isValid"))) {
        if (c->req) {
            const char *reason = json_string_value(json_object_get(b, "invalidReason"));
            const char *msg = json_string_value(json_object_get(b, "invalidMessage"));
            char text[400];
            snprintf(text, sizeof(text), "the payment was refused: %s%s%s", reason ? reason : "invalid",
                     msg ? ": " : "", msg ? msg : "");
            s_quote(c, "payment_invalid", reason ? reason : "invalid_payment", text);
        }
    } else {
        c->authorization_id = json_integer_value(json_object_get(b, "authorizationId"));
        if (!c->req) {
            c->money_done = true;
            s_mark_failed(c, "not served: the client left");
        } else if (c->idem.claimed) {
            s_link(c);
        } else {
            s_call_upstream(c);
        }
    }
    json_decref(b);
    s_maybe_free(c);
}

/* Check the payment and record it (the ledger refuses it when used before). */
static void s_verify(s_chat_t *c)
{
    c->pending++;
    edge_rpc_json_long(c->w->verifier, "verifier.verify",
                       json_pack("{ss sO sb ss}", "header", c->pay_header, "requirements", c->pay_req,
                                 "record", 1, "resource", c->resource_url),
                       NULL, c->rid, VERIFY_DEADLINE_MS, s_on_verified, c);
}

/* The networks are known: quote, or check the payment the call carries. */
static void s_on_x402_ready(void *arg, const char *error)
{
    s_chat_t *c = arg;
    c->pending--;
    if (!c->req) {
        s_maybe_free(c);
        return;
    }
    if (error) {
        s_set_error(c, 503, "unavailable", NULL, "payments cannot be quoted now: %s", error);
        s_send_error(c);
    } else if (!c->pay_header) {
        s_quote(c, "payment_required", NULL,
                "this call costs at most the quoted amount: pay it with x402 (PAYMENT-SIGNATURE) or use an "
                "API key");
    } else {
        char err[300], desc[200];
        snprintf(desc, sizeof(desc), "%s call", c->model->id);
        c->pay_req = edge_x402_requirements(c->w->x402, c->pay_header, strlen(c->pay_header), c->hold_micro,
                                            c->resource_url, desc, &c->pay_version, err, sizeof(err));
        if (!c->pay_req) {
            char text[400];
            snprintf(text, sizeof(text), "the payment header cannot be used: %s", err);
            s_quote(c, "payment_invalid", "invalid_payload", text);
        } else if (c->idem.named) {
            /* the payment and the caller's key name the call */
            edge_idem_x402(&c->idem, c->pay_header);
            s_claim(c, s_verify);
        } else {
            s_verify(c);
        }
    }
    s_maybe_free(c);
}

/* How the call is paid: an API key, or x402 (a payment header, or a quote). */
static void s_pay(s_chat_t *c)
{
    h2o_req_t *req = c->req;
    h2o_iovec_t key;
    const edge_t *edge = c->w->edge;
    if (edge_request_key(req, &key) || !edge_x402_enabled(edge)) {
        c->pending++;
        edge_auth_key(c->w, req, c->rid, s_on_key, c);
        return;
    }
    h2o_iovec_t pay;
    int has = edge_x402_payment_header(req, &pay);
    if (has < 0) {
        s_refuse(c, 400, "invalid_request", NULL, "the payment header is empty or too large");
        return;
    }
    c->x402 = true;
    if (has)
        c->pay_header = fb_strndup(pay.base, pay.len);
    c->resource_url = edge_x402_resource_url(req);
    c->pending++;
    edge_x402_when_ready(c->w->x402, s_on_x402_ready, c);
}

/* --- reading the request --------------------------------------------------------------- */

/* The caller's max output tokens (field, if present) checked against the
 * model's cap; the cap when absent. Returns 0, or -1 with the error set. */
static int s_max_tokens(s_chat_t *c, json_t *v, const char *field, bool required)
{
    if (!v || json_is_null(v)) {
        if (required) {
            s_set_error(c, 400, "invalid_request", NULL, "%s is required", field);
            return -1;
        }
        c->max_output = c->model->max_output_tokens;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > c->model->max_output_tokens) {
        s_set_error(c, 400, "invalid_request", NULL,
                    "%s must be an integer from 1 to %" PRId64 " for model %s", field,
                    c->model->max_output_tokens, c->model->id);
        return -1;
    }
    c->max_output = json_integer_value(v);
    return 0;
}

static char *s_dump(json_t *doc, size_t *len)
{
    char *s = json_dumps(doc, JSON_COMPACT);
    FB_ASSERT(s);
    *len = strlen(s);
    return s;
}

/* s_body_as_sent - the provider gets the caller's bytes untouched when farebox
 * has nothing to change (the model asked for is the provider's own name):
 * numbers, escapes and key order as the caller wrote them, and no re-encoding.
 * The body was parsed with duplicate keys refused, so the provider reads the
 * same fields the edge priced. */
static bool s_body_as_sent(s_chat_t *c, json_t *body)
{
    if (strcmp(json_string_value(json_object_get(body, "model")), c->model->upstream) != 0)
        return false;
    c->up_body = fb_strndup(c->req->entity.base, c->req->entity.len);
    c->up_len = c->req->entity.len;
    return true;
}

/* OpenAI's service tiers farebox's prices hold for: a tier billed above the
 * list price (priority, scale) would cost the operator more than the catalog
 * charges. */
static int s_service_tier(s_chat_t *c, json_t *tier)
{
    static const char *const priced[] = {"auto", "default", "flex"};
    if (!tier || json_is_null(tier))
        return 0;
    for (size_t i = 0; json_is_string(tier) && i < FB_ARRAY_SIZE(priced); i++)
        if (strcmp(json_string_value(tier), priced[i]) == 0)
            return 0;
    s_set_error(c, 400, "invalid_request", NULL,
                "service_tier must be auto, default or flex here: another tier is billed above this "
                "catalog's prices");
    return -1;
}

static int s_read_chat(s_chat_t *c, json_t *body)
{
    if (!json_is_array(json_object_get(body, "messages")) ||
        json_array_size(json_object_get(body, "messages")) == 0) {
        s_set_error(c, 400, "invalid_request", NULL, "messages must be a non-empty array");
        return -1;
    }
    json_t *stream = json_object_get(body, "stream");
    if (stream && !json_is_boolean(stream) && !json_is_null(stream)) {
        s_set_error(c, 400, "invalid_request", NULL, "stream must be true or false");
        return -1;
    }
    c->stream = json_is_true(stream);
    c->caller_usage = json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
    /* both may be sent: each is checked, and the ceiling takes the larger
     * (a provider might honour either) */
    json_t *mct = json_object_get(body, "max_completion_tokens"), *mt = json_object_get(body, "max_tokens");
    if (s_max_tokens(c, mt, "max_tokens", false) != 0)
        return -1;
    int64_t asked = c->max_output; /* what a translated call sends: max_completion_tokens first */
    if (mct && !json_is_null(mct)) {
        int64_t other = mt && !json_is_null(mt) ? c->max_output : 0;
        if (s_max_tokens(c, mct, "max_completion_tokens", false) != 0)
            return -1;
        asked = c->max_output;
        if (other > c->max_output)
            c->max_output = other;
    }
    /* n answers may each produce max_output tokens: the ceiling covers them all
     * (translated models take n = 1 only, below) */
    json_t *n = json_object_get(body, "n");
    if (n && !json_is_null(n)) {
        if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > MAX_CHOICES) {
            s_set_error(c, 400, "invalid_request", NULL, "n must be an integer from 1 to %d", MAX_CHOICES);
            return -1;
        }
        c->choices = json_integer_value(n);
    }
    if (c->model->provider == EDGE_PROVIDER_ANTHROPIC) {
        char err[300];
        json_t *up = edge_tr_request(body, c->model->upstream, asked, err, sizeof(err));
        if (!up) {
            s_set_error(c, 400, "invalid_request", NULL, "%s", err);
            return -1;
        }
        c->translate = true;
        edge_tr_stream_init(&c->tr, c->requested, c->caller_usage);
        c->up_body = s_dump(up, &c->up_len);
        json_decref(up);
        return 0;
    }
    if (s_service_tier(c, json_object_get(body, "service_tier")) != 0)
        return -1;
    bool no_max = (!mt || json_is_null(mt)) && (!mct || json_is_null(mct));
    if (!no_max && (!c->stream || c->caller_usage) && s_body_as_sent(c, body))
        return 0;
    if (no_max) /* the ceiling counted the model's output cap: the provider is told it */
        json_object_set_new(body, "max_completion_tokens", json_integer(c->max_output));
    json_object_set_new(body, "model", json_string(c->model->upstream));
    if (c->stream) {
        /* the usage chunk is how a stream's cost is known */
        json_t *so = json_object_get(body, "stream_options");
        if (!json_is_object(so)) {
            so = json_object();
            json_object_set_new(body, "stream_options", so);
        }
        json_object_set_new(so, "include_usage", json_true());
    }
    c->up_body = s_dump(body, &c->up_len);
    return 0;
}

static int s_read_messages(s_chat_t *c, json_t *body)
{

    if (!json_is_array(json_object_get(body, "messages")) ||
        json_array_size(json_object_get(body, "messages")) == 0) {
        s_set_error(c, 400, "invalid_request", NULL, "messages must be a non-empty array");
        return -1;
    }
    json_t *stream = json_object_get(body, "stream");
    if (stream && !json_is_boolean(stream)) {
        s_set_error(c, 400, "invalid_request", NULL, "stream must be true or false");
        return -1;
    }
    c->stream = json_is_true(stream);
    if (s_max_tokens(c, json_object_get(body, "max_tokens"), "max_tokens", true) != 0)
        return -1;
    if (c->model->provider == EDGE_PROVIDER_OPENAI) {
        char err[300];
        json_t *up = edge_rev_request(body, c->model->upstream, err, sizeof(err));
        if (!up) {
            s_set_error(c, 400, "invalid_request", NULL, "%s", err);
            return -1;
        }
        c->reverse = true;
        edge_rev_stream_init(&c->rev, c->requested);
        c->up_body = s_dump(up, &c->up_len);
        json_decref(up);
        return 0;
    }
    if (s_body_as_sent(c, body))
        return 0;
    json_object_set_new(body, "model", json_string(c->model->upstream));
    c->up_body = s_dump(body, &c->up_len);
    return 0;
}

static int s_read_prompt(s_chat_t *c, json_t *body)
{
    static const char *const known[] = {"model", "prompt", "system", "max_tokens", "temperature", "payment"};
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        bool ok = false;
        for (size_t i = 0; i < FB_ARRAY_SIZE(known); i++)
            ok = ok || strcmp(key, known[i]) == 0;
        if (!ok) {
            s_set_error(c, 400, "invalid_request", NULL, "unknown field %.100s", key);
            return -1;
        }
    }
    json_t *payment = json_object_get(body, "payment");
    if (payment) {
        bool scalars = json_is_object(payment);
        const char *pk;
        json_t *pv;
        json_object_foreach(payment, pk, pv) scalars = scalars && !json_is_object(pv) && !json_is_array(pv);
        if (!scalars || json_object_size(payment) > 8) {
            s_set_error(
                c, 400, "invalid_request", NULL,
                "payment must be an object of plain values: {network, from, amount, timestamp, requestId, "
                "signature}");
            return -1;
        }
        c->proof = json_incref(payment);
    }
    json_t *prompt = json_object_get(body, "prompt"), *sys = json_object_get(body, "system"),
           *temp = json_object_get(body, "temperature");
    if (!json_is_string(prompt) || json_string_length(prompt) == 0) {
        s_set_error(c, 400, "invalid_request", NULL, "prompt must be a non-empty string");
        return -1;
    }
    if ((sys && !json_is_string(sys)) || (temp && !json_is_number(temp))) {
        s_set_error(c, 400, "invalid_request", NULL, "system must be a string and temperature a number");
        return -1;
    }
    json_t *mt = json_object_get(body, "max_tokens");
    if (s_max_tokens(c, mt, "max_tokens", false) != 0)
        return -1;
    json_t *up = json_pack("{ss}", "model", c->model->upstream), *msgs = json_array();
    if (c->model->provider == EDGE_PROVIDER_ANTHROPIC) {
        json_object_set_new(up, "max_tokens", json_integer(c->max_output));
        if (sys)
            json_object_set(up, "system", sys);
    } else {
        /* the ceiling's output, told to the provider (the model's cap when none was asked) */
        json_object_set_new(up, mt && !json_is_null(mt) ? "max_tokens" : "max_completion_tokens",
                            json_integer(c->max_output));
        if (sys)
            json_array_append_new(msgs, json_pack("{ss sO}", "role", "system", "content", sys));
    }
    json_array_append_new(msgs, json_pack("{ss sO}", "role", "user", "content", prompt));
    json_object_set_new(up, "messages", msgs);
    if (temp)
        json_object_set(up, "temperature", temp);
    c->up_body = s_dump(up, &c->up_len);
    json_decref(up);
    return 0;
}

static const char *s_route_name(s_route_t route)
{
    return route == ROUTE_CHAT ? "chat" : route == ROUTE_MESSAGES ? "messages" : "prompt";
}

static char *s_header_copy(h2o_req_t *req, const char *name, size_t max)
{
    h2o_iovec_t v = fb_http_header(req, name);
    return v.base && v.len <= max ? fb_strndup(v.base, v.len) : NULL;
}

/* A call's state, once its model is known. */
static s_chat_t *s_new_chat(edge_worker_t *w, h2o_req_t *req, const char *rid, s_route_t route,
                            edge_dialect_t dialect, const edge_model_t *m, const char *requested, size_t len)
{
    s_chat_t *c = fb_calloc(1, sizeof(*c));
    c->t0_ms = fb_mono_ms();
    c->super.proceed = s_on_proceed;
    c->super.stop = s_on_stop;
    c->w = w;
    c->req = req;
    w->active_requests++;
    fb_copy_str(c->rid, sizeof(c->rid), rid);
    c->route = route;
    c->dialect = dialect;
    c->model = m;
    c->choices = 1;
    size_t n = len < sizeof(c->requested) - 1 ? len : sizeof(c->requested) - 1;
    memcpy(c->requested, requested, n);
    c->requested[n] = '\0';
    s_link_t *link = h2o_mem_alloc_shared(&req->pool, sizeof(*link), s_req_gone);
    link->chat = c;
    c->linked = true;
    return c;
}

/* An integer field read by the scan as s_max_tokens / the n check read it:
 * absent or null gives dflt; else an integer in 1..max; -1 for anything else
 * (the full parse then answers the error). */
static int64_t s_scanned_count(edge_scan_value_t v, int64_t dflt, int64_t max)
{
    if (v.kind == EDGE_SCAN_ABSENT || v.kind == EDGE_SCAN_NULL)
        return dflt;
    return v.kind == EDGE_SCAN_INTEGER && v.value >= 1 && v.value <= max ? v.value : -1;
}

/* s_scanned_chat - a chat completions request read by edge_scan: when it
 * goes to its OpenAI provider as sent (its model the provider's own name; a
 * stream asking for its usage) and every field s_read_chat checks is good, the
 * call is set up without building the request as a document (parsing it
 * with jansson was ~11 % of a paid call's instructions). NULL otherwise: the
 * full parse decides, errors included. */
static s_chat_t *s_scanned_chat(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    edge_scan_request_t q;
    if (!edge_scan_openai_request(req->entity.base, req->entity.len, &q) || q.model_len == 0 ||
        q.messages < 1)
        return NULL;
    const edge_model_t *m = edge_catalog_find(w->edge->catalog, q.model, q.model_len);
    if (!m || m->provider != EDGE_PROVIDER_OPENAI || strlen(m->upstream) != q.model_len ||
        memcmp(m->upstream, q.model, q.model_len) != 0)
        return NULL;
    bool stream = q.stream.kind == EDGE_SCAN_TRUE;
    if (q.stream.kind == EDGE_SCAN_OTHER || q.stream.kind == EDGE_SCAN_INTEGER ||
        (stream && q.include_usage.kind != EDGE_SCAN_TRUE))
        return NULL;
    edge_scan_value_t mct = q.max_completion_tokens;
    bool has_mct = mct.kind != EDGE_SCAN_ABSENT && mct.kind != EDGE_SCAN_NULL,
         has_mt = q.max_tokens.kind != EDGE_SCAN_ABSENT && q.max_tokens.kind != EDGE_SCAN_NULL;
    int64_t max_output =
        s_scanned_count(has_mct ? mct : q.max_tokens, m->max_output_tokens, m->max_output_tokens);
    if (has_mct && has_mt) { /* both: each checked, the larger taken (as s_read_chat) */
        int64_t other = s_scanned_count(q.max_tokens, m->max_output_tokens, m->max_output_tokens);
        if (other < 0)
            return NULL;
        if (other > max_output && max_output >= 0)
            max_output = other;
    }
    int64_t choices = s_scanned_count(q.n, 1, MAX_CHOICES);
    /* a max given as null, or a service tier named (the full parse reads them) */
    if (max_output < 0 || choices < 0 || (!has_mct && !has_mt && mct.kind != EDGE_SCAN_ABSENT) ||
        memmem(req->entity.base, req->entity.len, "service_tier", 12))
        return NULL;
    s_chat_t *c = s_new_chat(w, req, rid, ROUTE_CHAT, EDGE_OPENAI, m, q.model, q.model_len);
    c->stream = stream;
    c->caller_usage = q.include_usage.kind == EDGE_SCAN_TRUE;
    c->max_output = max_output;
    c->choices = choices;
    if (has_mct || has_mt) {
        c->up_body = fb_strndup(req->entity.base, req->entity.len);
        c->up_len = req->entity.len;
    } else {
        /* no max asked: the ceiling counted the model's output cap, and the provider is told it
         * (first in the object, which has members: messages at least) */
        const char *open = memchr(req->entity.base, '{', req->entity.len); /* the scan read an object */
        FB_ASSERT(open);
        char head[48];
        int n = snprintf(head, sizeof(head), "{\"max_completion_tokens\":%" PRId64 ",", max_output);
        size_t rest = req->entity.len - (size_t)(open + 1 - req->entity.base);
        c->up_len = (size_t)n + rest;
        c->up_body = fb_malloc(c->up_len + 1);
        memcpy(c->up_body, head, (size_t)n);
        memcpy(c->up_body + n, open + 1, rest);
        c->up_body[c->up_len] = '\0';
    }
    return c;
}

/* s_parsed_chat - the request parsed with jansson and read by its route;
 * NULL when it was refused (the error is answered). */
static s_chat_t *s_parsed_chat(edge_worker_t *w, h2o_req_t *req, const char *rid, s_route_t route,
                               edge_dialect_t dialect)
{
    json_error_t jerr;
    json_t *body =
        json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(body)) {
        edge_error(req, dialect, 400, "invalid_request", NULL, "the body must be a JSON object%s%s",
                   body ? "" : ": ", body ? "" : jerr.text);
        json_decref(body);
        return NULL;
    }
    json_t *model = json_object_get(body, "model");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        edge_error(req, dialect, 400, "invalid_request", NULL, "model must be a non-empty string");
        json_decref(body);
        return NULL;
    }
    const edge_model_t *m =
        edge_catalog_find(w->edge->catalog, json_string_value(model), json_string_length(model));
    if (!m) {
        edge_error(req, dialect, 404, "model_not_found", NULL,
                   "model %.128s is not served here (GET /v1/models)", json_string_value(model));
        json_decref(body);
        return NULL;
    }
    s_chat_t *c = s_new_chat(w, req, rid, route, dialect, m, json_string_value(model),
                             strlen(json_string_value(model)));
    int rc = route == ROUTE_CHAT       ? s_read_chat(c, body)
             : route == ROUTE_MESSAGES ? s_read_messages(c, body)
                                       : s_read_prompt(c, body);
    /* Anthropic adds a system prompt of its own to a call with tools, billed as input */
    c->tool_prompt =
        c->model->provider == EDGE_PROVIDER_ANTHROPIC && json_array_size(json_object_get(body, "tools")) > 0;
    json_decref(body);
    if (rc != 0) {
        s_send_error(c);
        return NULL;
    }
    return c;
}

/* After the key at k (a quote just past its name), a ':' and the start of a
 * string value beginning with prefix (NULL: any value), whitespace allowed. */
static bool s_value_starts(const char *k, const char *end, const char *prefix)
{
    while (k < end && (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r'))
        k++;
    if (k >= end || *k++ != ':')
        return false;
    if (!prefix)
        return true;
    while (k < end && (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r'))
        k++;
    size_t n = strlen(prefix);
    return k < end && *k == '"' && (size_t)(end - k - 1) >= n && memcmp(k + 1, prefix, n) == 0;
}

static bool s_input_marks(const char *body, size_t len)
{
    /* a key's name between quotes cannot appear inside a JSON string (its
     * quotes would be escaped): these matches are keys, or, rarely, keys
     * ending so — a larger hold, never a smaller one */
    static const struct {
        const char *key, *prefix;
    } marks[] = {
        {"\"url\"", "http"},       /* media or a document by URL, fetched by the provider */
        {"\"file_id\"", NULL},     /* a file uploaded to the provider */
        {"\"image_url\"", NULL},   /* an image, even inline: a provider bills an image's */
        {"\"input_audio\"", NULL}, /* tokens by its pixels or length, not its bytes */
        {"\"type\"", "image"},
        {"\"type\"", "document"},
        {"\"type\"", "file"},
        {"\"type\"", "input_audio"},
        {"\"mcp_servers\"", NULL}, /* MCP servers the provider calls */
        {"\"web_search_options\"", NULL},
        {"\"type\"", "web_search"}, /* server tools: their results are input too */
        {"\"type\"", "web_fetch"},
        {"\"type\"", "code_execution"},
        {"\"type\"", "mcp"},
    };
    const char *end = body + len;
    for (size_t i = 0; i < FB_ARRAY_SIZE(marks); i++) {
        size_t kl = strlen(marks[i].key);
        for (const char *p = body; (p = memmem(p, (size_t)(end - p), marks[i].key, kl)); p += kl)
            if (s_value_starts(p + kl, end, marks[i].prefix))
                return true;
    }
    return false;
}

bool edge_chat_input_unbounded(const char *body, size_t len)
{
    if (!body)
        return false;
    if (!memmem(body, len, "\\u", 2))
        return s_input_marks(body, len);
    /* \u escapes can spell a mark's key or value ("\u0075rl"), which the
     * provider reads as the mark itself: look at the document re-encoded, its
     * strings as they read (not parsed: refused elsewhere; a larger hold here) */
    json_t *doc = json_loadb(body, len, 0, NULL);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    bool unbounded = !text || s_input_marks(text, strlen(text));
    free(text);
    json_decref(doc);
    return unbounded;
}

/* Whether o is an object holding only keys of keys[] (n of them), the first among them. */
static bool s_only_keys(json_t *o, const char *const *keys, size_t n)
{
    if (!json_is_object(o) || !json_object_get(o, keys[0]))
        return false;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        size_t i = 0;
        while (i < n && strcmp(k, keys[i]) != 0)
            i++;
        if (i == n)
            return false;
    }
    return true;
}

/* Whether part is an image, and nothing else, in a shape a provider reads:
 * OpenAI's {"type": "image_url", "image_url": {"url", "detail"}} or
 * Anthropic's {"type": "image", "source": {base64 data, a URL or a file id},
 * "cache_control"}; *payload: the bytes of its data or URL. */
static bool s_image_part(json_t *part, size_t *payload)
{
    static const char *const openai[] = {"image_url", "type"}, *const image_url[] = {"url", "detail"},
                             *const anthropic[] = {"source", "type", "cache_control"},
                             *const base64[] = {"type", "media_type", "data"}, *const url[] = {"type", "url"},
                             *const file[] = {"type", "file_id"};
    json_t *type = json_object_get(part, "type");
    if (s_str_is(type, "image_url") && s_only_keys(part, openai, 2)) {
        json_t *iu = json_object_get(part, "image_url"), *u = json_object_get(iu, "url"),
               *detail = json_object_get(iu, "detail");
        if (!s_only_keys(iu, image_url, 2) || !json_is_string(u) || (detail && !json_is_string(detail)))
            return false;
        *payload = json_string_length(u);
        return true;
    }
    if (!s_str_is(type, "image") || !s_only_keys(part, anthropic, 3))
        return false;
    json_t *src = json_object_get(part, "source"), *st = json_object_get(src, "type");
    if (s_str_is(st, "base64") && s_only_keys(src, base64, 3) &&
        json_is_string(json_object_get(src, "media_type")) && json_is_string(json_object_get(src, "data"))) {
        *payload = json_string_length(json_object_get(src, "data"));
        return true;
    }
    if (s_str_is(st, "url") && s_only_keys(src, url, 2) && json_is_string(json_object_get(src, "url"))) {
        *payload = json_string_length(json_object_get(src, "url"));
        return true;
    }
    if (s_str_is(st, "file") && s_only_keys(src, file, 2) &&
        json_is_string(json_object_get(src, "file_id"))) {
        *payload = 0;
        return true;
    }
    return false;
}

/* Replaces by null every image part in an array under v, counting them and
 * their payloads' bytes. */
static void s_take_images(json_t *v, size_t *count, size_t *bytes)
{
    size_t i, payload;
    const char *k;
    json_t *x;
    if (json_is_array(v)) {
        json_array_foreach(v, i, x)
        {
            if (s_image_part(x, &payload)) {
                (*count)++;
                *bytes += payload;
                json_array_set_new(v, i, json_null());
            } else {
                s_take_images(x, count, bytes);
            }
        }
    } else if (json_is_object(v)) {
        json_object_foreach(v, k, x) s_take_images(x, count, bytes);
    }
}

int64_t edge_chat_image_input(const char *body, size_t len, int64_t image_tokens)
{
    if (!body || image_tokens <= 0)
        return -1;
    json_t *doc = json_loadb(body, len, 0, NULL);
    size_t count = 0, bytes = 0;
    s_take_images(doc, &count, &bytes);
    /* what is left is read as edge_chat_input_unbounded reads an escaped body: its strings as they read */
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    bool other = !text || s_input_marks(text, strlen(text));
    free(text);
    json_decref(doc);
    if (other || bytes > len)
        return -1;
    /* a payload's bytes as it reads are at most its bytes in the body (escapes only lengthen it) */
    return (int64_t)(len - bytes) + (int64_t)count * image_tokens;
}

static int s_begin(edge_worker_t *w, h2o_req_t *req, const char *rid, s_route_t route)
{
    edge_dialect_t dialect = route == ROUTE_MESSAGES ? EDGE_ANTHROPIC
                             : route == ROUTE_PROMPT ? EDGE_CHAT402
                                                     : EDGE_OPENAI;
    if (route == ROUTE_MESSAGES && !fb_http_header(req, "anthropic-version").base) {
        edge_error(req, dialect, 400, "invalid_request", NULL, "the anthropic-version header is required");
        return 0;
    }
    /* the common case read without building the request as a document */
    s_chat_t *c = route == ROUTE_CHAT && req->entity.base ? s_scanned_chat(w, req, rid) : NULL;
    if (!c && !(c = s_parsed_chat(w, req, rid, route, dialect)))
        return 0;
    const edge_model_t *m = c->model;
    if (edge_idem_read(&c->idem, req, s_route_name(route)) < 0) {
        s_refuse(c, 400, "invalid_request", NULL,
                 "Idempotency-Key must be 1..128 characters of A-Z a-z 0-9 - _ . :");
        return 0;
    }
    if (route == ROUTE_MESSAGES) {
        c->anthropic_version = s_header_copy(req, "anthropic-version", 64);
        c->anthropic_beta = s_header_copy(req, "anthropic-beta", 512);
        /* a beta that changes the price (the 1M context: input over 200k billed at about twice
         * the price) is not this catalog's */
        if (c->anthropic_beta && strstr(c->anthropic_beta, "context-1m")) {
            s_refuse(c, 400, "invalid_request", NULL,
                     "anthropic-beta context-1m is not offered here: its long-context prices are not "
                     "this catalog's");
            return 0;
        }
    }
    int64_t tool_prompt = c->tool_prompt ? ANTHROPIC_TOOL_PROMPT_TOKENS : 0;
    c->input_estimate = (int64_t)req->entity.len + tool_prompt;
    if (edge_chat_input_unbounded(req->entity.base, req->entity.len)) {
        /* the model's whole context: the most input it can take; less when only images, of a known
         * most each, are beyond the bytes */
        int64_t most = m->context_tokens > c->input_estimate ? m->context_tokens : c->input_estimate;
        int64_t images = edge_chat_image_input(req->entity.base, req->entity.len, m->image_tokens);
        c->input_estimate = images >= 0 && images + tool_prompt < most ? images + tool_prompt : most;
    }
    int64_t a = edge_cost_micro(c->input_estimate, m->input_price),
            b = edge_cost_micro(c->max_output * c->choices, m->output_price);
    c->hold_micro = edge_add_micro(a, b);
    if (c->hold_micro < 1)
        c->hold_micro = 1; /* a free model still holds the smallest unit: the ledger's amounts start at 1 */
    s_pay(c);
    return 0;
}

int edge_chat_completions(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    return s_begin(w, req, rid, ROUTE_CHAT);
}

int edge_chat_messages(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    return s_begin(w, req, rid, ROUTE_MESSAGES);
}

int edge_chat_prompt(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    return s_begin(w, req, rid, ROUTE_PROMPT);
}

/* --- the key watch: calls of a key revoked meanwhile are cut within a second ----------- */

typedef struct {
    edge_worker_t *w;
    uint8_t mac[32];
} s_watch_t;

/* The key was revoked while c's provider call ran: the call ends now; what
 * was delivered is charged, and a call that delivered nothing is voided. */
static void s_revoked(s_chat_t *c)
{
    edge_call_cancel(&c->call);
    fb_log(FB_LOG_INFO, c->rid, "key revoked during the call: cut", "key_id=%" PRId64, c->key_id);
    if (c->produced) {
        snprintf(c->up_error, sizeof(c->up_error), "the API key was revoked during the call");
        s_resolve(c, s_cost(c), s_close_stream);
    } else {
        s_set_error(c, 401, "key_revoked", NULL,
                    "the API key was revoked during the call; nothing was charged");
        s_resolve(c, -1, s_send_error);
    }
}

static void s_on_watch(void *arg, const edge_key_t *k)
{
    s_watch_t *wt = arg;
    if (k->status == 401) {
        s_chat_t *next;
        for (s_chat_t *c = wt->w->chats; c; c = next) {
            next = c->next;
            if (memcmp(c->mac, wt->mac, sizeof(wt->mac)) != 0)
                continue;
            edge_purse_retire_key(wt->w->purse, c->key_id); /* its slices take no new call */
            if (c->call && c->req && !c->money_done)
                s_revoked(c);
        }
    }
    free(wt);
}

static int s_mac_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

void edge_chat_watch_keys(edge_worker_t *w)
{
    /* keys looked up each second: past that many keys in flight, the rest are looked up in turn */
    enum { KEYS_PER_TICK = 1024 };
    static __thread size_t turn;
    size_t n = 0, cap = 0;
    for (s_chat_t *c = w->chats, *next; c; c = next) {
        next = c->next; /* c stays listed until h2o disposes of its request */
        s_check_client(c);
    }
    int64_t now = fb_mono_ms();
    for (s_chat_t *c = w->chats; c; c = c->next)
        if (!c->x402 && c->call && now - c->t0_ms >= 1000)
            cap++;
    if (cap == 0)
        return;
    uint8_t(*macs)[32] = fb_malloc(cap * 32);
    for (s_chat_t *c = w->chats; c && n < cap; c = c->next)
        if (!c->x402 && c->call && now - c->t0_ms >= 1000)
            memcpy(macs[n++], c->mac, 32);
    qsort(macs, n, 32, s_mac_cmp);
    size_t keys = 0;
    for (size_t i = 0; i < n; i++)
        if (keys == 0 || memcmp(macs[keys - 1], macs[i], 32) != 0)
            memcpy(macs[keys++], macs[i], 32);
    size_t ask = keys < KEYS_PER_TICK ? keys : KEYS_PER_TICK;
    for (size_t i = 0; i < ask; i++) {
        s_watch_t *wt = fb_calloc(1, sizeof(*wt));
        wt->w = w;
        memcpy(wt->mac, macs[(turn + i) % keys], 32);
        edge_auth_lookup(w, wt->mac, true, NULL, s_on_watch, wt);
    }
    turn = (turn + ask) % keys;
    free(macs);
}

int edge_chat_test(bool verbose)
{
    FB_UNUSED(verbose);
    FB_ASSERT(edge_chat_output_estimate(0, 0) == 1);
    FB_ASSERT(edge_chat_output_estimate(5, 9) == 5);
    FB_ASSERT(edge_chat_output_estimate(2, 10) == 4);
    FB_ASSERT(edge_chat_output_estimate(0, 1) == 1);
    /* input the provider adds or bills beyond its bytes: by URL, by file id,
     * media even inline, server tools, escapes spelling any of them; not a URL
     * or a key's name in text */
    static const struct {
        const char *body;
        bool unbounded;
    } bodies[] = {
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", false},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"see https://example.com and \\\"url\\\": "
         "\\\"http\"}]}",
         false},
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}",
         true},
        {"{\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"data\":\"AAAA\"}}]}", true},
        {"{\"content\":[{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"AAAA\"}}]}", true},
        {"{\"content\":[{\"type\":\"file\",\"file\":{\"file_data\":\"AAAA\"}}]}", true},
        {"{\"content\":[{\"type\":\"text\",\"text\":\"an image_url \\\"type\\\": \\\"image\"}]}", false},
        /* escapes that spell a mark */
        {"{\"content\":[{\"x\":{\"url\":\"\\u0068ttps://example.com/a.png\"}}]}", true},
        {"{\"content\":[{\"x\":{\"\\u0075rl\":\"https://example.com/a.png\"}}]}", true},
        {"{\"tools\":[{\"typ\\u0065\":\"web_search_20250305\"}]}", true},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9\"}]}", false},
        {"{\"messages\":[\"\\u0075rl\" broken", true},
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\": \"https://x/y.png\"}}]}", true},
        {"{\"content\":[{\"type\":\"document\",\"source\":{\"type\":\"url\",\"url\" :\"http://x/a.pdf\"}}]}",
         true},
        {"{\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"file\",\"file_id\":\"file_1\"}}]}", true},
        {"{\"tools\":[{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}]}", true},
        {"{\"tools\":[{\"type\": \"code_execution_20250522\"}]}", true},
        {"{\"mcp_servers\":[]}", true},
        {"{\"web_search_options\":{}}", true},
        {"{\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"web_search\"}}]}", false},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(bodies); i++) {
        if (edge_chat_input_unbounded(bodies[i].body, strlen(bodies[i].body)) != bodies[i].unbounded) {
            fprintf(stderr, "input case %zu: %s\n", i, bodies[i].body);
            FB_ASSERT(0);
        }
    }
    FB_ASSERT(!edge_chat_input_unbounded(NULL, 0) && !edge_chat_input_unbounded("\"url\"", 5));
    /* images of a known most each: the bytes less their payloads, plus that most per image; -1
     * when anything else is beyond the bytes, or the part has more than an image in it */
    static const struct {
        const char *body;
        int64_t payload; /* the images' payload bytes, or -1 */
        int64_t images;
    } images[] = {
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}",
         26, 1},
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x/"
         "y.png\",\"detail\":\"low\"}},"
         "{\"type\":\"text\",\"text\":\"and\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"\\u0068ttps:/"
         "/x\"}}]}",
         24, 2},
        {"{\"messages\":[{\"content\":[{\"type\":\"tool_result\",\"content\":[{\"type\":\"image\",\"source\":"
         "{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"AAAAAAAA\"},\"cache_control\":{}}]}]},"
         "{\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://x/a.png\"}},"
         "{\"type\":\"image\",\"source\":{\"type\":\"file\",\"file_id\":\"file_1\"}}]}]}",
         23, 3},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 0, 0},
        /* other input beyond the bytes, beside an image or in its place */
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:,A\"}},"
         "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"AAAA\"}}]}",
         -1, 0},
        {"{\"content\":[{\"type\":\"document\",\"source\":{\"type\":\"url\",\"url\":\"http://x/a.pdf\"}}]}",
         -1, 0},
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:,A\"}}],"
         "\"tools\":[{\"type\":\"web_search_20250305\"}]}",
         -1, 0},
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:,A\",\"url2\":\"x\"}}]}", -1,
         0},
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x\"},\"extra\":1}]}", -1, 0},
        {"{\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"data\":\"AAAA\"}}]}", -1, 0},
        {"{\"content\":{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x\"}}}", -1, 0},
        {"{\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":7}}]}", -1, 0},
        {"{\"content\":[{\"type\":\"image_url\"", -1, 0},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(images); i++) {
        size_t len = strlen(images[i].body);
        int64_t want =
            images[i].payload < 0 ? -1 : (int64_t)len - images[i].payload + images[i].images * 1000;
        if (edge_chat_image_input(images[i].body, len, 1000) != want) {
            fprintf(stderr, "image case %zu: %s: %" PRId64 "\n", i, images[i].body,
                    edge_chat_image_input(images[i].body, len, 1000));
            FB_ASSERT(0);
        }
    }
    FB_ASSERT(edge_chat_image_input(images[0].body, strlen(images[0].body), 0) == -1);
    FB_ASSERT(edge_chat_image_input(NULL, 0, 1000) == -1);
    return 0;
}
