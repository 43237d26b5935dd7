/* ledger_engine - batching of ledger operations onto Postgres connections. */
#include "ledger_engine.h"
#include "fb_log.h"
#include "fb_pg.h"
#include "fb_util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MAX      20  /* deadlock/serialization retries of one batch */
#define DEADLINE_CHECK 100 /* ms between checks of queued operations' deadlines */

typedef struct s_op {
    struct s_op *next;
    ledger_op_kind_t kind;
    char *method, *idem, *fingerprint, *args, *code, *trace;
    int64_t hold, account, key;
    bool hold_only; /* lock the hold's row, not its account's and key's */
    int64_t deadline;
    ledger_op_done_fn *done;
    void *arg;
    int attempts; /* batches it has been part of */
    bool isolate; /* run alone: its last batch failed for a reason other than contention */
} s_op_t;

typedef struct {
    s_op_t *head, *tail;
    size_t count;
} s_queue_t;

typedef struct {
    struct ledger_engine_t *engine;
    fb_pg_t *pg;
    bool writer;
    bool needs_rollback; /* the last batch left an aborted transaction */
    /* the batch in flight */
    s_op_t **ops;
    int nops;
    int first_apply;  /* index of the first operation's statement */
    int commit_index; /* index of COMMIT, -1 for reads */
    fb_pg_query_t *queries;
    const char **params;
    char *locks[5]; /* text arrays for ledger_lock */
} s_conn_t;

struct ledger_engine_t {
    uv_loop_t *loop;
    s_conn_t *conns;
    int nconns;
    int batch_max;
    s_queue_t writes, reads;
    size_t inflight;
    uv_check_t pump;     /* dispatches queued work once per loop turn */
    uv_idle_t pump_wake; /* while armed: the loop's poll does not block first */
    uv_timer_t deadlines;
    bool pump_armed;
    void (*idle_fn)(void *);
    void *idle_arg;
    uint64_t batches, ops, retries, isolations, largest_batch;
    int closed; /* handles closed during destroy */
};

static const fb_pg_statement_t s_statements[] = {
    /* The ledger's functions run the same few statements with different ids
     * all day: their generic plans are right, and Postgres would otherwise
     * re-plan some of them on every call (custom plans); measured: a
     * one-charge write ~25% cheaper. */
    {NULL, "SET plan_cache_mode = force_generic_plan", 0},
    /* a batch is sent whole (BEGIN ... COMMIT in one pipeline): a transaction
     * left idle is one whose ledger is gone (killed, cut off) while its
     * connection lingers, and its row locks (an account's, revenue's) would
     * stall every replica until TCP gave up on it */
    {NULL, "SET idle_in_transaction_session_timeout = '15s'", 0},
    /* ... which holds only once a batch's end (its Sync) has arrived: a
     * ledger host that dies or is cut off mid-batch leaves its backend
     * reading, its locks held, until TCP gives up on the connection — two
     * hours by the system's defaults. The backend's socket is probed after
     * 10 s of silence and given up after 3 probes 5 s apart, or 20 s of
     * unacknowledged data */
    {NULL, "SET tcp_keepalives_idle = 10", 0},
    {NULL, "SET tcp_keepalives_interval = 5", 0},
    {NULL, "SET tcp_keepalives_count = 3", 0},
    {NULL, "SET tcp_user_timeout = 20000", 0},
    {"apply", "SELECT ledger_apply($1, $2, $3::bytea, $4::jsonb)::text", 4},
    /* ledger.charge: its own entry (0013), which gives every answer
     * ledger_apply would */
    {"charge", "SELECT ledger_charge_write($1, $2::bytea, $3::jsonb)::text", 3},
    {"lock", "SELECT ledger_lock($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[])", 5},
    {"read", "SELECT ledger_read_dispatch($1, $2::jsonb)::text", 2},
    {"audit", "SELECT ledger_audit_all()::text", 0},
    /* $1: "limit,topup_credit_after_ms" */
    {"sweep",
     "SELECT json_build_object('status', 'ok', 'body', json_build_object('expired', "
     "ledger_expire_holds(split_part($1, ',', 1)::integer), 'calls_forgotten', "
     "ledger_forget_calls(split_part($1, ',', 1)::integer), 'topups_credited', "
     "ledger_credit_due_topups(split_part($1, ',', 1)::integer, split_part($1, ',', 2)::bigint)))::text",
     1},
};

