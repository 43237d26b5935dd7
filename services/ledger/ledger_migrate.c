/* ledger_migrate - apply the embedded migrations under an advisory lock. */
#include "ledger_migrate.h"
#include "fb_log.h"
#include "fb_util.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIGRATION_LOCK_KEY "7340021" /* pg_advisory_lock key owned by farebox migrations */

static void s_checksum(const char *sql, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)sql, strlen(sql));
    sodium_bin2hex(out, 65, h, sizeof(h));
}

/* Runs one statement (or a script) and checks the result status. */
static int s_exec(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
    if (rc != 0)
        snprintf(err, errlen, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return rc;
}

static int s_apply(PGconn *conn, const ledger_migration_t *m, const char *sum, char *err, size_t errlen)
{
    if (s_exec(conn, "BEGIN", err, errlen) != 0)
        return -1;
    if (s_exec(conn, m->sql, err, errlen) != 0) {
        char why[512];
        snprintf(why, sizeof(why), "%s", err);
        snprintf(err, errlen, "migration %04d_%s failed: %s", m->version, m->name, why);
        char ignore[64];
        s_exec(conn, "ROLLBACK", ignore, sizeof(ignore));
        return -1;
    }
    char version[16];
    snprintf(version, sizeof(version), "%d", m->version);
    const char *params[] = {version, m->name, sum};
    PGresult *r =
        PQexecParams(conn, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)", 3,
                     NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "could not record migration %d: %s", m->version, PQresultErrorMessage(r));
    PQclear(r);
    if (!ok) {
        char ignore[64];
        s_exec(conn, "ROLLBACK", ignore, sizeof(ignore));
        return -1;
    }
    return s_exec(conn, "COMMIT", err, errlen);
}

int ledger_migrate(PGconn *conn, int *schema_version, char *err, size_t errlen)
{
    *schema_version = 0;
    if (s_exec(conn, "SELECT pg_advisory_lock(" MIGRATION_LOCK_KEY ")", err, errlen) != 0)
        return -1;
    int applied = 0, rc = 0;
    if (s_exec(conn,
               "CREATE TABLE IF NOT EXISTS schema_migrations ("
               " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
               " applied_at timestamptz NOT NULL DEFAULT now())",
               err, errlen) != 0) {
        rc = -1;
        goto unlock;
    }
    PGresult *r = PQexec(conn, "SELECT version, checksum FROM schema_migrations ORDER BY version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "could not read schema_migrations: %s", PQresultErrorMessage(r));
        PQclear(r);
        rc = -1;
        goto unlock;
    }
    for (size_t i = 0; i < ledger_migration_count && rc == 0; i++) {
        const ledger_migration_t *m = &ledger_migrations[i];
        char sum[65];
        s_checksum(m->sql, sum);
        bool done = false;
        for (int row = 0; row < PQntuples(r); row++) {
            if (atoi(PQgetvalue(r, row, 0)) != m->version)
                continue;
            done = true;
            if (strcmp(PQgetvalue(r, row, 1), sum) != 0) {
                snprintf(err, errlen,
                         "migration %04d_%s was changed after it was applied (checksum %s in the database, "
                         "%s here)",
                         m->version, m->name, PQgetvalue(r, row, 1), sum);
                rc = -1;
            }
        }
        if (!done && rc == 0) {
            if (s_apply(conn, m, sum, err, errlen) != 0) {
                rc = -1;
            } else {
                applied++;
                fb_log(FB_LOG_INFO, NULL, "migration applied", "version=%d name=%s", m->version, m->name);
            }
        }
        if (rc == 0)
            *schema_version = m->version;
    }
    for (int row = 0; row < PQntuples(r); row++) {
        int v = atoi(PQgetvalue(r, row, 0));
        if (v > *schema_version) {
            fb_log(FB_LOG_WARN, NULL, "database schema is newer than this binary",
                   "database_version=%d known=%d", v, *schema_version);
            *schema_version = v;
        }
    }
    PQclear(r);
unlock : {
    char ignore[256];
    s_exec(conn, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")", ignore, sizeof(ignore));
}
    return rc == 0 ? applied : -1;
}
