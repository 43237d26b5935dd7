/* watch_svm - USDC deposits on Solana, credited exactly once.
 *
 * Every deposit owner's associated token account for the configured mint is
 * polled with getSignaturesForAddress (paged with before, down to the last
 * signature handled: until) at the configured commitment. Each new
 * transaction, oldest first, is fetched with getTransaction (jsonParsed,
 * maxSupportedTransactionVersion 0); a failed one is skipped; otherwise the
 * increase of the token account's balance for the mint, from
 * preTokenBalances / postTokenBalances in integer units, is credited through
 * ledger.credit with the source (network, signature, token account): several
 * transfers in one transaction are one credit of their sum, and several
 * watchers crediting the same transaction credit it once. The account's
 * cursor (its newest signature handled, and its slot) moves forward in the
 * ledger only after every credit before it succeeded. */
#ifndef WATCH_SVM_H
#define WATCH_SVM_H
#include "watch.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdint.h>

typedef struct watch_svm_t watch_svm_t;

typedef struct {
    const char *network;    /* CAIP-2 "solana:<genesis hash prefix>" */
    const char *rpc_urls;   /* comma-separated */
    const char *mint;       /* the USDC mint */
    const char *genesis;    /* the genesis hash the endpoints must answer, or "" (fb_sol_cluster_checked) */
    const char *commitment; /* "finalized" or "confirmed" */
    uint32_t poll_ms;       /* pause between polls */
    uint32_t timeout_ms;    /* per JSON-RPC attempt */
    size_t signatures_max;  /* new signatures of one account handled in one poll (the oldest first) */
} watch_svm_config_t;

/* watch_svm_new - start watching. Returns the scanner (caller owns it) or
 * NULL with err. */
watch_svm_t *watch_svm_new(watcher_t *w, const watch_svm_config_t *config, char *err, size_t errlen);
/* watch_svm_stop - stop polling (before the ledger client is destroyed). */
void watch_svm_stop(watch_svm_t *self);
/* watch_svm_destroy - free (after watch_svm_stop). Nulls *self_p. */
void watch_svm_destroy(watch_svm_t **self_p);
/* watch_svm_metrics - the scanner's figures in Prometheus text format. */
void watch_svm_metrics(const watch_svm_t *self, FILE *out);
/* watch_svm_rpc - the scanner's JSON-RPC client (NULL once stopped). */
struct fb_jsonrpc_t;
const struct fb_jsonrpc_t *watch_svm_rpc(const watch_svm_t *self, const char **network);
/* watch_svm_status - pack the scanner's state and figures as one map. */
void watch_svm_status(const watch_svm_t *self, msgpack_packer *pk);
#endif
