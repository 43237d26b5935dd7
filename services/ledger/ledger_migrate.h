/* ledger_migrate - versioned SQL migrations, applied at start.
 *
 * The migrations (services/ledger/migrations/NNNN_name.sql) are compiled into
 * the binary. Each is applied once, in its own transaction, in version order,
 * under a Postgres advisory lock so that replicas starting together apply it
 * exactly once. A migration changed after it was applied stops the start. */
#ifndef LEDGER_MIGRATE_H
#define LEDGER_MIGRATE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    int version;      /* NNNN of the file name */
    const char *name; /* the rest of the file name */
    const char *sql;  /* the file's text */
} ledger_migration_t;

extern const ledger_migration_t ledger_migrations[];
extern const size_t ledger_migration_count;

/* ledger_migrate - bring the database's schema up to date.
 * Returns the number of migrations applied now (0 when up to date), or -1 with
 * a reason in err. *schema_version receives the newest version present. */
int ledger_migrate(PGconn *conn, int *schema_version, char *err, size_t errlen);

#endif
