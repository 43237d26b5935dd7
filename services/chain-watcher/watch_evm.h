/* watch_evm - USDC deposits on one EVM network, credited exactly once.
 *
 * Every poll: load new deposit addresses from the ledger, read the chain
 * head, and scan the confirmed blocks after the cursor (head minus the
 * confirmation depth, or the "safe"/"finalized" block) with eth_getLogs for
 * the token's Transfer events to any watched address (many addresses per
 * call; the block range halves when a provider refuses a range or a result
 * size and doubles back after successes). Each transfer is credited through
 * ledger.credit with the source (network, transaction hash, log index) and
 * its block hash, so a transfer is credited once however many watchers race;
 * the cursor moves (ledger.advance_cursor, forward only) only after every
 * credit of the range succeeded. Unconfirmed blocks are followed too: their
 * hashes are kept, a parent-hash mismatch is a reorg (counted, logged), and
 * the transfers seen there are listed as pending, never credited. */
#ifndef WATCH_EVM_H
#define WATCH_EVM_H
#include "watch.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdint.h>

typedef struct {
    const char *network;  /* CAIP-2 "eip155:<id>" */
    const char *rpc_urls; /* comma-separated */
    const char *token;    /* the token contract */
    const char *confirm;  /* a block count, "safe" or "finalized" */
    const char *start;    /* "latest" or a block number: where a network never scanned begins */
    uint32_t range_max;   /* blocks per eth_getLogs at most */
    uint32_t per_call;    /* watched addresses per eth_getLogs */
    uint32_t poll_ms;     /* pause between polls when caught up */
    uint32_t timeout_ms;  /* per JSON-RPC attempt */
} watch_evm_config_t;

/* watch_evm_new - start watching. Returns the scanner (caller owns it) or
 * NULL with err. */
watch_evm_t *watch_evm_new(watcher_t *w, const watch_evm_config_t *config, char *err, size_t errlen);
/* watch_evm_stop - stop polling: calls still in flight end the poll when
 * they complete (destroy the ledger client after this, before destroy). */
void watch_evm_stop(watch_evm_t *self);
/* watch_evm_destroy - free (after watch_evm_stop). Nulls *self_p. */
void watch_evm_destroy(watch_evm_t **self_p);
/* watch_evm_status - pack the scanner's state and figures as one map. */
void watch_evm_status(const watch_evm_t *self, msgpack_packer *pk);
/* watch_evm_metrics - the scanner's figures in Prometheus text format. */
void watch_evm_metrics(const watch_evm_t *self, FILE *out);
/* watch_evm_rpc - the scanner's JSON-RPC client (NULL once stopped). */
struct fb_jsonrpc_t;
const struct fb_jsonrpc_t *watch_evm_rpc(const watch_evm_t *self, const char **network);
/* watch_evm_pending - pack the unconfirmed transfers to account (0: all) as a
 * msgpack array. */
void watch_evm_pending(const watch_evm_t *self, int64_t account, msgpack_packer *pk);
#endif