static void s_arm(ledger_engine_t *self);

/* --- queues ----------------------------------------------------------------------- */

static void s_push(s_queue_t *q, s_op_t *op)
{
    op->next = NULL;
    if (q->tail)
        q->tail->next = op;
    else
        q->head = op;
    q->tail = op;
    q->count++;
}

static void s_push_front(s_queue_t *q, s_op_t *op)
{
    op->next = q->head;
    q->head = op;
    if (!q->tail)
        q->tail = op;
    q->count++;
}

static s_op_t *s_pop(s_queue_t *q)
{
    s_op_t *op = q->head;
    if (op) {
        q->head = op->next;
        if (!q->head)
            q->tail = NULL;
        q->count--;
        op->next = NULL;
    }
    return op;
}

static void s_op_free(s_op_t *op)
{
    free(op->method);
    free(op->idem);
    free(op->fingerprint);
    free(op->args);
    free(op->code);
    free(op->trace);
    free(op);
}

static void s_check_idle(ledger_engine_t *self)
{
    if (self->idle_fn && self->writes.count == 0 && self->reads.count == 0 && self->inflight == 0) {
        void (*fn)(void *) = self->idle_fn;
        self->idle_fn = NULL;
        fn(self->idle_arg);
    }
}

/* Answers an operation and frees it. */
static void s_deliver(ledger_engine_t *self, s_op_t *op, const char *result, const char *code,
                      const char *message)
{
    self->ops++;
    op->done(op->arg, result, code, message);
    s_op_free(op);
}

/* --- building batches --------------------------------------------------------------- */

static char *s_int_array(const int64_t *v, int n)
{
    size_t cap = 3 + (size_t)n * 21, len = 1;
    char *s = fb_malloc(cap);
    s[0] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%" PRId64, i ? "," : "", v[i]);
    snprintf(s + len, cap - len, "}");
    return s;
}

/* A Postgres text[] literal; codes are made by the ledger from validated
 * input, quoted anyway. */
