/* edge_admin - the admin API: routes, argument checks, then the ledger or the
 * chain-watcher. */
#include "edge_admin.h"
#include "edge_auth.h"
#include "edge_reply.h"
#include "fb_log.h"
#include "fb_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_DEADLINE_MS 10000
#define ADMIN_SEGMENTS    4

typedef struct {
    const char *method;   /* HTTP method */
    const char *pattern;  /* segments, "#" for an id */
    const char *rpc;      /* ledger or chain-watcher method */
    const char *id_field; /* where the id goes: "account_id", "key_id" */
    bool write;
    int status;               /* on success */
    const char *body_fields;  /* allowed JSON body fields, space-separated ("" none) */
    const char *query_fields; /* allowed query parameters */
} s_route_t;

static const s_route_t s_routes[] = {
    {"POST", "accounts", "ledger.open_account", NULL, true, 201, "label", ""},
    {"GET", "accounts/#", "ledger.balance", "account_id", false, 200, "", ""},
    {"POST", "accounts/#/keys", "ledger.mint_key", "account_id", true, 201, "label spend_cap_micro models",
     ""},
    {"GET", "accounts/#/keys", "ledger.keys", "account_id", false, 200, "", "after_id limit"},
    {"GET", "accounts/#/history", "ledger.history", "account_id", false, 200, "", "before_id limit"},
    {"GET", "accounts/#/holds", "ledger.holds", "account_id", false, 200, "", "state before_id limit"},
    {"GET", "accounts/#/charges", "ledger.charges", "account_id", false, 200, "", "hold_id before_id limit"},
    {"GET", "accounts/#/advances", "ledger.advances", "account_id", false, 200, "", "before_id limit"},
    {"POST", "accounts/#/credits", "ledger.credit", "account_id", true, 201, "amount_micro reference", ""},
    {"POST", "accounts/#/deposit-addresses", "chain_watcher.deposit_address", "account_id", false, 200, "",
     ""},
    {"GET", "accounts/#/deposit-addresses", "ledger.deposit_addresses", "account_id", false, 200, "", ""},
    {"GET", "accounts/#/deposits/pending", "chain_watcher.pending", "account_id", false, 200, "", ""},
    {"GET", "chain-watcher", "chain_watcher.status", NULL, false, 200, "", ""},
    {"PATCH", "keys/#", "ledger.update_key", "key_id", true, 200, "label spend_cap_micro models", ""},
    {"DELETE", "keys/#", "ledger.revoke_key", "key_id", true, 200, "", ""},
    {"POST", "keys/#/revoke", "ledger.revoke_key", "key_id", true, 200, "", ""},
    {"GET", "audit", "ledger.audit", NULL, false, 200, "", ""},
};

/* Splits "a/b/c" into at most ADMIN_SEGMENTS segments. Returns the count, or
 * -1 when there are more or one is empty. */
static int s_split(h2o_iovec_t path, h2o_iovec_t seg[ADMIN_SEGMENTS])
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= path.len; i++) {
        if (i == path.len || path.base[i] == '/') {
            if (i == start || n == ADMIN_SEGMENTS)
                return -1;
            seg[n++] = h2o_iovec_init(path.base + start, i - start);
            start = i + 1;
        }
    }
    return n;
}

/* A positive decimal id without leading zeros, below 2^53. */
static bool s_id(h2o_iovec_t s, int64_t *out)
{
    if (s.len == 0 || s.len > 15 || s.base[0] == '0')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        if (s.base[i] < '0' || s.base[i] > '9')
            return false;
        v = v * 10 + (s.base[i] - '0');
    }
    *out = v;
    return true;
}

/* Does the path match the route's pattern? Sets *id for "#". */
static bool s_match(const s_route_t *r, h2o_iovec_t *seg, int nseg, int64_t *id, bool *bad_id)
{
    h2o_iovec_t pat[ADMIN_SEGMENTS];
    int np = s_split(h2o_iovec_init(r->pattern, strlen(r->pattern)), pat);
    if (np != nseg)
        return false;
    for (int i = 0; i < np; i++) {
        if (pat[i].len == 1 && pat[i].base[0] == '#')
            continue;
        if (!h2o_memis(pat[i].base, pat[i].len, seg[i].base, seg[i].len))
            return false;
    }
    for (int i = 0; i < np; i++)
        if (pat[i].len == 1 && pat[i].base[0] == '#' && !s_id(seg[i], id))
            *bad_id = true;
    return true;
}

static bool s_in_list(const char *list, const char *name, size_t len)
{
    size_t n = strlen(list);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && list[j] != ' ')
            j++;
        if (j - i == len && memcmp(list + i, name, len) == 0)
            return true;
        i = j + 1;
    }
    return false;
}

/* The query parameters as body fields: integers for ids and limits, words
 * for state. Returns 0, or -1 with err. */
