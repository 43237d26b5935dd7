/* ledger_rpc - the ledger's RPC methods (proto/README.md, section 6).
 *
 * Each method's body is checked against its field list (types, presence,
 * lengths) and turned into the JSON arguments of the matching SQL function,
 * which checks ranges and meaning and does the work (ledger_engine runs it).
 * Methods that change state need an idempotency key; its fingerprint is the
 * SHA-256 of the method and its arguments in canonical JSON. */
#ifndef LEDGER_RPC_H
#define LEDGER_RPC_H

#include "fb_rpc_server.h"
#include "ledger_engine.h"

#include <stdbool.h>

typedef struct ledger_rpc_t ledger_rpc_t;

/* ledger_rpc_new - register every ledger.* method on server.
 * hmac_secret: the API-key HMAC secret (copied, wiped on destroy). */
ledger_rpc_t *ledger_rpc_new(fb_rpc_server_t *server, ledger_engine_t *engine, const char *hmac_secret);
void ledger_rpc_destroy(ledger_rpc_t **self_p);

int ledger_rpc_test(bool verbose);

#endif
