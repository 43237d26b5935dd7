/* ledger_rpc - method table, body checking, and answers of the ledger. */
#include "ledger_rpc.h"
#include "fb_apikey.h"
#include "fb_codec.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_CHARGES_MAX    1000       /* charges in one ledger.charge */
#define LEDGER_CHARGE_REF_MAX 100        /* bytes of a charge's ref */
#define LEDGER_ANSWER_MAX     (16 << 20) /* bytes of a stored answer (the RPC message limit is lower) */

typedef enum {
    F_INT,      /* integer */
    F_INT_NULL, /* integer or nil (nil clears) */
    F_STR,      /* string of at most max bytes */
    F_STR_LIST, /* list of strings, or nil */
    F_SOURCE,   /* {chain, tx, index[, block_hash]} */
    F_HMAC,     /* 32 bytes: binary, or 64 hex digits */
    F_BOOL,     /* true or false */
    F_CHARGES,  /* list of 1..max {amount_micro, ref[, call]} */
} s_type_t;

typedef struct {
    const char *name;
    s_type_t type;
    bool required;
    size_t max; /* F_STR: bytes; F_STR_LIST: items */
} s_field_t;

/* How an operation finds the rows it locks. */
typedef enum {
    L_NONE,
    L_ACCOUNT,
    L_HOLD,
    L_HOLD_ONLY,
    L_KEY,
    L_HOLD_ACCOUNT_KEY,
    L_CREDIT,
    L_TOPUP
} s_lock_t;

typedef struct {
    const char *method;
    ledger_op_kind_t kind;
    s_lock_t lock;
    const char *lock_code; /* a system account the operation posts to */
    s_field_t fields[13];
} s_method_t;

#define END                                                                                                  \
    {                                                                                                        \
        NULL, 0, false, 0                                                                                    \
    }

