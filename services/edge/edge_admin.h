/* edge_admin - the operator's API under /admin/ (bearer FAREBOX_ADMIN_TOKEN):
 * accounts, their balances, holds and history, manual credits, API keys
 * (mint — the key is shown once —, list, update cap / allowlist / label,
 * revoke) and the ledger's audit, each answered by the ledger. Writes take
 * an Idempotency-Key header, so that a retried call is applied once. */
#ifndef EDGE_ADMIN_H
#define EDGE_ADMIN_H

#include "edge.h"

#define EDGE_ADMIN_MAX_BODY 65536
#define EDGE_ADMIN_MODELS_MAX                                                                                \
    256 /* a key's allowlist (the ledger's limit): checked against the catalog up to it */

int edge_admin(edge_worker_t *w, h2o_req_t *req, const char *rid);

int edge_admin_test(bool verbose);

#endif