static char *s_text_array(char **v, int n)
{
    size_t cap = 3, len = 1;
    for (int i = 0; i < n; i++)
        cap += strlen(v[i]) * 2 + 3;
    char *s = fb_malloc(cap);
    s[0] = '{';
    for (int i = 0; i < n; i++) {
        if (i)
            s[len++] = ',';
        s[len++] = '"';
        for (const char *p = v[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                s[len++] = '\\';
            s[len++] = *p;
        }
        s[len++] = '"';
    }
    s[len++] = '}';
    s[len] = '\0';
    return s;
}

static void s_conn_reset(s_conn_t *c)
{
    free(c->ops);
    free(c->queries);
    free(c->params);
    for (int i = 0; i < 5; i++)
        free(c->locks[i]);
    memset(c->locks, 0, sizeof(c->locks));
    c->ops = NULL;
    c->queries = NULL;
    c->params = NULL;
    c->nops = 0;
}

static void s_done(void *arg, PGresult **results, int count, const char *error);

static bool s_is_charge(const s_op_t *op)
{
    return op->kind == LEDGER_OP_WRITE && strcmp(op->method, "ledger.charge") == 0;
}

/* Takes the next write batch off the queue and sends it on c. */
static void s_run_writes(ledger_engine_t *self, s_conn_t *c)
{
    int max = self->batch_max;
    s_op_t *head = self->writes.head;
    bool alone = head->kind != LEDGER_OP_WRITE || head->isolate;
    int n = 0;
    c->ops = fb_calloc((size_t)(alone ? 1 : max), sizeof(s_op_t *));
    while (n < (alone ? 1 : max) && self->writes.head) {
        s_op_t *op = self->writes.head;
        if (n > 0 && (op->kind != LEDGER_OP_WRITE || op->isolate))
            break;
        c->ops[n++] = s_pop(&self->writes);
    }
    c->nops = n;
    /* statements: [ROLLBACK] BEGIN [lock] op... COMMIT. A batch of one
     * charge write takes no lock first: the charge's UPDATE of its hold is
     * its only row lock (ledger_charge_write). Locks are taken up front, in
     * order, only where a transaction takes more than one. */
    bool lock = head->kind == LEDGER_OP_WRITE && !(n == 1 && s_is_charge(head) && head->hold_only &&
                                                   !head->account && !head->key && !head->code);
    int total = (c->needs_rollback ? 1 : 0) + 1 + (lock ? 1 : 0) + n + 1;
    c->queries = fb_calloc((size_t)total, sizeof(fb_pg_query_t));
    c->params = fb_calloc((size_t)n * 4 + 5, sizeof(char *));
    int q = 0;
    if (c->needs_rollback)
        c->queries[q++] = (fb_pg_query_t){.sql = "ROLLBACK"};
    c->needs_rollback = false;
    c->queries[q++] = (fb_pg_query_t){.sql = "BEGIN"};
    if (lock) {
        int64_t *holds = fb_calloc((size_t)n, sizeof(int64_t)),
                *accounts = fb_calloc((size_t)n, sizeof(int64_t)),
                *keys = fb_calloc((size_t)n, sizeof(int64_t)), *bare = fb_calloc((size_t)n, sizeof(int64_t));
        char **codes = fb_calloc((size_t)n + 1, sizeof(char *));
        int nh = 0, na = 0, nk = 0, nc = 0, nb = 0;
        for (int i = 0; i < n; i++) {
            s_op_t *op = c->ops[i];
            if (op->hold && op->hold_only)
                bare[nb++] = op->hold;
            else if (op->hold)
                holds[nh++] = op->hold;
            if (op->account)
                accounts[na++] = op->account;
            if (op->key)
                keys[nk++] = op->key;
            if (op->code) {
                bool seen = false;
                for (int k = 0; k < nc && !seen; k++)
                    seen = strcmp(codes[k], op->code) == 0;
                if (!seen)
                    codes[nc++] = op->code;
            }
        }
        c->locks[0] = s_int_array(holds, nh);
        c->locks[1] = s_int_array(accounts, na);
        c->locks[2] = s_int_array(keys, nk);
        c->locks[3] = s_text_array(codes, nc);
        c->locks[4] = s_int_array(bare, nb);
        free(bare);
        free(holds);
        free(accounts);
        free(keys);
        free(codes);
        const char **lp = c->params + (size_t)n * 4;
        for (int i = 0; i < 5; i++)
            lp[i] = c->locks[i];
        c->queries[q++] = (fb_pg_query_t){.name = "lock", .nparams = 5, .params = lp};
    }
    c->first_apply = q;
    for (int i = 0; i < n; i++) {
        s_op_t *op = c->ops[i];
        op->attempts++;
        const char **p = c->params + (size_t)i * 4;
        if (s_is_charge(op)) {
            p[0] = op->idem;
            p[1] = op->fingerprint;
            p[2] = op->args;
            c->queries[q++] = (fb_pg_query_t){.name = "charge", .nparams = 3, .params = p};
        } else if (op->kind == LEDGER_OP_WRITE) {
            p[0] = op->method;
            p[1] = op->idem;
            p[2] = op->fingerprint;
            p[3] = op->args;
            c->queries[q++] = (fb_pg_query_t){.name = "apply", .nparams = 4, .params = p};
        } else if (op->kind == LEDGER_OP_AUDIT) {
            c->queries[q++] = (fb_pg_query_t){.name = "audit"};
        } else {
            p[0] = op->args;
            c->queries[q++] = (fb_pg_query_t){.name = "sweep", .nparams = 1, .params = p};
        }
    }
    c->commit_index = q;
    c->queries[q++] = (fb_pg_query_t){.sql = "COMMIT"};
    self->inflight += (size_t)n;
    self->batches++;
    if ((uint64_t)n > self->largest_batch)
        self->largest_batch = (uint64_t)n;
    if (fb_pg_run(c->pg, c->queries, q, s_done, c) != 0)
        FB_ASSERT(!"an idle connection refused a batch");
}

static void s_run_reads(ledger_engine_t *self, s_conn_t *c)
{
    int max = self->batch_max, n = 0;
    c->ops = fb_calloc((size_t)max, sizeof(s_op_t *));
    while (n < max && self->reads.head)
        c->ops[n++] = s_pop(&self->reads);
    c->nops = n;
    c->queries = fb_calloc((size_t)n, sizeof(fb_pg_query_t));
    c->params = fb_calloc((size_t)n * 2, sizeof(char *));
    for (int i = 0; i < n; i++) {
        const char **p = c->params + (size_t)i * 2;
        p[0] = c->ops[i]->method;
        p[1] = c->ops[i]->args;
        c->ops[i]->attempts++;
        c->queries[i] = (fb_pg_query_t){.name = "read", .nparams = 2, .params = p};
    }
    c->first_apply = 0;
    c->commit_index = -1;
    self->inflight += (size_t)n;
    if (fb_pg_run(c->pg, c->queries, n, s_done, c) != 0)
        FB_ASSERT(!"an idle connection refused a batch");
}

/* Answers queued operations whose caller stopped waiting. */
static void s_expire(ledger_engine_t *self, s_queue_t *q)
{
    int64_t now = fb_mono_ms();
    s_queue_t keep = {0};
    s_op_t *op;
    while ((op = s_pop(q))) {
        if (op->deadline && now >= op->deadline) {
            bool any_up = false;
            for (int i = 0; i < self->nconns; i++)
                any_up |= fb_pg_up(self->conns[i].pg);
            s_deliver(self, op, NULL, any_up ? "deadline_exceeded" : "unavailable",
                      any_up ? "the ledger could not run the operation before its deadline"
                             : "the ledger's database is unreachable");
        } else {
            s_push(&keep, op);
        }
    }
    *q = keep;
}

static void s_dispatch(ledger_engine_t *self)
{
    for (int i = 0; i < self->nconns; i++) {
        s_conn_t *c = &self->conns[i];
        if (!fb_pg_idle(c->pg) || c->nops)
            continue;
        if (c->writer && self->writes.head)
            s_run_writes(self, c);
        else if (!c->writer && self->reads.head)
            s_run_reads(self, c);
    }
    s_check_idle(self);
}

static void s_on_pump(uv_check_t *h)
{
    ledger_engine_t *self = h->data;
    self->pump_armed = false;
    uv_check_stop(h);
    uv_idle_stop(&self->pump_wake);
    s_dispatch(self);
}

static void s_on_wake(uv_idle_t *h)
{
    FB_UNUSED(h);
}

/* Work queued from a timer or before the loop polls (not only from I/O) must
 * not wait for the poll to time out: the idle handle makes that poll return
 * at once, and the check handle runs right after it. */
static void s_arm(ledger_engine_t *self)
{
    if (!self->pump_armed) {
        self->pump_armed = true;
        uv_check_start(&self->pump, s_on_pump);
        uv_idle_start(&self->pump_wake, s_on_wake);
    }
}

static void s_on_deadlines(uv_timer_t *t)
{
    ledger_engine_t *self = t->data;
    s_expire(self, &self->writes);
    s_expire(self, &self->reads);
    s_check_idle(self);
}

/* --- results ------------------------------------------------------------------------- */

static bool s_retryable(const char *sqlstate)
{
    return strcmp(sqlstate, "40P01") == 0 || strcmp(sqlstate, "40001") == 0;
}

/* Puts the batch's operations back at the front of their queue, in order. */
static void s_requeue(ledger_engine_t *self, s_conn_t *c, bool isolate)
{
    s_queue_t *q = c->writer ? &self->writes : &self->reads;
    for (int i = c->nops - 1; i >= 0; i--) {
        c->ops[i]->isolate = isolate;
        s_push_front(q, c->ops[i]);
    }
}

static void s_done(void *arg, PGresult **results, int count, const char *error)
{
    s_conn_t *c = arg;
    ledger_engine_t *self = c->engine;
    self->inflight -= (size_t)c->nops;
    if (!results) {
        /* the connection failed: the outcome is unknown, and every write
         * carries its idempotency key, so running it again is safe */
        fb_log(FB_LOG_WARN, NULL, "ledger batch interrupted", "ops=%d reason=%s", c->nops, error);
        self->retries++;
        s_requeue(self, c, false);
        s_conn_reset(c);
        s_arm(self);
        return;
    }
    bool committed = true;
    const PGresult *failed = NULL;
    int failed_at = -1;
    for (int i = 0; i < count; i++) {
        ExecStatusType st = PQresultStatus(results[i]);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            committed = false;
            if (!failed && st != PGRES_PIPELINE_ABORTED) {
                failed = results[i];
                failed_at = i;
            }
        }
    }
    if (c->commit_index >= 0 && committed && strcmp(PQcmdStatus(results[c->commit_index]), "COMMIT") != 0)
        committed = false;

    if (c->writer && !committed) {
        c->needs_rollback = true;
        const char *state = fb_pg_error_code(failed);
        s_op_t *first = c->ops[0];
        if (s_retryable(state) && first->attempts < RETRY_MAX) {
            fb_log(FB_LOG_INFO, first->trace, "ledger batch retried", "sqlstate=%s ops=%d attempt=%d", state,
                   c->nops, first->attempts);
            self->retries++;
            s_requeue(self, c, false);
        } else if (c->nops > 1) {
            fb_log(FB_LOG_WARN, first->trace, "ledger batch failed; running its operations one by one",
                   "sqlstate=%s ops=%d reason=%s", state, c->nops,
                   failed ? PQresultErrorMessage(failed) : "?");
            self->isolations++;
            s_requeue(self, c, true);
        } else {
            fb_log(FB_LOG_ERROR, first->trace, "ledger operation failed", "method=%s sqlstate=%s reason=%s",
                   first->method, state, failed ? PQresultErrorMessage(failed) : "commit did not happen");
            s_deliver(self, first, NULL, "internal", "the ledger could not apply the operation (logged)");
        }
        s_conn_reset(c);
        s_arm(self);
        return;
    }
    for (int i = 0; i < c->nops; i++) {
        s_op_t *op = c->ops[i];
        PGresult *r = results[c->first_apply + i];
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
            s_deliver(self, op, PQgetvalue(r, 0, 0), NULL, NULL);
        } else if (!c->writer && st == PGRES_PIPELINE_ABORTED) {
            /* a read after a failed read: ask again */
            s_push_front(&self->reads, op);
            c->ops[i] = NULL;
        } else {
            fb_log(FB_LOG_ERROR, op->trace, "ledger read failed", "method=%s reason=%s", op->method,
                   i == failed_at - c->first_apply && failed ? PQresultErrorMessage(failed) : "no result");
            s_deliver(self, op, NULL, "internal", "the ledger could not answer (logged)");
        }
    }
    s_conn_reset(c);
    s_arm(self);
}

