/* watch_keys - the deposit keys' derivation, from one master seed.
 *
 *   EVM     BIP32 m/44'/60'/0'/0/<account id>: the address of each account.
 *           Only the public node m/44'/60'/0'/0 is kept (an xpub).
 *   Solana  SLIP-0010 ed25519 m/44'/501'/<account id>'/0': the owner of each
 *           account's deposit token account. ed25519 derivation is hardened
 *           only, so the private node m/44'/501' is kept: it can derive
 *           Solana deposit keys and nothing else.
 *
 * The seed itself is cleared as soon as both nodes are derived. */
#ifndef WATCH_KEYS_H
#define WATCH_KEYS_H
#include "fb_evm.h"
#include "fb_hdkey.h"
#include "fb_solana.h"

#include <stdint.h>

typedef struct watch_keys_t watch_keys_t;

/* watch_keys_new - derive the two branch nodes from seed (16..64 bytes).
 * Returns the keys (caller owns them) or NULL when the seed is not usable. */
watch_keys_t *watch_keys_new(const uint8_t *seed, size_t len);
/* watch_keys_from_branches - the same from the two branch nodes, so that the
 * master seed need not be on the host: evm_xpub ("xpub..." of m/44'/60'/0'/0)
 * and solana_node (128 hex digits: the key, then the chain code, of the
 * SLIP-0010 node m/44'/501'), as `farebox-sweep keys` prints them. Returns
 * the keys (caller owns them) or NULL when either is not valid. */
watch_keys_t *watch_keys_from_branches(const char *evm_xpub, const char *solana_node);
/* watch_keys_destroy - clear and free. Nulls *self_p. */
void watch_keys_destroy(watch_keys_t **self_p);
/* watch_keys_evm - the EVM deposit address of account (1..2^31-1) and its
 * path (at least 48 bytes). Returns 0, or -1 for an index out of range or an
 * invalid child (the standard's probability is below 2^-127). */
int watch_keys_evm(const watch_keys_t *self, int64_t account, fb_addr_t *out, char *path, size_t pathcap);
/* watch_keys_solana - the Solana deposit owner of account and its path. */
int watch_keys_solana(const watch_keys_t *self, int64_t account, fb_sol_key_t *out, char *path,
                      size_t pathcap);
/* watch_keys_xpub - the EVM branch's public node as "xpub..." text. */
void watch_keys_xpub(const watch_keys_t *self, char out[FB_HD_XKEY_CHARS]);
#endif
