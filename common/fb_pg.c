/* fb_pg - non-blocking libpq connection with pipelined batches in libuv.
 *
 * States: DOWN (waiting to retry) -> CONNECTING (PQconnectPoll steps) ->
 * PREPARING (the statements, as one pipelined batch) -> IDLE <-> BUSY (a batch
 * in flight). Any failure goes back to DOWN, completes the batch in flight
 * with an error, and retries with exponential backoff. The socket is watched
 * by a heap-allocated uv_poll_t that is closed before libpq closes the fd. */
#include "fb_pg.h"
#include "fb_log.h"
#include "fb_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_MAX      4096
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

typedef enum { S_DOWN, S_CONNECTING, S_PREPARING, S_IDLE, S_BUSY } s_state_t;

struct fb_pg_t {
    uv_loop_t *loop;
    char *conninfo;                      /* connection string (may hold a password) */
    const fb_pg_statement_t *statements; /* prepared on each connection */
    size_t statement_count;
    fb_pg_state_fn *on_state;
    void *state_arg;
    PGconn *conn;
    s_state_t state;
    uv_poll_t *poll; /* watches PQsocket(conn); NULL when there is none */
    int poll_fd;
    uv_timer_t retry; /* reconnect backoff */
    uint64_t backoff_ms;
    /* the batch in flight */
    fb_pg_done_fn *done;
    void *done_arg;
    PGresult **results;
    int count; /* statements in the batch */
    int next;  /* index of the statement whose result comes next */
    bool got;  /* results[next] is filled */
    bool closing;
};

static void s_on_io(uv_poll_t *h, int status, int events);
static void s_connect(fb_pg_t *self);

const char *fb_pg_error_code(const PGresult *r)
{
    const char *c = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return c ? c : "";
}

static void s_notice(void *arg, const char *message)
{
    FB_UNUSED(arg);
    fb_log(FB_LOG_DEBUG, NULL, "postgres notice", "text=%s", message);
}

/* --- socket watching ------------------------------------------------------------- */

static void s_poll_close(fb_pg_t *self)
{
    if (self->poll) {
        uv_poll_stop(self->poll);
        uv_close((uv_handle_t *)self->poll, (uv_close_cb)free);
        self->poll = NULL;
    }
}

static void s_watch(fb_pg_t *self, int events)
{
    int fd = PQsocket(self->conn);
    if (self->poll && self->poll_fd != fd)
        s_poll_close(self);
    if (!self->poll) {
        self->poll = fb_malloc(sizeof(*self->poll));
        FB_ASSERT(uv_poll_init(self->loop, self->poll, fd) == 0);
        self->poll->data = self;
        self->poll_fd = fd;
    }
    uv_poll_start(self->poll, events, s_on_io);
}

/* --- failure and retry --------------------------------------------------------------- */

/* Completes the batch in flight, with results or with an error. */
static void s_finish_batch(fb_pg_t *self, const char *error)
{
    fb_pg_done_fn *done = self->done;
    void *arg = self->done_arg;
    PGresult **results = self->results;
    int count = self->count;
    self->done = NULL;
    self->results = NULL;
    self->count = 0;
    if (self->state == S_BUSY)
        self->state = S_IDLE;
    if (done)
        done(arg, error ? NULL : results, count, error);
    for (int i = 0; i < count; i++)
        PQclear(results[i]);
    free(results);
}

static void s_on_retry(uv_timer_t *t)
{
    s_connect(t->data);
}

static void s_fail(fb_pg_t *self, const char *why)
{
    bool was_up = self->state == S_IDLE || self->state == S_BUSY;
    char reason[512];
    snprintf(reason, sizeof(reason), "%s", why && *why ? why : "connection failed");
    /* libpq messages end with a newline */
    size_t n = strlen(reason);
    while (n > 0 && (reason[n - 1] == '\n' || reason[n - 1] == ' '))
        reason[--n] = '\0';
    if (!self->closing)
        fb_log(was_up ? FB_LOG_WARN : FB_LOG_INFO, NULL, "database connection down",
               "reason=%s retry_ms=%llu", reason, (unsigned long long)self->backoff_ms);
    s_poll_close(self);
    PQfinish(self->conn);
    self->conn = NULL;
    self->state = S_DOWN;
    if (self->done)
        s_finish_batch(self, reason);
    if (was_up && self->on_state)
        self->on_state(self->state_arg, self, false);
    if (self->closing)
        return;
    uv_timer_start(&self->retry, s_on_retry, self->backoff_ms, 0);
    self->backoff_ms = self->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : self->backoff_ms * 2;
}