static const s_method_t s_methods[] = {
    {"ledger.open_account", LEDGER_OP_WRITE, L_NONE, NULL, {{"label", F_STR, false, 200}, END}},
    {"ledger.mint_key",
     LEDGER_OP_WRITE,
     L_ACCOUNT,
     NULL,
     {{"account_id", F_INT, true, 0},
      {"label", F_STR, false, 200},
      {"spend_cap_micro", F_INT_NULL, false, 0},
      {"models", F_STR_LIST, false, 256},
      END}},
    {"ledger.revoke_key", LEDGER_OP_WRITE, L_KEY, NULL, {{"key_id", F_INT, true, 0}, END}},
    {"ledger.update_key",
     LEDGER_OP_WRITE,
     L_KEY,
     NULL,
     {{"key_id", F_INT, true, 0},
      {"label", F_STR, false, 200},
      {"spend_cap_micro", F_INT_NULL, false, 0},
      {"models", F_STR_LIST, false, 256},
      END}},
    {"ledger.hold",
     LEDGER_OP_WRITE,
     L_HOLD_ACCOUNT_KEY,
     NULL,
     {{"account_id", F_INT, true, 0},
      {"amount_micro", F_INT, true, 0},
      {"expires_in_ms", F_INT, true, 0},
      {"key_id", F_INT, false, 0},
      {"memo", F_STR, false, 500},
      END}},
    {"ledger.commit",
     LEDGER_OP_WRITE,
     L_HOLD,
     "revenue",
     {{"hold_id", F_INT, true, 0}, {"amount_micro", F_INT, true, 0}, END}},
    {"ledger.void", LEDGER_OP_WRITE, L_HOLD, "revenue", {{"hold_id", F_INT, true, 0}, END}},
    {"ledger.charge", /* only the hold's row changes: its charges move when it resolves */
     LEDGER_OP_WRITE,
     L_HOLD_ONLY,
     NULL,
     {{"hold_id", F_INT, true, 0}, {"charges", F_CHARGES, true, LEDGER_CHARGES_MAX}, END}},
    {"ledger.credit",
     LEDGER_OP_WRITE,
     L_CREDIT,
     NULL,
     {{"account_id", F_INT, true, 0},
      {"amount_micro", F_INT, true, 0},
      {"kind", F_STR, true, 20},
      {"source", F_SOURCE, true, 0},
      END}},
    {"ledger.topup_advance", /* a topup credited before its settlement is final */
     LEDGER_OP_WRITE,
     L_TOPUP,
     NULL,
     {{"account_id", F_INT, true, 0},
      {"amount_micro", F_INT, true, 0},
      {"source", F_SOURCE, true, 0},
      {"advance_limit_micro", F_INT, true, 0},
      END}},
    {"ledger.record_authorization",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"network", F_STR, true, 100},
      {"payer", F_STR, false, 100},
      {"nonce", F_STR, true, 200},
      {"amount_micro", F_INT, true, 0},
      {"pay_to", F_STR, false, 100},
      {"resource", F_STR, false, 2000},
      END}},
    {"ledger.mark_served", LEDGER_OP_WRITE, L_NONE, NULL, {{"authorization_id", F_INT, true, 0}, END}},
    {"ledger.mark_settled",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"authorization_id", F_INT, true, 0}, {"settlement_tx", F_STR, true, 200}, END}},
    {"ledger.mark_failed",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"authorization_id", F_INT, true, 0}, {"reason", F_STR, false, 500}, END}},
    {"ledger.add_deposit_address",
     LEDGER_OP_WRITE,
     L_ACCOUNT,
     NULL,
     {{"account_id", F_INT, true, 0},
      {"chain", F_STR, true, 20},
      {"address", F_STR, true, 64},
      {"path", F_STR, true, 100},
      END}},
    {"ledger.advance_cursor",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"network", F_STR, true, 100},
      {"block", F_INT, true, 0},
      {"hash", F_STR, false, 100},
      {"start", F_BOOL, false, 0}, /* 0032: set only where there is none */
      END}},
    {"ledger.deposit_addresses",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"chain", F_STR, false, 20},
      {"account_id", F_INT, false, 0},
      {"after_id", F_INT, false, 0},
      {"limit", F_INT, false, 0},
      END}},
    {"ledger.watch_cursor", LEDGER_OP_READ, L_NONE, NULL, {{"network", F_STR, true, 100}, END}},
    {"ledger.lookup_key", LEDGER_OP_READ, L_NONE, NULL, {{"hmac", F_HMAC, true, 0}, END}},
    {"ledger.account", LEDGER_OP_READ, L_NONE, NULL, {{"account_id", F_INT, true, 0}, END}},
    {"ledger.balance", LEDGER_OP_READ, L_NONE, NULL, {{"account_id", F_INT, true, 0}, END}},
    {"ledger.keys",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"account_id", F_INT, true, 0}, {"after_id", F_INT, false, 0}, {"limit", F_INT, false, 0}, END}},
    {"ledger.holds",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"account_id", F_INT, true, 0},
      {"state", F_STR, false, 20},
      {"before_id", F_INT, false, 0},
      {"limit", F_INT, false, 0},
      END}},
    {"ledger.charges",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"account_id", F_INT, true, 0},
      {"hold_id", F_INT, false, 0},
      {"before_id", F_INT, false, 0},
      {"limit", F_INT, false, 0},
      END}},
    {"ledger.history",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"account_id", F_INT, true, 0}, {"before_id", F_INT, false, 0}, {"limit", F_INT, false, 0}, END}},
    {"ledger.authorization",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"authorization_id", F_INT, false, 0},
      {"network", F_STR, false, 100},
      {"payer", F_STR, false, 100},
      {"nonce", F_STR, false, 200},
      END}},
    {"ledger.call",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"scope", F_STR, true, 200}, {"idem_key", F_STR, false, 255}, END}},
    {"ledger.audit", LEDGER_OP_AUDIT, L_NONE, NULL, {END}},
    {"ledger.identity", LEDGER_OP_READ, L_NONE, NULL, {END}}, /* 0023: names the ledger for edge journals */
    {"ledger.call_claim",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"scope", F_STR, true, 200},
      {"idem_key", F_STR, false, 255},
      {"claim", F_STR, true, 100},
      {"request_hash", F_STR, true, 64},
      {"lease_ms", F_INT, true, 0},
      {"keep_ms", F_INT, true, 0},
      END}},
    {"ledger.call_release",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"scope", F_STR, true, 200}, {"idem_key", F_STR, false, 255}, {"claim", F_STR, true, 100}, END}},
    {"ledger.call_link",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"scope", F_STR, true, 200},
      {"idem_key", F_STR, false, 255},
      {"claim", F_STR, true, 100},
      {"authorization_id", F_INT, true, 0},
      END}},
    {"ledger.call_done",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"scope", F_STR, true, 200},
      {"idem_key", F_STR, false, 255},
      {"claim", F_STR, true, 100},
      {"status", F_INT, true, 0},
      {"content_type", F_STR, true, 100},
      {"answer", F_STR, false, LEDGER_ANSWER_MAX},
      {"answer_bytes", F_INT, true, 0},
      {"receipt", F_STR, false, 4000},
      END}},
    {"ledger.settlement_begin",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"network", F_STR, true, 100},
      {"payer", F_STR, false, 100},
      {"nonce", F_STR, true, 200},
      {"amount_micro", F_INT, true, 0},
      {"pay_to", F_STR, false, 100},
      {"resource", F_STR, false, 2000},
      {"sender", F_STR, false, 100},
      {"evm", F_BOOL, false, 0},
      {"chain_nonce", F_INT, false, 0},
      {"calldata", F_STR, false, 20000},
      {"existing_only", F_BOOL, false, 0},
      {"answer_once", F_BOOL, false, 0}, /* 0030: its success is answered to one settle */
      END}},
    {"ledger.settlement_signed",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"settlement_id", F_INT, true, 0},
      {"tx_hash", F_STR, true, 200},
      {"raw_tx", F_STR, true, 20000},
      {"nonce", F_INT, false, 0},
      {"last_valid_height", F_INT, false, 0},
      END}},
    {"ledger.settlement_renonce", /* its transaction's nonce was taken (or it is re-priced): sign again */
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"settlement_id", F_INT, true, 0},
      {"tx_hash", F_STR, true, 200},
      {"chain_nonce", F_INT, false, 0},
      {"keep_nonce", F_BOOL, false, 0},
      END}},
    {"ledger.settlement_broadcast", LEDGER_OP_WRITE, L_NONE, NULL, {{"settlement_id", F_INT, true, 0}, END}},
    {"ledger.settlement_answer", /* 0030: take a confirmed settlement's one success answer */
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"settlement_id", F_INT, true, 0}, END}},
    {"ledger.settlement_result",
     LEDGER_OP_WRITE,
     L_NONE,
     NULL,
     {{"settlement_id", F_INT, true, 0},
      {"state", F_STR, true, 20},
      {"reason", F_STR, false, 500},
      {"settled_by", F_STR, false, 100},
      END}},
    {"ledger.settlement",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"settlement_id", F_INT, false, 0}, {"authorization_id", F_INT, false, 0}, END}},
    {"ledger.advances",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"account_id", F_INT, true, 0}, {"before_id", F_INT, false, 0}, {"limit", F_INT, false, 0}, END}},
    {"ledger.open_settlements",
     LEDGER_OP_READ,
     L_NONE,
     NULL,
     {{"network", F_STR, false, 100}, {"older_than_ms", F_INT, false, 0}, {"limit", F_INT, false, 0}, END}},
};

