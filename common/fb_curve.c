/* fb_curve - CurveZMQ key handling and zauth-based client authorization. */
#include "fb_curve.h"
#include "fb_util.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct fb_curve_t {
    char public_z85[41]; /* derived public key */
    char secret_z85[41]; /* secret key, wiped on destroy */
};

struct fb_curve_auth_t {
    zactor_t *actor; /* czmq zauth actor serving ZAP */
};

int fb_curve_check_key(const char *text, char *err, size_t errlen)
{
    uint8_t raw[32];
    if (strlen(text) != 40 || zmq_z85_decode(raw, text) == NULL) {
        snprintf(err, errlen, "must be a 40-character Z85 CurveZMQ key");
        return -1;
    }
    sodium_memzero(raw, sizeof(raw));
    return 0;
}

fb_curve_t *fb_curve_new(const char *secret_z85, char *err, size_t errlen)
{
    if (fb_curve_check_key(secret_z85, err, errlen) != 0)
        return NULL;
    fb_curve_t *self = fb_calloc(1, sizeof(*self));
    memcpy(self->secret_z85, secret_z85, 41);
    if (zmq_curve_public(self->public_z85, self->secret_z85) != 0) {
        snprintf(err, errlen, "could not derive the CurveZMQ public key: %s", zmq_strerror(errno));
        fb_curve_destroy(&self);
        return NULL;
    }
    return self;
}

void fb_curve_destroy(fb_curve_t **self_p)
{
    FB_ASSERT(self_p);
    if (*self_p) {
        sodium_memzero(*self_p, sizeof(**self_p));
        free(*self_p);
        *self_p = NULL;
    }
}

const char *fb_curve_public(const fb_curve_t *self)
{
    return self->public_z85;
}

int fb_curve_apply_server(const fb_curve_t *self, void *zsock)
{
    int one = 1;
    if (zmq_setsockopt(zsock, ZMQ_CURVE_SERVER, &one, sizeof(one)) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_SECRETKEY, self->secret_z85, 40) != 0 ||
        zmq_setsockopt(zsock, ZMQ_ZAP_DOMAIN, "farebox", 7) != 0)
        return -1;
    return 0;
}

int fb_curve_apply_client(const fb_curve_t *self, void *zsock, const char *server_public_z85)
{
    char why[64];
    if (fb_curve_check_key(server_public_z85, why, sizeof(why)) != 0)
        return -1;
    if (zmq_setsockopt(zsock, ZMQ_CURVE_SERVERKEY, server_public_z85, 40) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_PUBLICKEY, self->public_z85, 40) != 0 ||
        zmq_setsockopt(zsock, ZMQ_CURVE_SECRETKEY, self->secret_z85, 40) != 0)
        return -1;
    return 0;
}

fb_curve_auth_t *fb_curve_auth_new(const char *clients_dir)
{
    zactor_t *actor = zactor_new(zauth, NULL);
    if (!actor)
        return NULL;
    if (zstr_sendx(actor, "CURVE", clients_dir, NULL) != 0 || zsock_wait(actor) != 0) {
        zactor_destroy(&actor);
        return NULL;
    }
    fb_curve_auth_t *self = fb_calloc(1, sizeof(*self));
    self->actor = actor;
    return self;
}

void fb_curve_auth_destroy(fb_curve_auth_t **self_p)
{
    FB_ASSERT(self_p);
    if (*self_p) {
        zactor_destroy(&(*self_p)->actor);
        free(*self_p);
        *self_p = NULL;
    }
}

int fb_curve_keygen(const char *secret_path, const char *public_cert_path, char public_out[41])
{
    zcert_t *cert = zcert_new();
    if (!cert)
        return -1;
    int rc = -1;
    int fd = open(secret_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
        bool ok = write(fd, zcert_secret_txt(cert), 40) == 40 && write(fd, "\n", 1) == 1;
        ok = close(fd) == 0 && ok;
        /* only the public half goes into the certificate file */
        if (ok && zcert_save_public(cert, public_cert_path) == 0) {
            memcpy(public_out, zcert_public_txt(cert), 41);
            rc = 0;
        }
    }
    zcert_destroy(&cert);
    return rc;
}

int fb_curve_test(bool verbose)
{
    FB_UNUSED(verbose);
    char err[128];
    FB_ASSERT(fb_curve_new("short", err, sizeof(err)) == NULL);
    FB_ASSERT(fb_curve_new("0123456789012345678901234567890123456789~", err, sizeof(err)) == NULL);
    char dir[] = "/tmp/fb_curve_testXXXXXX";
    FB_ASSERT(mkdtemp(dir));
    char spath[256], ppath[256], pub[41];
    snprintf(spath, sizeof(spath), "%s/svc.key", dir);
    snprintf(ppath, sizeof(ppath), "%s/svc.pub", dir);
    FB_ASSERT(fb_curve_keygen(spath, ppath, pub) == 0);
    size_t len;
    char *secret = fb_read_file(spath, 100, &len);
    FB_ASSERT(secret && len == 41);
    secret[40] = '\0';
    fb_curve_t *c = fb_curve_new(secret, err, sizeof(err));
    FB_ASSERT(c && strcmp(fb_curve_public(c), pub) == 0);
    free(secret);
    /* the certificate file loads back as the same public key */
    zcert_t *cert = zcert_load(ppath);
    FB_ASSERT(cert && strcmp(zcert_public_txt(cert), pub) == 0);
    zcert_destroy(&cert);
    fb_curve_destroy(&c);
    FB_ASSERT(c == NULL);
    unlink(spath);
    unlink(ppath);
    rmdir(dir);
    return 0;
}