/* --- batches --------------------------------------------------------------------------- */

/* Flushes what libpq has buffered and watches the socket accordingly. */
static void s_flush(fb_pg_t *self)
{
    int rc = PQflush(self->conn);
    if (rc < 0)
        s_fail(self, PQerrorMessage(self->conn));
    else
        s_watch(self, rc == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
}

static int s_send(fb_pg_t *self, const fb_pg_query_t *queries, int count, fb_pg_done_fn *done, void *arg)
{
    self->done = done;
    self->done_arg = arg;
    self->results = fb_calloc((size_t)count, sizeof(PGresult *));
    self->count = count;
    self->next = 0;
    self->got = false;
    for (int i = 0; i < count; i++) {
        const fb_pg_query_t *q = &queries[i];
        int ok = q->name ? PQsendQueryPrepared(self->conn, q->name, q->nparams, q->params, NULL, NULL, 0)
                         : PQsendQueryParams(self->conn, q->sql, q->nparams, NULL, q->params, NULL, NULL, 0);
        if (!ok) {
            s_fail(self, PQerrorMessage(self->conn));
            return 0; /* the batch completed with an error */
        }
    }
    if (!PQpipelineSync(self->conn)) {
        s_fail(self, PQerrorMessage(self->conn));
        return 0;
    }
    s_flush(self);
    return 0;
}

int fb_pg_run(fb_pg_t *self, const fb_pg_query_t *queries, int count, fb_pg_done_fn *done, void *arg)
{
    FB_ASSERT(count > 0 && count <= BATCH_MAX && done);
    if (self->state != S_IDLE)
        return -1;
    self->state = S_BUSY;
    return s_send(self, queries, count, done, arg);
}

/* Reads whatever results are complete; finishes the batch at its sync point. */
static void s_read_results(fb_pg_t *self)
{
    while (self->conn && (self->state == S_BUSY || self->state == S_PREPARING) && !PQisBusy(self->conn)) {
        PGresult *r = PQgetResult(self->conn);
        if (r == NULL) {
            /* the end of one statement's results */
            if (self->got) {
                self->next++;
                self->got = false;
                continue;
            }
            break;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            s_finish_batch(self, NULL);
            break;
        }
        if (self->next < self->count && !self->got) {
            self->results[self->next] = r;
            self->got = true;
        } else {
            PQclear(r);
        }
    }
}

/* --- connecting ------------------------------------------------------------------------- */

static void s_prepared(void *arg, PGresult **results, int count, const char *error)
{
    fb_pg_t *self = arg;
    if (error)
        return; /* s_fail already runs the retry */
    for (int i = 0; i < count; i++) {
        if (PQresultStatus(results[i]) != PGRES_COMMAND_OK) {
            fb_log(FB_LOG_ERROR, NULL, "could not prepare a statement", "name=%s reason=%s",
                   self->statements[i].name ? self->statements[i].name : self->statements[i].sql,
                   PQresultErrorMessage(results[i]));
            /* retried with backoff: the schema may not be migrated yet */
            self->state = S_BUSY;
            s_fail(self, "statement preparation failed");
            return;
        }
    }
    self->state = S_IDLE;
    self->backoff_ms = BACKOFF_MIN_MS;
    fb_log(FB_LOG_DEBUG, NULL, "database connection up", NULL);
    if (self->on_state)
        self->on_state(self->state_arg, self, true);
}

static void s_connected(fb_pg_t *self)
{
    if (PQsetnonblocking(self->conn, 1) != 0 || PQenterPipelineMode(self->conn) != 1) {
        s_fail(self, PQerrorMessage(self->conn));
        return;
    }
    if (self->statement_count == 0) {
        self->state = S_PREPARING;
        s_prepared(self, NULL, 0, NULL);
        s_watch(self, UV_READABLE);
        return;
    }
    self->state = S_PREPARING;
    self->done = s_prepared;
    self->done_arg = self;
    self->count = (int)self->statement_count;
    self->results = fb_calloc(self->statement_count, sizeof(PGresult *));
    self->next = 0;
    self->got = false;
    for (size_t i = 0; i < self->statement_count; i++) {
        const fb_pg_statement_t *st = &self->statements[i];
        int ok = st->name ? PQsendPrepare(self->conn, st->name, st->sql, st->nparams, NULL)
                          : PQsendQueryParams(self->conn, st->sql, 0, NULL, NULL, NULL, NULL, 0);
        if (!ok) {
            s_fail(self, PQerrorMessage(self->conn));
            return;
        }
    }
    if (!PQpipelineSync(self->conn)) {
        s_fail(self, PQerrorMessage(self->conn));
        return;
    }
    s_flush(self);
}

static void s_connect_step(fb_pg_t *self)
{
    switch (PQconnectPoll(self->conn)) {
    case PGRES_POLLING_READING:
        s_watch(self, UV_READABLE);
        break;
    case PGRES_POLLING_WRITING:
        s_watch(self, UV_WRITABLE);
        break;
    case PGRES_POLLING_OK:
        s_connected(self);
        break;
    default:
        s_fail(self, PQerrorMessage(self->conn));
        break;
    }
}

static void s_connect(fb_pg_t *self)
{
    self->conn = PQconnectStart(self->conninfo);
    if (!self->conn || PQstatus(self->conn) == CONNECTION_BAD) {
        s_fail(self, self->conn ? PQerrorMessage(self->conn) : "out of memory");
        return;
    }
    PQsetNoticeProcessor(self->conn, s_notice, NULL);
    self->state = S_CONNECTING;
    s_watch(self, UV_WRITABLE);
}

static void s_on_io(uv_poll_t *h, int status, int events)
{
    fb_pg_t *self = h->data;
    if (!self->conn)
        return;
    if (status < 0) {
        s_fail(self, uv_strerror(status));
        return;
    }
    if (self->state == S_CONNECTING) {
        s_connect_step(self);
        return;
    }
    if (events & UV_WRITABLE) {
        s_flush(self);
        if (!self->conn)
            return;
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(self->conn)) {
            s_fail(self, PQerrorMessage(self->conn));
            return;
        }
        s_read_results(self);
    }
}