static void s_on_state(void *arg, fb_pg_t *pg, bool up)
{
    FB_UNUSED(pg);
    s_conn_t *c = arg;
    if (up) {
        c->needs_rollback = false;
        s_arm(c->engine);
    }
}

/* --- public ----------------------------------------------------------------------------- */

ledger_engine_t *ledger_engine_new(uv_loop_t *loop, const ledger_engine_config_t *config)
{
    ledger_engine_t *self = fb_calloc(1, sizeof(*self));
    self->loop = loop;
    self->batch_max = config->batch_max > 0 ? config->batch_max : 1;
    self->nconns = config->writers + config->readers;
    self->conns = fb_calloc((size_t)self->nconns, sizeof(s_conn_t));
    uv_check_init(loop, &self->pump);
    self->pump.data = self;
    uv_idle_init(loop, &self->pump_wake);
    self->pump_wake.data = self;
    uv_timer_init(loop, &self->deadlines);
    self->deadlines.data = self;
    uv_timer_start(&self->deadlines, s_on_deadlines, DEADLINE_CHECK, DEADLINE_CHECK);
    for (int i = 0; i < self->nconns; i++) {
        s_conn_t *c = &self->conns[i];
        c->engine = self;
        c->writer = i < config->writers;
        c->pg = fb_pg_new(loop, config->conninfo, s_statements, FB_ARRAY_SIZE(s_statements), s_on_state, c);
    }
    return self;
}

