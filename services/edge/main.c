/* farebox-edge - the public HTTP API.
 *
 *   configuration  listen addresses, TLS files, worker threads, limits
 *   h2o            HTTP/1.1, h2 over TLS (ALPN) and h2c with prior knowledge
 *   routes         edge_routes.c: health, readiness, the paid API
 *   catalog        edge_catalog.c: the models and prices (/v1/models, /v1/pricing)
 *   keys           edge_auth.c: API keys through the ledger, /v1/balance
 *   admin          edge_admin.c: the operator's API under /admin/, answered by the ledger
 *   paid calls     edge_chat.c: chat completions, messages, prompt: key, hold, provider, commit
 *   x402           edge_x402.c: quotes, requirements (pay-per-call and topups)
 *   topups         edge_topup.c: POST /v1/topup credits an account from an x402 payment
 *   limits         edge_limit.c: token buckets per IP and per key, in-flight calls per key
 *   providers      edge_upstream.c (libcurl on the loop), edge_sse.c, edge_translate.c
 *   facilitator    edge_facilitator.c: the x402 facilitator API, answered by the verifier
 *   workers        edge_worker.c: one loop per thread, each with RPC clients
 *   stop           SIGTERM stops accepting, waits for requests in flight */
#include "edge.h"
#include "edge_catalog.h"
#include "edge_limit.h"
#include "edge_routes.h"
#include "edge_worker.h"
#include "edge_upstream.h"
#include "fb_apikey.h"
#include "fb_curlm.h"
#include "fb_evm.h"
#include "fb_solana.h"
#include "fb_http.h"
#include "fb_jsonrpc.h"
#include "fb_log.h"
#include "fb_util.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A provider base URL: http(s), no trailing slash, short enough to extend. */
static int s_check_url(const char *text, char *err, size_t errlen)
{
    size_t n = strlen(text);
    if ((strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0) || n > 200 ||
        text[n - 1] == '/') {
        snprintf(err, errlen,
                 "must be an http:// or https:// URL of at most 200 characters without a trailing /");
        return -1;
    }
    /* parsed once here the way every call will use it (edge_route_prepare) */
    CURLU *u = curl_url();
    FB_ASSERT(u);
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, text, 0);
    curl_url_cleanup(u);
    if (uc != CURLUE_OK) {
        snprintf(err, errlen, "is not a URL libcurl can use: %s", curl_url_strerror(uc));
        return -1;
    }
    return 0;
}

static int s_check_fallback_url(const char *text, char *err, size_t errlen)
{
    return text[0] ? s_check_url(text, err, errlen) : 0;
}

static int s_check_evm_address(const char *text, char *err, size_t errlen)
{
    fb_addr_t a;
    if (text[0] && fb_addr_parse(&a, text, strlen(text)) != 0) {
        snprintf(err, errlen, "must be 0x and 40 hex digits (a valid EIP-55 checksum when mixed case)");
        return -1;
    }
    return 0;
}

static int s_check_solana_address(const char *text, char *err, size_t errlen)
{
    fb_sol_key_t k;
    if (text[0] && fb_sol_key_parse(&k, text, strlen(text)) != 0) {
        snprintf(err, errlen, "must be a base58 Solana address");
        return -1;
    }
    return 0;
}

static int s_check_proxies(const char *text, char *err, size_t errlen)
{
    return edge_limit_trust(NULL, text, err, errlen);
}