#define METHOD_COUNT (sizeof(s_methods) / sizeof(s_methods[0]))

/* What a registered handler needs: the ledger and its method. */
typedef struct {
    struct ledger_rpc_t *rpc;
    const s_method_t *method;
} s_route_t;

struct ledger_rpc_t {
    ledger_engine_t *engine;
    char *hmac_secret; /* API-key HMAC secret, wiped on destroy */
    size_t hmac_secret_len;
    s_route_t routes[METHOD_COUNT];
};

/* One call waiting for the engine. */
typedef struct {
    fb_rpc_call_t *call;
    const s_method_t *m;
    char key[FB_APIKEY_MAX + 1]; /* a freshly minted key, shown once */
} s_pending_t;

/* --- body checking ------------------------------------------------------------------- */

static bool s_int_value(const msgpack_object *o, json_int_t *out)
{
    int64_t v;
    if (!fb_mp_int64(o, &v))
        return false;
    *out = (json_int_t)v;
    return true;
}

static json_t *s_str_value(const msgpack_object *o, size_t max)
{
    const char *s;
    size_t n;
    if (!fb_mp_str(o, &s, &n) || n > max)
        return NULL;
    /* text for Postgres: valid UTF-8 (json_stringn checks it), no NUL */
    if (memchr(s, '\0', n))
        return NULL;
    return json_stringn(s, n);
}

