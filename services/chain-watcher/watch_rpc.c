/* watch_rpc - the chain-watcher's methods: deposit_address, pending, status. */
#include "watch_rpc.h"
#include "fb_codec.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"
#include "watch_evm.h"
#include "watch_svm.h"

#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void watch_idem(const watcher_t *w, const char *kind, const char *a, const char *b, const char *c, char *out)
{
    crypto_generichash_state st;
    uint8_t digest[16];
    crypto_generichash_init(&st, NULL, 0, sizeof(digest));
    const char *parts[4] = {w->replica, a, b, c};
    for (int i = 0; i < 4; i++)
        crypto_generichash_update(&st, (const uint8_t *)parts[i], strlen(parts[i]) + 1); /* NUL separates */
    crypto_generichash_final(&st, digest, sizeof(digest));
    size_t k = strnlen(kind, 16);
    memcpy(out, kind, k);
    out[k] = ':';
    fb_hex_encode(out + k + 1, digest, sizeof(digest));
}

int watch_address_page(const fb_rpc_reply_t *reply, watch_address_fn *fn, void *arg, int64_t *after,
                       bool *more, const char **why)
{
    if (!reply->ok) {
        *why = reply->message;
        return -1;
    }
    const msgpack_object *list = fb_mp_get(reply->body, "addresses");
    if (!list || list->type != MSGPACK_OBJECT_ARRAY) {
        *why = "no address list in the answer";
        return -1;
    }
    *more = false;
    fb_mp_get_bool(reply->body, "more", more);
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *d = &list->via.array.ptr[i];
        int64_t id = 0, account = 0;
        const char *text;
        size_t len;
        fb_mp_get_int64(d, "deposit_address_id", &id);
        fb_mp_get_int64(d, "account_id", &account);
        if (id > *after)
            *after = id;
        if (fb_mp_get_str(d, "address", &text, &len))
            fn(arg, account, text, len);
    }
    return 0;
}

void watch_ledger_call(watcher_t *w, const char *method, json_t *body, const char *idem, fb_rpc_done_fn *cb,
                       void *arg)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (fb_mp_pack_json(&pk, body) != 0) {
        msgpack_sbuffer_destroy(&sb);
        json_decref(body);
        fb_rpc_client_refuse(w->ledger, method, FB_RPC_E_BAD_REQUEST, "the request nests too deep", cb, arg);
        return;
    }
    fb_rpc_call_opts_t o = {.method = method, .idem = idem, .deadline_ms = 15000};
    fb_rpc_client_call(w->ledger, &o, sb.data, sb.size, cb, arg);
    msgpack_sbuffer_destroy(&sb);
    json_decref(body);
}

/* --- chain_watcher.deposit_address ------------------------------------------------------------ */

typedef struct {
    watcher_t *w;
    fb_rpc_call_t *call;
    int64_t account;
    char evm[43], evm_path[64];
    char sol[48], sol_path[64], sol_token_account[48];
    bool evm_created, sol_created;
} s_address_t;

static void s_address_fail(s_address_t *a, const fb_rpc_reply_t *reply)
{
    const char *code = reply->code[0] ? reply->code : FB_RPC_E_UNAVAILABLE;
    fb_rpc_call_error(&a->call, code, NULL, 0, "%s", reply->message);
    free(a);
}

