/* fb_evm - EVM values: 20-byte addresses (EIP-55 checksums), 256-bit unsigned
 * integers (big-endian, from and to decimal text), bytes32.
 *
 * Parsers take text from outside (x402 payloads, JSON-RPC answers): they check
 * every character, every length, and every range, and never assert. */
#ifndef FB_EVM_H
#define FB_EVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t b[20];
} fb_addr_t;

typedef struct {
    uint8_t b[32]; /* big-endian */
} fb_u256_t;

/* fb_addr_parse - "0x" and 40 hex digits. All-lowercase or all-uppercase text
 * is accepted as is; mixed case must be a valid EIP-55 checksum.
 * Returns 0, or -1 (bad length, character or checksum). */
int fb_addr_parse(fb_addr_t *out, const char *text, size_t len);

/* fb_addr_checksum - the EIP-55 form, "0x..." and a NUL (43 bytes). */
void fb_addr_checksum(char out[43], const fb_addr_t *a);

/* fb_addr_lower - the lowercase form (43 bytes). */
void fb_addr_lower(char out[43], const fb_addr_t *a);

bool fb_addr_eq(const fb_addr_t *a, const fb_addr_t *b);

/* fb_evm_dev_account - one of the ten accounts of the development mnemonic
 * ("test test ... junk") that anvil and hardhat fund: their keys are public,
 * and anything sent to them on a real chain can be taken by anyone. */
bool fb_evm_dev_account(const fb_addr_t *a);

/* fb_evm_test_chain - a chain id whose money is not real: anvil's and
 * hardhat's (31337, 1337), Sepolia (11155111), Base Sepolia (84532). */
bool fb_evm_test_chain(uint64_t chain_id);

/* fb_u256_from_dec - decimal digits only (no sign, no spaces, no leading '+'),
 * at most 78 of them, value below 2^256. Returns 0 or -1. */
int fb_u256_from_dec(fb_u256_t *out, const char *text, size_t len);

/* fb_u256_from_hex - "0x" and 1..64 hex digits (JSON-RPC quantities). */
int fb_u256_from_hex(fb_u256_t *out, const char *text, size_t len);

/* fb_u256_to_dec - decimal text and a NUL (at most 79 bytes). */
void fb_u256_to_dec(char out[80], const fb_u256_t *v);

void fb_u256_from_u64(fb_u256_t *out, uint64_t v);

/* fb_u256_to_u64 - true and *out when the value fits in 64 bits. */
bool fb_u256_to_u64(const fb_u256_t *v, uint64_t *out);

/* fb_u256_cmp - -1, 0 or 1 as a <, ==, > b. */
int fb_u256_cmp(const fb_u256_t *a, const fb_u256_t *b);

/* fb_bytes32_parse - "0x" and exactly 64 hex digits. Returns 0 or -1. */
int fb_bytes32_parse(uint8_t out[32], const char *text, size_t len);

int fb_evm_test(bool verbose);

#endif