static int s_query(h2o_req_t *req, const s_route_t *r, json_t *body, char *err, size_t errlen)
{
    if (req->query_at == SIZE_MAX)
        return 0;
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    if (end - q > 512) {
        snprintf(err, errlen, "the query string is longer than 512 bytes");
        return -1;
    }
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (!eq) {
            snprintf(err, errlen, "query parameter \"%.*s\" has no value", (int)(stop - q), q);
            return -1;
        }
        size_t klen = (size_t)(eq - q);
        h2o_iovec_t val = h2o_iovec_init(eq + 1, (size_t)(stop - eq - 1));
        char key[32];
        if (klen >= sizeof(key) || !s_in_list(r->query_fields, q, klen)) {
            snprintf(err, errlen, "unknown query parameter \"%.*s\"%s%s", (int)(klen > 32 ? 32 : klen), q,
                     r->query_fields[0] ? " (known: " : "", r->query_fields[0] ? r->query_fields : "");
            if (r->query_fields[0])
                strncat(err, ")", errlen - strlen(err) - 1);
            return -1;
        }
        memcpy(key, q, klen);
        key[klen] = '\0';
        int64_t v;
        if (strcmp(key, "state") == 0) {
            static const char *const states[] = {"open", "committed", "voided", "expired"};
            bool known = false;
            for (size_t i = 0; i < FB_ARRAY_SIZE(states) && !known; i++)
                known = val.len == strlen(states[i]) && memcmp(val.base, states[i], val.len) == 0;
            if (!known) {
                snprintf(err, errlen, "state must be open, committed, voided or expired");
                return -1;
            }
            json_object_set_new(body, key, json_stringn(val.base, val.len));
        } else if (s_id(val, &v)) {
            json_object_set_new(body, key, json_integer(v));
        } else {
            snprintf(err, errlen, "%s must be a positive integer", key);
            return -1;
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
}

/* A key's model allowlist: each a model of the catalog (id or alias), once; a typo would lock the key
 * out of every model without a word. */
static int s_models(const edge_catalog_t *catalog, json_t *models, char *err, size_t errlen)
{
    size_t i, j;
    json_t *m, *n;
    json_array_foreach(models, i, m)
    {
        if (!json_is_string(m))
            continue; /* the ledger says what a model must be */
        if (!edge_catalog_find(catalog, json_string_value(m), json_string_length(m))) {
            snprintf(err, errlen, "models[%zu]: \"%.128s\" is not a model of this catalog (GET /v1/models)",
                     i, json_string_value(m));
            return -1;
        }
        json_array_foreach(models, j, n)
        {
            if (j < i && json_equal(m, n)) {
                snprintf(err, errlen, "models[%zu]: \"%.128s\" is listed twice", i, json_string_value(m));
                return -1;
            }
        }
    }
    return 0;
}

/* The request body's fields, each allowed by the route. */
static int s_body(h2o_req_t *req, const s_route_t *r, const edge_catalog_t *catalog, json_t *body, char *err,
                  size_t errlen)
{
    if (req->entity.base == NULL || req->entity.len == 0)
        return 0;
    if (req->entity.len > EDGE_ADMIN_MAX_BODY) {
        snprintf(err, errlen, "the body is larger than %d bytes", EDGE_ADMIN_MAX_BODY);
        return -1;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(doc)) {
        snprintf(err, errlen, "the body must be a JSON object%s%s", doc ? "" : ": ", doc ? "" : jerr.text);
        json_decref(doc);
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(doc, key, v)
    {
        if (!s_in_list(r->body_fields, key, strlen(key))) {
            snprintf(err, errlen, "unknown field \"%.64s\"%s%s%s", key, r->body_fields[0] ? " (known: " : "",
                     r->body_fields, r->body_fields[0] ? ")" : "");
            json_decref(doc);
            return -1;
        }
        if (strcmp(key, "models") == 0 && json_is_array(v) && json_array_size(v) <= EDGE_ADMIN_MODELS_MAX &&
            s_models(catalog, v, err, errlen) != 0) {
            json_decref(doc);
            return -1;
        }
        json_object_set(body, key, v);
    }
    json_decref(doc);
    return 0;
}

/* The status of a ledger's or chain-watcher's refusal. A code this edge does not know is the
 * dependency's answer it cannot vouch for: 502, the code passed on. */
static int s_status_of(const char *code)
{
    static const char *const conflicts[] = {"idempotency_conflict", "idempotency_in_progress",
                                            "invalid_state", "key_revoked", "advance_refused"};
    size_t n = strlen(code);
    if (n > 10 && strcmp(code + n - 10, "_not_found") == 0)
        return 404;
    if (strcmp(code, "bad_request") == 0)
        return 400;
    for (size_t i = 0; i < FB_ARRAY_SIZE(conflicts); i++)
        if (strcmp(code, conflicts[i]) == 0)
            return 409;
    if (strcmp(code, "not_configured") == 0 || strcmp(code, "not_implemented") == 0)
        return 501;
    if (strcmp(code, "unavailable") == 0 || strcmp(code, "deadline_exceeded") == 0 ||
        strcmp(code, "overloaded") == 0 || strcmp(code, "internal") == 0)
        return 503;
    return 502;
}

typedef struct {
    fb_http_guard_t *guard;
    const s_route_t *route;
    edge_t *edge;
} s_call_t;

static void s_on_reply(void *arg, const fb_rpc_reply_t *reply)
{
    s_call_t *c = arg;
    h2o_req_t *req = c->guard->req;
    if (reply->ok &&
        (strcmp(c->route->rpc, "ledger.revoke_key") == 0 || strcmp(c->route->rpc, "ledger.update_key") == 0))
        edge_keys_changed(c->edge); /* this edge forgets what it knew of keys at once */
    if (req) {
        if (reply->ok) {
            json_t *body = edge_reply_json(reply);
            if (strcmp(c->route->rpc, "ledger.mint_key") == 0 && !json_object_get(body, "key")) {
                /* the key was minted by an earlier request under this Idempotency-Key (or an RPC try
                 * whose answer was lost), and the ledger keeps only its HMAC */
                json_object_set_new(body, "key", json_null());
                json_object_set_new(
                    body, "key_note",
                    json_sprintf("this key was minted by an earlier request with this Idempotency-Key and is "
                                 "shown only once; if that answer was lost, revoke key %" JSON_INTEGER_FORMAT
                                 " and mint another",
                                 json_integer_value(json_object_get(body, "key_id"))));
            }
            edge_send_json(req, c->route->status, body);
        } else {
            int status = s_status_of(reply->code);
            const char *code = status == 400   ? "invalid_request"
                               : status == 503 ? "unavailable"
                               : status == 502 ? "upstream_error"
                                               : reply->code;
            json_t *details = edge_reply_json(reply);
            if (json_object_size(details) == 0) {
                json_decref(details);
                details = NULL;
            }
            if (status == 502)
                edge_error(req, EDGE_OPENAI, status, code, details, "%s answered %s: %s", c->route->rpc,
                           reply->code, reply->message);
            else
                edge_error(req, EDGE_OPENAI, status, code, details, "%s", reply->message);
        }
    }
    fb_http_guard_release(&c->guard);
    free(c);
}

int edge_admin(edge_worker_t *w, h2o_req_t *req, const char *rid)
{
    const edge_t *edge = w->edge;
    if (!edge->admin_token_set) {
        edge_error(req, EDGE_OPENAI, 403, "admin_disabled", NULL,
                   "the admin API is off on this edge (the operator sets FAREBOX_ADMIN_TOKEN)");
        return 0;
    }
    if (!edge_bearer_matches(req, edge->admin_token_sha256)) {
        fb_http_set_header(req, "www-authenticate", "Bearer", 6);
        edge_error(req, EDGE_OPENAI, 401, "invalid_admin_token", NULL,
                   "a valid admin token is required: Authorization: Bearer <FAREBOX_ADMIN_TOKEN>");
        return 0;
    }
    h2o_iovec_t path = req->path_normalized, seg[ADMIN_SEGMENTS];
    path.base += 7; /* "/admin/" */
    path.len -= 7;
    int nseg = s_split(path, seg);
    const s_route_t *route = NULL, *path_match = NULL;
    int64_t id = 0;
    bool bad_id = false;
    for (size_t i = 0; nseg > 0 && i < FB_ARRAY_SIZE(s_routes); i++) {
        bool bad = false;
        int64_t got = 0;
        if (!s_match(&s_routes[i], seg, nseg, &got, &bad))
            continue;
        path_match = &s_routes[i];
        /* HEAD is GET without the body (h2o sends none) */
        if (fb_streq_n(req->method.base, req->method.len, s_routes[i].method) ||
            (fb_streq_n(req->method.base, req->method.len, "HEAD") &&
             strcmp(s_routes[i].method, "GET") == 0)) {
            route = &s_routes[i];
            id = got;
            bad_id = bad;
            break;
        }
    }
    if (!route) {
        if (path_match)
            edge_error(req, EDGE_OPENAI, 405, "method_not_allowed", NULL, "%.*s is not allowed on %.*s",
                       (int)req->method.len, req->method.base, (int)req->path_normalized.len,
                       req->path_normalized.base);
        else
            edge_error(req, EDGE_OPENAI, 404, "not_found", NULL, "no admin route %.*s %.*s",
                       (int)req->method.len, req->method.base, (int)req->path_normalized.len,
                       req->path_normalized.base);
        return 0;
    }
    if (bad_id) {
        edge_error(req, EDGE_OPENAI, 404, "not_found", NULL, "ids are positive integers");
        return 0;
    }
    char err[300];
    json_t *body = json_object();
    if (route->id_field)
        json_object_set_new(body, route->id_field, json_integer(id));
    if (s_query(req, route, body, err, sizeof(err)) != 0 ||
        s_body(req, route, w->edge->catalog, body, err, sizeof(err)) != 0) {
        json_decref(body);
        edge_error(req, EDGE_OPENAI, 400, "invalid_request", NULL, "%s", err);
        return 0;
    }
    if (strcmp(route->rpc, "ledger.credit") == 0) {
        /* a manual credit: from the adjustments account, once per reference */
        json_t *ref = json_object_get(body, "reference");
        if (!json_is_string(ref) || json_string_length(ref) == 0 || json_string_length(ref) > 128) {
            json_decref(body);
            edge_error(req, EDGE_OPENAI, 400, "invalid_request", NULL,
                       "reference (1..128 characters: what this credit is for, credited once) is required");
            return 0;
        }
        json_object_set_new(body, "kind", json_string("adjustment"));
        json_object_set_new(body, "source", json_pack("{ss sO si}", "chain", "admin", "tx", ref, "index", 0));
        json_object_del(body, "reference");
    }
    char idem[EDGE_ID_TEXT_MAX + 16] = "";
    if (route->write) {
        h2o_iovec_t given = fb_http_header(req, "idempotency-key");
        if (given.base && !edge_id_text_ok(given)) {
            json_decref(body);
            edge_error(req, EDGE_OPENAI, 400, "invalid_request", NULL,
                       "Idempotency-Key must be 1..128 characters of A-Z a-z 0-9 - _ . :");
            return 0;
        }
        if (given.base) {
            edge_rpc_idem(idem, sizeof(idem), "admin", given.base, given.len);
        } else {
            char rnd[33];
            fb_random_hex(rnd, 16);
            snprintf(idem, sizeof(idem), "admin:%s", rnd);
        }
    }
    fb_log(FB_LOG_INFO, rid, "admin call", "method=%s", route->rpc);
    s_call_t *c = fb_calloc(1, sizeof(*c));
    c->guard = fb_http_guard_new(req);
    c->route = route;
    c->edge = w->edge;
    fb_rpc_client_t *client = strncmp(route->rpc, "chain_watcher.", 14) == 0 ? w->watcher : w->ledger;
    edge_rpc_json(client, route->rpc, body, route->write ? idem : NULL, rid, ADMIN_DEADLINE_MS, s_on_reply,
                  c);
    return 0;
}

int edge_admin_test(bool verbose)
{
    FB_UNUSED(verbose);
    h2o_iovec_t seg[ADMIN_SEGMENTS];
    FB_ASSERT(s_split(h2o_iovec_init(H2O_STRLIT("accounts/12/keys")), seg) == 3);
    FB_ASSERT(h2o_memis(seg[1].base, seg[1].len, H2O_STRLIT("12")));
    FB_ASSERT(s_split(h2o_iovec_init(H2O_STRLIT("accounts//keys")), seg) == -1);
    FB_ASSERT(s_split(h2o_iovec_init(H2O_STRLIT("a/b/c/d/e")), seg) == -1);
    int64_t id = 0;
    FB_ASSERT(s_id(h2o_iovec_init(H2O_STRLIT("42")), &id) && id == 42);
    FB_ASSERT(!s_id(h2o_iovec_init(H2O_STRLIT("042")), &id));
    FB_ASSERT(!s_id(h2o_iovec_init(H2O_STRLIT("-1")), &id));
    FB_ASSERT(!s_id(h2o_iovec_init(H2O_STRLIT("1234567890123456")), &id));
    bool bad = false;
    int n = s_split(h2o_iovec_init(H2O_STRLIT("accounts/7/history")), seg);
    FB_ASSERT(s_match(&s_routes[4], seg, n, &id, &bad) && id == 7 && !bad);
    FB_ASSERT(!s_match(&s_routes[3], seg, n, &id, &bad));
    n = s_split(h2o_iovec_init(H2O_STRLIT("accounts/x7/history")), seg);
    FB_ASSERT(s_match(&s_routes[4], seg, n, &id, &bad) && bad);
    FB_ASSERT(s_in_list("label spend_cap_micro models", "models", 6));
    FB_ASSERT(!s_in_list("label spend_cap_micro models", "model", 5));
    FB_ASSERT(s_status_of("account_not_found") == 404 && s_status_of("bad_request") == 400 &&
              s_status_of("unavailable") == 503 && s_status_of("idempotency_conflict") == 409 &&
              s_status_of("not_configured") == 501 && s_status_of("invalid_state") == 409 &&
              s_status_of("unknown_method") == 502 && s_status_of("something_new") == 502);
    return 0;
}
