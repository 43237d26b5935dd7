/* fb_codec - hex, base58 (Bitcoin alphabet, as Solana uses it) and base64.
 *
 * Decoders take input from outside: they check every character and every
 * length and never write past the output buffer. */
#ifndef FB_CODEC_H
#define FB_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* fb_hex_encode - 2*len lowercase hex digits and a NUL into out (2*len+1 bytes). */
void fb_hex_encode(char *out, const uint8_t *in, size_t len);

/* fb_hex_decode - decode exactly outlen bytes from hex text of length
 * 2*outlen (an optional "0x" prefix is accepted). Returns 0, or -1 when the
 * text has another length or a non-hex character. */
int fb_hex_decode(uint8_t *out, size_t outlen, const char *text, size_t textlen);

/* fb_base58_encode - encode len bytes. Returns the length written to out (a
 * NUL follows), or 0 when outcap is too small (it needs at most len*138/100+2
 * bytes). Leading zero bytes become '1's. */
size_t fb_base58_encode(char *out, size_t outcap, const uint8_t *in, size_t len);

/* fb_base58_decode - decode text (textlen characters, at most 128) into out.
 * Returns the number of bytes, or -1 for a character outside the alphabet or
 * a result longer than outcap. */
int fb_base58_decode(uint8_t *out, size_t outcap, const char *text, size_t textlen);

/* fb_base64_decode - decode standard base64 (RFC 4648 alphabet, "=" padding
 * optional, no whitespace; the bits left over must be zero). For public data
 * only (payments, transactions): it is not constant-time, unlike libsodium's.
 * Returns the number of bytes, or -1 for bad input or a result longer than
 * outcap. */
int fb_base64_decode(uint8_t *out, size_t outcap, const char *text, size_t textlen);

int fb_codec_test(bool verbose);

#endif
