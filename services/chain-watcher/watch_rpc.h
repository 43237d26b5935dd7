/* watch_rpc - the chain-watcher's RPC methods (proto/README.md):
 *
 *   chain_watcher.deposit_address  {account_id} -> the account's EVM and
 *                                  Solana deposit addresses (made once)
 *   chain_watcher.pending          {[account_id]} -> transfers seen in
 *                                  unconfirmed blocks, not credited yet
 *   chain_watcher.status           {} -> cursor, head, lag and figures */
#ifndef WATCH_RPC_H
#define WATCH_RPC_H
#include "fb_rpc_server.h"
#include "watch.h"

void watch_rpc_register(fb_rpc_server_t *server, watcher_t *w);
#endif
