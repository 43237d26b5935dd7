/* farebox-ledger - the only writer of money.
 *
 *   database   Postgres through libpq; schema from ledger_migrate.c
 *   rpc        health (database state) - the money methods come with the
 *              ledger work (README: what is not done yet)
 *   stop       SIGTERM: stop serving, close the database */
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_service.h"
#include "fb_util.h"
#include "ledger_migrate.h"

#include <libpq-fe.h>
#include <stdio.h>

static const fb_config_var_t s_vars[] = {
    {"FAREBOX_DATABASE_URL", FB_CFG_SECRET, NULL, 0, 0, NULL, NULL,
     "Postgres connection string (URI or key=value); holds the database password"},
};

static const fb_service_def_t s_def = {
    .name = "ledger",
    .summary = "the money ledger of farebox",
    .rpc_bind = "tcp://127.0.0.1:7110-7119",
    .vars = s_vars,
    .var_count = FB_ARRAY_SIZE(s_vars),
};

typedef struct {
    int schema_version;
} s_ledger_t;

/* Postgres notices ("relation already exists, skipping") go to the log. */
static void s_on_notice(void *arg, const char *message)
{
    FB_UNUSED(arg);
    fb_log(FB_LOG_DEBUG, NULL, "postgres notice", "text=%s", message);
}

static int s_health(void *arg, msgpack_packer *pk)
{
    s_ledger_t *self = arg;
    fb_mp_pack_kv_int(pk, "schema_version", self->schema_version);
    return 1;
}

int main(int argc, char **argv)
{
    fb_service_t *svc = fb_service_new(argc, argv, &s_def);
    const fb_config_t *cfg = fb_service_config(svc);
    s_ledger_t ledger = {0};

    PGconn *conn = PQconnectdb(fb_config_str(cfg, "FAREBOX_DATABASE_URL"));
    if (PQstatus(conn) != CONNECTION_OK) {
        fb_log(FB_LOG_ERROR, NULL, "could not connect to the database", "reason=%s", PQerrorMessage(conn));
        PQfinish(conn);
        fb_service_destroy(&svc);
        return 1;
    }
    PQsetNoticeProcessor(conn, s_on_notice, NULL);
    char err[1024];
    if (ledger_migrate(conn, &ledger.schema_version, err, sizeof(err)) < 0) {
        fb_log(FB_LOG_ERROR, NULL, "could not migrate the database", "reason=%s", err);
        PQfinish(conn);
        fb_service_destroy(&svc);
        return 1;
    }
    PQfinish(conn);
    fb_log(FB_LOG_INFO, NULL, "database ready", "schema_version=%d", ledger.schema_version);
    fb_rpc_server_on_health(fb_service_rpc(svc), s_health, &ledger);

    int code = fb_service_run(svc);
    fb_service_destroy(&svc);
    return code;
}
