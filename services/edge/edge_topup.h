/* edge_topup - POST /v1/topup: {"amount_micro": N} with an API key, paid
 * with x402 to the operator's treasury, credits the key's account once. */
#ifndef EDGE_TOPUP_H
#define EDGE_TOPUP_H

#include "edge.h"

int edge_topup(edge_worker_t *w, h2o_req_t *req, const char *rid);

#endif
