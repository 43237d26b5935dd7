/* watch - what the chain-watcher's modules share: the service's loop, its
 * ledger client, the deposit keys, and the chain scanners. */
#ifndef WATCH_H
#define WATCH_H
#include "fb_rpc_client.h"
#include "watch_keys.h"

#include <jansson.h>
#include <stdio.h>
#include <stdbool.h>
#include <uv.h>

typedef struct watch_evm_t watch_evm_t;
typedef struct watch_svm_t watch_svm_t;

typedef struct {
    uv_loop_t *loop;
    fb_rpc_client_t *ledger;
    watch_keys_t *keys;   /* NULL: no seed configured (addresses cannot be made) */
    watch_evm_t *evm;     /* NULL: no EVM network watched */
    watch_svm_t *svm;     /* NULL: no Solana network watched */
    char solana_mint[48]; /* "" when Solana is off: the deposit token account is not shown */
    char replica[64];     /* this replica's name: its credits' idempotency keys */
} watcher_t;

/* watch_idem - an idempotency key "<kind>:<hash of this replica, a, b, c>"
 * (kind at most 16 bytes; out at least 56 bytes). For a credit (a, b, c = the
 * source's network, tx, index): a retry from this replica answers its first
 * call again, another replica crediting the same source is told it is a
 * duplicate. */
void watch_idem(const watcher_t *w, const char *kind, const char *a, const char *b, const char *c, char *out);
/* watch_address_fn - one address of a ledger.deposit_addresses page. */
typedef void(watch_address_fn)(void *arg, int64_t account, const char *address, size_t len);
/* watch_address_page - reads a ledger.deposit_addresses reply: calls fn for
 * each address, moves *after to the page's last id, sets *more. Returns 0,
 * or -1 with *why when the reply is an error or not a page. */
int watch_address_page(const fb_rpc_reply_t *reply, watch_address_fn *fn, void *arg, int64_t *after,
                       bool *more, const char **why);
/* watch_ledger_call - a ledger call with a JSON body (stolen). Writes carry
 * idem (required for them). */
void watch_ledger_call(watcher_t *w, const char *method, json_t *body, const char *idem, fb_rpc_done_fn *cb,
                       void *arg);
#endif