/* A charge's call: {scope, idem_key, claim[, status, content_type, answer,
 * answer_bytes]}, strings and integers (the ledger checks their ranges). */
static json_t *s_charge_call(const msgpack_object *o)
{
    static const struct {
        const char *name;
        size_t max; /* 0: an integer */
    } fields[] = {{"scope", 200},     {"idem_key", 255},     {"claim", 100},
                  {"status", 0},      {"content_type", 100}, {"answer", LEDGER_ANSWER_MAX},
                  {"answer_bytes", 0}};
    if (o->type != MSGPACK_OBJECT_MAP)
        return NULL;
    json_t *call = json_object();
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const msgpack_object *f = fb_mp_get(o, fields[i].name);
        if (!f)
            continue;
        json_int_t n;
        json_t *v = fields[i].max        ? s_str_value(f, fields[i].max)
                    : s_int_value(f, &n) ? json_integer(n)
                                         : NULL;
        if (!v) {
            json_decref(call);
            return NULL;
        }
        json_object_set_new(call, fields[i].name, v);
    }
    return call;
}

/* A list of charges: 1..max maps {amount_micro: 0.., ref: string of at most
 * LEDGER_CHARGE_REF_MAX bytes[, call]}. */
static json_t *s_charges(const msgpack_object *o, size_t max, char *why, size_t whylen)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size == 0 || o->via.array.size > max) {
        snprintf(why, whylen, "charges must be a list of 1..%zu charges", max);
        return NULL;
    }
    json_t *list = json_array();
    for (uint32_t k = 0; k < o->via.array.size; k++) {
        const msgpack_object *c = &o->via.array.ptr[k];
        const msgpack_object *a = c->type == MSGPACK_OBJECT_MAP ? fb_mp_get(c, "amount_micro") : NULL;
        const msgpack_object *r = c->type == MSGPACK_OBJECT_MAP ? fb_mp_get(c, "ref") : NULL;
        json_int_t amount;
        const msgpack_object *co = c->type == MSGPACK_OBJECT_MAP ? fb_mp_get(c, "call") : NULL;
        json_t *ref = r ? s_str_value(r, LEDGER_CHARGE_REF_MAX) : json_string("");
        json_t *call = co ? s_charge_call(co) : NULL;
        if (!a || !s_int_value(a, &amount) || amount < 0 || !ref || (co && !call)) {
            json_decref(ref);
            json_decref(call);
            json_decref(list);
            snprintf(
                why, whylen,
                "charges[%u] must be {amount_micro: an integer 0 or more, ref: a string of at most %d bytes"
                "[, call: {scope, idem_key, claim, status, content_type, answer, answer_bytes}]}",
                k, LEDGER_CHARGE_REF_MAX);
            return NULL;
        }
        json_t *item = json_pack("{sI so}", "amount_micro", amount, "ref", ref);
        if (call)
            json_object_set_new(item, "call", call);
        json_array_append_new(list, item);
    }
    return list;
}

/* Converts body to the JSON arguments of method m. Returns the object, or
 * NULL with a reason in why. */