static void s_on_solana_recorded(void *arg, const fb_rpc_reply_t *reply)
{
    s_address_t *a = arg;
    if (!reply->ok)
        return s_address_fail(a, reply);
    fb_mp_get_bool(reply->body, "created", &a->sol_created);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    fb_mp_pack_kv_int(&pk, "account_id", a->account);
    fb_mp_pack_cstr(&pk, "evm");
    msgpack_pack_map(&pk, 3);
    fb_mp_pack_kv_cstr(&pk, "address", a->evm);
    fb_mp_pack_kv_cstr(&pk, "path", a->evm_path);
    fb_mp_pack_kv_bool(&pk, "created", a->evm_created);
    fb_mp_pack_cstr(&pk, "solana");
    msgpack_pack_map(&pk, 4);
    fb_mp_pack_kv_cstr(&pk, "address", a->sol);
    fb_mp_pack_kv_cstr(&pk, "token_account", a->sol_token_account);
    fb_mp_pack_kv_cstr(&pk, "path", a->sol_path);
    fb_mp_pack_kv_bool(&pk, "created", a->sol_created);
    fb_rpc_call_reply(&a->call, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    if (a->evm_created || a->sol_created)
        fb_log(FB_LOG_INFO, NULL, "deposit addresses made", "account_id=%lld evm=%s solana=%s",
               (long long)a->account, a->evm, a->sol);
    free(a);
}

static void s_on_evm_recorded(void *arg, const fb_rpc_reply_t *reply)
{
    s_address_t *a = arg;
    if (!reply->ok)
        return s_address_fail(a, reply);
    fb_mp_get_bool(reply->body, "created", &a->evm_created);
    char idem[96], rnd[33];
    fb_random_hex(rnd, 16);
    snprintf(idem, sizeof(idem), "deposit-address:solana:%lld:%s", (long long)a->account, rnd);
    json_t *body = json_pack("{s:I, s:s, s:s, s:s}", "account_id", (json_int_t)a->account, "chain", "solana",
                             "address", a->sol, "path", a->sol_path);
    watch_ledger_call(a->w, "ledger.add_deposit_address", body, idem, s_on_solana_recorded, a);
}

static void s_deposit_address(void *arg, fb_rpc_call_t *call)
{
    watcher_t *w = arg;
    const fb_rpc_request_t *req = fb_rpc_call_request(call);
    int64_t account = 0;
    if (!fb_mp_get_int64(req->body, "account_id", &account) || account < 1) {
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "account_id must be a positive integer");
        return;
    }
    if (!w->keys) {
        fb_rpc_call_error(
            &call, "not_configured", NULL, 0,
            "no deposit seed is configured (FAREBOX_DEPOSIT_SEED): deposit addresses cannot be made");
        return;
    }
    s_address_t *a = fb_calloc(1, sizeof(*a));
    a->w = w;
    a->call = call;
    a->account = account;
    fb_addr_t evm;
    fb_sol_key_t owner;
    if (watch_keys_evm(w->keys, account, &evm, a->evm_path, sizeof(a->evm_path)) != 0 ||
        watch_keys_solana(w->keys, account, &owner, a->sol_path, sizeof(a->sol_path)) != 0) {
        fb_rpc_call_error(&a->call, FB_RPC_E_BAD_REQUEST, NULL, 0, "account_id %lld has no deposit key",
                          (long long)account);
        free(a);
        return;
    }
    fb_addr_checksum(a->evm, &evm);
    fb_sol_key_format(a->sol, &owner);
    fb_sol_key_t mint, ata;
    if (w->solana_mint[0] && fb_sol_key_parse(&mint, w->solana_mint, strlen(w->solana_mint)) == 0 &&
        fb_sol_ata(&ata, &owner, &mint, &fb_sol_token_program) == 0)
        fb_sol_key_format(a->sol_token_account, &ata);
    char idem[96], rnd[33];
    fb_random_hex(rnd, 16);
    snprintf(idem, sizeof(idem), "deposit-address:evm:%lld:%s", (long long)account, rnd);
    char lower[43];
    fb_addr_lower(lower, &evm);
    json_t *body = json_pack("{s:I, s:s, s:s, s:s}", "account_id", (json_int_t)account, "chain", "evm",
                             "address", lower, "path", a->evm_path);
    watch_ledger_call(w, "ledger.add_deposit_address", body, idem, s_on_evm_recorded, a);
}

/* --- chain_watcher.pending, chain_watcher.status ---------------------------------------------- */

static void s_pending(void *arg, fb_rpc_call_t *call)
{
    watcher_t *w = arg;
    const fb_rpc_request_t *req = fb_rpc_call_request(call);
    int64_t account = 0;
    if (fb_mp_get(req->body, "account_id") &&
        (!fb_mp_get_int64(req->body, "account_id", &account) || account < 1)) {
        fb_rpc_call_error(&call, FB_RPC_E_BAD_REQUEST, NULL, 0, "account_id must be a positive integer");
        return;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    fb_mp_pack_cstr(&pk, "pending");
    if (w->evm)
        watch_evm_pending(w->evm, account, &pk);
    else
        msgpack_pack_array(&pk, 0);
    fb_rpc_call_reply(&call, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void s_status(void *arg, fb_rpc_call_t *call)
{
    watcher_t *w = arg;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    fb_mp_pack_cstr(&pk, "evm");
    if (w->evm)
        watch_evm_status(w->evm, &pk);
    else
        msgpack_pack_nil(&pk);
    fb_mp_pack_cstr(&pk, "solana");
    if (w->svm)
        watch_svm_status(w->svm, &pk);
    else
        msgpack_pack_nil(&pk);
    char xpub[FB_HD_XKEY_CHARS] = "";
    if (w->keys)
        watch_keys_xpub(w->keys, xpub);
    fb_mp_pack_kv_cstr(&pk, "evm_xpub", xpub);
    fb_rpc_call_reply(&call, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

void watch_rpc_register(fb_rpc_server_t *server, watcher_t *w)
{
    fb_rpc_server_handle(server, "chain_watcher.deposit_address", s_deposit_address, w);
    fb_rpc_server_handle(server, "chain_watcher.pending", s_pending, w);
    fb_rpc_server_handle(server, "chain_watcher.status", s_status, w);
}