static void s_fail_queue(ledger_engine_t *self, s_queue_t *q)
{
    s_op_t *op;
    while ((op = s_pop(q)))
        s_deliver(self, op, NULL, "unavailable", "the ledger is stopping");
}

static void s_on_closed(uv_handle_t *h)
{
    ledger_engine_t *self = h->data;
    if (++self->closed == 3)
        free(self);
}

void ledger_engine_destroy(ledger_engine_t **self_p)
{
    FB_ASSERT(self_p);
    ledger_engine_t *self = *self_p;
    if (!self)
        return;
    s_fail_queue(self, &self->writes);
    s_fail_queue(self, &self->reads);
    /* a batch in flight completes with an error and is requeued... */
    for (int i = 0; i < self->nconns; i++)
        fb_pg_destroy(&self->conns[i].pg);
    /* ...and answered here */
    s_fail_queue(self, &self->writes);
    s_fail_queue(self, &self->reads);
    for (int i = 0; i < self->nconns; i++)
        s_conn_reset(&self->conns[i]);
    free(self->conns);
    self->conns = NULL;
    self->nconns = 0;
    uv_close((uv_handle_t *)&self->pump, s_on_closed);
    uv_close((uv_handle_t *)&self->pump_wake, s_on_closed);
    uv_close((uv_handle_t *)&self->deadlines, s_on_closed);
    *self_p = NULL;
}