static json_t *s_args(const s_method_t *m, const msgpack_object *body, char *why, size_t whylen)
{
    json_t *args = json_object();
    for (const s_field_t *f = m->fields; f->name; f++) {
        const msgpack_object *o = fb_mp_get(body, f->name);
        if (o == NULL || (o->type == MSGPACK_OBJECT_NIL && f->type != F_INT_NULL && f->type != F_STR_LIST)) {
            if (f->required) {
                snprintf(why, whylen, "%s is required", f->name);
                goto bad;
            }
            continue;
        }
        json_t *v = NULL;
        json_int_t i;
        switch (f->type) {
        case F_INT:
            if (!s_int_value(o, &i)) {
                snprintf(why, whylen, "%s must be an integer (64-bit signed)", f->name);
                goto bad;
            }
            v = json_integer(i);
            break;
        case F_INT_NULL:
            if (o->type == MSGPACK_OBJECT_NIL)
                v = json_null();
            else if (s_int_value(o, &i))
                v = json_integer(i);
            else {
                snprintf(why, whylen, "%s must be an integer or nil", f->name);
                goto bad;
            }
            break;
        case F_STR:
            v = s_str_value(o, f->max);
            if (!v) {
                snprintf(why, whylen, "%s must be a UTF-8 string of at most %zu bytes", f->name, f->max);
                goto bad;
            }
            break;
        case F_STR_LIST:
            if (o->type == MSGPACK_OBJECT_NIL) {
                v = json_null();
                break;
            }
            if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > f->max) {
                snprintf(why, whylen, "%s must be a list of at most %zu strings, or nil", f->name, f->max);
                goto bad;
            }
            v = json_array();
            for (uint32_t k = 0; k < o->via.array.size; k++) {
                json_t *s = s_str_value(&o->via.array.ptr[k], 200);
                if (!s) {
                    json_decref(v);
                    snprintf(why, whylen, "%s[%u] must be a string of at most 200 bytes", f->name, k);
                    goto bad;
                }
                json_array_append_new(v, s);
            }
            break;
        case F_SOURCE: {
            static const char *parts[] = {"chain", "tx", "index", "block_hash"};
            static const size_t lens[] = {100, 200, 100, 200};
            if (o->type != MSGPACK_OBJECT_MAP) {
                snprintf(why, whylen, "%s must be a map {chain, tx, index}", f->name);
                goto bad;
            }
            v = json_object();
            for (size_t k = 0; k < 4; k++) {
                const msgpack_object *p = fb_mp_get(o, parts[k]);
                if (!p && k == 3)
                    continue;
                json_t *s = p && p->type == MSGPACK_OBJECT_POSITIVE_INTEGER && k == 2
                                ? json_sprintf("%llu", (unsigned long long)p->via.u64)
                                : s_str_value(p, lens[k]);
                if (!s) {
                    json_decref(v);
                    snprintf(why, whylen, "%s.%s must be a string of at most %zu bytes", f->name, parts[k],
                             lens[k]);
                    goto bad;
                }
                json_object_set_new(v, parts[k], s);
            }
            break;
        }
        case F_CHARGES:
            v = s_charges(o, f->max, why, whylen);
            if (!v)
                goto bad;
            break;
        case F_BOOL: {
            bool b;
            if (!fb_mp_bool(o, &b)) {
                snprintf(why, whylen, "%s must be true or false", f->name);
                goto bad;
            }
            v = json_boolean(b);
            break;
        }
        case F_HMAC: {
            uint8_t mac[32];
            const char *s;
            size_t n;
            bool ok = false;
            if (o->type == MSGPACK_OBJECT_BIN && o->via.bin.size == 32) {
                memcpy(mac, o->via.bin.ptr, 32);
                ok = true;
            } else if (fb_mp_str(o, &s, &n)) {
                ok = fb_hex_decode(mac, 32, s, n) == 0;
            }
            if (!ok) {
                snprintf(why, whylen, "%s must be 32 bytes (binary, or 64 hex digits)", f->name);
                goto bad;
            }
            char hex[65];
            fb_hex_encode(hex, mac, 32);
            v = json_string(hex);
            break;
        }
        }
        json_object_set_new(args, f->name, v);
    }
    return args;
bad:
    json_decref(args);
    return NULL;
}

static int64_t s_arg_int(json_t *args, const char *name)
{
    json_t *v = json_object_get(args, name);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (int64_t)json_integer_value(v) : 0;
}

/* --- answers ----------------------------------------------------------------------------- */

static void s_pack_reply(fb_rpc_call_t **call_p, json_t *result, const char *fresh_key)
{
    json_t *body = json_object_get(result, "body");
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const char *status = json_string_value(json_object_get(result, "status"));
    bool ok = status && strcmp(status, "ok") == 0;
    if (json_is_object(body)) {
        if (ok && fresh_key)
            json_object_set_new(body, "key", json_string(fresh_key));
        if (ok && json_is_true(json_object_get(result, "replayed")))
            json_object_set_new(body, "replayed", json_true());
        fb_mp_pack_json(&pk, body);
    }
    if (ok) {
        fb_rpc_call_reply(call_p, sb.data, sb.size);
    } else {
        const char *code = json_string_value(json_object_get(result, "code"));
        const char *message = json_string_value(json_object_get(result, "message"));
        fb_rpc_call_error(call_p, code ? code : FB_RPC_E_INTERNAL, sb.data, sb.size, "%s",
                          message ? message : "");
    }
    msgpack_sbuffer_destroy(&sb);
}

