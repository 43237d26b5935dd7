/* fb_curve - CurveZMQ keys and client authorization for the internal RPC.
 *
 * When a process is given a secret key (FAREBOX_CURVE_SECRET_KEY), its RPC
 * traffic is encrypted: as a server it accepts only clients whose public keys
 * are certificates in FAREBOX_CURVE_CLIENTS_DIR (checked by czmq's zauth over
 * ZAP); as a client it authenticates with its own key and needs the server's
 * public key. Keys are Z85 text (40 characters). The secret key stays inside
 * this module and is wiped on destroy. */
#ifndef FB_CURVE_H
#define FB_CURVE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct fb_curve_t fb_curve_t;
typedef struct fb_curve_auth_t fb_curve_auth_t;

/* fb_curve_new - a key pair from a Z85 secret key.
 * Returns the key pair (caller owns it), or NULL with a reason in err when the
 * text is not a 40-character Z85 key. */
fb_curve_t *fb_curve_new(const char *secret_z85, char *err, size_t errlen);

/* fb_curve_destroy - wipe and free. Nulls *self_p. */
void fb_curve_destroy(fb_curve_t **self_p);

/* fb_curve_public - the Z85 public key (40 characters). */
const char *fb_curve_public(const fb_curve_t *self);

/* fb_curve_apply_server - make a raw libzmq socket a CURVE server with this key.
 * Returns 0 or -1. */
int fb_curve_apply_server(const fb_curve_t *self, void *zsock);

/* fb_curve_apply_client - make a raw libzmq socket a CURVE client of the server
 * whose Z85 public key is given. Returns 0 or -1 (bad server key). */
int fb_curve_apply_client(const fb_curve_t *self, void *zsock, const char *server_public_z85);

/* fb_curve_check_key - fb_config_check_fn: a 40-character Z85 key. */
int fb_curve_check_key(const char *text, char *err, size_t errlen);

/* fb_curve_auth_new - start the ZAP authenticator (one per process): CURVE
 * clients are accepted only when their public key is a certificate in dir.
 * Must run before any CURVE server socket binds. Returns NULL on failure. */
fb_curve_auth_t *fb_curve_auth_new(const char *clients_dir);
void fb_curve_auth_destroy(fb_curve_auth_t **self_p);

/* fb_curve_keygen - write a new key pair: the secret key as Z85 text to
 * secret_path (mode 0600) and the public key as a czmq certificate to
 * public_cert_path (the format FAREBOX_CURVE_CLIENTS_DIR holds). The public key
 * is written to public_out (41 bytes). Returns 0 or -1. */
int fb_curve_keygen(const char *secret_path, const char *public_cert_path, char public_out[41]);

int fb_curve_test(bool verbose);

#endif