void ledger_engine_submit(ledger_engine_t *self, const ledger_op_spec_t *spec, ledger_op_done_fn *done,
                          void *arg)
{
    s_op_t *op = fb_calloc(1, sizeof(*op));
    op->kind = spec->kind;
    op->method = fb_strdup(spec->method ? spec->method : "");
    op->idem = spec->idem ? fb_strdup(spec->idem) : NULL;
    op->fingerprint = spec->fingerprint ? fb_strdup(spec->fingerprint) : NULL;
    op->args = fb_strdup(spec->args ? spec->args : "{}");
    op->code = spec->lock_code ? fb_strdup(spec->lock_code) : NULL;
    op->trace = spec->trace && spec->trace[0] ? fb_strdup(spec->trace) : NULL;
    op->hold = spec->lock_hold;
    op->hold_only = spec->lock_hold_only;
    op->account = spec->lock_account;
    op->key = spec->lock_key;
    op->deadline = spec->deadline;
    op->done = done;
    op->arg = arg;
    s_push(spec->kind == LEDGER_OP_READ ? &self->reads : &self->writes, op);
    s_arm(self);
}

void ledger_engine_on_idle(ledger_engine_t *self, void (*fn)(void *arg), void *arg)
{
    self->idle_fn = fn;
    self->idle_arg = arg;
    s_check_idle(self);
}

void ledger_engine_stats(const ledger_engine_t *self, ledger_engine_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < self->nconns; i++) {
        bool up = fb_pg_up(self->conns[i].pg);
        if (self->conns[i].writer)
            out->writers_up += up;
        else
            out->readers_up += up;
    }
    out->queued = self->writes.count + self->reads.count;
    out->inflight = self->inflight;
    out->batches = self->batches;
    out->ops = self->ops;
    out->retries = self->retries;
    out->isolations = self->isolations;
    out->largest_batch = self->largest_batch;
}