static void s_done(void *arg, const char *result, const char *code, const char *message)
{
    s_pending_t *p = arg;
    if (!result) {
        fb_rpc_call_error(&p->call, code, NULL, 0, "%s", message);
    } else {
        json_error_t jerr;
        json_t *j = json_loads(result, 0, &jerr);
        if (!j || !json_is_object(j)) {
            fb_log(FB_LOG_ERROR, fb_rpc_call_trace(p->call), "ledger answer is not JSON", "method=%s",
                   p->m->method);
            fb_rpc_call_error(&p->call, FB_RPC_E_INTERNAL, NULL, 0,
                              "the ledger produced an unreadable answer");
        } else {
            bool replayed = json_is_true(json_object_get(j, "replayed"));
            s_pack_reply(&p->call, j, p->key[0] && !replayed ? p->key : NULL);
        }
        json_decref(j);
    }
    sodium_memzero(p->key, sizeof(p->key));
    free(p);
}

/* --- dispatch --------------------------------------------------------------------------------- */

static void s_handle(void *arg, fb_rpc_call_t *call)
{
    s_route_t *route = arg;
    ledger_rpc_t *self = route->rpc;
    const s_method_t *m = route->method;
    const fb_rpc_request_t *req = fb_rpc_call_request(call);
    char why[300];
    json_t *args = s_args(m, req->body, why, sizeof(why));
    if (!args) {
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "%s: %s", m->method, why);
        return;
    }
    char idem[FB_RPC_STR_MAX + 1] = "";
    if (m->kind == LEDGER_OP_WRITE) {
        if (!req->idem || req->idem_len == 0) {
            json_decref(args);
            fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0,
                              "%s changes state and needs an idempotency key", m->method);
            return;
        }
        memcpy(idem, req->idem, req->idem_len);
        idem[req->idem_len] = '\0';
    }
    if (strcmp(m->method, "ledger.authorization") == 0 && !json_object_get(args, "authorization_id") &&
        !(json_object_get(args, "network") && json_object_get(args, "nonce"))) {
        json_decref(args);
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0,
                          "ledger.authorization needs authorization_id, or network, payer and nonce");
        return;
    }

    /* canonical JSON of the caller's fields: the idempotency fingerprint */
    char *text = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
    uint8_t h[32];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    crypto_hash_sha256_update(&st, (const unsigned char *)m->method, strlen(m->method) + 1);
    crypto_hash_sha256_update(&st, (const unsigned char *)text, strlen(text));
    crypto_hash_sha256_final(&st, h);
    char fingerprint[2 + 64 + 1] = "\\x";
    fb_hex_encode(fingerprint + 2, h, 32);

    s_pending_t *p = fb_calloc(1, sizeof(*p));
    p->call = call;
    p->m = m;
    if (strcmp(m->method, "ledger.mint_key") == 0) {
        /* the key is made here and only its HMAC goes to the database */
        uint8_t mac[32];
        char hex[65];
        fb_apikey_generate(p->key);
        fb_apikey_hmac(mac, self->hmac_secret, self->hmac_secret_len, p->key, strlen(p->key));
        fb_hex_encode(hex, mac, 32);
        json_object_set_new(args, "hmac", json_string(hex));
        json_object_set_new(args, "prefix", json_stringn(p->key, FB_APIKEY_SHOWN));
        free(text);
        text = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
    }

    char code[160] = "";
    ledger_op_spec_t spec = {
        .kind = m->kind,
        .method = m->method,
        .idem = m->kind == LEDGER_OP_WRITE ? idem : NULL,
        .fingerprint = fingerprint,
        .args = text,
        .deadline = fb_rpc_call_deadline(call),
        .trace = fb_rpc_call_trace(call),
        .lock_code = m->lock_code,
    };
    switch (m->lock) {
    case L_ACCOUNT:
        spec.lock_account = s_arg_int(args, "account_id");
        break;
    case L_HOLD:
        spec.lock_hold = s_arg_int(args, "hold_id");
        break;
    case L_HOLD_ONLY:
        spec.lock_hold = s_arg_int(args, "hold_id");
        spec.lock_hold_only = true;
        break;
    case L_KEY:
        spec.lock_key = s_arg_int(args, "key_id");
        break;
    case L_HOLD_ACCOUNT_KEY:
        spec.lock_account = s_arg_int(args, "account_id");
        spec.lock_key = s_arg_int(args, "key_id");
        break;
    case L_CREDIT: {
        /* the clearing account, named as the SQL function names it */
        const char *kind = json_string_value(json_object_get(args, "kind"));
        const char *chain = json_string_value(json_object_get(json_object_get(args, "source"), "chain"));
        spec.lock_account = s_arg_int(args, "account_id");
        if (kind && chain && strcmp(kind, "deposit") == 0)
            snprintf(code, sizeof(code), "deposits:%s", chain);
        else if (kind && chain && strcmp(kind, "topup") == 0)
            snprintf(code, sizeof(code), "topups:%s", chain);
        else
            snprintf(code, sizeof(code), "adjustments");
        spec.lock_code = code;
        break;
    }
    case L_TOPUP: {
        const char *chain = json_string_value(json_object_get(json_object_get(args, "source"), "chain"));
        spec.lock_account = s_arg_int(args, "account_id");
        snprintf(code, sizeof(code), "topups:%s", chain ? chain : "");
        spec.lock_code = code;
        break;
    }
    case L_NONE:
        break;
    }
    ledger_engine_submit(self->engine, &spec, s_done, p);
    free(text);
    json_decref(args);
}

