/* fb_solana - Solana transactions as farebox needs them: decode the wire
 * format (legacy and version 0 messages), check the signatures that are
 * present (ed25519, libsodium), add one, encode back; and derive
 * program-derived addresses such as associated token accounts.
 *
 * The decoder takes bytes from outside: every length and index is checked
 * against the bytes that remain and the sizes Solana allows (a transaction is
 * at most 1232 bytes). */
#ifndef FB_SOLANA_H
#define FB_SOLANA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_SOL_TX_MAX      1232 /* bytes of a wire transaction (the packet limit) */
#define FB_SOL_KEYS_MAX    64
#define FB_SOL_IX_MAX      32
#define FB_SOL_IX_ACCOUNTS 32
#define FB_SOL_LOOKUPS_MAX 8

typedef struct {
    uint8_t b[32];
} fb_sol_key_t;

typedef struct {
    uint8_t program;                      /* index into the account keys */
    uint8_t accounts[FB_SOL_IX_ACCOUNTS]; /* indexes into the account keys */
    uint8_t naccounts;
    const uint8_t *data; /* points into the decoded buffer */
    uint16_t data_len;
} fb_sol_ix_t;

typedef struct {
    fb_sol_key_t table; /* address lookup table account */
    uint8_t nwritable, nreadonly;
} fb_sol_lookup_t;

typedef struct {
    int version;            /* -1 legacy, 0 for v0 */
    uint8_t nsigs;          /* signatures in the wire transaction */
    const uint8_t *sigs;    /* nsigs * 64 bytes, into the buffer */
    const uint8_t *message; /* the signed bytes */
    size_t message_len;
    uint8_t num_required_signatures, num_readonly_signed, num_readonly_unsigned;
    fb_sol_key_t keys[FB_SOL_KEYS_MAX];
    uint8_t nkeys;
    fb_sol_key_t blockhash;
    fb_sol_ix_t ix[FB_SOL_IX_MAX];
    uint8_t nix;
    fb_sol_lookup_t lookups[FB_SOL_LOOKUPS_MAX];
    uint8_t nlookups;
} fb_sol_tx_t;

/* fb_sol_tx_decode - decode a wire transaction; tx points into buf, which must
 * outlive it. Returns 0, or -1 with a short reason in *why ("truncated",
 * "trailing bytes", "too many instructions", ...). */
int fb_sol_tx_decode(fb_sol_tx_t *tx, const uint8_t *buf, size_t len, const char **why);

/* fb_sol_sig_present - the signature slot i holds something (not all zero). */
bool fb_sol_sig_present(const fb_sol_tx_t *tx, int i);

/* fb_sol_sig_verify - signature slot i verifies over the message under key i.
 * Returns true when it does. */
bool fb_sol_sig_verify(const fb_sol_tx_t *tx, int i);

/* fb_sol_is_writable - account key i is writable by the header's rules. */
bool fb_sol_is_writable(const fb_sol_tx_t *tx, int i);

/* fb_sol_on_curve - the 32 bytes decode to a point of ed25519 (what Solana
 * means by "on curve": program-derived addresses are exactly those that
 * do not). */
bool fb_sol_on_curve(const uint8_t p[32]);

/* fb_sol_pda - find_program_address: the first bump from 255 down whose
 * sha256(seeds || bump || program || "ProgramDerivedAddress") is off the
 * curve. Returns 0 with *out and *bump, or -1 (no bump works). */
int fb_sol_pda(fb_sol_key_t *out, uint8_t *bump, const uint8_t *const *seeds, const size_t *seed_lens,
               int nseeds, const fb_sol_key_t *program);

/* fb_sol_ata - the associated token account of owner for mint under
 * token_program (the classic Token program or Token-2022). */
int fb_sol_ata(fb_sol_key_t *out, const fb_sol_key_t *owner, const fb_sol_key_t *mint,
               const fb_sol_key_t *token_program);

/* fb_sol_key_parse - base58 text of a 32-byte key. Returns 0 or -1. */
int fb_sol_key_parse(fb_sol_key_t *out, const char *text, size_t len);

/* fb_sol_secret_parse - a 64-byte ed25519 keypair (seed then public key) from
 * its base58 text, or from the JSON array of its bytes that solana-keygen
 * writes; the public half must be the seed's. Fills secret and, when given,
 * pub. Returns 0, or -1 (secret is then wiped). */
int fb_sol_secret_parse(uint8_t secret[64], fb_sol_key_t *pub, const char *text);

/* fb_sol_key_format - base58 text and a NUL into out (at least 45 bytes). */
void fb_sol_key_format(char *out, const fb_sol_key_t *k);

bool fb_sol_key_eq(const fb_sol_key_t *a, const fb_sol_key_t *b);

/* Solana mainnet's CAIP-2 id: "solana:" and its genesis hash's first 32
 * characters. */
extern const char FB_SOL_MAINNET_CAIP2[];

/* fb_sol_cluster_config - checks expect (FAREBOX_SOLANA_GENESIS_HASH: "" or a
 * genesis hash) against the network caip2 served. Mainnet cannot be served
 * by another cluster: its expected hash, if given, must be mainnet's. Returns
 * 0, or -1 with why. */
int fb_sol_cluster_config(const char *caip2, const char *expect, const char **why);

/* fb_sol_cluster_checked - whether the endpoints' cluster is checked: a hash
 * is expected, or the network is mainnet (a devnet, testnet or local
 * validator, often serving under a borrowed id, is not, unless one is). */
bool fb_sol_cluster_checked(const char *caip2, const char *expect);

/* fb_sol_cluster_ok - whether genesis, an endpoint's getGenesisHash answer,
 * is the cluster expected: exactly expect when set, else (mainnet) one whose
 * hash begins with the network's reference. */
bool fb_sol_cluster_ok(const char *caip2, const char *expect, const char *genesis);

/* Well-known program ids. */
extern const char FB_SOL_SYSTEM_PROGRAM[];
extern const char FB_SOL_TOKEN_PROGRAM[];
extern const char FB_SOL_TOKEN_2022_PROGRAM[];
extern const char FB_SOL_ATA_PROGRAM[];
extern const char FB_SOL_COMPUTE_BUDGET_PROGRAM[];
extern const char FB_SOL_MEMO_PROGRAM[];
extern const char FB_SOL_LIGHTHOUSE_PROGRAM[];

/* The same program ids, decoded. */
extern const fb_sol_key_t fb_sol_token_program, fb_sol_token_2022_program, fb_sol_ata_program,
    fb_sol_compute_budget_program, fb_sol_memo_program, fb_sol_lighthouse_program;

int fb_solana_test(bool verbose);

#endif