static const fb_config_var_t s_vars[] = {
    {"FAREBOX_HTTP_LISTEN", FB_CFG_STRING, "127.0.0.1:8402", 0, 0, NULL, fb_http_check_hostport,
     "cleartext listen address: HTTP/1.1, and HTTP/2 without TLS (prior knowledge or Upgrade: h2c)"},
    {"FAREBOX_HTTPS_LISTEN", FB_CFG_STRING, "127.0.0.1:8443", 0, 0, NULL, fb_http_check_hostport,
     "TLS listen address (h2 and http/1.1 by ALPN); used when a certificate is configured"},
    {"FAREBOX_TLS_CERT_FILE", FB_CFG_STRING, "", 0, 0, NULL, NULL,
     "PEM certificate chain for the TLS listener (unset: no TLS listener)"},
    {"FAREBOX_TLS_KEY_FILE", FB_CFG_STRING, "", 0, 0, NULL, NULL, "PEM private key of the TLS certificate"},
    {"FAREBOX_HTTP2", FB_CFG_BOOL, "true", 0, 0, NULL, NULL,
     "speak HTTP/2 to clients (h2 by ALPN, h2c by prior knowledge or Upgrade); false: HTTP/1.1 only — for an "
     "edge facing untrusted clients without a load balancer ending HTTP/2 (h2o 2.2's HTTP/2 lets one "
     "request's headers grow about 100x in memory, and 100 streams of a connection each buffer a body)"},
    {"FAREBOX_EDGE_THREADS", FB_CFG_INT, "1", 1, 64, NULL, NULL,
     "HTTP worker threads (each has its own loop)"},
    {"FAREBOX_HTTP_MAX_BODY", FB_CFG_INT, "1048576", 1024, 67108864, NULL, NULL,
     "largest request body accepted, in bytes"},
    {"FAREBOX_HTTP_IDLE_TIMEOUT_MS", FB_CFG_INT, "10000", 1000, 3600000, NULL, NULL,
     "a client connection idle this long is closed, and a request must arrive whole within it; behind a load "
     "balancer, set it above the balancer's own keep-alive, so that the balancer, not the edge, ends idle "
     "connections (an edge closing one as the balancer sends on it fails that request)"},
    {"FAREBOX_STOP_DELAY_MS", FB_CFG_INT, "0", 0, 60000, NULL, NULL,
     "on SIGTERM, /healthz and /readyz answer 503 at once, and the edge goes on serving everything else "
     "this long before it stops accepting (set it above the time a load balancer takes to see a failed "
     "health check)"},
    {"FAREBOX_READY_TIMEOUT_MS", FB_CFG_INT, "1000", 10, 60000, NULL, NULL,
     "/readyz waits this long for the ledger and verifier to answer"},
    {"FAREBOX_FACILITATOR_TOKEN", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "bearer token that /facilitator/verify and /settle require (unset: they answer 403 unless open)"},
    {"FAREBOX_FACILITATOR_OPEN", FB_CFG_BOOL, "false", 0, 0, NULL, NULL,
     "serve /facilitator/verify and /settle to anyone, like a public facilitator (settlements spend your "
     "gas)"},
    {"FAREBOX_ADMIN_TOKEN", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "bearer token of the admin API under /admin/ (unset: the admin API answers 403)"},
    {"FAREBOX_KEY_HMAC_SECRET", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "the ledger's secret keying the HMAC of API keys (unset: API keys are refused with 503)"},
    {"FAREBOX_CATALOG_FILE", FB_CFG_STRING, "", 0, 0, NULL, NULL,
     "the model catalog, JSON (README: Models and prices; unset: the built-in catalog)"},
    {"FAREBOX_OPENAI_API_KEY", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "OpenAI API key (unset: OpenAI models are answered by the mock model)"},
    {"FAREBOX_OPENAI_BASE_URL", FB_CFG_STRING, "https://api.openai.com", 0, 0, NULL, s_check_url,
     "where OpenAI calls go (/v1/chat/completions is appended)"},
    {"FAREBOX_ANTHROPIC_API_KEY", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "Anthropic API key (unset: Anthropic models are answered by the mock model)"},
    {"FAREBOX_ANTHROPIC_BASE_URL", FB_CFG_STRING, "https://api.anthropic.com", 0, 0, NULL, s_check_url,
     "where Anthropic calls go (/v1/messages is appended)"},
    {"FAREBOX_OPENAI_FALLBACK_URL", FB_CFG_STRING, "", 0, 0, NULL, s_check_fallback_url,
     "a second OpenAI-compatible route: a call whose provider could not be reached or answered 429/5xx "
     "before any output is sent here once (unset: no retry)"},
    {"FAREBOX_OPENAI_FALLBACK_API_KEY", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "the key sent to FAREBOX_OPENAI_FALLBACK_URL (unset: none; the main key is never sent there)"},
    {"FAREBOX_ANTHROPIC_FALLBACK_URL", FB_CFG_STRING, "", 0, 0, NULL, s_check_fallback_url,
     "a second Anthropic-compatible route, used like FAREBOX_OPENAI_FALLBACK_URL"},
    {"FAREBOX_ANTHROPIC_FALLBACK_API_KEY", FB_CFG_SECRET, "", 0, 0, NULL, NULL,
     "the key sent to FAREBOX_ANTHROPIC_FALLBACK_URL (unset: none)"},
    {"FAREBOX_MOCK_MODEL_URL", FB_CFG_STRING, "http://127.0.0.1:8404", 0, 0, NULL, s_check_url,
     "the built-in mock model (farebox-mock-model), for providers without a key"},
    {"FAREBOX_UPSTREAM_TIMEOUT_MS", FB_CFG_INT, "240000", 1000, 3600000, NULL, NULL,
     "wall-clock limit of one provider call, streams included"},
    {"FAREBOX_UPSTREAM_CONNECT_MS", FB_CFG_INT, "10000", 100, 600000, NULL, NULL,
     "limit on connecting to a provider"},
    {"FAREBOX_UPSTREAM_KEEPALIVE", FB_CFG_INT, "256", 1, 65536, NULL, NULL,
     "idle provider connections each edge worker keeps open for reuse"},
    {"FAREBOX_PAY_TO_EVM", FB_CFG_STRING, "", 0, 0, NULL, s_check_evm_address,
     "x402: the address EVM payments go to (unset: EVM networks are not quoted)"},
    {"FAREBOX_PAY_TO_SOLANA", FB_CFG_STRING, "", 0, 0, NULL, s_check_solana_address,
     "x402: the wallet Solana payments go to (its USDC account receives them; unset: not quoted)"},
    {"FAREBOX_X402_TIMEOUT_S", FB_CFG_INT, "300", 10, 3600, NULL, NULL,
     "x402: maxTimeoutSeconds of a quote (how long a signed payment may take to arrive)"},
    {"FAREBOX_X402_SETTLE", FB_CFG_ENUM, "confirmed", 0, 0, "confirmed|broadcast", NULL,
     "x402: a paid call's first byte waits for its transfer's receipt (confirmed), or only for the transfer "
     "to be sent, its hash in PAYMENT-RESPONSE (broadcast: faster; a payer who empties the wallet first is "
     "served unpaid)"},
    {"FAREBOX_HTTP_MAX_CONNECTIONS", FB_CFG_INT, "16384", 0, 10000000, NULL, NULL,
     "client connections the edge keeps open at once; more are closed as they come (0: no cap)"},
    {"FAREBOX_HTTP_MAX_CONNECTIONS_PER_IP", FB_CFG_INT, "256", 0, 10000000, NULL, NULL,
     "client connections one address (an IPv6 /64) may have open at once; trusted proxies are not "
     "capped (0: no cap)"},
    {"FAREBOX_RATE_IP_PER_S", FB_CFG_INT, "100", 0, 1000000, NULL, NULL,
     "requests per second one client IP may make, sustained (0: no limit)"},
    {"FAREBOX_RATE_IP_BURST", FB_CFG_INT, "200", 1, 10000000, NULL, NULL, "... and in a burst"},
    {"FAREBOX_RATE_KEY_PER_S", FB_CFG_INT, "50", 0, 1000000, NULL, NULL,
     "requests per second one API key may make, sustained (0: no limit)"},
    {"FAREBOX_RATE_KEY_BURST", FB_CFG_INT, "100", 1, 10000000, NULL, NULL, "... and in a burst"},
    {"FAREBOX_KEY_CONCURRENCY", FB_CFG_INT, "64", 0, 1000000, NULL, NULL,
     "paid calls one API key may have in flight at once (0: no cap)"},
    {"FAREBOX_PREPAID_SLICE_CALLS", FB_CFG_INT, "16", 1, 1000000, NULL, NULL,
     "prepaid calls are served from slices of the balance: a key's first slice holds this many times the "
     "call's ceiling, and grows fourfold each time one is used up within 2 s (1: one call's ceiling)"},
    {"FAREBOX_PREPAID_SLICE_MAX_MICRO", FB_CFG_INT, "1000000", 1, 1000000000000, NULL, NULL,
     "the most money one prepaid slice holds (a single call's ceiling may still be larger)"},
    {"FAREBOX_PREPAID_SLICE_IDLE_MS", FB_CFG_INT, "1000", 10, 3600000, NULL, NULL,
     "a prepaid slice unused this long is closed and its uncharged rest given back"},
    {"FAREBOX_PREPAID_SLICE_AGE_MS", FB_CFG_INT, "60000", 100, 3600000, NULL, NULL,
     "a prepaid slice this old takes no new call (its hold expires this + the upstream timeout + 60 s "
     "later)"},
    {"FAREBOX_PREPAID_CHARGE_DEFER_MS", FB_CFG_INT, "0", 0, 10000, NULL, NULL,
     "0: a prepaid call's answer waits until its charge is durable in the ledger, so an edge killed at "
     "any moment leaves no answered call unpaid. N: the answer goes at once and its charge is written "
     "with the others of the next N ms: faster, but an edge killed outright leaves its last N ms of "
     "answered calls unpaid (a clean stop writes every charge first), unless FAREBOX_PREPAID_JOURNAL_DIR "
     "is set. Calls with an Idempotency-Key always wait"},
    {"FAREBOX_PREPAID_JOURNAL_DIR", FB_CFG_STRING, "", 0, 0, NULL, NULL,
     "a directory (created if missing) where deferred charges are journaled before their calls are "
     "answered, shared by the edges of one host and one ledger: each edge writes the charges a killed "
     "edge left there (checked each second), and an edge restarted writes its own. Unset: not journaled"},
    {"FAREBOX_PREPAID_JOURNAL_FSYNC", FB_CFG_BOOL, "false", 0, 0, NULL, NULL,
     "with FAREBOX_PREPAID_CHARGE_DEFER_MS (no effect without it: answers then wait for the ledger) and "
     "FAREBOX_PREPAID_JOURNAL_DIR (needed): a deferred call is answered only once its journal record is on "
     "the disk (fdatasync, one for all the records written meanwhile), so that a crash or power loss of "
     "the host, not only an edge killed, leaves no answered call unpaid; only the loss of the journal's "
     "disk can"},
    {"FAREBOX_PREPAID_JOURNAL_MAX_BYTES", FB_CFG_INT, "4194304", 4096, 67108864, NULL, NULL,
     "a worker's journal past this size is replaced by one of the charges still pending"},
    {"FAREBOX_IDEMPOTENCY_KEEP_S", FB_CFG_INT, "86400", 60, 2592000, NULL, NULL,
     "a paid call sent with an Idempotency-Key (with its API key, or its x402 payment) is remembered "
     "this long: a retry gets its kept answer and pays nothing again"},
    {"FAREBOX_IDEMPOTENCY_ANSWER_MAX", FB_CFG_INT, "262144", 0, 16777216, NULL, NULL,
     "the largest answer kept for a retry, in bytes (larger ones: a retry is told the call was served; "
     "at most half of FAREBOX_RPC_MAX_MESSAGE is used)"},
    {"FAREBOX_TOPUP_ADVANCE_MAX_MICRO", FB_CFG_INT, "0", 0, 100000000000, NULL, NULL,
     "/v1/topup credits at once, as soon as the transfer is broadcast, while the account's topups awaiting "
     "settlement stay within this (micro-USDC); one that fails is taken back, the spent part is the "
     "operator's loss (0: topups are credited once settled)"},
    {"FAREBOX_TRUSTED_PROXIES", FB_CFG_STRING, "", 0, 0, NULL, s_check_proxies,
     "load balancers whose X-Forwarded-For names the client for the IP limits: addresses or CIDR blocks, "
     "comma-separated (unset: the peer address counts)"},
};

