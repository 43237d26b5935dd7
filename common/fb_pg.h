/* fb_pg - one PostgreSQL connection driven by a libuv loop, in libpq's
 * pipeline mode: a batch of statements goes out in one write and its results
 * come back together, so a group of operations costs one round trip.
 *
 * The connection is made (and remade after a failure, with backoff) without
 * blocking the loop; the statements listed at creation are prepared on every
 * new connection before it is reported up. One batch runs at a time. */
#ifndef FB_PG_H
#define FB_PG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct fb_pg_t fb_pg_t;

/* A statement prepared on every connection. */
typedef struct {
    const char *name;
    const char *sql;
    int nparams; /* parameters, all sent as text */
} fb_pg_statement_t;

/* One statement of a batch: a prepared statement by name with text parameters
 * (NULL for SQL NULL), or plain SQL when name is NULL. The strings must stay
 * valid until the batch completes. */
typedef struct {
    const char *name;
    const char *sql;
    int nparams;
    const char *const *params;
} fb_pg_query_t;

/* Batch completion. results[i] is the result of queries[i] (PGRES_TUPLES_OK,
 * PGRES_COMMAND_OK, PGRES_FATAL_ERROR or PGRES_PIPELINE_ABORTED); they are
 * cleared after the callback returns. On a connection failure, results is NULL
 * and error says why: the batch's outcome is unknown (it may have committed). */
typedef void(fb_pg_done_fn)(void *arg, PGresult **results, int count, const char *error);

/* Connection up (true) or down (false). */
typedef void(fb_pg_state_fn)(void *arg, fb_pg_t *pg, bool up);

/* fb_pg_new - start connecting. statements (count n) are prepared on each
 * connection, in order; one with a NULL name is run instead (a session
 * setting, with no parameters). The array must outlive the connection.
 * Caller owns the result. */
fb_pg_t *fb_pg_new(uv_loop_t *loop, const char *conninfo, const fb_pg_statement_t *statements, size_t n,
                   fb_pg_state_fn *on_state, void *arg);

/* fb_pg_destroy - close; a batch in flight completes with an error first.
 * Nulls *self_p. */
void fb_pg_destroy(fb_pg_t **self_p);

/* fb_pg_idle - connected, statements prepared, no batch in flight. */
bool fb_pg_idle(const fb_pg_t *self);

/* fb_pg_up - connected and prepared (a batch may be in flight). */
bool fb_pg_up(const fb_pg_t *self);

/* fb_pg_run - send a batch (count statements, at most 4096) and a sync point.
 * Returns 0, or -1 when the connection is not idle. done runs exactly once. */
int fb_pg_run(fb_pg_t *self, const fb_pg_query_t *queries, int count, fb_pg_done_fn *done, void *arg);

/* fb_pg_error_code - the SQLSTATE of an error result ("40P01"), or "". */
const char *fb_pg_error_code(const PGresult *r);

#endif