/* --- life cycle -------------------------------------------------------------------------------- */

ledger_rpc_t *ledger_rpc_new(fb_rpc_server_t *server, ledger_engine_t *engine, const char *hmac_secret)
{
    ledger_rpc_t *self = fb_calloc(1, sizeof(*self));
    self->engine = engine;
    self->hmac_secret = fb_strdup(hmac_secret);
    self->hmac_secret_len = strlen(hmac_secret);
    for (size_t i = 0; i < METHOD_COUNT; i++) {
        self->routes[i] = (s_route_t){self, &s_methods[i]};
        fb_rpc_server_handle(server, s_methods[i].method, s_handle, &self->routes[i]);
    }
    return self;
}

void ledger_rpc_destroy(ledger_rpc_t **self_p)
{
    FB_ASSERT(self_p);
    ledger_rpc_t *self = *self_p;
    if (!self)
        return;
    sodium_memzero(self->hmac_secret, self->hmac_secret_len);
    free(self->hmac_secret);
    free(self);
    *self_p = NULL;
}

static const s_method_t *s_method_named(const char *name)
{
    for (size_t i = 0; i < METHOD_COUNT; i++)
        if (strcmp(s_methods[i].method, name) == 0)
            return &s_methods[i];
    return NULL;
}

int ledger_rpc_test(bool verbose)
{
    FB_UNUSED(verbose);
    /* body checking: every kind of field, accepted and refused */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    fb_mp_pack_kv_int(&pk, "account_id", 7);
    fb_mp_pack_kv_int(&pk, "amount_micro", 1500000);
    fb_mp_pack_kv_int(&pk, "expires_in_ms", 60000);
    fb_mp_pack_kv_cstr(&pk, "memo", "chat");
    fb_mp_pack_kv_cstr(&pk, "unknown_field", "ignored");
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object body;
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &body) == 0);
    const s_method_t *hold = s_method_named("ledger.hold");
    FB_ASSERT(hold);
    char why[300];
    json_t *args = s_args(hold, &body, why, sizeof(why));
    FB_ASSERT(args);
    char *text = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
    FB_ASSERT(
        strcmp(text,
               "{\"account_id\":7,\"amount_micro\":1500000,\"expires_in_ms\":60000,\"memo\":\"chat\"}") == 0);
    free(text);
    json_decref(args);

    /* a string where an integer belongs, and a missing required field */
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 2);
    fb_mp_pack_kv_cstr(&pk, "account_id", "7");
    fb_mp_pack_kv_int(&pk, "amount_micro", 1);
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &body) == 0);
    FB_ASSERT(s_args(hold, &body, why, sizeof(why)) == NULL && strstr(why, "account_id must be an integer"));
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    fb_mp_pack_kv_int(&pk, "account_id", 7);
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &body) == 0);
    FB_ASSERT(s_args(hold, &body, why, sizeof(why)) == NULL && strstr(why, "amount_micro is required"));

    /* charges: a list of {amount_micro >= 0, ref}; empty, negative, too many or a long ref refused */
    const s_method_t *charge = s_method_named("ledger.charge");
    FB_ASSERT(charge);
    for (int t = 0; t < 5; t++) {
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 2);
        fb_mp_pack_kv_int(&pk, "hold_id", 9);
        fb_mp_pack_cstr(&pk, "charges");
        uint32_t n = t == 1 ? 0 : t == 3 ? LEDGER_CHARGES_MAX + 1 : 2;
        msgpack_pack_array(&pk, n);
        for (uint32_t k = 0; k < n; k++) {
            msgpack_pack_map(&pk, 2);
            fb_mp_pack_kv_int(&pk, "amount_micro", t == 2 && k == 1 ? -1 : (int64_t)k * 7);
            char ref[LEDGER_CHARGE_REF_MAX + 2];
            memset(ref, 'r', sizeof(ref) - 1);
            ref[t == 4 ? LEDGER_CHARGE_REF_MAX + 1 : 3] = '\0';
            fb_mp_pack_kv_cstr(&pk, "ref", ref);
        }
        FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &body) == 0);
        json_t *a = s_args(charge, &body, why, sizeof(why));
        FB_ASSERT((a != NULL) == (t == 0));
        if (a) {
            json_t *list = json_object_get(a, "charges");
            FB_ASSERT(json_array_size(list) == 2);
            FB_ASSERT(json_integer_value(json_object_get(json_array_get(list, 1), "amount_micro")) == 7);
            FB_ASSERT(strcmp(json_string_value(json_object_get(json_array_get(list, 1), "ref")), "rrr") == 0);
        } else {
            FB_ASSERT(strstr(why, "charges"));
        }
        json_decref(a);
    }

    /* credit source, hmac, lists */
    const s_method_t *credit = s_method_named("ledger.credit"), *lookup = s_method_named("ledger.lookup_key"),
                     *mint = s_method_named("ledger.mint_key");
    FB_ASSERT(credit && lookup && mint);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 4);
    fb_mp_pack_kv_int(&pk, "account_id", 3);
    fb_mp_pack_kv_int(&pk, "amount_micro", 10);
    fb_mp_pack_kv_cstr(&pk, "kind", "deposit");
    fb_mp_pack_cstr(&pk, "source");
    msgpack_pack_map(&pk, 3);
    fb_mp_pack_kv_cstr(&pk, "chain", "eip155:84532");
    fb_mp_pack_kv_cstr(&pk, "tx", "0xabc");
    fb_mp_pack_kv_uint(&pk, "index", 4);
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &body) == 0);
    args = s_args(credit, &body, why, sizeof(why));
    FB_ASSERT(args);
    FB_ASSERT(strcmp(json_string_value(json_object_get(json_object_get(args, "source"), "index")), "4") == 0);
    json_decref(args);

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 1);
    fb_mp_pack_kv_cstr(&pk, "hmac", "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF");
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &body) == 0);
    args = s_args(lookup, &body, why, sizeof(why));
    FB_ASSERT(args && strcmp(json_string_value(json_object_get(args, "hmac")),
                             "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff") == 0);
    json_decref(args);

    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 3);
    fb_mp_pack_kv_int(&pk, "account_id", 1);
    fb_mp_pack_cstr(&pk, "models");
    msgpack_pack_array(&pk, 2);
    fb_mp_pack_cstr(&pk, "gpt-4o-mini");
    msgpack_pack_int(&pk, 5);
    fb_mp_pack_cstr(&pk, "spend_cap_micro");
    msgpack_pack_nil(&pk);
    FB_ASSERT(fb_mp_unpack(sb.data, sb.size, &zone, &body) == 0);
    FB_ASSERT(s_args(mint, &body, why, sizeof(why)) == NULL && strstr(why, "models[1]"));

    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb);
    return 0;
}