static const fb_service_def_t s_def = {
    .name = "edge",
    .summary = "the public HTTP API of farebox",
    .rpc_bind = "tcp://127.0.0.1:7100-7109",
    .peers = FB_PEER_LEDGER | FB_PEER_VERIFIER | FB_PEER_CHAIN_WATCHER,
    .vars = s_vars,
    .var_count = FB_ARRAY_SIZE(s_vars),
};

static void s_on_stop(void *arg)
{
    edge_t *edge = arg;
    for (int i = 0; i < edge->worker_count; i++)
        edge_worker_stop(edge->workers[i]);
}

/* The routes calls take: the providers' own ("openai", "anthropic": their
 * base URLs and keys, or the mock model without a key), the catalog's (their
 * keys read from the variables they name), and the providers' second routes
 * (FAREBOX_*_FALLBACK_URL). A catalog route whose base URL libcurl cannot
 * parse, or whose key variable is unset or unreadable, stops the edge. */
static void s_routes(edge_t *edge, const fb_config_t *cfg)
{
    static const char *const names[] = {"OPENAI", "ANTHROPIC"},
                             *const route_names[] = {"openai", "anthropic"},
                             *const fallback_names[] = {"openai-fallback", "anthropic-fallback"};
    char var[64], err[400], line[700];
    for (int p = 0; p < 2; p++) {
        edge_route_t *r = &edge->routes[p];
        r->name = route_names[p];
        r->provider = (edge_provider_t)p;
        r->fallback = -1;
        snprintf(var, sizeof(var), "FAREBOX_%s_API_KEY", names[p]);
        const char *api_key = fb_config_str(cfg, var);
        if (api_key[0]) {
            snprintf(var, sizeof(var), "FAREBOX_%s_BASE_URL", names[p]);
            r->base_url = fb_config_str(cfg, var);
            r->api_key = api_key;
        } else {
            r->base_url = fb_config_str(cfg, "FAREBOX_MOCK_MODEL_URL");
            r->mock = true;
        }
    }
    edge->route_count = EDGE_ROUTE_CATALOG;
    size_t n = edge_catalog_route_count(edge->catalog);
    FB_ASSERT(n <= EDGE_CATALOG_ROUTES);
    for (size_t i = 0; i < n; i++) {
        const edge_route_spec_t *spec = edge_catalog_route(edge->catalog, i);
        edge_route_t *r = &edge->routes[edge->route_count++];
        *r = (edge_route_t){.name = spec->name,
                            .provider = spec->provider,
                            .base_url = spec->base_url,
                            .fallback = spec->fallback};
        if (s_check_url(spec->base_url, err, sizeof(err)) != 0) {
            snprintf(line, sizeof(line),
                     "invalid configuration: FAREBOX_CATALOG_FILE: route \"%s\": base_url %s", spec->name,
                     err);
            fb_service_fail_config(line);
        }
        if (spec->api_key_env[0]) {
            bool failed = false;
            edge->route_keys[i] = fb_config_read_secret(spec->api_key_env, &failed, err, sizeof(err));
            if (failed || !edge->route_keys[i] || !edge->route_keys[i][0]) {
                snprintf(line, sizeof(line), "invalid configuration: FAREBOX_CATALOG_FILE: route \"%s\": %s",
                         spec->name,
                         failed ? err : "its api_key_env names a variable that is not set (nor its _FILE)");
                fb_service_fail_config(line);
            }
            fb_log_redact(edge->route_keys[i]);
            r->api_key = edge->route_keys[i];
        }
    }
    for (int p = 0; p < 2; p++) {
        snprintf(var, sizeof(var), "FAREBOX_%s_FALLBACK_URL", names[p]);
        const char *fallback = fb_config_str(cfg, var);
        if (!fallback[0])
            continue;
        snprintf(var, sizeof(var), "FAREBOX_%s_FALLBACK_API_KEY", names[p]);
        const char *fallback_key = fb_config_str(cfg, var);
        edge->routes[p].fallback = edge->route_count;
        edge->routes[edge->route_count++] = (edge_route_t){.name = fallback_names[p],
                                                           .provider = (edge_provider_t)p,
                                                           .base_url = fallback,
                                                           .api_key = fallback_key[0] ? fallback_key : NULL,
                                                           .fallback = -1};
    }
    FB_ASSERT(edge->route_count <= EDGE_ROUTES_MAX && EDGE_ROUTES_MAX <= FB_CURLM_KINDS);
    for (int i = 0; i < edge->route_count; i++)
        edge_route_prepare(&edge->routes[i]);
}