/* --- life cycle ---------------------------------------------------------------------------- */

fb_pg_t *fb_pg_new(uv_loop_t *loop, const char *conninfo, const fb_pg_statement_t *statements, size_t n,
                   fb_pg_state_fn *on_state, void *arg)
{
    fb_pg_t *self = fb_calloc(1, sizeof(*self));
    self->loop = loop;
    self->conninfo = fb_strdup(conninfo);
    self->statements = statements;
    self->statement_count = n;
    self->on_state = on_state;
    self->state_arg = arg;
    self->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(loop, &self->retry);
    self->retry.data = self;
    s_connect(self);
    return self;
}

static void s_on_closed(uv_handle_t *h)
{
    free(h->data);
}

void fb_pg_destroy(fb_pg_t **self_p)
{
    FB_ASSERT(self_p);
    fb_pg_t *self = *self_p;
    if (!self)
        return;
    self->closing = true;
    if (self->conn)
        s_fail(self, "the connection is closing");
    s_poll_close(self);
    memset(self->conninfo, 0, strlen(self->conninfo));
    free(self->conninfo);
    uv_close((uv_handle_t *)&self->retry, s_on_closed);
    *self_p = NULL;
}

bool fb_pg_idle(const fb_pg_t *self)
{
    return self->state == S_IDLE;
}

bool fb_pg_up(const fb_pg_t *self)
{
    return self->state == S_IDLE || self->state == S_BUSY;
}
