/* verifier_rpc - the verifier's RPC methods (proto/README.md): verify,
 * settle, supported, verify_message. Payments come as a decoded payload map or as the raw
 * PAYMENT-SIGNATURE / X-PAYMENT header value; answers use x402's field names. */
#ifndef VERIFIER_RPC_H
#define VERIFIER_RPC_H

#include "fb_rpc_server.h"
#include "verifier.h"

void verifier_rpc_register(fb_rpc_server_t *server, verifier_t *v);

#endif