int main(int argc, char **argv)
{
    FB_ASSERT(sodium_init() >= 0);
    edge_t edge = {0};
    edge.service = fb_service_new(argc, argv, &s_def);
    const fb_config_t *cfg = fb_service_config(edge.service);
    char err[512];

    h2o_config_init(&edge.h2o);
    edge.h2o.max_request_entity_size = (size_t)fb_config_int(cfg, "FAREBOX_HTTP_MAX_BODY");
    edge.h2o.server_name = h2o_iovec_init(H2O_STRLIT("farebox"));
    /* an idle connection's life, and the time a request has to arrive whole */
    uint64_t idle_ms = (uint64_t)fb_config_int(cfg, "FAREBOX_HTTP_IDLE_TIMEOUT_MS");
    edge.h2o.http1.req_timeout = idle_ms;
    edge.h2o.http2.idle_timeout = idle_ms;
    bool http2 = fb_config_bool(cfg, "FAREBOX_HTTP2");
    edge.h2o.http1.upgrade_to_http2 = http2; /* Upgrade: h2c, and the prior-knowledge preface */
    edge_routes_register(&edge);

    const char *cert = fb_config_str(cfg, "FAREBOX_TLS_CERT_FILE"),
               *key = fb_config_str(cfg, "FAREBOX_TLS_KEY_FILE");
    if (cert[0] || key[0]) {
        if (!cert[0] || !key[0])
            fb_service_fail_config(
                "invalid configuration: FAREBOX_TLS_CERT_FILE and FAREBOX_TLS_KEY_FILE go together");
        edge.tls = fb_http_tls_new(cert, key, http2, err, sizeof(err));
        if (!edge.tls) {
            char line[700];
            snprintf(line, sizeof(line), "invalid configuration: FAREBOX_TLS_CERT_FILE: %s", err);
            fb_service_fail_config(line);
        }
    }
    edge.http_listen = fb_config_str(cfg, "FAREBOX_HTTP_LISTEN");
    edge.https_listen = fb_config_str(cfg, "FAREBOX_HTTPS_LISTEN");
    edge.ready_timeout_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_READY_TIMEOUT_MS");
    edge.grace_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_STOP_GRACE_MS");
    edge.stop_delay_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_STOP_DELAY_MS");
    edge.worker_count = (int)fb_config_int(cfg, "FAREBOX_EDGE_THREADS");
    edge.facilitator_open = fb_config_bool(cfg, "FAREBOX_FACILITATOR_OPEN");
    const char *token = fb_config_str(cfg, "FAREBOX_FACILITATOR_TOKEN");
    if (token[0]) {
        if (strlen(token) < 16)
            fb_service_fail_config(
                "invalid configuration: FAREBOX_FACILITATOR_TOKEN must be at least 16 characters");
        crypto_hash_sha256(edge.facilitator_token_sha256, (const uint8_t *)token, strlen(token));
        edge.facilitator_token_set = true;
    }
    const char *admin = fb_config_str(cfg, "FAREBOX_ADMIN_TOKEN");
    if (admin[0]) {
        if (strlen(admin) < 16)
            fb_service_fail_config(
                "invalid configuration: FAREBOX_ADMIN_TOKEN must be at least 16 characters");
        crypto_hash_sha256(edge.admin_token_sha256, (const uint8_t *)admin, strlen(admin));
        edge.admin_token_set = true;
    }
    const char *hmac_secret = fb_config_str(cfg, "FAREBOX_KEY_HMAC_SECRET");
    if (hmac_secret[0]) {
        if (fb_apikey_check_secret(hmac_secret, err, sizeof(err)) != 0) {
            char line[700];
            snprintf(line, sizeof(line), "invalid configuration: FAREBOX_KEY_HMAC_SECRET: %s", err);
            fb_service_fail_config(line);
        }
        edge.key_mac = fb_apikey_mac_new(hmac_secret, strlen(hmac_secret));
    } else {
        fb_log(FB_LOG_WARN, NULL, "API keys are off: FAREBOX_KEY_HMAC_SECRET is not set", NULL);
    }
    edge.catalog = edge_catalog_load(fb_config_str(cfg, "FAREBOX_CATALOG_FILE"), err, sizeof(err));
    if (!edge.catalog) {
        char line[700];
        snprintf(line, sizeof(line), "invalid configuration: FAREBOX_CATALOG_FILE: %s", err);
        fb_service_fail_config(line);
    }
    s_routes(&edge, cfg);
    const char *pay_evm = fb_config_str(cfg, "FAREBOX_PAY_TO_EVM");
    if (pay_evm[0]) {
        fb_addr_t a;
        fb_addr_parse(&a, pay_evm, strlen(pay_evm));
        fb_addr_checksum(edge.pay_to_evm, &a);
    }
    snprintf(edge.pay_to_solana, sizeof(edge.pay_to_solana), "%s",
             fb_config_str(cfg, "FAREBOX_PAY_TO_SOLANA"));
    edge.x402_timeout_s = fb_config_int(cfg, "FAREBOX_X402_TIMEOUT_S");
    edge.x402_serve_broadcast = strcmp(fb_config_str(cfg, "FAREBOX_X402_SETTLE"), "broadcast") == 0;
    edge.key_concurrency = fb_config_int(cfg, "FAREBOX_KEY_CONCURRENCY");
    edge.slice_calls = fb_config_int(cfg, "FAREBOX_PREPAID_SLICE_CALLS");
    edge.slice_max_micro = fb_config_int(cfg, "FAREBOX_PREPAID_SLICE_MAX_MICRO");
    edge.slice_idle_ms = fb_config_int(cfg, "FAREBOX_PREPAID_SLICE_IDLE_MS");
    edge.slice_age_ms = fb_config_int(cfg, "FAREBOX_PREPAID_SLICE_AGE_MS");
    edge.charge_defer_ms = fb_config_int(cfg, "FAREBOX_PREPAID_CHARGE_DEFER_MS");
    edge.journal_dir = fb_config_str(cfg, "FAREBOX_PREPAID_JOURNAL_DIR");
    edge.journal_max_bytes = (size_t)fb_config_int(cfg, "FAREBOX_PREPAID_JOURNAL_MAX_BYTES");
    edge.journal_fsync = fb_config_bool(cfg, "FAREBOX_PREPAID_JOURNAL_FSYNC");
    /* without the deferral, answers wait for the ledger: nothing to sync (compose sets both
     * journal settings whatever the deferral) */
    if (edge.journal_fsync && edge.charge_defer_ms > 0 && !edge.journal_dir[0])
        fb_service_fail_config("invalid configuration: FAREBOX_PREPAID_JOURNAL_FSYNC with "
                               "FAREBOX_PREPAID_CHARGE_DEFER_MS needs FAREBOX_PREPAID_JOURNAL_DIR");
    if (edge.charge_defer_ms == 0)
        edge.journal_fsync = false;
    if (edge.charge_defer_ms > 0 && !edge.journal_dir[0])
        fb_log(FB_LOG_WARN, NULL,
               "prepaid charges are deferred without a journal: an edge killed outright leaves its last "
               "calls unpaid (set FAREBOX_PREPAID_JOURNAL_DIR)",
               "defer_ms=%" PRId64, edge.charge_defer_ms);
    edge.idem_keep_ms = fb_config_int(cfg, "FAREBOX_IDEMPOTENCY_KEEP_S") * 1000;
    edge.topup_advance_max = fb_config_int(cfg, "FAREBOX_TOPUP_ADVANCE_MAX_MICRO");
    edge.rpc_max_message = (size_t)fb_config_int(cfg, "FAREBOX_RPC_MAX_MESSAGE");
    edge.idem_answer_max = (size_t)fb_config_int(cfg, "FAREBOX_IDEMPOTENCY_ANSWER_MAX");
    if (edge.idem_answer_max > edge.rpc_max_message / 2)
        edge.idem_answer_max = edge.rpc_max_message / 2; /* with its call's fields, it fits one message */
    edge.limits = edge_limit_new((edge_bucket_conf_t){fb_config_int(cfg, "FAREBOX_RATE_IP_PER_S"),
                                                      fb_config_int(cfg, "FAREBOX_RATE_IP_BURST")},
                                 (edge_bucket_conf_t){fb_config_int(cfg, "FAREBOX_RATE_KEY_PER_S"),
                                                      fb_config_int(cfg, "FAREBOX_RATE_KEY_BURST")},
                                 edge.key_concurrency);
    FB_ASSERT(
        edge_limit_trust(edge.limits, fb_config_str(cfg, "FAREBOX_TRUSTED_PROXIES"), err, sizeof(err)) == 0);
    edge_limit_connections(edge.limits, fb_config_int(cfg, "FAREBOX_HTTP_MAX_CONNECTIONS"),
                           fb_config_int(cfg, "FAREBOX_HTTP_MAX_CONNECTIONS_PER_IP"));
    edge.upstream_timeout_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_UPSTREAM_TIMEOUT_MS");
    edge.upstream_connect_ms = (uint32_t)fb_config_int(cfg, "FAREBOX_UPSTREAM_CONNECT_MS");
    edge.upstream_keepalive = (size_t)fb_config_int(cfg, "FAREBOX_UPSTREAM_KEEPALIVE");
    for (int i = 0; i < edge.route_count; i++) {
        const edge_route_t *r = &edge.routes[i];
        char shown[300]; /* scheme, host and port: a URL may carry a credential */
        fb_jsonrpc_url_shown(r->base_url, shown, sizeof(shown));
        fb_log(FB_LOG_INFO, NULL, "provider route", "name=%s dialect=%s url=%s key=%s fallback=%s", r->name,
               r->provider == EDGE_PROVIDER_ANTHROPIC ? "anthropic" : "openai", shown,
               r->api_key ? "set" : "none", r->fallback >= 0 ? edge.routes[r->fallback].name : "none");
    }
    edge.workers = fb_calloc((size_t)edge.worker_count, sizeof(*edge.workers));
    for (int i = 0; i < edge.worker_count; i++) {
        edge.workers[i] = edge_worker_new(&edge, i, err, sizeof(err));
        if (!edge.workers[i]) {
            char line[700];
            snprintf(line, sizeof(line),
                     "invalid configuration: FAREBOX_HTTP_LISTEN/FAREBOX_HTTPS_LISTEN: %s", err);
            fb_service_fail_config(line);
        }
    }
    fb_log(FB_LOG_INFO, NULL, "http listening", "http=%s http_port=%d https=%s https_port=%d threads=%d",
           edge.http_listen, edge.workers[0]->http_port, edge.tls ? edge.https_listen : "off",
           edge.workers[0]->https_port, edge.worker_count);
    for (int i = 1; i < edge.worker_count; i++)
        edge_worker_start(edge.workers[i]);
    fb_service_on_stop(edge.service, s_on_stop, &edge);

    int code = fb_service_run(edge.service);

    for (int i = 0; i < edge.worker_count; i++)
        edge_worker_stop(edge.workers[i]);
    for (int i = 1; i < edge.worker_count; i++)
        edge_worker_join(edge.workers[i]);
    for (int i = 0; i < edge.worker_count; i++)
        edge_worker_destroy(&edge.workers[i]);
    free(edge.workers);
    if (edge.tls)
        SSL_CTX_free(edge.tls);
    h2o_config_dispose(&edge.h2o);
    edge_catalog_free(&edge.catalog);
    fb_apikey_mac_free(&edge.key_mac);
    for (int i = 0; i < edge.route_count; i++)
        edge_route_release(&edge.routes[i]);
    for (size_t i = 0; i < FB_ARRAY_SIZE(edge.route_keys); i++) {
        if (edge.route_keys[i])
            sodium_memzero(edge.route_keys[i], strlen(edge.route_keys[i]));
        free(edge.route_keys[i]);
    }
    edge_limit_destroy(&edge.limits);
    fb_service_destroy(&edge.service);
    return code;
}
